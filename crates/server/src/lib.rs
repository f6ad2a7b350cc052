//! Verdict's HTTP server: AuthZEN decisions, administration, health, and the node lifecycle.
//!
//! Layout: [`config`] (one serde struct and its cross-checks), [`bootstrap`] (how the node enters
//! Raft), [`listeners`] (the three sockets and the file-descriptor budget), [`connections`] (the
//! accept loop: connection caps, header and idle timeouts, TLS handshakes), [`state`] (shared handler state, start-up of the
//! node's parts, the write path), [`router`] (one router per listener), [`routes`] (one module per
//! area), [`panic`] (no panic takes a connection down), [`proposed`] (a proposed write outlives
//! the request timeout), [`parse_pool`] (the threads admin writes are parsed on), [`auth`]
//! (credentials and scopes), [`capacity`] (this node's decision rate and CPU per decision),
//! [`shutdown`] (the stop sequence), [`body`]
//! (body/header plumbing), [`error`] (the single mapping of errors to problem+json), [`tls`].
//!
//! Start-up runs in steps, each of which a test can call on its own:
//! [`Config::validate`] → `Tls::load` → [`Listeners::bind`] → [`AppState::new`] →
//! [`serve`]`(listeners, state, shutdown)`. [`run`] is the five in a row, for `verdict serve`;
//! tests bind port 0 and pass the listeners in.
#![deny(missing_docs)]
// No request may panic (issue #12): besides unwraps, slice indexing is refused outright here.
// serde_json's `value[key] = …` is not covered by any lint: use `body::set`. What slips through
// anyway is answered `500` by the `edge` service.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod auth;
pub mod body;
pub mod bootstrap;
pub mod capacity;
pub mod config;
pub mod connections;
pub mod edge;
pub mod error;
pub mod listeners;
pub mod panic;
pub mod parse_pool;
pub mod proposed;
pub mod router;
pub mod routes;
pub mod shutdown;
pub mod state;
pub mod tls;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub use config::Config;
pub use listeners::Listeners;
pub use state::AppState;
pub use state::Shared;

/// Runs a node until `shutdown` resolves: validates `config`, loads its certificates, binds its
/// listeners, starts its parts and serves.
pub async fn run(
    mut config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate()?;
    // Certificates are read before anything binds or starts: a bad file stops start-up with the
    // setting to fix.
    let tls = tls::Tls::load(&config.tls)?.map(Arc::new);
    // Before anything opens files or sockets: the connection caps are fitted under this limit.
    listeners::raise_fd_limit();
    let listeners = Listeners::bind(&config).await?;
    listeners.advertise_bound_ports(&mut config)?;
    let state = AppState::new(config, tls).await?;
    serve(listeners, state, shutdown).await
}

/// Serves `state` on `listeners` until `shutdown` resolves, then stops the node's parts in the
/// order [`shutdown`] explains.
/// Installs the panic hook of [`panic`] (once per process).
pub async fn serve(
    listeners: Listeners,
    state: Shared,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    panic::install_hook();
    let background = [
        // Freshness is re-checked in the background so the decision path reads one flag.
        tokio::spawn(state::watch_freshness(state.clone())),
        tokio::spawn(capacity::sample_every_second(state.clone())),
        tokio::spawn(routes::drain::keep_leadership_away(state.clone())),
    ];
    // Without `[tls]` no SIGHUP handler is installed: behaviour is as before TLS existed.
    let reloader = match &state.tls {
        Some(t) => Some(tls::reload_on_sighup(t.clone())?),
        None => None,
    };
    let (api_tls, peer_tls) = match &state.tls {
        Some(t) => (
            t.api().map(|c| (c, t.handshake_timeout())),
            t.peer_server().map(|c| (c, t.handshake_timeout())),
        ),
        None => (None, None),
    };
    let addr = |l: &tokio::net::TcpListener| l.local_addr().map(|a| a.to_string());
    tracing::info!(
        node_id = state.config.node_id,
        api = addr(&listeners.api)?,
        peer = addr(&listeners.peer)?,
        health = listeners.health.as_ref().map(addr).transpose()?,
        api_tls = api_tls.is_some(),
        peer_tls = peer_tls.is_some(),
        peer_client_auth = peer_tls.is_some() && state.config.tls.peer_client_auth,
        data_dir = %state.config.data_dir.display(),
        "verdict node serving"
    );
    let stop = state.stop.clone();
    let draining = state.clone();
    tokio::spawn(async move {
        shutdown.await;
        // Not ready from the first moment: members choosing a new leader skip this node.
        draining.node.set_draining();
        stop.send_replace(true);
    });
    // The peer listener stops later than the others (see `shutdown`).
    let (stop_peers, peers_stopped) = tokio::sync::watch::channel(false);
    let stopped = || state.stop.subscribe();
    let caps = listeners::connection_caps(&state.config, listeners::fd_limit());
    let header_read_timeout = Duration::from_millis(state.config.header_read_timeout_ms.max(1));
    let shutdown_grace = Duration::from_millis(state.config.shutdown_grace_ms);
    let limits = |max_connections| connections::ListenerLimits {
        max_connections,
        header_read_timeout,
        shutdown_grace,
    };
    let counters = &state.connections;
    let api = connections::serve(
        listeners.api,
        router::api_router(state.clone()),
        api_tls,
        "API",
        limits(caps.api),
        counters.api.clone(),
        stopped(),
    );
    let peers = connections::serve(
        listeners.peer,
        router::peer_router(state.clone()),
        peer_tls,
        "peer",
        limits(caps.peer),
        counters.peer.clone(),
        peers_stopped,
    );
    let health = async {
        match listeners.health {
            Some(l) => {
                connections::serve(
                    l,
                    router::health_router(state.clone()),
                    None,
                    "health",
                    limits(caps.health),
                    counters.health.clone(),
                    stopped(),
                )
                .await
            }
            None => Ok(()),
        }
    };
    let front = async {
        let (a, h) = tokio::join!(api, health);
        shutdown::hand_off_leadership(&state).await;
        stop_peers.send_replace(true);
        (a, h)
    };
    let ((a, h), p) = tokio::join!(front, peers);
    for task in background {
        task.abort();
    }
    if let Some(r) = reloader {
        r.abort();
    }
    shutdown::stop_parts(&state).await;
    a?;
    p?;
    h?;
    Ok(())
}
