//! AuthZEN decisions: `/access/v1/evaluation`, `/access/v1/evaluations` and the metadata document.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::header;
use axum::http::HeaderMap;
use axum::http::HeaderValue;
use axum::response::IntoResponse;
use axum::response::Response;
use axum::Json;
use serde_json::json;
use serde_json::Map;
use serde_json::Value;
use verdict_engine::Decision;
use verdict_engine::DecisionInput;
use verdict_engine::Snapshot;

use crate::body;
use crate::error::ApiError;
use crate::state::Metrics;
use crate::state::Shared;

fn decision_json(d: &Decision) -> Value {
    let mut ctx = Map::new();
    ctx.insert("version".into(), json!(d.version));
    let mut admin = Map::new();
    admin.insert("policies".into(), json!(d.policies));
    if !d.allow || !d.errors.is_empty() {
        admin.insert(
            "errors".into(),
            Value::Array(
                d.errors
                    .iter()
                    .map(|(p, m)| json!({"policy": p, "message": m}))
                    .collect(),
            ),
        );
    }
    ctx.insert("reason_admin".into(), Value::Object(admin));
    if !d.reason_user.is_empty() {
        let m: Map<String, Value> = d
            .reason_user
            .iter()
            .map(|(lang, text)| (lang.clone(), Value::String(text.clone())))
            .collect();
        ctx.insert("reason_user".into(), Value::Object(m));
    }
    if d.allow && !d.obligations.is_empty() {
        ctx.insert("obligations".into(), json!(d.obligations));
    }
    json!({"decision": d.allow, "context": ctx})
}

fn with_version(mut resp: Response, version: u64) -> Response {
    if let Ok(v) = HeaderValue::from_str(&version.to_string()) {
        resp.headers_mut().insert(body::VERSION_HEADER, v);
    }
    resp
}

/// Common request checks: JSON content type, body, min-version wait. Returns the parsed object and
/// the snapshot to decide on.
async fn prepare(
    state: &Shared,
    headers: &HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<
    (
        Map<String, Value>,
        arc_swap::Guard<std::sync::Arc<Snapshot>>,
    ),
    ApiError,
> {
    let raw = body::bytes(raw, state.config.max_decision_body)?;
    if !body::is_json(headers) {
        return Err(ApiError::bad_request(
            "invalid_content_type",
            "decision requests must be sent with `Content-Type: application/json`",
        ));
    }
    let value = body::json(&raw)?;
    let Value::Object(obj) = value else {
        return Err(ApiError::bad_request(
            "invalid_json",
            "the body must be a JSON object with `subject`, `action` and `resource`",
        ));
    };
    if let Some(min) = body::u64_header(headers, body::MIN_VERSION_HEADER)? {
        state.wait_for_version(min).await?;
    }
    Ok((obj, state.node.published().load()))
}

fn evaluate(
    snapshot: &Snapshot,
    item: &Map<String, Value>,
    defaults: Option<&Map<String, Value>>,
) -> Result<Decision, ApiError> {
    let get = |k: &str| item.get(k).or_else(|| defaults.and_then(|d| d.get(k)));
    let input = DecisionInput::from_authzen(
        get("subject"),
        get("action"),
        get("resource"),
        get("context"),
    )?;
    Ok(snapshot.decide(&input)?)
}

fn count(state: &Shared, d: &Decision) {
    if d.allow {
        Metrics::inc(&state.metrics.decisions_allow);
    } else {
        Metrics::inc(&state.metrics.decisions_deny);
    }
}

/// `POST /access/v1/evaluation`.
pub async fn evaluation(
    State(state): State<Shared>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let result = async {
        let (obj, snapshot) = prepare(&state, &headers, raw).await?;
        let d = evaluate(&snapshot, &obj, None)?;
        Ok::<_, ApiError>(d)
    }
    .await;
    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    state
        .metrics
        .decision_micros
        .fetch_add(micros, std::sync::atomic::Ordering::Relaxed);
    match result {
        Ok(d) => {
            count(&state, &d);
            with_version(Json(decision_json(&d)).into_response(), d.version)
        }
        Err(e) => {
            Metrics::inc(&state.metrics.decisions_error);
            e.into_response()
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Semantic {
    ExecuteAll,
    DenyOnFirstDeny,
    PermitOnFirstPermit,
}

fn semantic(obj: &Map<String, Value>) -> Result<Semantic, ApiError> {
    let s = obj
        .get("options")
        .and_then(|o| o.get("evaluations_semantic"));
    match s {
        None | Some(Value::Null) => Ok(Semantic::ExecuteAll),
        Some(Value::String(s)) => match s.as_str() {
            "execute_all" => Ok(Semantic::ExecuteAll),
            "deny_on_first_deny" => Ok(Semantic::DenyOnFirstDeny),
            "permit_on_first_permit" => Ok(Semantic::PermitOnFirstPermit),
            other => Err(ApiError::bad_request(
                "invalid_json",
                format!("`options.evaluations_semantic` `{other}` is not one of execute_all, deny_on_first_deny, permit_on_first_permit"),
            )),
        },
        Some(_) => Err(ApiError::bad_request(
            "invalid_json",
            "`options.evaluations_semantic` must be a string",
        )),
    }
}

/// `POST /access/v1/evaluations`.
pub async fn evaluations(
    State(state): State<Shared>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let (obj, snapshot) = prepare(&state, &headers, raw).await?;
        let sem = semantic(&obj)?;
        let items = match obj.get("evaluations") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items.clone(),
            Some(_) => {
                return Err(ApiError::bad_request("invalid_json", "`evaluations` must be an array"))
            }
        };
        if items.len() > state.config.max_batch {
            return Err(ApiError::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                "too_many_evaluations",
                format!(
                    "{} evaluations in one batch; the limit is {}: split the batch",
                    items.len(),
                    state.config.max_batch
                ),
            ));
        }
        if items.is_empty() {
            // AuthZEN 1.0 §7.1: no (or an empty) `evaluations` array behaves as the single
            // Access Evaluation request, answered with a single decision.
            let d = evaluate(&snapshot, &obj, None)?;
            count(&state, &d);
            return Ok((decision_json(&d), snapshot.version()));
        }
        let mut out = Vec::with_capacity(items.len());
        for item in &items {
            let result = match item {
                Value::Object(m) => evaluate(&snapshot, m, Some(&obj)),
                _ => Err(ApiError::bad_request("invalid_json", "each evaluation must be an object")),
            };
            let (value, allow) = match result {
                Ok(d) => {
                    count(&state, &d);
                    (decision_json(&d), Some(d.allow))
                }
                Err(e) => (
                    json!({"decision": false, "context": {"version": snapshot.version(), "error": {"code": e.code, "detail": e.detail}}}),
                    None,
                ),
            };
            out.push(value);
            let stop = match sem {
                Semantic::ExecuteAll => false,
                Semantic::DenyOnFirstDeny => allow != Some(true),
                Semantic::PermitOnFirstPermit => allow == Some(true),
            };
            if stop {
                break;
            }
        }
        Ok((json!({"evaluations": out}), snapshot.version()))
    }
    .await;
    match result {
        Ok((v, version)) => with_version(Json(v).into_response(), version),
        Err(e) => {
            Metrics::inc(&state.metrics.decisions_error);
            e.into_response()
        }
    }
}

/// `GET /.well-known/authzen-configuration`.
pub async fn well_known(State(state): State<Shared>, headers: HeaderMap) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| {
            state
                .config
                .advertise_api
                .clone()
                .unwrap_or_else(|| state.config.listen.to_string())
        });
    let base = format!("http://{host}");
    Json(json!({
        "policy_decision_point": base,
        "access_evaluation_endpoint": format!("{base}/access/v1/evaluation"),
        "access_evaluations_endpoint": format!("{base}/access/v1/evaluations"),
    }))
    .into_response()
}
