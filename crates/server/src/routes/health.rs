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

use verdict_decision_log::metrics::SinkStatus;
use verdict_decision_log::Status;

use crate::state::Shared;

/// `GET /livez`: the process is up.
pub async fn livez() -> Response {
    Json(json!({"status": "alive"})).into_response()
}

/// The reason this node is not ready, if any.
pub fn not_ready_reason(state: &Shared) -> Option<String> {
    state.node.not_ready_reason()
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
        "verdict_peer_rpcs_refused_total",
        "counter",
        "Peer RPCs refused for a missing or wrong cluster secret.",
        &[("", m.peer_refused.load(Ordering::Relaxed))],
    );
    line(
        "verdict_decisions_refused_stale_total",
        "counter",
        "Decisions refused because the node may be stale (fail_closed).",
        &[("", m.decisions_stale.load(Ordering::Relaxed))],
    );
    line(
        "verdict_decisions_refused_unlogged_total",
        "counter",
        "Decision requests refused because a decision that must be logged could not be.",
        &[("", m.decisions_unlogged.load(Ordering::Relaxed))],
    );
    line(
        "verdict_auth_failures_total",
        "counter",
        "Requests refused with 401 for a malformed, unknown, revoked or wrong credential.",
        &[("", m.auth_failures.load(Ordering::Relaxed))],
    );
    line(
        "verdict_auth_forbidden_total",
        "counter",
        "Requests refused with 403: a valid credential without the needed scope.",
        &[("", m.auth_forbidden.load(Ordering::Relaxed))],
    );
    line(
        "verdict_panics_total",
        "counter",
        "Requests whose handling panicked (answered 500 internal); any is a bug to report.",
        &[("", m.panics.load(Ordering::Relaxed))],
    );
    line(
        "verdict_apply_lag_entries",
        "gauge",
        "Committed log entries not yet applied here.",
        &[("", s.committed.saturating_sub(s.applied))],
    );
    line(
        "verdict_ready",
        "gauge",
        "1 if /readyz would answer 200.",
        &[("", u64::from(state.node.not_ready_reason().is_none()))],
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
    state.connections.render(&mut out);
    state.capacity.render(&mut out);
    if let Some(log) = &state.decision_log {
        decision_log_metrics(&mut out, &log.status());
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// The decision log's figures (only when logging is on): queue depth, age, per-sink progress and
/// drops by reason.
fn decision_log_metrics(out: &mut String, s: &Status) {
    let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    let one = |v: u64| [(String::new(), v)];
    let q = &s.queue;
    family(
        "verdict_decision_log_appended_total",
        "counter",
        "Records accepted into the decision-log queue since start.",
        &one(s.appended),
    );
    family(
        "verdict_decision_log_last_seq",
        "gauge",
        "Highest decision-log sequence assigned.",
        &one(s.last_seq),
    );
    family(
        "verdict_decision_log_durable_seq",
        "gauge",
        "Highest decision-log sequence fsynced.",
        &one(s.durable_seq),
    );
    family(
        "verdict_decision_log_queue_records",
        "gauge",
        "Records stored in the decision-log queue.",
        &one(q.records),
    );
    family(
        "verdict_decision_log_queue_unacknowledged_records",
        "gauge",
        "Records some sink has not acknowledged.",
        &one(q.unacknowledged),
    );
    family(
        "verdict_decision_log_queue_bytes",
        "gauge",
        "Bytes in the decision-log queue (on disk plus waiting to be written).",
        &one(q.bytes),
    );
    family(
        "verdict_decision_log_queue_max_bytes",
        "gauge",
        "Configured maximum of the decision-log queue.",
        &one(q.max_bytes),
    );
    family(
        "verdict_decision_log_queue_segments",
        "gauge",
        "Segment files of the decision-log queue.",
        &one(q.segments),
    );
    family(
        "verdict_decision_log_oldest_unacked_age_milliseconds",
        "gauge",
        "Age of the oldest record a sink has read but not had acknowledged (0: all caught up).",
        &one(q.oldest_unacked_age_ms.unwrap_or(0)),
    );
    let d = &s.drops;
    let drops = [
        ("queue_full", d.queue_full),
        ("evicted", d.evicted),
        ("block_timeout", d.block_timeout),
        ("write_failed", d.write_failed),
        ("retries_exhausted", d.retries_exhausted),
        ("corrupt", d.corrupt),
    ];
    family(
        "verdict_decision_log_drops_total",
        "counter",
        "Decision records not delivered, by reason.",
        &drops.map(|(reason, v)| (format!("{{reason=\"{reason}\"}}"), v)),
    );
    let per_sink = |f: fn(&SinkStatus) -> u64| -> Vec<(String, u64)> {
        s.sinks
            .iter()
            .map(|k| (format!("{{sink=\"{}\"}}", label(&k.name)), f(k)))
            .collect()
    };
    family(
        "verdict_decision_log_sink_lag_records",
        "gauge",
        "Records appended but not yet acknowledged by the sink.",
        &per_sink(|k| k.lag),
    );
    family(
        "verdict_decision_log_sink_acked_seq",
        "gauge",
        "Highest sequence the sink acknowledged.",
        &per_sink(|k| k.acked_seq),
    );
    family(
        "verdict_decision_log_sink_delivered_total",
        "counter",
        "Records the sink acknowledged since start.",
        &per_sink(|k| k.delivered),
    );
    family(
        "verdict_decision_log_sink_retries_total",
        "counter",
        "Failed delivery attempts of the sink since start.",
        &per_sink(|k| k.retries),
    );
    family(
        "verdict_decision_log_sink_oldest_unacked_age_milliseconds",
        "gauge",
        "Age of the oldest record the sink has read but not had acknowledged (0: caught up).",
        &per_sink(|k| k.oldest_unacked_age_ms.unwrap_or(0)),
    );
}

/// A Prometheus label value: backslash, double quote and newline escaped.
fn label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::label;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("file:/var/log/d.ndjson"), "file:/var/log/d.ndjson");
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
