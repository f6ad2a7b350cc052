//! Administration: policies, schema and entities. Every write goes through Raft and answers the
//! committed version; reads answer from the local published snapshot.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::Path;
use axum::extract::State;
use axum::http::header;
use axum::http::HeaderMap;
use axum::http::HeaderValue;
use axum::response::IntoResponse;
use axum::response::Response;
use axum::Extension;
use serde_json::json;
use serde_json::Value;
use verdict_engine::credential::Need;
use verdict_engine::entity::uid_from_parts;
use verdict_engine::Command;
use verdict_engine::Write;

use crate::auth::Caller;
use crate::body;
use crate::error::ApiError;
use crate::state::Shared;

/// [`body::versioned`] plus the version as `ETag`, for `If-Match`.
fn versioned(value: Value, version: u64) -> Response {
    let mut resp = body::versioned(value, version);
    if let Ok(v) = HeaderValue::from_str(&version.to_string()) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

pub(crate) async fn write(state: &Shared, headers: &HeaderMap, command: Command) -> Response {
    let result = async {
        let write = Write {
            command,
            if_match: body::u64_header(headers, "if-match")?,
            idempotency_key: body::idempotency_key(headers)?,
            stamped_ms: 0,
        };
        state.propose(write).await
    }
    .await;
    match result {
        Ok(version) => versioned(json!({"version": version}), version),
        Err(e) => e.into_response(),
    }
}

pub(crate) fn admin_body(
    state: &Shared,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Bytes, ApiError> {
    body::bytes(raw, state.config.max_admin_body)
}

/// `PUT /v1/policies/{id}`: Cedar text, or `{"cedar": "…"}` as JSON.
pub async fn put_policy(
    State(state): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Response {
    let cedar = (|| {
        let raw = admin_body(&state, raw)?;
        if body::is_json(&headers) {
            let v = body::json(&raw)?;
            match v.get("cedar") {
                Some(Value::String(s)) => Ok(s.clone()),
                _ => Err(ApiError::bad_request(
                    "invalid_json",
                    "expected {\"cedar\": \"<policy text>\"}, or send the Cedar text as text/plain",
                )),
            }
        } else {
            Ok(body::text(&raw)?.to_string())
        }
    })();
    match cedar {
        Ok(cedar) => write(&state, &headers, Command::PutPolicy { id, cedar }).await,
        Err(e) => e.into_response(),
    }
}

/// `GET /v1/policies/{id}`.
pub async fn get_policy(State(state): State<Shared>, Path(id): Path<String>) -> Response {
    let snap = state.node.published().load_full();
    match snap.policy(&id) {
        Some(p) => versioned(
            json!({"id": p.id, "cedar": p.text, "version": p.version}),
            p.version,
        ),
        None => ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "no policy `{}`; `GET /v1/policies` lists the ids",
                verdict_engine::ids::truncate(&id, 128)
            ),
        )
        .into_response(),
    }
}

/// `GET /v1/policies`.
pub async fn list_policies(State(state): State<Shared>) -> Response {
    let snap = state.node.published().load_full();
    let list: Vec<Value> = snap
        .policies()
        .map(|p| json!({"id": p.id, "cedar": p.text, "version": p.version}))
        .collect();
    versioned(
        json!({"version": snap.version(), "policies_version": snap.policies_version(), "policies": list}),
        snap.version(),
    )
}

/// `DELETE /v1/policies/{id}`.
pub async fn delete_policy(
    State(state): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    write(&state, &headers, Command::DeletePolicy { id }).await
}

/// `PUT /v1/policies`: the whole set, as Cedar text or `{"policies": {"id": "cedar", …}}`.
pub async fn replace_policies(
    State(state): State<Shared>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Response {
    let command = (|| {
        let raw = admin_body(&state, raw)?;
        if body::is_json(&headers) {
            let v = body::json(&raw)?;
            let Some(Value::Object(map)) = v.get("policies") else {
                return Err(ApiError::bad_request(
                    "invalid_json",
                    "expected {\"policies\": {\"<id>\": \"<cedar>\", …}}, or send the Cedar text as text/plain",
                ));
            };
            too_many(
                map.len(),
                state.config.max_policies_per_write,
                "policies",
                "max_policies_per_write",
            )?;
            let mut policies = Vec::with_capacity(map.len());
            for (id, text) in map {
                let Value::String(text) = text else {
                    return Err(ApiError::bad_request(
                        "invalid_json",
                        format!("policy `{id}`: the value must be the Cedar text as a string"),
                    ));
                };
                policies.push((id.clone(), text.clone()));
            }
            Ok(Command::ReplacePoliciesMap { policies })
        } else {
            // An empty text is allowed here: it clears the set.
            let cedar = std::str::from_utf8(&raw).map_err(|_| {
                ApiError::bad_request("invalid_content_type", "the body is not UTF-8 text")
            })?;
            too_many(
                verdict_engine::limits::count_statements(cedar),
                state.config.max_policies_per_write,
                "policies",
                "max_policies_per_write",
            )?;
            Ok(Command::ReplacePoliciesText {
                cedar: cedar.to_string(),
            })
        }
    })();
    match command {
        Ok(c) => write(&state, &headers, c).await,
        Err(e) => e.into_response(),
    }
}

/// `413 too_many_items` when a write holds more than `limit` items.
fn too_many(n: usize, limit: usize, what: &str, setting: &str) -> Result<(), ApiError> {
    if n <= limit {
        return Ok(());
    }
    Err(ApiError::new(
        axum::http::StatusCode::PAYLOAD_TOO_LARGE,
        "too_many_items",
        format!("the write holds {n} {what}; this node takes at most {limit} per write (`{setting}`): split it"),
    ))
}

fn too_many_entities(state: &Shared, v: &Value) -> Result<(), ApiError> {
    let n = v.as_array().map_or(0, Vec::len);
    too_many(
        n,
        state.config.max_entities_per_write,
        "entities",
        "max_entities_per_write",
    )
}

/// `PUT /v1/schema`: Cedar schema text, or the JSON schema format with `Content-Type: application/json`.
pub async fn put_schema(
    State(state): State<Shared>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Response {
    let command = (|| {
        let raw = admin_body(&state, raw)?;
        let json = body::is_json(&headers);
        let text = body::text(&raw)?.to_string();
        if json {
            body::json(&raw)?;
        }
        Ok::<_, ApiError>(Command::PutSchema { text, json })
    })();
    match command {
        Ok(c) => write(&state, &headers, c).await,
        Err(e) => e.into_response(),
    }
}

/// `GET /v1/schema`.
pub async fn get_schema(State(state): State<Shared>) -> Response {
    let snap = state.node.published().load_full();
    match snap.schema() {
        Some(s) => {
            let schema = if s.json {
                serde_json::from_str(&s.text).unwrap_or(Value::String(s.text.clone()))
            } else {
                Value::String(s.text.clone())
            };
            versioned(
                json!({"schema": schema, "format": if s.json {"json"} else {"cedar"}, "version": s.version}),
                s.version,
            )
        }
        None => ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "not_found",
            "no schema is set",
        )
        .into_response(),
    }
}

/// `DELETE /v1/schema`.
pub async fn delete_schema(State(state): State<Shared>, headers: HeaderMap) -> Response {
    write(&state, &headers, Command::DeleteSchema).await
}

fn entity_array(
    state: &Shared,
    headers: &HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<String, ApiError> {
    let raw = admin_body(state, raw)?;
    if headers.get(header::CONTENT_TYPE).is_some() && !body::is_json(headers) {
        return Err(ApiError::bad_request(
            "invalid_content_type",
            "entities are JSON: send them with `Content-Type: application/json`",
        ));
    }
    let v = body::json(&raw)?;
    too_many_entities(state, &v)?;
    if !v.is_array() {
        return Err(ApiError::bad_request(
            "entity_invalid",
            "expected a JSON array of Cedar entities: [{\"uid\": {\"type\": \"User\", \"id\": \"alice\"}, \"attrs\": {}, \"parents\": []}]",
        ));
    }
    Ok(String::from_utf8_lossy(&raw).into_owned())
}

/// `403` unless `caller` may write entities of every type in `types`.
fn may_write_types<'a>(
    caller: &Caller,
    types: impl Iterator<Item = &'a str>,
) -> Result<(), ApiError> {
    let mut distinct: Vec<&str> = types.collect();
    distinct.sort_unstable();
    distinct.dedup();
    caller.require(Need::EntityTypes(&distinct))
}

/// The type names of the entity uids among `uids`; uids that do not parse are skipped (the write
/// itself refuses them).
fn uid_types<'a>(uids: impl Iterator<Item = &'a Value>) -> Vec<String> {
    uids.filter_map(|u| cedar_policy::EntityUid::from_json(u.clone()).ok())
        .map(|u| u.type_name().to_string())
        .collect()
}

/// `403 forbidden_parent` unless `caller` may write entities of every parent type in `types`:
/// membership in a group is a write to what the group grants, so a writer scoped to `Host` may
/// not enrol a Host in `Admins` (docs/security.md, "Delegated entity writes").
fn may_give_parents(caller: &Caller, types: &[String]) -> Result<(), ApiError> {
    may_write_types(caller, types.iter().map(String::as_str)).map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "forbidden_parent",
            format!(
                "an entity's parents must be of types the credential may write: {}",
                e.detail
            ),
        )
    })
}

/// `POST /v1/entities`: upsert.
pub async fn upsert_entities(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Response {
    let json = entity_array(&state, &headers, raw).and_then(|json| {
        if let Caller::Credential(_) = caller {
            // Entities whose uid does not parse are refused by the write itself.
            let value: Value = serde_json::from_str(&json).unwrap_or(Value::Null);
            let items = value.as_array().map(Vec::as_slice).unwrap_or_default();
            let types = uid_types(items.iter().filter_map(|i| i.get("uid")));
            may_write_types(&caller, types.iter().map(String::as_str))?;
            let parents = items
                .iter()
                .filter_map(|i| i.get("parents").and_then(Value::as_array))
                .flatten();
            may_give_parents(&caller, &uid_types(parents))?;
        }
        Ok(json)
    });
    match json {
        Ok(json) => write(&state, &headers, Command::UpsertEntities { json }).await,
        Err(e) => e.into_response(),
    }
}

/// `PUT /v1/entities`: replace all.
pub async fn replace_entities(
    State(state): State<Shared>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Response {
    match entity_array(&state, &headers, raw) {
        Ok(json) => write(&state, &headers, Command::ReplaceEntities { json }).await,
        Err(e) => e.into_response(),
    }
}

/// `DELETE /v1/entities`: `[{"type": …, "id": …}, …]`.
pub async fn delete_entities(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Response {
    let command = (|| {
        let raw = admin_body(&state, raw)?;
        let v = body::json(&raw)?;
        too_many_entities(&state, &v)?;
        let uids = verdict_engine::entity::parse_uids(&v)?;
        let types: Vec<String> = uids.iter().map(|u| u.type_name().to_string()).collect();
        may_write_types(&caller, types.iter().map(String::as_str))?;
        Ok::<_, ApiError>(Command::DeleteEntities {
            uids: uids
                .iter()
                .map(|u| (u.type_name().to_string(), u.id().unescaped().to_string()))
                .collect(),
        })
    })();
    match command {
        Ok(c) => write(&state, &headers, c).await,
        Err(e) => e.into_response(),
    }
}

/// `POST /v1/entities/{type}/{id}/parents` `{"add": [uid…], "remove": [uid…]}`: adds and
/// removes direct parents of a stored entity in one write (format level 2).
pub async fn edit_parents(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((ty, id)): Path<(String, String)>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Response {
    let level = verdict_engine::command::LEVEL_OF_NEW_COMMANDS;
    if let Some(refused) =
        crate::routes::upgrade::require_level(&state, level, "edit_parents").await
    {
        return refused.into_response();
    }
    let command = (|| {
        let uid = uid_from_parts(&ty, &id)?;
        let v = body::json(&admin_body(&state, raw)?)?;
        let Some(fields) = v.as_object() else {
            return Err(ApiError::bad_request(
                "invalid_request",
                r#"the body must be {"add": [{"type": "Group", "id": "g"}], "remove": [...]}"#,
            ));
        };
        if let Some(unknown) = fields.keys().find(|k| *k != "add" && *k != "remove") {
            return Err(ApiError::bad_request(
                "invalid_request",
                format!(
                    "unknown field `{}`: only `add` and `remove` are read",
                    verdict_engine::ids::truncate(unknown, 32)
                ),
            ));
        }
        let list = |name: &str| -> Result<Vec<cedar_policy::EntityUid>, ApiError> {
            match fields.get(name) {
                None => Ok(Vec::new()),
                Some(items) => verdict_engine::entity::parse_uids(items).map_err(|e| {
                    ApiError::bad_request("entity_invalid", format!("`{name}`: {}", e.detail))
                }),
            }
        };
        let (add, remove) = (list("add")?, list("remove")?);
        if add.is_empty() && remove.is_empty() {
            return Err(ApiError::bad_request(
                "missing_field",
                "nothing to change: give `add` or `remove` (arrays of {\"type\", \"id\"})",
            ));
        }
        too_many(
            add.len() + remove.len(),
            state.config.max_entities_per_write,
            "parents",
            "max_entities_per_write",
        )?;
        may_write_types(
            &caller,
            std::iter::once(uid.type_name().to_string().as_str()),
        )?;
        may_give_parents(&caller, &uid_types_of(&add))?;
        let pairs = |uids: &[cedar_policy::EntityUid]| -> Vec<(String, String)> {
            uids.iter()
                .map(|u| (u.type_name().to_string(), u.id().unescaped().to_string()))
                .collect()
        };
        Ok::<_, ApiError>(Command::EditParents {
            entity_type: ty.clone(),
            id: id.clone(),
            add: pairs(&add),
            remove: pairs(&remove),
        })
    })();
    match command {
        Ok(c) => write(&state, &headers, c).await,
        Err(e) => e.into_response(),
    }
}

fn uid_types_of(uids: &[cedar_policy::EntityUid]) -> Vec<String> {
    uids.iter().map(|u| u.type_name().to_string()).collect()
}

/// `GET /v1/entities/{type}/{id}`.
pub async fn get_entity(
    State(state): State<Shared>,
    Path((ty, id)): Path<(String, String)>,
) -> Response {
    let uid = match uid_from_parts(&ty, &id) {
        Ok(u) => u,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let snap = state.node.published().load_full();
    match snap.entity(&uid) {
        Some(e) => versioned(json!({"entity": e.json, "version": e.version}), e.version),
        None => ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "not_found",
            format!("no entity `{uid}`"),
        )
        .into_response(),
    }
}
