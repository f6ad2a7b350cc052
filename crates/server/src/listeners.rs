//! The node's sockets, bound before anything else starts so that a taken port stops start-up at
//! once. Tests bind port 0 (see [`Listeners::bind`] and [`Listeners::advertise_bound_ports`]) and
//! pass the listeners to [`crate::serve`].
//!
//! Also the node's file-descriptor budget: [`raise_fd_limit`] lifts the soft `RLIMIT_NOFILE` to
//! the hard limit at start, and [`connection_caps`] fits the listeners' connection caps under
//! what the process may open, so that a full API listener runs into its own cap (and refuses
//! cleanly) before `accept` runs out of descriptors for everyone, the health listener included.

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

/// Descriptors kept back from the listeners' caps for everything else the node opens: sled and
/// snapshot files, decision-log segments, connections to other members and forwarded writes,
/// the listening sockets, stdio.
pub const RESERVED_FDS: u64 = 256;

/// Raises the soft open-file limit to the hard limit, where the platform allows it, and logs
/// what it did; returns the soft limit in force afterwards (`None`: unlimited or unknown).
pub fn raise_fd_limit() -> Option<u64> {
    use rustix::process::getrlimit;
    use rustix::process::setrlimit;
    use rustix::process::Resource;
    use rustix::process::Rlimit;
    let before = getrlimit(Resource::Nofile);
    let (Some(soft), Some(hard)) = (before.current, before.maximum) else {
        // An unlimited soft limit needs no raising; an unlimited hard one cannot be used as a
        // soft value for NOFILE on Linux, and is left alone.
        return before.current;
    };
    if soft >= hard {
        tracing::info!(
            open_files = soft,
            "open-file limit (RLIMIT_NOFILE) already at its hard limit"
        );
        return Some(soft);
    }
    let raised = Rlimit {
        current: Some(hard),
        maximum: Some(hard),
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => {
            tracing::info!(
                from = soft,
                to = hard,
                "raised the open-file limit (RLIMIT_NOFILE) to its hard limit"
            );
            Some(hard)
        }
        Err(e) => {
            tracing::warn!(
                open_files = soft,
                hard_limit = hard,
                error = %e,
                "cannot raise the open-file limit (RLIMIT_NOFILE); connection caps fit under it"
            );
            Some(soft)
        }
    }
}

/// The soft open-file limit in force (`None`: unlimited).
pub fn fd_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// The connection caps the listeners run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionCaps {
    /// The API listener's.
    pub api: usize,
    /// The peer listener's.
    pub peer: usize,
    /// The health listener's (0 when there is none).
    pub health: usize,
}

/// The configured caps, lowered where the open-file limit `fd_limit` cannot hold them all with
/// [`RESERVED_FDS`] to spare. The health listener keeps its cap (probes must get through); the
/// peer listener gets at most a quarter of what is left, the API listener the rest; neither
/// drops below 1. Logged when anything was lowered.
pub fn connection_caps(config: &Config, fd_limit: Option<u64>) -> ConnectionCaps {
    let health = if config.health_listen.is_some() {
        config.max_health_connections
    } else {
        0
    };
    let wanted = ConnectionCaps {
        api: config.max_connections,
        peer: config.max_peer_connections,
        health,
    };
    let Some(limit) = fd_limit else {
        return wanted;
    };
    let room = limit.saturating_sub(RESERVED_FDS + health as u64);
    let room = usize::try_from(room).unwrap_or(usize::MAX);
    if wanted.api.saturating_add(wanted.peer) <= room {
        return wanted;
    }
    let peer = wanted.peer.min(room / 4).max(1);
    let api = wanted.api.min(room.saturating_sub(peer)).max(1);
    let caps = ConnectionCaps { api, peer, health };
    tracing::warn!(
        open_files = limit,
        reserved = RESERVED_FDS,
        max_connections = api,
        max_peer_connections = peer,
        configured_max_connections = wanted.api,
        configured_max_peer_connections = wanted.peer,
        "the open-file limit cannot hold the configured connection caps; lowered them (raise \
         the hard limit, e.g. LimitNOFILE= in systemd, to keep them)"
    );
    caps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_fit_under_the_open_file_limit_and_health_keeps_its_own() {
        let config = Config {
            health_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            ..Config::default()
        };
        let roomy = connection_caps(&config, Some(1 << 20));
        assert_eq!(roomy.api, config.max_connections);
        assert_eq!(roomy.health, config.max_health_connections);
        let tight = connection_caps(&config, Some(512));
        assert_eq!(tight.health, config.max_health_connections);
        let total = (tight.api + tight.peer + tight.health) as u64 + RESERVED_FDS;
        assert!(total <= 512, "{tight:?}");
        assert!(tight.api > tight.peer && tight.peer >= 1, "{tight:?}");
        assert_eq!(connection_caps(&config, None).api, config.max_connections);
    }
}
