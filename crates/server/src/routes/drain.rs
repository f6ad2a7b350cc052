//! Draining a node before it is stopped or upgraded: it turns not-ready at once (load balancers
//! stop sending to it), hands leadership to a voter that is ready and not draining itself, and
//! keeps answering whatever is still sent to it. Undraining makes it ready again.
//!
//! Where the draining state lives: in the draining process only, and other members learn it from
//! the node's own report (`not_ready: "draining"`) over the status RPC, the same call that tells
//! them whether it is ready at all. Not in the replicated state, because draining is a property of
//! one process, not of the data: a log entry would outlive the process it was about (a restarted,
//! upgraded node would come back drained), would need a leader and a quorum at the moment an
//! operator takes a node out, and would be a new log format older releases cannot apply during the
//! very upgrade it is for. The leader choosing a successor asks every voter anyway, because it
//! needs readiness too (lag, leader contact), which is not replicated either. A restart ends a
//! drain; every release reports `draining` the same way, so mixed clusters agree.

use std::time::Duration;

use axum::body::Body;
use axum::extract::Path;
use axum::extract::State;
use axum::http::header;
use axum::http::Method;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::response::Response;
use axum::Json;
use serde_json::json;
use verdict_cluster::MembershipOp;
use verdict_cluster::PeerAnswer;

use crate::error::ApiError;
use crate::routes::cluster::membership_error;
use crate::state::Shared;

/// The path of the drain call on the peer listener (`POST` drains, `DELETE` undrains).
pub const PEER_DRAIN_PATH: &str = "/node/drain";

/// Longest a drain relayed to another member may take: its voters' reports (1 s) plus a
/// leader transfer (5 s), with room.
const RELAY_TIMEOUT: Duration = Duration::from_secs(15);

/// Why no voter can take over leadership from this node.
#[derive(Debug)]
pub enum NoSuccessor {
    /// There is no other voter at all.
    Alone,
    /// There are other voters, none ready: one phrase per voter saying why.
    NoneReady(Vec<String>),
}

/// The voter this leader should hand leadership to: among the other voters that report
/// themselves ready (so not draining, in contact with the leader and caught up within
/// `max_lag`), the one that has applied the most (the lowest id among equals).
pub async fn successor(state: &Shared) -> Result<u64, NoSuccessor> {
    let me = state.node.id();
    let mut best: Option<(u64, u64)> = None;
    let mut why_not = Vec::new();
    for (id, _, voter, report) in state.node.cluster().await {
        if id == me || !voter {
            continue;
        }
        match report {
            None => why_not.push(format!("node {id} did not answer")),
            Some(r) => match r.not_ready {
                Some(reason) => why_not.push(format!("node {id} is not ready ({reason})")),
                None if best.is_none_or(|(_, applied)| r.applied > applied) => {
                    best = Some((id, r.applied));
                }
                None => {}
            },
        }
    }
    match best {
        Some((id, _)) => Ok(id),
        None if why_not.is_empty() => Err(NoSuccessor::Alone),
        None => Err(NoSuccessor::NoneReady(why_not)),
    }
}

/// What a hand-off did.
pub enum HandOff {
    /// This node does not lead: nothing to hand over.
    NotLeader,
    /// Leadership moved to this voter.
    To(u64),
    /// No voter could take it.
    Nobody(NoSuccessor),
}

/// If this node leads, hands leadership to [`successor`] and waits (bounded, 5 s) until it
/// leads. One hand-off at a time per node.
pub async fn hand_off(state: &Shared) -> Result<HandOff, ApiError> {
    let _one = state.handing_off.lock().await;
    if !state.node.is_leader() {
        return Ok(HandOff::NotLeader);
    }
    let to = match successor(state).await {
        Ok(to) => to,
        Err(why) => return Ok(HandOff::Nobody(why)),
    };
    match state
        .node
        .change_membership(MembershipOp::TransferLeader { to })
        .await
    {
        Ok(_) => Ok(HandOff::To(to)),
        Err(e) => {
            let e = membership_error(e);
            Err(ApiError::unavailable(
                "handoff_failed",
                format!(
                    "this node is draining, but handing leadership to node {to} failed: {}; it \
                     keeps trying every few seconds, or drain again",
                    e.detail
                ),
            ))
        }
    }
}

/// Drains this node (the handlers of `POST /v1/node/drain` and of the peer call): not ready at
/// once, leadership handed over if it leads. A leader whose other voters are all unready or
/// draining is not drained: `409 no_ready_voter` says which and why, instead of bouncing
/// leadership between draining nodes.
pub async fn drain_here(state: &Shared) -> Response {
    let was_draining = state.node.is_draining();
    state.node.set_draining();
    let transferred_to = match hand_off(state).await {
        Ok(HandOff::NotLeader) | Ok(HandOff::Nobody(NoSuccessor::Alone)) => None,
        Ok(HandOff::To(to)) => Some(to),
        Ok(HandOff::Nobody(NoSuccessor::NoneReady(why))) => {
            let now = if was_draining {
                "It stays draining, and leading, as before"
            } else {
                state.node.clear_draining();
                "This node was not drained"
            };
            return ApiError::new(
                StatusCode::CONFLICT,
                "no_ready_voter",
                format!(
                    "node {} leads and no other voter can take over: {}. {now}; undrain a voter \
                     (`verdict cluster undrain ID`) or wait until one is ready, then drain again",
                    state.node.id(),
                    why.join(", ")
                ),
            )
            .into_response();
        }
        Err(e) => return e.into_response(),
    };
    tracing::info!(transferred_to, "draining");
    let s = state.node.status();
    Json(json!({
        "node_id": s.id,
        "draining": true,
        "is_leader": s.is_leader,
        "leader": s.leader,
        "transferred_to": transferred_to,
    }))
    .into_response()
}

/// Undrains this node (`DELETE /v1/node/drain` and the peer call): ready again as soon as the
/// freshness checks pass.
pub async fn undrain_here(state: &Shared) -> Response {
    state.node.clear_draining();
    tracing::info!("undrained");
    let reason = state.node.not_ready_reason();
    Json(json!({
        "node_id": state.node.id(),
        "draining": false,
        "ready": reason.is_none(),
        "not_ready_reason": reason,
    }))
    .into_response()
}

/// `POST /v1/node/drain`: drains the node called.
pub async fn drain(State(state): State<Shared>) -> Response {
    drain_here(&state).await
}

/// `DELETE /v1/node/drain`: undrains the node called.
pub async fn undrain(State(state): State<Shared>) -> Response {
    undrain_here(&state).await
}

/// `POST /v1/cluster/members/{id}/drain`: drains member `id`, through any node.
pub async fn drain_member(State(state): State<Shared>, Path(id): Path<String>) -> Response {
    on_member(&state, &id, Method::POST).await
}

/// `DELETE /v1/cluster/members/{id}/drain`: undrains member `id`, through any node.
pub async fn undrain_member(State(state): State<Shared>, Path(id): Path<String>) -> Response {
    on_member(&state, &id, Method::DELETE).await
}

/// `POST` / `DELETE /node/drain` on the peer listener: another member relays a drain here.
pub async fn peer_drain(State(peer): State<crate::routes::peer::PeerState>) -> Response {
    drain_here(&peer.state).await
}

/// See [`peer_drain`].
pub async fn peer_undrain(State(peer): State<crate::routes::peer::PeerState>) -> Response {
    undrain_here(&peer.state).await
}

/// Runs a drain (`POST`) or undrain (`DELETE`) on member `raw_id`: here if it is this node, else
/// relayed over the peer listener and its answer passed back as it is.
async fn on_member(state: &Shared, raw_id: &str, method: Method) -> Response {
    let Ok(id) = raw_id.parse::<u64>() else {
        return ApiError::bad_request(
            "invalid_request",
            format!(
                "`{}` is not a node id",
                verdict_engine::ids::truncate(raw_id, 32)
            ),
        )
        .into_response();
    };
    let drain = method == Method::POST;
    if id == state.node.id() {
        return if drain {
            drain_here(state).await
        } else {
            undrain_here(state).await
        };
    }
    let Some((info, _)) = state.node.member(id) else {
        let members: Vec<String> = state
            .node
            .status()
            .members
            .iter()
            .map(|(m, _, _)| m.to_string())
            .collect();
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_node",
            format!(
                "node {id} is not a member of this cluster (members: {})",
                members.join(", ")
            ),
        )
        .into_response();
    };
    let answer = state
        .node
        .peer_caller()
        .call(&info.peer_addr, method, PEER_DRAIN_PATH, RELAY_TIMEOUT)
        .await;
    match answer {
        PeerAnswer::Answered { status, body } => relay(status, &body),
        PeerAnswer::NotServed => ApiError::new(
            StatusCode::CONFLICT,
            "member_release_too_old",
            format!(
                "node {id} runs an older release that cannot be {} through another node; call \
                 it at its own address: `verdict --url http://{} cluster {}`",
                if drain { "drained" } else { "undrained" },
                info.api_addr,
                if drain { "drain" } else { "undrain" },
            ),
        )
        .into_response(),
        PeerAnswer::Unreachable(e) => ApiError::unavailable(
            "member_unreachable",
            format!("node {id} could not be asked: {e}; retry, or call it at its own address"),
        )
        .into_response(),
    }
}

/// A member's answer passed back unchanged (a problem stays a problem).
fn relay(status: u16, body: &serde_json::Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = if status.is_success() {
        "application/json"
    } else {
        "application/problem+json"
    };
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp
}

/// While this node drains, keeps leadership away from it: a draining node can still win an
/// election (its leader failed, or it was chosen an instant before it started draining), and a
/// draining leader is what stops writes when it is then stopped. Checks every second, tries at
/// most every 3 s, and only ever hands over to a voter that is ready and not draining.
pub async fn keep_leadership_away(state: Shared) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_try: Option<tokio::time::Instant> = None;
    loop {
        tick.tick().await;
        // Once the node is stopping, the stop sequence hands over itself, after the requests in
        // flight have finished (a hand-off under a pending write makes its outcome unknown).
        if !state.node.is_draining() || !state.node.is_leader() || *state.stop.borrow() {
            continue;
        }
        if last_try.is_some_and(|t| t.elapsed() < Duration::from_secs(3)) {
            continue;
        }
        last_try = Some(tokio::time::Instant::now());
        match hand_off(&state).await {
            Ok(HandOff::To(to)) => {
                tracing::info!(to, "draining leader handed leadership over")
            }
            Ok(HandOff::Nobody(NoSuccessor::NoneReady(why))) => {
                tracing::warn!(why = %why.join(", "), "draining leader: no voter can take over yet")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e.detail, "draining leader: hand-off failed"),
        }
    }
}
