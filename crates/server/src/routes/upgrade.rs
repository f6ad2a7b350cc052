//! Format levels for operators: what each member runs and supports, what holds the next level
//! back, and finalising an upgrade (docs/operations.md, "Format levels"). Admin routes.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;
use serde_json::Value;
use verdict_cluster::upgrade;
use verdict_cluster::upgrade::FinalizeError;

use crate::body;
use crate::error::ApiError;
use crate::state::Shared;

/// `GET /v1/cluster/upgrade`: the active level, the highest level every member supports, each
/// member's release and level, and what holds the next level back.
pub async fn status(State(state): State<Shared>) -> Response {
    let s = upgrade::status(&state.node).await;
    let members: Vec<Value> = s
        .members
        .iter()
        .map(|m| {
            json!({
                "id": m.id,
                "role": if m.voter { "voter" } else { "learner" },
                "reachable": m.reachable,
                "release": m.release,
                "supported_level": m.supported_level,
            })
        })
        .collect();
    let next = s.next_level();
    let holding: Vec<Value> = next
        .map(|level| {
            s.holding_back(level)
                .iter()
                .map(|m| json!({"id": m.id, "reason": m.holds_back(level)}))
                .collect()
        })
        .unwrap_or_default();
    let body = json!({
        "active_level": s.active_level,
        "cluster_supports": s.cluster_supports,
        "this_release_supports": s.this_release_supports,
        "final": next.is_none(),
        "next_level": next,
        "auto_finalize": state.config.auto_finalize,
        "holding_back": holding,
        "members": members,
    });
    body::versioned(body, state.node.published().load().version())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Finalize {
    level: Option<u8>,
}

/// `POST /v1/cluster/upgrade/finalize` (optional `{"level": N}`): raises the active level once
/// every member supports it.
pub async fn finalize(State(state): State<Shared>, raw: Result<Bytes, BytesRejection>) -> Response {
    let level = match finalize_level(&state, raw) {
        Ok(l) => l,
        Err(e) => return e.into_response(),
    };
    match upgrade::finalize(&state.node, level).await {
        Ok(version) => body::versioned(
            json!({"version": version, "active_level": state.node.active_level()}),
            version,
        ),
        Err(e) => finalize_error(e).into_response(),
    }
}

/// The level asked for: an empty body asks for the highest this release supports.
fn finalize_level(
    state: &Shared,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Option<u8>, ApiError> {
    let raw = body::bytes(raw, state.config.max_admin_body)?;
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let value = body::json(&raw)?;
    if let Some(l) = value.get("level") {
        if l.as_u64().is_none_or(|n| n > u64::from(u8::MAX)) {
            return Err(ApiError::bad_request(
                "invalid_level",
                format!("`level` must be a format level (a small positive integer), not {l}"),
            ));
        }
    }
    let f: Finalize = body::from_object(value, r#"{"level": 2} or empty"#, "invalid_request")?;
    Ok(f.level)
}

fn finalize_error(e: FinalizeError) -> ApiError {
    let text = e.to_string();
    match e {
        // A refusal by apply means another raise got there first.
        FinalizeError::AlreadyFinal { .. } | FinalizeError::Refused(_) => {
            ApiError::new(StatusCode::CONFLICT, "already_final", text)
        }
        FinalizeError::InvalidLevel(_) => ApiError::bad_request("invalid_level", text),
        FinalizeError::Incomplete { .. } => {
            ApiError::new(StatusCode::CONFLICT, "upgrade_incomplete", text)
        }
        FinalizeError::Write(w) => crate::state::write_error(w),
    }
}

/// `409 feature_not_active` for a feature of format level `level` while the cluster is below it,
/// naming the members that hold it back; `None` when the cluster is at `level`.
pub async fn require_level(state: &Shared, level: u8, feature: &str) -> Option<ApiError> {
    let active = state.node.active_level();
    if active >= level {
        return None;
    }
    let holding = upgrade::holding_back(&state.node, level).await;
    let why = if holding.is_empty() {
        "every member supports it, but the upgrade is not finalised: run `verdict cluster \
         upgrade finalize` (auto_finalize is off)"
            .to_string()
    } else {
        format!(
            "held back by: {}; upgrade them, then finalise",
            holding.join("; ")
        )
    };
    Some(ApiError::new(
        StatusCode::CONFLICT,
        "feature_not_active",
        format!("`{feature}` needs format level {level}; the cluster is at level {active}, {why}"),
    ))
}
