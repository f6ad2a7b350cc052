//! Health, readiness, metrics and cluster status. None of these depend on Verdict's own
//! authorization: monitoring must work when the decision path does not.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::response::Response;
use axum::Json;
use serde_json::json;

use crate::state::Shared;

/// `GET /livez`: the process is up.
pub async fn livez() -> Response {
    Json(json!({"status": "alive"})).into_response()
}

/// The reason this node is not ready, if any.
pub fn not_ready_reason(state: &Shared) -> Option<String> {
    if state.draining.load(Ordering::Relaxed) {
        return Some("draining".into());
    }
    let s = state.node.status();
    if let Err(e) = s.running {
        return Some(format!("raft stopped: {e}"));
    }
    if s.leader.is_none() {
        return Some("no leader is known".into());
    }
    if s.applied < s.committed {
        return Some(format!(
            "recovering: applied {} of {} committed",
            s.applied, s.committed
        ));
    }
    None
}

/// `GET /readyz`.
pub async fn readyz(State(state): State<Shared>) -> Response {
    let version = state.node.published().load().version();
    match not_ready_reason(&state) {
        None => Json(json!({"ready": true, "version": version})).into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "reason": reason, "version": version})),
        )
            .into_response(),
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<Shared>) -> Response {
    let m = &state.metrics;
    let s = state.node.status();
    let snap = state.node.published().load_full();
    let mut out = String::new();
    let mut line = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    line(
        "verdict_decisions_total",
        "counter",
        "Decisions answered, by outcome.",
        &[
            (
                "{outcome=\"allow\"}",
                m.decisions_allow.load(Ordering::Relaxed),
            ),
            (
                "{outcome=\"deny\"}",
                m.decisions_deny.load(Ordering::Relaxed),
            ),
            (
                "{outcome=\"error\"}",
                m.decisions_error.load(Ordering::Relaxed),
            ),
        ],
    );
    line(
        "verdict_decision_latency_microseconds_sum",
        "counter",
        "Sum of single-decision handler latencies.",
        &[("", m.decision_micros.load(Ordering::Relaxed))],
    );
    line(
        "verdict_writes_total",
        "counter",
        "Writes, by result.",
        &[
            (
                "{result=\"committed\"}",
                m.writes_ok.load(Ordering::Relaxed),
            ),
            (
                "{result=\"rejected\"}",
                m.writes_rejected.load(Ordering::Relaxed),
            ),
        ],
    );
    line(
        "verdict_applied_version",
        "gauge",
        "Version of the published snapshot.",
        &[("", snap.version())],
    );
    line(
        "verdict_raft_committed_index",
        "gauge",
        "Highest log index known committed.",
        &[("", s.committed)],
    );
    line(
        "verdict_raft_last_log_index",
        "gauge",
        "Last log index held.",
        &[("", s.last_log_index)],
    );
    line(
        "verdict_raft_term",
        "gauge",
        "Current Raft term.",
        &[("", s.term)],
    );
    line(
        "verdict_raft_is_leader",
        "gauge",
        "1 if this node is the leader.",
        &[("", u64::from(s.is_leader))],
    );
    line(
        "verdict_policies",
        "gauge",
        "Stored policies.",
        &[("", snap.policy_count() as u64)],
    );
    line(
        "verdict_entities",
        "gauge",
        "Stored entities.",
        &[("", snap.entity_count() as u64)],
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// `GET /v1/cluster`: members, leader, term and this node's applied version.
pub async fn cluster(State(state): State<Shared>) -> Response {
    let s = state.node.status();
    let members: Vec<_> = s
        .members
        .iter()
        .map(|(id, info, voter)| {
            json!({"id": id, "api_addr": info.api_addr, "peer_addr": info.peer_addr,
                   "role": if *voter {"voter"} else {"learner"}})
        })
        .collect();
    Json(json!({
        "node_id": s.id,
        "leader": s.leader,
        "term": s.term,
        "members": members,
        "nodes": [{"id": s.id, "applied_version": s.applied, "committed": s.committed, "last_log_index": s.last_log_index}],
    }))
    .into_response()
}
