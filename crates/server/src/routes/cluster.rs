//! Cluster status and membership: add learners, set voters, remove members, move leadership.
//! (Draining is `drain`, the capacity pre-flight `capacity`.)
//! Membership changes run on the leader; any node accepts them and forwards.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::Path;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;
use serde_json::Value;
use verdict_cluster::MembershipError;
use verdict_cluster::MembershipOp;
use verdict_cluster::NodeInfo;

use crate::body;
use crate::error::ApiError;
use crate::state::Shared;

/// `GET /v1/cluster`: leader, term, voters, learners, removed ids, and every member's own report
/// (applied version, leader it knows, readiness), asked over the peer listener with a 1 s limit.
pub async fn status(State(state): State<Shared>) -> Response {
    let s = state.node.status();
    let members: Vec<Value> = state
        .node
        .cluster()
        .await
        .into_iter()
        .map(|(id, info, voter, report)| {
            let mut m = json!({
                "id": id,
                "role": if voter { "voter" } else { "learner" },
                "api_addr": info.api_addr,
                "peer_addr": info.peer_addr,
                "is_leader": s.leader == Some(id),
                "reachable": report.is_some(),
            });
            if let Some(r) = report {
                body::set(&mut m, "applied_version", json!(r.applied));
                body::set(&mut m, "term", json!(r.term));
                body::set(&mut m, "leader", json!(r.leader));
                body::set(&mut m, "ready", json!(r.not_ready.is_none()));
                // A member of the release before levels reports neither: level 1, release unknown.
                body::set(&mut m, "release", json!(r.release));
                body::set(&mut m, "supported_level", json!(r.supported_level));
                if let Some(reason) = r.not_ready {
                    body::set(&mut m, "not_ready_reason", json!(reason));
                }
            }
            m
        })
        .collect();
    let ids = |voter: bool| -> Vec<u64> {
        s.members
            .iter()
            .filter(|(_, _, v)| *v == voter)
            .map(|(id, _, _)| *id)
            .collect()
    };
    let body = json!({
        "node_id": s.id,
        "leader": s.leader,
        "term": s.term,
        "committed": s.committed,
        "applied_version": s.applied,
        "voters": ids(true),
        "learners": ids(false),
        "removed": state.node.removed_ids(),
        "active_level": state.node.active_level(),
        "members": members,
    });
    body::versioned(body, s.applied)
}

fn parse<T: for<'de> Deserialize<'de>>(
    state: &Shared,
    raw: Result<Bytes, BytesRejection>,
    shape: &str,
) -> Result<T, ApiError> {
    let raw = body::bytes(raw, state.config.max_admin_body)?;
    body::from_object(body::json(&raw)?, shape, "invalid_request")
}

async fn run(state: &Shared, op: MembershipOp) -> Response {
    match state.node.change_membership(op).await {
        Ok(version) => body::versioned(json!({"version": version}), version),
        Err(e) => membership_error(e).into_response(),
    }
}

/// The answer to a refused membership change (also a refused leader transfer during a drain).
pub(crate) fn membership_error(e: MembershipError) -> ApiError {
    match e {
        MembershipError::Invalid(m) => ApiError::bad_request("invalid_membership", m),
        MembershipError::Conflict(m) => ApiError::new(
            StatusCode::CONFLICT,
            "membership_change_in_progress",
            format!("{m}; wait for the running change to finish and retry"),
        ),
        MembershipError::Unavailable(m) => ApiError::unavailable(
            "no_leader",
            format!("the membership change could not be made now: {m}; retry shortly"),
        ),
    }
}

#[derive(Deserialize)]
struct Learner {
    id: u64,
    api_addr: String,
    peer_addr: String,
}

/// `POST /v1/cluster/learners` `{id, api_addr, peer_addr}`: adds a node (started with `--join`) as
/// a learner. It starts receiving the log at once; watch `GET /v1/cluster` until its applied
/// version reaches the leader's, then promote it with `PUT /v1/cluster/voters`.
pub async fn add_learner(
    State(state): State<Shared>,
    raw: Result<Bytes, BytesRejection>,
) -> Response {
    let learner: Learner = match parse(
        &state,
        raw,
        r#"{"id": N, "api_addr": "host:port", "peer_addr": "host:port"}"#,
    ) {
        Ok(l) => l,
        Err(e) => return e.into_response(),
    };
    if learner.id == 0 {
        return ApiError::bad_request("invalid_membership", "node ids start at 1").into_response();
    }
    let op = MembershipOp::AddLearner {
        id: learner.id,
        info: NodeInfo {
            api_addr: learner.api_addr,
            peer_addr: learner.peer_addr,
        },
    };
    run(&state, op).await
}

#[derive(Deserialize)]
struct Voters {
    ids: Vec<u64>,
}

/// `PUT /v1/cluster/voters` `{ids: […]}`: exactly these members vote; voters left out are removed.
pub async fn set_voters(
    State(state): State<Shared>,
    raw: Result<Bytes, BytesRejection>,
) -> Response {
    match parse::<Voters>(&state, raw, r#"{"ids": [1, 2, 3]}"#) {
        Ok(v) => run(&state, MembershipOp::SetVoters { ids: v.ids }).await,
        Err(e) => e.into_response(),
    }
}

/// `DELETE /v1/cluster/members/{id}`: removes a voter or learner for good.
pub async fn remove_member(State(state): State<Shared>, Path(id): Path<String>) -> Response {
    match id.parse::<u64>() {
        Ok(id) => run(&state, MembershipOp::Remove { id }).await,
        Err(_) => ApiError::bad_request(
            "invalid_request",
            format!(
                "`{}` is not a node id",
                verdict_engine::ids::truncate(&id, 32)
            ),
        )
        .into_response(),
    }
}

#[derive(Deserialize)]
struct Transfer {
    to: u64,
}

/// `POST /v1/cluster/transfer-leader` `{to}`: hands leadership to another voter.
pub async fn transfer_leader(
    State(state): State<Shared>,
    raw: Result<Bytes, BytesRejection>,
) -> Response {
    match parse::<Transfer>(&state, raw, r#"{"to": 2}"#) {
        Ok(t) => run(&state, MembershipOp::TransferLeader { to: t.to }).await,
        Err(e) => e.into_response(),
    }
}
