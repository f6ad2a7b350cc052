//! The routes' checks before a write is proposed or a decision is taken, with the node's default
//! limits (crates/server/src/routes/admin.rs and decide.rs): body size, `verdict_server::body`'s
//! parsing (the JSON nesting limit first), item counts. The routes themselves need a whole node
//! behind them; these call the same functions in the same order, and stop where a route answers
//! an error.

use serde_json::Map;
use serde_json::Value;
use verdict_engine::limits;
use verdict_engine::Command;
use verdict_engine::DecisionInput;
use verdict_engine::Snapshot;
use verdict_server::body;

use crate::config;
use crate::propose;

/// Within `max_admin_body`, as `admin_body` answers `413` above it.
fn admin_body(raw: &[u8]) -> Option<&[u8]> {
    (raw.len() <= config().max_admin_body).then_some(raw)
}

/// `PUT /v1/policies/{id}` with a `text/plain` body.
pub async fn put_policy(raw: &[u8]) {
    let Some(cedar) = admin_body(raw).and_then(|raw| body::text(raw).ok()) else {
        return;
    };
    let id = "p".to_string();
    let cedar = cedar.to_string();
    propose(Snapshot::empty(), Command::PutPolicy { id, cedar }).await;
}

/// `PUT /v1/policies` with a `text/plain` body: the whole set.
pub async fn replace_policies(raw: &[u8]) {
    let Some(Ok(cedar)) = admin_body(raw).map(std::str::from_utf8) else {
        return;
    };
    if limits::count_statements(cedar) > config().max_policies_per_write {
        return;
    }
    let cedar = cedar.to_string();
    propose(Snapshot::empty(), Command::ReplacePoliciesText { cedar }).await;
}

/// `PUT /v1/schema`, as Cedar schema text or (`json`) the JSON schema format.
pub async fn put_schema(raw: &[u8], json: bool) {
    let Some(text) = admin_body(raw).and_then(|raw| body::text(raw).ok()) else {
        return;
    };
    if json && body::json(raw).is_err() {
        return;
    }
    let text = text.to_string();
    propose(Snapshot::empty(), Command::PutSchema { text, json }).await;
}

/// `POST /v1/entities` (an upsert onto `state`) and `PUT /v1/entities` (a replacement of it).
pub async fn write_entities(state: Snapshot, raw: &[u8]) {
    let Some(Ok(Value::Array(entities))) = admin_body(raw).map(body::json) else {
        return;
    };
    if entities.len() > config().max_entities_per_write {
        return;
    }
    let json = String::from_utf8_lossy(raw).into_owned();
    propose(
        state.clone(),
        Command::UpsertEntities { json: json.clone() },
    )
    .await;
    propose(state, Command::ReplaceEntities { json }).await;
}

/// `POST /access/v1/evaluation(s)` against `state`: the body checks of `prepare`, the batch's
/// shape and size, then each item as `evaluate` takes it (batch defaults, a token checked
/// against the key ring, [`DecisionInput::from_authzen`], `decide`).
pub fn evaluations(state: &Snapshot, raw: &[u8]) {
    if raw.len() > config().max_decision_body {
        return;
    }
    let Ok(Value::Object(obj)) = body::json(raw) else {
        return;
    };
    match obj.get("evaluations") {
        Some(Value::Array(items)) if !items.is_empty() => {
            if items.len() > config().max_batch {
                return;
            }
            for item in items {
                if let Value::Object(item) = item {
                    evaluate(state, item, Some(&obj));
                }
            }
        }
        None | Some(Value::Null | Value::Array(_)) => evaluate(state, &obj, None),
        Some(_) => {}
    }
}

fn evaluate(state: &Snapshot, item: &Map<String, Value>, defaults: Option<&Map<String, Value>>) {
    let get = |k: &str| item.get(k).or_else(|| defaults.and_then(|d| d.get(k)));
    let subject = get("subject");
    if let Some(Value::Object(s)) = subject {
        let token = s
            .get("properties")
            .and_then(|p| p.get("token"))
            .and_then(Value::as_str);
        if let Some(t) = token {
            // The fixed state has no keys: every token is refused, as the server answers it.
            let _ = state.check_token(t, 1);
            return;
        }
    }
    if let Ok(input) =
        DecisionInput::from_authzen(subject, get("action"), get("resource"), get("context"))
    {
        let _ = state.decide(&input);
    }
}
