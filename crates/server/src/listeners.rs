//! The node's sockets, bound before anything else starts so that a taken port stops start-up at
//! once. Tests bind port 0 (see [`Listeners::bind`] and [`Listeners::advertise_bound_ports`]) and
//! pass the listeners to [`crate::serve`].

use std::net::SocketAddr;

use tokio::net::TcpListener;

use crate::config::Config;

/// The API, peer and (optional) health listeners of one node.
pub struct Listeners {
    /// The public API: decisions, administration, health.
    pub api: TcpListener,
    /// Raft RPCs and forwarded writes from other members.
    pub peer: TcpListener,
    /// Plain-HTTP `/livez`, `/readyz` and `/metrics` only, when `health_listen` is set.
    pub health: Option<TcpListener>,
}

async fn bind(addr: SocketAddr, what: &str, flag: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!("cannot listen on {addr} ({what}): {e}; pick another with {flag}")
    })
}

impl Listeners {
    /// Binds the addresses of `config`.
    pub async fn bind(config: &Config) -> anyhow::Result<Self> {
        let api = bind(config.listen, "API", "--listen").await?;
        let peer = bind(config.peer_listen, "peer", "--peer-listen").await?;
        let health = match config.health_listen {
            Some(addr) => Some(bind(addr, "health", "--health-listen").await?),
            None => None,
        };
        Ok(Self { api, peer, health })
    }

    /// Writes the addresses actually bound into `config`, so that a port 0 (any free port)
    /// becomes the one the node advertises to its peers and logs.
    pub fn advertise_bound_ports(&self, config: &mut Config) -> std::io::Result<()> {
        config.listen = self.api.local_addr()?;
        config.peer_listen = self.peer.local_addr()?;
        if let Some(h) = &self.health {
            config.health_listen = Some(h.local_addr()?);
        }
        Ok(())
    }
}
