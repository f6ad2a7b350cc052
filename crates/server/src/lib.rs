//! Verdict's HTTP server: AuthZEN decisions, administration, health, and the node lifecycle.
//!
//! Layout: [`config`] (one serde struct), [`state`] (shared handler state, the write path),
//! [`routes`] (one module per area), [`body`] (body/header plumbing), [`error`] (the single mapping
//! of errors to problem+json). [`run`] starts a node and serves until shutdown.
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod auth;
pub mod body;
pub mod config;
pub mod error;
pub mod routes;
pub mod state;
pub mod tls;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::IntoResponse;
use axum::response::Response;
use axum::routing::get;
use axum::routing::post;
use axum::Router;
pub use config::Config;
use tokio::net::TcpListener;
use verdict_cluster::Bootstrap;
use verdict_cluster::Limits;
use verdict_cluster::Node;
use verdict_cluster::NodeInfo;
use verdict_cluster::NodeOptions;
use verdict_decision_log::DecisionLog;

use crate::error::ApiError;
use crate::routes::admin;
use crate::routes::cluster;
use crate::routes::credentials;
use crate::routes::decide;
use crate::routes::decision_log;
use crate::routes::health;
use crate::routes::peer;
use crate::routes::tokens;
use crate::routes::watch;
use crate::state::AppState;
use crate::state::Metrics;
use crate::state::Shared;

async fn echo_request_id(req: Request, next: Next) -> Response {
    let id = req.headers().get("x-request-id").cloned();
    let mut resp = next.run(req).await;
    if let Some(id) = id {
        resp.headers_mut().insert("x-request-id", id);
    }
    resp
}

async fn not_found() -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; see docs/api.md",
    )
    .into_response()
}

async fn method_not_allowed(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    if resp.status() == StatusCode::METHOD_NOT_ALLOWED {
        return ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this endpoint does not take that method; see docs/api.md",
        )
        .into_response();
    }
    resp
}

/// Refuses a request at once when `max_in_flight` are already being handled (bounded work, no queue).
async fn limit_in_flight(
    axum::extract::State(permits): axum::extract::State<Arc<tokio::sync::Semaphore>>,
    req: Request,
    next: Next,
) -> Response {
    match permits.try_acquire_owned() {
        Ok(permit) => {
            let resp = next.run(req).await;
            drop(permit);
            resp
        }
        Err(_) => ApiError::unavailable(
            "overloaded",
            "this node is handling its maximum number of requests (`max_in_flight`); retry shortly or spread load over more nodes",
        )
        .into_response(),
    }
}

/// The public API router.
pub fn api_router(state: Shared) -> Router {
    let permits = Arc::new(tokio::sync::Semaphore::new(
        state.config.max_in_flight.max(1),
    ));
    let decisions = Router::new()
        .route("/access/v1/evaluation", post(decide::evaluation))
        .route("/access/v1/evaluations", post(decide::evaluations))
        .layer(DefaultBodyLimit::max(state.config.max_decision_body));
    let admin = Router::new()
        .route(
            "/v1/policies",
            get(admin::list_policies).put(admin::replace_policies),
        )
        .route(
            "/v1/policies/{id}",
            get(admin::get_policy)
                .put(admin::put_policy)
                .delete(admin::delete_policy),
        )
        .route(
            "/v1/schema",
            get(admin::get_schema)
                .put(admin::put_schema)
                .delete(admin::delete_schema),
        )
        .route(
            "/v1/entities",
            axum::routing::post(admin::upsert_entities)
                .put(admin::replace_entities)
                .delete(admin::delete_entities),
        )
        .route("/v1/entities/{type}/{id}", get(admin::get_entity))
        .route("/v1/cluster", get(cluster::status))
        .route("/v1/cluster/learners", post(cluster::add_learner))
        .route(
            "/v1/cluster/voters",
            axum::routing::put(cluster::set_voters),
        )
        .route(
            "/v1/cluster/members/{id}",
            axum::routing::delete(cluster::remove_member),
        )
        .route(
            "/v1/cluster/transfer-leader",
            post(cluster::transfer_leader),
        )
        .route("/v1/node/drain", post(cluster::drain))
        .route("/v1/keys", get(tokens::list_keys))
        .route("/v1/keys/rotate", post(tokens::rotate))
        .route("/v1/tokens", post(tokens::issue))
        .route("/v1/tokens/introspect", post(tokens::introspect))
        .route(
            "/v1/revocations",
            get(tokens::list_revocations).post(tokens::revoke),
        )
        .route(
            "/v1/credentials",
            get(credentials::list).post(credentials::create),
        )
        .route(
            "/v1/credentials/{id}",
            axum::routing::delete(credentials::revoke),
        )
        .layer(DefaultBodyLimit::max(state.config.max_admin_body));
    // Credentials are checked inside the in-flight limit: a slow verification holds a slot.
    let limited = decisions
        .merge(admin)
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authorize_within_time,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            permits,
            limit_in_flight,
        ));
    let watch = Router::new()
        .route("/v1/watch", get(watch::watch))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authorize,
        ));
    Router::new()
        .route("/livez", get(health::livez))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        // Monitoring, like /metrics: not behind `max_in_flight`.
        .route("/v1/decision-logs/status", get(decision_log::status))
        // Long-lived streams: bounded by their own limit (`max_watchers`), not `max_in_flight`.
        .merge(watch)
        .route(
            "/.well-known/authzen-configuration",
            get(decide::well_known),
        )
        .merge(limited)
        .fallback(not_found)
        .layer(axum::middleware::from_fn(method_not_allowed))
        .layer(axum::middleware::from_fn(echo_request_id))
        .with_state(state)
}

fn cluster_secret(config: &Config) -> String {
    if let Some(s) = &config.cluster_secret {
        return s.clone();
    }
    // A single node needs no peers; a random secret keeps its peer listener closed to everyone.
    use rand::Rng;
    let bytes: [u8; 32] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs a node until `shutdown` resolves. Binds the API and peer listeners from `config`.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let admin_secret = auth::bootstrap_secret(&config)?;
    if config.decision_bearer_tokens && auth::Auth::new(&config, false).decisions_required() {
        anyhow::bail!(
            "decision_bearer_tokens takes the subject's token from `Authorization`, where this node \
             also needs the caller's `decide` credential; pass tokens in \
             `subject.properties.token` instead, or set decisions_require_credential = false"
        );
    }
    // Certificates are checked before anything binds or starts: a bad file stops start-up with
    // the setting to fix.
    let tls = tls::Tls::load(&config.tls)?.map(Arc::new);
    let api_listener = TcpListener::bind(config.listen).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on {} (API): {e}; pick another with --listen",
            config.listen
        )
    })?;
    let peer_listener = TcpListener::bind(config.peer_listen).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on {} (peer): {e}; pick another with --peer-listen",
            config.peer_listen
        )
    })?;
    let health_listener = match config.health_listen {
        Some(addr) => Some(TcpListener::bind(addr).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on {addr} (health): {e}; pick another with --health-listen"
            )
        })?),
        None => None,
    };
    // Opened before Raft so that a bad `[decision_log]` table stops start-up before anything else
    // runs; the queue recovers (cuts a torn tail) here.
    let decision_log = if config.decision_log.enabled {
        let log = DecisionLog::open(&config.decision_log, config.node_id, &config.data_dir)
            .await
            .map_err(|e| {
                anyhow::anyhow!("cannot start decision logging: {e}; fix the `[decision_log]` table of the config file (docs/decision-logs.md)")
            })?;
        let status = log.status();
        tracing::info!(
            last_seq = status.last_seq,
            queued = status.queue.records,
            truncated_bytes = status.queue.truncated_at_open,
            sinks = status.sinks.len(),
            "decision logging on"
        );
        Some(log)
    } else {
        None
    };
    let info = NodeInfo {
        api_addr: config
            .advertise_api
            .clone()
            .unwrap_or_else(|| config.listen.to_string()),
        peer_addr: config
            .advertise_peer
            .clone()
            .unwrap_or_else(|| config.peer_listen.to_string()),
    };
    let secret = cluster_secret(&config);
    let bootstrap = match &config.initial_cluster {
        None if config.join => {
            if config.cluster_secret.is_none() {
                anyhow::bail!(
                    "--join needs the cluster's shared --cluster-secret (or VERDICT_CLUSTER_SECRET)"
                );
            }
            Bootstrap::Join
        }
        Some(_) if config.join => {
            anyhow::bail!(
                "--join and --initial-cluster exclude each other: a joining node is added later by the cluster"
            );
        }
        None => Bootstrap::Single,
        Some(spec) => {
            let members = config::parse_initial_cluster(spec)?;
            if !members.iter().any(|(id, _, _)| *id == config.node_id) {
                anyhow::bail!(
                    "--initial-cluster does not name this node's id {}; add it or pass --node-id",
                    config.node_id
                );
            }
            if members.len() > 1 && config.cluster_secret.is_none() {
                anyhow::bail!(
                    "a multi-node cluster needs a shared --cluster-secret (or VERDICT_CLUSTER_SECRET) on every node"
                );
            }
            Bootstrap::Static(
                members
                    .into_iter()
                    .map(|(id, api_addr, peer_addr)| {
                        (
                            id,
                            NodeInfo {
                                api_addr,
                                peer_addr,
                            },
                        )
                    })
                    .collect(),
            )
        }
    };
    let node = Node::start(NodeOptions {
        node_id: config.node_id,
        data_dir: config.data_dir.clone(),
        info,
        cluster_secret: secret.clone(),
        bootstrap,
        snapshot_every: config.snapshot_every,
        keep_log_behind_snapshot: config.keep_log_behind_snapshot,
        limits: Limits {
            max_lag: config.max_lag,
            max_leader_silence: Duration::from_millis(config.max_leader_silence_ms),
        },
        peer_tls: tls.as_ref().and_then(|t| t.peer_client()),
    })
    .await
    .map_err(|e| {
        anyhow::anyhow!(
            "cannot start the node with data dir `{}`: {e}",
            config.data_dir.display()
        )
    })?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let state: Shared = Arc::new(AppState {
        node: node.clone(),
        config: config.clone(),
        metrics: Metrics::default(),
        stale: AtomicBool::new(false),
        watchers: Arc::new(tokio::sync::Semaphore::new(config.max_watchers.max(1))),
        stopping: stop_rx.clone(),
        decision_log: decision_log.clone(),
        auth: auth::Auth::new(&config, admin_secret.is_some()),
    });
    if let Some(secret) = admin_secret {
        tokio::spawn(auth::bootstrap(state.clone(), secret));
    }
    let peer_app = Router::new()
        .route("/raft/{rpc}", post(peer::rpc))
        .layer(DefaultBodyLimit::max(512 * 1024 * 1024))
        .with_state(peer::PeerState {
            service: verdict_cluster::PeerService::new(node.clone()),
            secret: Arc::new(secret),
            state: state.clone(),
        });
    // Freshness is re-checked in the background so the decision path reads one flag.
    let monitor = tokio::spawn(state::watch_freshness(state.clone()));
    let health_app = Router::new()
        .route("/livez", get(health::livez))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .with_state(state.clone());
    let app = api_router(state);

    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    // Without `[tls]` no SIGHUP handler is installed: behaviour is as before TLS existed.
    let reloader = match &tls {
        Some(t) => Some(tls::reload_on_sighup(t.clone())?),
        None => None,
    };
    let (api_tls, peer_tls) = match &tls {
        Some(t) => (
            t.api().map(|c| (c, t.handshake_timeout())),
            t.peer_server().map(|c| (c, t.handshake_timeout())),
        ),
        None => (None, None),
    };
    tracing::info!(
        api = %config.listen,
        peer = %config.peer_listen,
        api_tls = api_tls.is_some(),
        peer_tls = peer_tls.is_some(),
        peer_client_auth = peer_tls.is_some() && config.tls.peer_client_auth,
        data_dir = %config.data_dir.display(),
        "verdict node serving"
    );
    let api = tls::serve(api_listener, app, api_tls, "API", stop_rx.clone());
    let peers = tls::serve(peer_listener, peer_app, peer_tls, "peer", stop_rx.clone());
    // Health and metrics on their own address too, when configured: plain HTTP for probes and
    // scrapers on a management network, never behind credentials or `max_in_flight`.
    let health = async {
        match health_listener {
            Some(l) => {
                tracing::info!(health = %config.health_listen.map(|a| a.to_string()).unwrap_or_default(), "health and metrics listener");
                tls::serve(l, health_app, None, "health", stop_rx.clone()).await
            }
            None => Ok(()),
        }
    };
    let (a, p, h) = tokio::join!(api, peers, health);
    // Shutdown order: listeners have stopped taking requests, so no decision is being answered;
    // write and fsync what the decision log still buffers (records unacknowledged by a sink stay
    // queued for the next start), then stop Raft (its storage flushes on every acknowledged
    // operation, so nothing acknowledged is left in memory).
    monitor.abort();
    if let Some(r) = reloader {
        r.abort();
    }
    if let Some(log) = &decision_log {
        match tokio::time::timeout(Duration::from_secs(10), log.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "decision log shutdown"),
            Err(_) => tracing::error!("decision log did not shut down within 10 s"),
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), node.shutdown()).await;
    a?;
    p?;
    h?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::Request as HttpRequest;
    use axum::http::StatusCode;
    use axum::routing::get;
    use axum::Router;
    use tokio::sync::Notify;
    use tower::ServiceExt;

    #[tokio::test]
    async fn requests_beyond_max_in_flight_are_refused_with_overloaded() {
        let release = Arc::new(Notify::new());
        let entered = Arc::new(Notify::new());
        let (r, e) = (release.clone(), entered.clone());
        let permits = Arc::new(tokio::sync::Semaphore::new(1));
        let app = Router::new()
            .route(
                "/slow",
                get(move || {
                    let (r, e) = (r.clone(), e.clone());
                    async move {
                        e.notify_one();
                        r.notified().await;
                        "done"
                    }
                }),
            )
            .route_layer(axum::middleware::from_fn_with_state(
                permits,
                super::limit_in_flight,
            ));
        let first = tokio::spawn(
            app.clone()
                .oneshot(HttpRequest::get("/slow").body(Body::empty()).unwrap()),
        );
        entered.notified().await;
        let second = app
            .clone()
            .oneshot(HttpRequest::get("/slow").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(second.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(second.headers()["retry-after"], "1");
        let body = axum::body::to_bytes(second.into_body(), 1 << 16)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["code"], "overloaded");
        release.notify_one();
        assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::OK);
    }
}
