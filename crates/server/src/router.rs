//! The three routers a node serves, one per listener, and the middleware they share. Every router
//! is served behind [`crate::edge::Edge`], so that no request, on any listener, can take a
//! connection down with a panic.

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::IntoResponse;
use axum::response::Response;
use axum::routing::get;
use axum::routing::post;
use axum::Router;

use crate::auth;
use crate::edge::Edge;
use crate::error::ApiError;
use crate::routes::admin;
use crate::routes::capacity;
use crate::routes::cluster;
use crate::routes::credentials;
use crate::routes::decide;
use crate::routes::decision_log;
use crate::routes::drain;
use crate::routes::health;
use crate::routes::peer;
use crate::routes::tokens;
use crate::routes::upgrade;
use crate::routes::watch;
use crate::state::Shared;

async fn not_found() -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; see docs/api.md",
    )
    .into_response()
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
pub fn api_router(state: Shared) -> Edge<Router> {
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
        .route(
            "/v1/entities/{type}/{id}/parents",
            post(admin::edit_parents),
        )
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
        .route("/v1/cluster/capacity", get(capacity::capacity))
        .route("/v1/cluster/upgrade", get(upgrade::status))
        .route("/v1/cluster/upgrade/finalize", post(upgrade::finalize))
        .route(
            "/v1/cluster/members/{id}/drain",
            post(drain::drain_member).delete(drain::undrain_member),
        )
        .route("/v1/node/drain", post(drain::drain).delete(drain::undrain))
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
    let router = Router::new()
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
        .with_state(state.clone());
    guarded(router, state)
}

/// The peer listener's router: Raft RPCs, forwarded writes and status calls between members.
/// The cluster secret is checked by a layer over every route, before any handler (and so before
/// any body is read); each RPC then reads its body up to its own limit (`peer::body_limit`).
pub fn peer_router(state: Shared) -> Edge<Router> {
    let peer_state = peer::PeerState {
        service: verdict_cluster::PeerService::new(state.node.clone()),
        secret: state.peer_secret.clone(),
        state: state.clone(),
    };
    let router = Router::new()
        .route("/raft/{rpc}", post(peer::rpc))
        // JSON calls newer than the Raft RPCs (`verdict_cluster::peer_call`); no bodies.
        .route(
            drain::PEER_DRAIN_PATH,
            post(drain::peer_drain).delete(drain::peer_undrain),
        )
        .route(capacity::PEER_CAPACITY_PATH, get(capacity::peer_figures))
        .layer(axum::middleware::from_fn_with_state(
            peer_state.clone(),
            peer::require_cluster_secret,
        ))
        .with_state(peer_state);
    guarded(router, state)
}

/// The health listener's router: probes and scrapers only, never behind credentials or
/// `max_in_flight`.
pub fn health_router(state: Shared) -> Edge<Router> {
    let router = Router::new()
        .route("/livez", get(health::livez))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .with_state(state.clone());
    guarded(router, state)
}

/// What a listener serves: `router` behind the [`Edge`] (panics caught, request ids echoed, `405`
/// as problem+json), around the whole router so that routing and every route's middleware are
/// covered. Public so that tests can put a deliberately panicking route behind it.
pub fn guarded(router: Router, state: Shared) -> Edge<Router> {
    Edge::new(router, state)
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
