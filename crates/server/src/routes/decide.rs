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
use verdict_decision_log::BatchRecord;
use verdict_engine::token;
use verdict_engine::Decision;
use verdict_engine::DecisionInput;
use verdict_engine::Snapshot;

use crate::body;
use crate::error::ApiError;
use crate::routes::decision_log;
use crate::state::now_ms;
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
    if let Some(why) = &d.token_refused {
        admin.insert("token".into(), Value::String(why.clone()));
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

/// A JSON response body, serialised here rather than by `Json` so that the value can be used
/// (moved into a decision record) afterwards.
struct JsonBody(Vec<u8>);

impl IntoResponse for JsonBody {
    fn into_response(self) -> Response {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            self.0,
        )
            .into_response()
    }
}

fn json_body(value: &Value) -> Result<JsonBody, ApiError> {
    serde_json::to_vec(value)
        .map(JsonBody)
        .map_err(|e| ApiError::internal(format!("cannot serialise the answer: {e}")))
}

fn with_decision_id(mut resp: Response, id: Option<String>) -> Response {
    if let Some(v) = id.and_then(|id| HeaderValue::from_str(&id).ok()) {
        resp.headers_mut().insert(body::DECISION_ID_HEADER, v);
    }
    resp
}

fn micros_since(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX)
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
    // The flag is refreshed every 100 ms; when it says stale, confirm now (it may just have
    // caught up) and refuse only if the node is still stale.
    if state.config.fail_closed && state.stale.load(std::sync::atomic::Ordering::Relaxed) {
        if let Some(reason) = state.node.stale_reason() {
            Metrics::inc(&state.metrics.decisions_stale);
            return Err(ApiError::unavailable(
                "stale",
                format!("this node refuses decisions while its state may be stale (fail_closed): {reason}; ask another node"),
            ));
        }
    }
    Ok((obj, state.node.published().load()))
}

/// The subject a validated token stands for: the request's subject with the token's `sub` as its
/// id and the token's claims as properties (over any the request sent; the token is the authority).
/// Takes the subject as an object so that no shape of request can make building it fail, and
/// refuses `properties` of the wrong type as a request without a token would be.
fn subject_of(subject: &Map<String, Value>, claims: &token::Claims) -> Result<Value, ApiError> {
    let mut subject = subject.clone();
    subject.insert("id".into(), Value::String(claims.sub.clone()));
    let mut props = match subject.remove("properties") {
        Some(Value::Object(m)) => m,
        None | Some(Value::Null) => Map::new(),
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_json",
                "`subject.properties` must be an object",
            ))
        }
    };
    props.remove("token");
    for (k, v) in &claims.extra {
        props.insert(k.clone(), v.clone());
    }
    if let Some(scope) = &claims.scope {
        props.insert("scope".into(), Value::String(scope.clone()));
    }
    props.insert("jti".into(), Value::String(claims.jti.clone()));
    props.insert("aud_chain".into(), Value::String(claims.aud_chain.clone()));
    subject.insert("properties".into(), Value::Object(props));
    Ok(Value::Object(subject))
}

/// The token of `Authorization: Bearer …` when `decision_bearer_tokens` is on.
fn bearer<'h>(state: &Shared, headers: &'h HeaderMap) -> Option<&'h str> {
    if !state.config.decision_bearer_tokens {
        return None;
    }
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

fn evaluate(
    snapshot: &Snapshot,
    item: &Map<String, Value>,
    defaults: Option<&Map<String, Value>>,
    bearer: Option<&str>,
) -> Result<Decision, ApiError> {
    let get = |k: &str| item.get(k).or_else(|| defaults.and_then(|d| d.get(k)));
    // A subject may carry a token (`subject.properties.token`, or the request's bearer token,
    // which wins): it must validate here, and then the token says who the subject is.
    let by_token;
    let mut subject = get("subject");
    // Only an object can stand for a subject; anything else (absent, null, a string, an array…)
    // goes on to `from_authzen` unchanged, which refuses it as `missing_field` or `invalid_json`
    // whether or not a token came with it.
    if let Some(Value::Object(s)) = subject {
        let token = bearer.or_else(|| {
            s.get("properties")
                .and_then(|p| p.get("token"))
                .and_then(Value::as_str)
        });
        if let Some(t) = token {
            match snapshot.check_token(t, now_ms()) {
                Ok(claims) => {
                    by_token = subject_of(s, &claims)?;
                    subject = Some(&by_token);
                }
                Err(why) => {
                    return Ok(Decision::token_refused(snapshot.version(), why.to_string()))
                }
            }
        }
    }
    let input =
        DecisionInput::from_authzen(subject, get("action"), get("resource"), get("context"))?;
    Ok(snapshot.decide(&input)?)
}

fn count(state: &Shared, d: &Decision) {
    if d.allow {
        Metrics::inc(&state.metrics.decisions_allow);
    } else {
        Metrics::inc(&state.metrics.decisions_deny);
    }
}

/// Logs a single decision before it is answered, if logging is on and wants it: the id it was
/// logged under. Off, this is one `Option` check.
async fn log_single(
    state: &Shared,
    request: Map<String, Value>,
    d: &Decision,
    answer: Value,
    started: Instant,
) -> Result<Option<String>, ApiError> {
    let Some(log) = &state.decision_log else {
        return Ok(None);
    };
    if !log.wants(d.allow) {
        return Ok(None);
    }
    let request = decision_log::logged_single_request(request);
    let reasons = decision_log::take_reasons(answer);
    let record = decision_log::record(d, request, reasons, micros_since(started));
    decision_log::append(log, record)
        .await
        .inspect_err(|_| Metrics::inc(&state.metrics.decisions_unlogged))
}

/// `POST /access/v1/evaluation`.
pub async fn evaluation(
    State(state): State<Shared>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let bearer = bearer(&state, &headers);
    let result = async {
        let (obj, snapshot) = prepare(&state, &headers, raw).await?;
        let d = evaluate(&snapshot, &obj, None, bearer)?;
        // Serialised first, so that the record can take the answer's reasons without copying.
        let answer = decision_json(&d);
        let body = json_body(&answer)?;
        let id = log_single(&state, obj, &d, answer, started).await?;
        Ok::<_, ApiError>((d, body, id))
    }
    .await;
    state
        .metrics
        .decision_micros
        .fetch_add(micros_since(started), std::sync::atomic::Ordering::Relaxed);
    match result {
        Ok((d, body, id)) => {
            count(&state, &d);
            with_decision_id(with_version(body.into_response(), d.version), id)
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
    let bearer = bearer(&state, &headers);
    let result = async {
        let (mut obj, snapshot) = prepare(&state, &headers, raw).await?;
        let sem = semantic(&obj)?;
        // Taken out, not copied: from here on the top level is read only for its defaults.
        let items = match obj.remove("evaluations") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items,
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
            let started = Instant::now();
            let d = evaluate(&snapshot, &obj, None, bearer)?;
            let answer = decision_json(&d);
            let body = json_body(&answer)?;
            let id = log_single(&state, obj, &d, answer, started).await?;
            count(&state, &d);
            return Ok((body, snapshot.version(), id));
        }
        let log = state.decision_log.as_ref();
        if let Some(log) = log {
            // Before anything is decided, so a refused batch leaves no trace.
            decision_log::check_batch_budget(log, &obj, &items)?;
        }
        // The batch line's id and time, taken before its items are decided.
        let batch = log.map(|_| BatchRecord::new(snapshot.version(), Value::Null));
        // Decisions to log: (item index, record). Items that could not be evaluated are answered
        // like a 400 inside the batch, not as decisions, and are not logged.
        let mut records = Vec::new();
        // Counted once the batch is answered (a failed append answers none of it).
        let (mut allows, mut denies) = (0, 0);
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let started = log.map(|_| Instant::now());
            let result = match &item {
                Value::Object(m) => evaluate(&snapshot, m, Some(&obj), bearer),
                _ => Err(ApiError::bad_request("invalid_json", "each evaluation must be an object")),
            };
            let (value, allow) = match result {
                Ok(d) => {
                    let answer = decision_json(&d);
                    if let (Some(log), Some(started), Value::Object(m)) = (log, started, item) {
                        if log.wants(d.allow) {
                            // The item's own fields only: the batch line holds the defaults.
                            let request = decision_log::item_request(m);
                            let latency = micros_since(started);
                            let reasons = decision_log::reasons_of(&answer);
                            let record = decision_log::record(&d, request, reasons, latency);
                            records.push((out.len(), record));
                        }
                    }
                    if d.allow {
                        allows += 1;
                    } else {
                        denies += 1;
                    }
                    (answer, Some(d.allow))
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
        if let (Some(log), Some(mut batch), false) = (log, batch, records.is_empty()) {
            let (at, records): (Vec<usize>, Vec<_>) = records.into_iter().unzip();
            batch.defaults = decision_log::batch_defaults(obj);
            let ids = decision_log::append_batch(log, batch, records)
                .await
                .inspect_err(|_| Metrics::inc(&state.metrics.decisions_unlogged))?;
            // A batch answers each logged item's id in its own context: a header list would
            // have to hold places for items not logged (errors, sampling, drops).
            for (i, id) in at.into_iter().zip(ids) {
                let context = out.get_mut(i).and_then(|v| v.get_mut("context"));
                if let (Some(Value::Object(c)), Some(id)) = (context, id) {
                    c.insert("decision_id".into(), Value::String(id));
                }
            }
        }
        let m = &state.metrics;
        m.decisions_allow.fetch_add(allows, std::sync::atomic::Ordering::Relaxed);
        m.decisions_deny.fetch_add(denies, std::sync::atomic::Ordering::Relaxed);
        let body = json_body(&json!({"evaluations": out}))?;
        Ok((body, snapshot.version(), None))
    }
    .await;
    match result {
        Ok((body, version, id)) => {
            with_decision_id(with_version(body.into_response(), version), id)
        }
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
    let scheme = if state.config.tls.api_enabled() {
        "https"
    } else {
        "http"
    };
    let base = format!("{scheme}://{host}");
    Json(json!({
        "policy_decision_point": base,
        "access_evaluation_endpoint": format!("{base}/access/v1/evaluation"),
        "access_evaluations_endpoint": format!("{base}/access/v1/evaluations"),
    }))
    .into_response()
}
