//! API credentials: `POST /v1/credentials` creates one and shows its secret once,
//! `GET /v1/credentials` lists them (never secrets or hashes), `DELETE /v1/credentials/{id}`
//! revokes one. All need the `admin` scope. Creating and revoking are writes through Raft, so every
//! node agrees on them at the same version.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::Path;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::response::Response;
use rand::TryRngCore;
use serde_json::json;
use serde_json::Value;
use verdict_engine::credential::hash_secret;
use verdict_engine::credential::Scope;
use verdict_engine::Command;
use verdict_engine::Write;

use crate::body;
use crate::error::ApiError;
use crate::routes::admin::admin_body;
use crate::routes::admin::write;
use crate::state::Shared;

fn os_bytes<const N: usize>() -> Result<[u8; N], ApiError> {
    let mut bytes = [0u8; N];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| ApiError::internal(format!("the OS entropy source failed: {e}")))?;
    Ok(bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_request(raw: &Bytes) -> Result<(String, Vec<Scope>), ApiError> {
    let v = body::json(raw)?;
    let name =
        match v.get("name") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
            None | Some(Value::String(_)) => return Err(ApiError::bad_request(
                "missing_field",
                "`name` is required: who or what holds the credential, e.g. \"tenant-a admins\"",
            )),
            Some(_) => {
                return Err(ApiError::bad_request(
                    "invalid_json",
                    "`name` must be a string",
                ))
            }
        };
    let scopes = match v.get("scopes") {
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|s| match s {
                Value::String(s) => Scope::parse(s).map_err(ApiError::from),
                _ => Err(ApiError::bad_request(
                    "invalid_json",
                    "`scopes` must be an array of strings such as \"read\"",
                )),
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => {
            return Err(ApiError::bad_request(
                "missing_field",
                "`scopes` is required: a non-empty array such as [\"policy:write:tenant-a/\", \"read\"]",
            ))
        }
    };
    Ok((name, scopes))
}

/// `POST /v1/credentials` `{"name": …, "scopes": […]}` → `{id, name, scopes, secret, version}`.
/// The secret (`<id>.<hex>`) is shown here only; the log holds its argon2id hash.
pub async fn create(
    State(state): State<Shared>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let raw = admin_body(&state, raw)?;
        let (name, scopes) = parse_request(&raw)?;
        let id = format!("c{}", hex(&os_bytes::<8>()?));
        let secret = hex(&os_bytes::<32>()?);
        let salt = os_bytes::<16>()?;
        let to_hash = secret.clone();
        let hash = tokio::task::spawn_blocking(move || hash_secret(&to_hash, &salt))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))??;
        let shown: Vec<String> = scopes.iter().map(ToString::to_string).collect();
        let version = state
            .propose(Write {
                command: Command::CreateCredential {
                    id: id.clone(),
                    name: name.clone(),
                    scopes,
                    hash,
                },
                if_match: None,
                idempotency_key: body::idempotency_key(&headers)?,
                stamped_ms: 0,
            })
            .await?;
        Ok::<_, ApiError>(body::versioned(
            json!({
                "id": id,
                "name": name,
                "scopes": shown,
                "secret": format!("{id}.{secret}"),
                "version": version,
            }),
            version,
        ))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /v1/credentials`: ids, names, scopes and creation, never secrets or hashes.
pub async fn list(State(state): State<Shared>) -> Response {
    let snap = state.node.published().load_full();
    let items: Vec<Value> = snap
        .credentials()
        .list()
        .map(|c| {
            json!({
                "id": c.id,
                "name": c.name,
                "scopes": c.scopes.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "created_ms": c.created_ms,
                "version": c.version,
            })
        })
        .collect();
    body::versioned(json!({"credentials": items}), snap.version())
}

/// `DELETE /v1/credentials/{id}`: revoked on every node at the answered version. The last
/// credential with `admin` cannot be revoked.
pub async fn revoke(
    State(state): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    write(&state, &headers, Command::RevokeCredential { id }).await
}
