//! One function maps every error to an HTTP status and an RFC 9457 problem+json body.

use axum::http::header;
use axum::http::HeaderValue;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::response::Response;
use serde_json::json;
use verdict_engine::EngineError;
use verdict_engine::ErrorCode;
use verdict_engine::Location;

/// An error answered to a client.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// What was wrong and how to fix it.
    pub detail: String,
    /// Source location for Cedar errors.
    pub location: Option<Location>,
    /// Seconds for `Retry-After` on retryable errors.
    pub retry_after: Option<u64>,
    /// The request's id, on a `500` for a request whose handling panicked (see `panic`).
    pub request_id: Option<String>,
}

impl ApiError {
    /// An error with a status, code and detail.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            location: None,
            retry_after: None,
            request_id: None,
        }
    }

    /// 400 with a code.
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }

    /// A retryable 503.
    pub fn unavailable(code: &'static str, detail: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, code, detail);
        e.retry_after = Some(1);
        e
    }

    /// 500: a bug or storage failure. The state is unchanged.
    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", detail)
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let status = match e.code {
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            ErrorCode::RotationTooFast | ErrorCode::FeatureNotActive => StatusCode::CONFLICT,
            ErrorCode::TooManyAncestors => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::ClosureTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::BAD_REQUEST,
        };
        Self {
            status,
            code: e.code.as_str(),
            detail: e.detail,
            location: e.location,
            retry_after: None,
            request_id: None,
        }
    }
}

fn title(code: &str) -> &'static str {
    match code {
        "invalid_json" => "Invalid JSON",
        "missing_field" => "Missing field",
        "invalid_content_type" => "Unsupported content type",
        "empty_body" => "Empty body",
        "invalid_id" => "Invalid id",
        "invalid_header" => "Invalid header",
        "cedar_syntax" => "Cedar syntax error",
        "unsupported_policy" => "Unsupported policy",
        "schema_syntax" => "Schema syntax error",
        "schema_validation" => "Policy fails schema validation",
        "schema_conflict" => "Schema conflicts with stored data",
        "nesting_too_deep" => "Nesting too deep",
        "like_pattern_too_long" => "Like pattern too long",
        "hierarchy_too_deep" => "Hierarchy too deep",
        "parse_busy" => "Parse threads busy",
        "entity_invalid" => "Invalid entity",
        "too_many_evaluations" => "Too many evaluations",
        "payload_too_large" => "Payload too large",
        "not_found" => "Not found",
        "method_not_allowed" => "Method not allowed",
        "precondition_failed" => "Precondition failed",
        "future_version" => "Version from the future",
        "stale" => "Node is behind the requested version",
        "no_leader" => "No leader",
        "overloaded" => "Overloaded",
        "decision_log_unavailable" => "Decision could not be logged",
        "decision_log_record_too_large" => "Decision record too large to log",
        "unauthorized" => "Credential missing or refused",
        "forbidden" => "Credential lacks the needed scope",
        "outcome_unknown" => "Write outcome unknown",
        "request_timeout" => "Request took too long",
        "too_many_items" => "Too many items in one write",
        "invalid_request" => "Invalid request",
        "invalid_membership" => "Invalid membership change",
        "membership_change_in_progress" => "Membership change in progress",
        "no_ready_voter" => "No ready voter can take over",
        "handoff_failed" => "Leadership hand-off failed",
        "unknown_node" => "Unknown node",
        "no_node_left" => "No node would be left",
        "member_release_too_old" => "Member runs an older release",
        "member_unreachable" => "Member unreachable",
        _ => "Internal error",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({
            "type": format!("https://verdict.dev/problems/{}", self.code),
            "title": title(self.code),
            "status": self.status.as_u16(),
            "code": self.code,
            "detail": self.detail,
        });
        if let Some(obj) = body.as_object_mut() {
            if let Some(loc) = self.location {
                obj.insert(
                    "location".into(),
                    json!({"line": loc.line, "column": loc.column, "offset": loc.offset}),
                );
            }
            if let Some(id) = self.request_id {
                obj.insert("request_id".into(), json!(id));
            }
        }
        let mut resp = (self.status, body.to_string()).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if self.status == axum::http::StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"verdict\""),
            );
        }
        if let Some(secs) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}
