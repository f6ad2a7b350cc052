//! Request plumbing shared by the routes: bodies with problem+json errors, content types, headers.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::header;
use axum::http::HeaderMap;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::ApiError;

/// A JSON answer with its version in `Verdict-Version`.
pub fn versioned(value: Value, version: u64) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut resp = axum::Json(value).into_response();
    if let Ok(v) = axum::http::HeaderValue::from_str(&version.to_string()) {
        resp.headers_mut().insert(VERSION_HEADER, v);
    }
    resp
}

/// Sets `key` on a JSON object the server built. Unlike serde_json's `value[key] = …`, which
/// panics on anything but an object or `null`, it cannot fail: on another value it does nothing.
pub fn set(object: &mut Value, key: &str, value: Value) {
    if let Some(m) = object.as_object_mut() {
        m.insert(key.to_owned(), value);
    }
}

/// Header naming the snapshot version of a response.
pub const VERSION_HEADER: &str = "verdict-version";
/// Header asking for a snapshot at least this fresh.
pub const MIN_VERSION_HEADER: &str = "verdict-min-version";
/// Header carrying the id (UUIDv7) under which a single decision was logged.
pub const DECISION_ID_HEADER: &str = "verdict-decision-id";

/// Turns the body extraction result into bytes or a problem (413 over the cap).
pub fn bytes(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the body is over the limit of {limit} bytes; send less per request or raise the limit in the config"),
            )
        } else {
            ApiError::bad_request("invalid_json", format!("cannot read the body: {rejection}"))
        }
    })
}

/// Whether the request says its body is JSON.
pub fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            let mime = v
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            mime == "application/json" || mime.ends_with("+json")
        })
        .unwrap_or(false)
}

/// Parses a JSON body, with the errors a client can act on.
pub fn json(body: &[u8]) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "empty_body",
            "the request body is empty; send a JSON object",
        ));
    }
    shallow(body)?;
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}"))
    })
}

/// `400 invalid_json` when a JSON body nests deeper than the engine's limit (checked before
/// parsing: the conversions into Cedar values recurse per level).
pub fn shallow(body: &[u8]) -> Result<(), ApiError> {
    match verdict_engine::limits::json_nesting_exceeds(body) {
        None => Ok(()),
        Some(at) => Err(ApiError::bad_request(
            "invalid_json",
            format!(
                "the body nests JSON more than {} levels deep (at byte {at}); flatten it",
                verdict_engine::limits::MAX_NESTING
            ),
        )),
    }
}

/// Reads a body as UTF-8 text.
pub fn text(body: &[u8]) -> Result<&str, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "empty_body",
            "the request body is empty",
        ));
    }
    std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request("invalid_content_type", "the body is not UTF-8 text"))
}

/// A non-negative integer header (`If-Match` may be quoted like an ETag).
pub fn u64_header(headers: &HeaderMap, name: &str) -> Result<Option<u64>, ApiError> {
    let Some(v) = headers.get(name) else {
        return Ok(None);
    };
    let s = v
        .to_str()
        .unwrap_or("")
        .trim()
        .trim_start_matches("W/")
        .trim_matches('"');
    s.parse::<u64>().map(Some).map_err(|_| {
        ApiError::bad_request(
            "invalid_header",
            format!(
                "header `{name}` must be a version number (a non-negative integer), got `{}`",
                s.chars().take(40).collect::<String>()
            ),
        )
    })
}

/// The `Idempotency-Key` header: 1–128 printable ASCII characters.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match v.to_str() {
        Ok(s)
            if !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| (0x21..0x7f).contains(&b)) =>
        {
            Ok(Some(s.to_string()))
        }
        _ => Err(ApiError::bad_request(
            "invalid_header",
            "header `Idempotency-Key` must be 1 to 128 printable ASCII characters without spaces",
        )),
    }
}

/// `value` read as a `T` that the API spells as one JSON object. Anything but an object is refused
/// first: serde would also read a struct from an array of its fields in order (`["bob"]` as
/// `{"sub": "bob"}`), a shape the API does not offer. Errors are `400 code` naming `shape`.
pub fn from_object<T: DeserializeOwned>(
    value: Value,
    shape: &str,
    code: &'static str,
) -> Result<T, ApiError> {
    let bad = |why: String| ApiError::bad_request(code, format!("the body must be {shape}: {why}"));
    if !value.is_object() {
        return Err(bad("it is not a JSON object".into()));
    }
    serde_json::from_value(value).map_err(|e| bad(e.to_string()))
}
