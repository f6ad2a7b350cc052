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
use verdict_decision_log::AppendError;
use verdict_decision_log::Appended;
use verdict_decision_log::DecisionLog;
use verdict_decision_log::Record;
use verdict_engine::Decision;

use crate::error::ApiError;
use crate::state::Shared;

/// The request fields a record keeps. Anything else in the body is ignored by the evaluation, so
/// it is not logged either.
const REQUEST_FIELDS: [&str; 4] = ["subject", "action", "resource", "context"];

/// The request as evaluated: the item's own fields, each absent one taken whole from the batch
/// `defaults` (AuthZEN replaces defaults as whole objects, it does not merge them).
pub fn logged_request(item: &Map<String, Value>, defaults: Option<&Map<String, Value>>) -> Value {
    let mut request = Map::new();
    for key in REQUEST_FIELDS {
        if let Some(v) = item.get(key).or_else(|| defaults.and_then(|d| d.get(key))) {
            request.insert(key.to_string(), v.clone());
        }
    }
    Value::Object(request)
}

/// [`logged_request`] of a single evaluation: the body itself, without its other fields (usually
/// there are none, so nothing is copied or rebuilt).
pub fn logged_single_request(mut body: Map<String, Value>) -> Value {
    body.retain(|key, _| REQUEST_FIELDS.contains(&key.as_str()));
    Value::Object(body)
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

/// Appends `records` together (under `fsync = "always"` they share one fsync), in order, so their
/// sequences follow the order given. Returns each record's decision id, `None` for a record the
/// queue dropped (`when_full = "drop_newest"`); the first failure fails them all: the caller must
/// not answer any of these decisions.
pub async fn append_all(
    log: &DecisionLog,
    records: Vec<Record>,
) -> Result<Vec<Option<String>>, ApiError> {
    let ids: Vec<String> = records.iter().map(|r| r.decision_id.to_string()).collect();
    // INVARIANT: `append` assigns the sequence in its first poll, before any await, and `join_all`
    // polls in order, so sequences are in item order.
    let results = futures::future::join_all(records.into_iter().map(|r| log.append(r))).await;
    let mut out = Vec::with_capacity(ids.len());
    for (id, result) in ids.into_iter().zip(results) {
        match result {
            Ok(Appended::Logged { .. }) => out.push(Some(id)),
            Ok(Appended::Dropped) => out.push(None),
            Err(e) => return Err(append_error(e)),
        }
    }
    Ok(out)
}

/// One record; see [`append_all`].
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
    fn batch_defaults_are_applied_whole_and_unknown_fields_left_out() {
        let defaults = json!({
            "subject": {"type": "User", "id": "default"},
            "context": {"idp": "a", "password": "x"},
            "evaluations": [],
        });
        let item = json!({
            "action": {"name": "login"},
            "resource": {"type": "SP", "id": "s"},
            "context": {"idp": "b"},
            "unknown": 1,
        });
        let r = logged_request(
            item.as_object().unwrap(),
            Some(defaults.as_object().unwrap()),
        );
        assert_eq!(
            r,
            json!({
                "subject": {"type": "User", "id": "default"},
                "action": {"name": "login"},
                "resource": {"type": "SP", "id": "s"},
                "context": {"idp": "b"},
            })
        );
        let body = item.as_object().unwrap().clone();
        let copied = logged_request(&body, None);
        assert_eq!(logged_single_request(body), copied);
        assert!(copied.get("unknown").is_none() && copied.get("subject").is_none());
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
