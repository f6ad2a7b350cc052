//! The peer listener: Raft RPCs from other members, authenticated with the cluster secret.
//!
//! Nothing is read from a request's body before its cluster secret is checked
//! ([`require_cluster_secret`], a layer over every peer route), and then only up to the limit of
//! its RPC ([`body_limit`]): an unauthenticated client costs the node a header's worth of memory,
//! whatever it sends. With `tls.peer_client_auth` the client certificate is checked earlier still,
//! in the TLS handshake, before any HTTP byte is read.

use axum::body::Body;
use axum::extract::Path;
use axum::extract::Request;
use axum::extract::State;
use axum::http::header;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::IntoResponse;
use axum::response::Response;
use http_body_util::BodyExt;
use http_body_util::LengthLimitError;
use http_body_util::Limited;
use subtle::ConstantTimeEq;
use verdict_cluster::network::SECRET_HEADER;
use verdict_cluster::PeerService;

use crate::config::Config;

/// Body limit of the RPCs that carry a vote, a few ids or a member's addresses (`vote`,
/// `transfer-leader`, `membership`, `status`).
pub const SMALL_RPC_LIMIT: usize = 64 * 1024;

/// Largest encoding of a forwarded admin write whose JSON body is at most `max_admin_body`:
/// bincode spells every string with an 8-byte length where JSON spends two quotes, so a body of
/// tiny strings grows up to about four times; plus room for the envelope.
pub fn forwarded_write_limit(max_admin_body: usize) -> usize {
    max_admin_body.saturating_mul(4).saturating_add(64 * 1024)
}

/// The most body bytes peer RPC `rpc` may carry; `None` for an RPC that does not exist.
pub fn body_limit(config: &Config, rpc: &str) -> Option<usize> {
    match rpc {
        "append" => Some(config.max_peer_append_bytes),
        "snapshot" => Some(config.max_peer_snapshot_bytes),
        "client-write" => Some(forwarded_write_limit(config.max_admin_body)),
        "vote" | "transfer-leader" | "membership" | "status" => Some(SMALL_RPC_LIMIT),
        _ => None,
    }
}

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

/// Middleware over every peer route: `401` unless the request carries the cluster secret,
/// decided on the headers alone (the body is never polled, so it is never buffered).
pub async fn require_cluster_secret(
    State(state): State<PeerState>,
    req: Request,
    next: Next,
) -> Response {
    let given = req
        .headers()
        .get(SECRET_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !bool::from(given.ct_eq(state.secret.as_bytes())) {
        crate::state::Metrics::inc(&state.state.metrics.peer_refused);
        tracing::warn!(
            path = req.uri().path(),
            "peer RPC refused: wrong or missing cluster secret"
        );
        // The client may still be sending its body: say so, and hyper closes the connection
        // rather than reading the rest.
        return (
            StatusCode::UNAUTHORIZED,
            [(header::CONNECTION, "close")],
            "cluster secret required",
        )
            .into_response();
    }
    next.run(req).await
}

/// `POST /raft/{rpc}`, behind [`require_cluster_secret`].
pub async fn rpc(
    State(state): State<PeerState>,
    Path(rpc): Path<String>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Response {
    // The newest peer message format the caller reads; none from the release before levels.
    let peer_reads = headers
        .get(verdict_cluster::levels::PEER_READS_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u8>().ok());
    let Some(limit) = body_limit(&state.state.config, &rpc) else {
        return (StatusCode::NOT_FOUND, format!("no peer RPC `{rpc}`")).into_response();
    };
    let bytes = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => {
            tracing::warn!(
                rpc,
                limit,
                "peer RPC refused: body over the limit of its RPC"
            );
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                [(header::CONNECTION, "close")],
                format!(
                    "the `{rpc}` body is over its limit of {limit} bytes (docs/security.md, \
                     \"Limits\"); raise max_peer_append_bytes or max_peer_snapshot_bytes on \
                     every member if this is legitimate"
                ),
            )
                .into_response();
        }
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("cannot read the body: {e}"),
            )
                .into_response()
        }
    };
    match state.service.handle(&rpc, &bytes, peer_reads).await {
        Ok(bytes) => bytes.into_response(),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            (StatusCode::FORBIDDEN, e.to_string()).into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_peer_rpc_has_a_limit_and_small_ones_stay_small() {
        let c = Config::default();
        for rpc in [
            "append",
            "snapshot",
            "client-write",
            "vote",
            "transfer-leader",
            "membership",
            "status",
        ] {
            assert!(body_limit(&c, rpc).is_some(), "{rpc}");
        }
        assert_eq!(body_limit(&c, "vote"), Some(SMALL_RPC_LIMIT));
        assert_eq!(body_limit(&c, "nope"), None);
        assert!(body_limit(&c, "client-write").unwrap() >= c.max_admin_body);
    }
}
