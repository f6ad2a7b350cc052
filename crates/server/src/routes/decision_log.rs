//! Decision logs on the HTTP side: turning an answered decision into a [`Record`], appending it
//! before the answer leaves, and `GET /v1/decision-logs/status`. The queue, masking and sinks are
//! `verdict-decision-log`; docs/decision-logs.md has the guarantee.
//!
//! The rule: a decision the configuration says must be logged is answered only once its record is
//! queued (and, under `fsync = "always"`, fsynced). If that fails the request fails with 503
//! `decision_log_unavailable`, never with a decision nobody can audit. A record dropped by
//! `when_full = "drop_newest"` is the configured exception: the decision is answered (without an
//! id) and the drop is counted by the log.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::response::Response;
use axum::Json;
use serde_json::Map;
use serde_json::Value;
use verdict_decision_log::record::BATCH_LINE_OVERHEAD;
use verdict_decision_log::record::DECISION_LINE_OVERHEAD;
use verdict_decision_log::AppendError;
use verdict_decision_log::Appended;
use verdict_decision_log::BatchRecord;
use verdict_decision_log::DecisionLog;
use verdict_decision_log::Record;
use verdict_engine::Decision;

use crate::error::ApiError;
use crate::state::Shared;

/// The request fields a record keeps. Anything else in the body is ignored by the evaluation, so
/// it is not logged either.
const REQUEST_FIELDS: [&str; 4] = verdict_decision_log::record::REQUEST_FIELDS;

/// A batch item's record request: the item's own request fields, moved out of it. The fields it
/// takes from the batch's defaults are logged once, in the batch line ([`batch_defaults`]), not
/// copied here: a 1 MB default `context` copied into each of 1,000 item records once took 1.7 GB
/// of memory and ~960 MB of log.
pub fn item_request(mut item: Map<String, Value>) -> Value {
    item.retain(|key, _| REQUEST_FIELDS.contains(&key.as_str()));
    Value::Object(item)
}

/// A batch's defaults for its batch line: its top-level request fields, moved out of the body
/// once every item is decided.
pub fn batch_defaults(body: Map<String, Value>) -> Value {
    logged_single_request(body)
}

/// The request of a single evaluation: the body itself, without its other fields (usually there
/// are none, so nothing is copied or rebuilt).
pub fn logged_single_request(mut body: Map<String, Value>) -> Value {
    body.retain(|key, _| REQUEST_FIELDS.contains(&key.as_str()));
    Value::Object(body)
}

/// Refuses a batch whose records would take more than the log's per-batch budget, before any of
/// it is decided (`413 decision_log_batch_too_large`). The estimate is the batch line (its
/// defaults as sent) plus, for every item that is an object, its own request fields and
/// [`DECISION_LINE_OVERHEAD`]: as if every item were logged, since which ones will be (sampling,
/// `only_denies`) is known only once they are decided.
pub fn check_batch_budget(
    log: &DecisionLog,
    defaults: &Map<String, Value>,
    items: &[Value],
) -> Result<(), ApiError> {
    within_budget(log.max_batch_bytes(), defaults, items)
}

/// [`check_batch_budget`] against `budget` bytes.
fn within_budget(
    budget: u64,
    defaults: &Map<String, Value>,
    items: &[Value],
) -> Result<(), ApiError> {
    let head = BATCH_LINE_OVERHEAD + request_bytes(defaults);
    let (mut total, mut logged) = (head, 0u64);
    for item in items {
        if let Value::Object(m) = item {
            total += DECISION_LINE_OVERHEAD + request_bytes(m);
            logged += 1;
        }
    }
    if total <= budget {
        return Ok(());
    }
    let how = match (budget.checked_sub(head), (total - head).checked_div(logged)) {
        (Some(room), Some(per_item)) if room >= per_item => format!(
            "split it into batches of at most {} items",
            room / per_item
        ),
        _ => format!(
            "its top-level defaults alone take about {head} bytes: send smaller `subject`, `action`, `resource` or `context` defaults"
        ),
    };
    Err(ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "decision_log_batch_too_large",
        format!(
            "this batch's decision-log records would take about {total} bytes, more than the per-batch budget of {budget} bytes (`[decision_log] max_batch_bytes`); nothing was decided or logged: {how}"
        ),
    ))
}

/// Serialised bytes of the request fields of `m`, as a record would hold them.
fn request_bytes(m: &Map<String, Value>) -> u64 {
    REQUEST_FIELDS
        .iter()
        .filter_map(|key| m.get(*key).map(|v| key.len() as u64 + 4 + json_len(v)))
        .sum()
}

/// The length of `v` serialised, counted without building it.
fn json_len(v: &Value) -> u64 {
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Counting cannot fail, and a `Value` always serialises.
    let _ = serde_json::to_writer(&mut count, v);
    count.0
}

/// The record's `reasons`, copied out of an answer that is still to be sent: `reason_admin` and
/// `reason_user` of its `context`, `null` where absent.
pub fn reasons_of(answer: &Value) -> Value {
    let context = answer.get("context");
    let reason = |key: &str| {
        context
            .and_then(|c| c.get(key))
            .cloned()
            .unwrap_or(Value::Null)
    };
    reasons(reason("reason_admin"), reason("reason_user"))
}

/// [`reasons_of`] an answer already serialised, moving the values instead of copying them.
pub fn take_reasons(answer: Value) -> Value {
    let Value::Object(mut answer) = answer else {
        return reasons(Value::Null, Value::Null);
    };
    let Some(Value::Object(mut context)) = answer.remove("context") else {
        return reasons(Value::Null, Value::Null);
    };
    let mut take = |key: &str| context.remove(key).unwrap_or(Value::Null);
    reasons(take("reason_admin"), take("reason_user"))
}

fn reasons(admin: Value, user: Value) -> Value {
    let mut m = Map::new();
    m.insert("reason_admin".to_string(), admin);
    m.insert("reason_user".to_string(), user);
    Value::Object(m)
}

/// The record of decision `d`, with `reasons` from [`reasons_of`] or [`take_reasons`] of the
/// answer sent to the caller.
pub fn record(d: &Decision, request: Value, reasons: Value, latency_us: u64) -> Record {
    let mut r = Record::new(d.version, request, d.allow);
    r.policies = d.policies.clone();
    r.reasons = reasons;
    if d.allow {
        r.obligations = d.obligations.clone();
    }
    r.latency_us = latency_us;
    r
}

/// Appends the records of a batch's decisions behind one batch line holding its `defaults`, all
/// or none (see `verdict_decision_log::record`, "Line schema"). Returns each record's decision
/// id, or `None` for every one if the queue dropped the group (`when_full = "drop_newest"`). A
/// failure leaves nothing of the batch in the queue (save under `fsync = "always"`, where a
/// group that missed its fsync deadline may still become durable, whole), and the caller must
/// not answer any of these decisions.
pub async fn append_batch(
    log: &DecisionLog,
    batch: BatchRecord,
    records: Vec<Record>,
) -> Result<Vec<Option<String>>, ApiError> {
    let ids: Vec<String> = records.iter().map(|r| r.decision_id.to_string()).collect();
    match log.append_batch(batch, records).await {
        Ok(Appended::Logged { .. }) => Ok(ids.into_iter().map(Some).collect()),
        Ok(Appended::Dropped) => Ok(ids.iter().map(|_| None).collect()),
        Err(e) => Err(append_error(e)),
    }
}

/// One record; see [`append_batch`].
pub async fn append(log: &DecisionLog, record: Record) -> Result<Option<String>, ApiError> {
    let id = record.decision_id.to_string();
    match log.append(record).await {
        Ok(Appended::Logged { .. }) => Ok(Some(id)),
        Ok(Appended::Dropped) => Ok(None),
        Err(e) => Err(append_error(e)),
    }
}

/// The single mapping of a failed append to what the caller sees.
fn append_error(e: AppendError) -> ApiError {
    match e {
        AppendError::Full { .. } | AppendError::NotDurable { .. } | AppendError::Closed => {
            tracing::warn!(error = %e, "decision refused: it must be logged and could not be");
            ApiError::unavailable(
                "decision_log_unavailable",
                format!(
                    "the decision was not answered because the configuration requires it to be logged and it could not be: {e}; retry shortly (GET /v1/decision-logs/status shows the queue and the sinks)"
                ),
            )
        }
        AppendError::TooLarge { bytes, limit } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "decision_log_record_too_large",
            format!(
                "the decision's log record is {bytes} bytes, more than the decision log takes ({limit}); send smaller subject, resource or context properties"
            ),
        ),
        AppendError::Encode(e) => {
            ApiError::internal(format!("cannot serialise the decision record: {e}"))
        }
    }
}

/// `GET /v1/decision-logs/status`: queue, drops and every sink's progress.
pub async fn status(State(state): State<Shared>) -> Response {
    match &state.decision_log {
        Some(log) => Json(log.status()).into_response(),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "decision logging is off; enable [decision_log] in the config",
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_batch_item_keeps_its_own_fields_and_the_defaults_go_to_the_batch_line() {
        let body = json!({
            "subject": {"type": "User", "id": "default"},
            "context": {"idp": "a", "password": "x"},
            "options": {"evaluations_semantic": "execute_all"},
        });
        let item = json!({
            "action": {"name": "login"},
            "resource": {"type": "SP", "id": "s"},
            "context": {"idp": "b"},
            "unknown": 1,
        });
        assert_eq!(
            item_request(item.as_object().unwrap().clone()),
            json!({
                "action": {"name": "login"},
                "resource": {"type": "SP", "id": "s"},
                "context": {"idp": "b"},
            }),
            "no default copied in, unknown fields left out"
        );
        assert_eq!(
            batch_defaults(body.as_object().unwrap().clone()),
            json!({"subject": {"type": "User", "id": "default"}, "context": {"idp": "a", "password": "x"}})
        );
    }

    #[test]
    fn the_batch_budget_counts_the_defaults_once_and_says_how_to_split() {
        let defaults = json!({"context": {"blob": "x".repeat(100_000)}});
        let defaults = defaults.as_object().unwrap();
        let items: Vec<Value> = (0..100)
            .map(|i| json!({"resource": {"type": "Doc", "id": format!("{i:03}")}}))
            .collect();
        // Defaults once (~100 KB) + 100 × (512 + ~40): ~155 KB, not 100 × 100 KB.
        assert!(within_budget(160_000, defaults, &items).is_ok());
        let e = within_budget(130_000, defaults, &items).unwrap_err();
        assert_eq!(
            (e.status, e.code),
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                "decision_log_batch_too_large"
            )
        );
        assert!(
            e.detail.contains("per-batch budget of 130000 bytes"),
            "{}",
            e.detail
        );
        assert!(e.detail.contains("max_batch_bytes"), "{}", e.detail);
        // (130,000 − 100,214 for the batch line) / 549 per item.
        assert!(
            e.detail.contains("batches of at most 54 items"),
            "{}",
            e.detail
        );
        let e = within_budget(50_000, defaults, &items).unwrap_err();
        assert!(
            e.detail.contains("defaults alone take about"),
            "{}",
            e.detail
        );
        // Items that are not objects are not logged, so not counted.
        let junk: Vec<Value> = (0..1000).map(|_| json!(1)).collect();
        assert!(within_budget(101_000, defaults, &junk).is_ok());
    }

    #[test]
    fn a_record_carries_the_answered_reasons_and_the_permits_obligations() {
        let d = Decision {
            allow: false,
            policies: vec!["deny-1".into()],
            errors: vec![],
            reason_user: vec![("en".into(), "no".into())],
            obligations: vec!["loa:2".into()],
            version: 9,
            token_refused: None,
        };
        let answer = json!({"decision": false, "context": {
            "version": 9,
            "reason_admin": {"policies": ["deny-1"], "errors": []},
            "reason_user": {"en": "no"},
        }});
        assert_eq!(take_reasons(answer.clone()), reasons_of(&answer));
        assert_eq!(
            reasons_of(&json!({"decision": true, "context": {"version": 1}})),
            json!({"reason_admin": null, "reason_user": null})
        );
        let r = record(&d, json!({}), reasons_of(&answer), 17);
        assert_eq!(r.version, 9);
        assert!(!r.decision);
        assert_eq!(r.policies, ["deny-1"]);
        assert_eq!(
            r.reasons,
            json!({"reason_admin": {"policies": ["deny-1"], "errors": []}, "reason_user": {"en": "no"}})
        );
        assert!(r.obligations.is_empty(), "a deny carries no obligations");
        assert_eq!(r.latency_us, 17);
    }
}
