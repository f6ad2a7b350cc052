//! The peer listener: Raft RPCs from other members, authenticated with the cluster secret.

use axum::body::Bytes;
use axum::extract::Path;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::response::Response;
use subtle::ConstantTimeEq;
use verdict_cluster::network::SECRET_HEADER;
use verdict_cluster::PeerService;

/// State of the peer listener.
#[derive(Clone)]
pub struct PeerState {
    /// The local Raft RPC handler.
    pub service: PeerService,
    /// The expected cluster secret.
    pub secret: std::sync::Arc<String>,
    /// The node's shared state (for counting refusals).
    pub state: crate::state::Shared,
}

/// `POST /raft/{rpc}`.
pub async fn rpc(
    State(state): State<PeerState>,
    Path(rpc): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let given = headers
        .get(SECRET_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !bool::from(given.ct_eq(state.secret.as_bytes())) {
        crate::state::Metrics::inc(&state.state.metrics.peer_refused);
        tracing::warn!(rpc, "peer RPC refused: wrong or missing cluster secret");
        return (StatusCode::UNAUTHORIZED, "cluster secret required").into_response();
    }
    match state.service.handle(&rpc, &body).await {
        Ok(bytes) => bytes.into_response(),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            (StatusCode::FORBIDDEN, e.to_string()).into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}
