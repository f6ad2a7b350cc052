//! Tokens: the replicated key ring, issuing and introspecting PASETO v4.local tokens, and
//! revocation events. Rotations and revocations are writes through Raft; issuing and validating
//! are local to the node that receives the request (every node holds the same keys).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::Query;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::response::Response;
use rand::TryRngCore;
use serde::Deserialize;
use serde::Serialize;
use serde_json::json;
use serde_json::Map;
use serde_json::Value;
use verdict_engine::command::KeyMaterial;
use verdict_engine::keyring::KeyState;
use verdict_engine::revocation::Selector;
use verdict_engine::snapshot::TokenRefused;
use verdict_engine::token;
use verdict_engine::token::IssueRequest;
use verdict_engine::Command;

use crate::body;
use crate::error::ApiError;
use crate::routes::admin::admin_body;
use crate::routes::admin::write;
use crate::state::now_ms;
use crate::state::Shared;

/// 32 bytes from the operating system's entropy source.
fn os_key() -> Result<KeyMaterial, ApiError> {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| ApiError::internal(format!("the OS entropy source failed: {e}")))?;
    Ok(KeyMaterial(bytes))
}

/// `POST /v1/keys/rotate`: one log entry with new key material drawn here. Refused with
/// `409 rotation_too_fast` while it would drop a key that may still validate live tokens.
pub async fn rotate(State(state): State<Shared>, headers: HeaderMap) -> Response {
    let command = (|| {
        let first = state.node.published().load().keys().is_empty();
        Ok::<_, ApiError>(Command::RotateKeys {
            material: os_key()?,
            first_primary: if first { Some(os_key()?) } else { None },
            policy: state.config.tokens,
        })
    })();
    match command {
        Ok(command) => write(&state, &headers, command).await,
        Err(e) => e.into_response(),
    }
}

/// `GET /v1/keys`: ids, states and ages, never material.
pub async fn list_keys(State(state): State<Shared>) -> Response {
    let snap = state.node.published().load_full();
    let now = now_ms();
    let keys: Vec<Value> = snap
        .keys()
        .list()
        .iter()
        .map(|k| {
            let (name, since) = match k.state {
                KeyState::Staged => ("staged", None),
                KeyState::Primary => ("primary", None),
                KeyState::Secondary { since_ms } => ("secondary", Some(since_ms)),
            };
            json!({
                "id": k.id.0,
                "state": name,
                "created_ms": k.created_ms,
                "age_ms": now.saturating_sub(k.created_ms),
                "secondary_since_ms": since,
            })
        })
        .collect();
    body::versioned(
        json!({"version": snap.version(), "policy": snap.token_policy(), "keys": keys}),
        snap.version(),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IssueBody {
    sub: String,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    lifetime_ms: Option<u64>,
    #[serde(default)]
    aud_chain: Option<String>,
    #[serde(default)]
    claims: Map<String, Value>,
}

fn parse<T: for<'de> Deserialize<'de>>(raw: &[u8], shape: &str) -> Result<T, ApiError> {
    body::shallow(raw)?;
    serde_json::from_slice(raw).map_err(|e| {
        ApiError::bad_request("invalid_json", format!("the body must be {shape}: {e}"))
    })
}

fn token_error(e: &token::TokenError) -> ApiError {
    let status = match e {
        token::TokenError::NoPrimaryKey => StatusCode::CONFLICT,
        token::TokenError::Encrypt => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    };
    ApiError::new(status, e.code(), e.to_string())
}

/// `POST /v1/tokens`: issues a token with this node's copy of the primary key.
pub async fn issue(State(state): State<Shared>, raw: Result<Bytes, BytesRejection>) -> Response {
    let result = (|| {
        let raw = admin_body(&state, raw)?;
        let shape =
            r#"{"sub": "…", "scope"?: "…", "lifetime_ms"?: N, "aud_chain"?: "…", "claims"?: {…}}"#;
        let b: IssueBody = body::from_object(parse::<Value>(&raw, shape)?, shape, "invalid_json")?;
        let snap = state.node.published().load_full();
        let request = IssueRequest {
            sub: b.sub,
            scope: b.scope,
            lifetime_ms: b.lifetime_ms,
            aud_chain: b.aud_chain,
            extra: b.claims,
        };
        let jti = uuid::Uuid::now_v7().to_string();
        let (token, claims) =
            token::issue(snap.keys(), snap.token_policy(), request, now_ms(), jti)
                .map_err(|e| token_error(&e))?;
        Ok::<_, ApiError>(body::versioned(
            json!({"token": token, "claims": claims, "version": snap.version()}),
            snap.version(),
        ))
    })();
    result.unwrap_or_else(IntoResponse::into_response)
}

/// The token of an introspection request: `{"token": "…"}` or RFC 7662's form `token=…`.
fn token_of(headers: &HeaderMap, raw: &[u8]) -> Result<String, ApiError> {
    if body::is_json(headers) {
        let v = body::json(raw)?;
        return match v.get("token") {
            Some(Value::String(t)) => Ok(t.clone()),
            _ => Err(ApiError::bad_request(
                "missing_field",
                "expected {\"token\": \"v4.local.…\"} (or the form `token=…`)",
            )),
        };
    }
    let text = body::text(raw)?;
    text.split('&')
        .find_map(|pair| pair.strip_prefix("token="))
        .map(|t| t.replace("%2E", ".").replace("%2e", "."))
        .ok_or_else(|| {
            ApiError::bad_request(
                "missing_field",
                "expected the form field `token=…` (or JSON {\"token\": \"…\"})",
            )
        })
}

/// `POST /v1/tokens/introspect`: RFC 7662's shape. `active` is true only for a token that
/// decrypts under a key of this node's ring, has not expired (with the configured skew) and is not
/// revoked; otherwise `active: false` and a `reason` code. Honours `Verdict-Min-Version`.
pub async fn introspect(
    State(state): State<Shared>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let raw = admin_body(&state, raw)?;
        let token = token_of(&headers, &raw)?;
        // A client that just revoked through another node can demand that revocation here.
        if let Some(min) = body::u64_header(&headers, body::MIN_VERSION_HEADER)? {
            state.wait_for_version(min).await?;
        }
        let snap = state.node.published().load_full();
        let inactive =
            |reason: &str| json!({"active": false, "reason": reason, "version": snap.version()});
        let answer = match snap.check_token(&token, now_ms()) {
            Err(TokenRefused::Revoked { by, .. }) => {
                let mut v = inactive("revoked");
                body::set(&mut v, "revoked_by", json!(ApiSelector::from(by)));
                v
            }
            Err(refused) => inactive(refused.code()),
            Ok(claims) => {
                let mut v = serde_json::to_value(&claims)
                    .map_err(|e| ApiError::internal(format!("claims: {e}")))?;
                body::set(&mut v, "active", json!(true));
                body::set(&mut v, "version", json!(snap.version()));
                v
            }
        };
        Ok::<_, ApiError>(body::versioned(answer, snap.version()))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// A selector as the API spells it: `{"by": "subject", "sub": …}`. (The engine's own form is
/// externally tagged, because bincode, which carries it in the log, cannot read internal tags.)
#[derive(Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case", deny_unknown_fields)]
enum ApiSelector {
    Token { jti: String },
    AuditChain { chain: String },
    Subject { sub: String },
    SubjectScope { sub: String, scope: String },
}

impl From<ApiSelector> for Selector {
    fn from(s: ApiSelector) -> Self {
        match s {
            ApiSelector::Token { jti } => Selector::Token { jti },
            ApiSelector::AuditChain { chain } => Selector::AuditChain { chain },
            ApiSelector::Subject { sub } => Selector::Subject { sub },
            ApiSelector::SubjectScope { sub, scope } => Selector::SubjectScope { sub, scope },
        }
    }
}

impl From<Selector> for ApiSelector {
    fn from(s: Selector) -> Self {
        match s {
            Selector::Token { jti } => ApiSelector::Token { jti },
            Selector::AuditChain { chain } => ApiSelector::AuditChain { chain },
            Selector::Subject { sub } => ApiSelector::Subject { sub },
            Selector::SubjectScope { sub, scope } => ApiSelector::SubjectScope { sub, scope },
        }
    }
}

#[derive(Deserialize)]
struct RevokeBody {
    #[serde(flatten)]
    selector: ApiSelector,
    #[serde(default)]
    issued_before: Option<u64>,
}

/// `POST /v1/revocations`: `{"by": "token", "jti": …}`, `{"by": "audit_chain", "chain": …}`,
/// `{"by": "subject", "sub": …}` or `{"by": "subject_scope", "sub": …, "scope": …}`, with an
/// optional `issued_before` (ms; default: now); or an array of up to 10,000 of them, applied as
/// one log entry, all or none.
pub async fn revoke(
    State(state): State<Shared>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Response {
    let command = (|| {
        let raw = admin_body(&state, raw)?;
        let shape = r#"{"by": "token"|"audit_chain"|"subject"|"subject_scope", "jti"|"chain"|"sub" (+ "scope"): "…", "issued_before"?: ms}, or an array of them"#;
        let bodies: Vec<RevokeBody> =
            if raw.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
                parse(&raw, shape)?
            } else {
                vec![parse(&raw, shape)?]
            };
        let mut events = Vec::with_capacity(bodies.len());
        for (i, b) in bodies.into_iter().enumerate() {
            let selector = Selector::from(b.selector);
            selector.validate().map_err(|mut e| {
                if i > 0 {
                    e.detail = format!("event {i}: {}", e.detail);
                }
                ApiError::from(e)
            })?;
            events.push((selector, b.issued_before));
        }
        Ok::<_, ApiError>(Command::Revoke { events })
    })();
    match command {
        Ok(command) => write(&state, &headers, command).await,
        Err(e) => e.into_response(),
    }
}

/// Paging of `GET /v1/revocations`.
#[derive(Deserialize)]
pub struct Page {
    /// The `next` cursor of the previous page (a selector as JSON).
    after: Option<String>,
    /// Page size, at most 1,000 (default 100).
    limit: Option<usize>,
}

/// `GET /v1/revocations?after=…&limit=…`: the watermarks (one per selector: the latest
/// `issued_before`), a page at a time, and the cursor of the next page.
pub async fn list_revocations(State(state): State<Shared>, Query(page): Query<Page>) -> Response {
    let result = (|| {
        let after: Option<Selector> = page
            .after
            .as_deref()
            .map(|a| parse::<ApiSelector>(a.as_bytes(), "a `next` cursor from the previous page"))
            .transpose()?
            .map(Selector::from);
        let limit = page.limit.unwrap_or(100).clamp(1, 1000);
        let snap = state.node.published().load_full();
        let items = snap.revocations().page(after.as_ref(), limit);
        let next = (items.len() == limit)
            .then(|| {
                items
                    .last()
                    .map(|(s, _)| serde_json::to_string(&ApiSelector::from(s.clone())).ok())
            })
            .flatten()
            .flatten();
        let list: Vec<Value> = items
            .into_iter()
            .map(|(s, before)| {
                let mut v = json!(ApiSelector::from(s));
                body::set(&mut v, "issued_before", json!(before));
                v
            })
            .collect();
        Ok::<_, ApiError>(body::versioned(
            json!({"version": snap.version(), "total": snap.revocations().len(), "revocations": list, "next": next}),
            snap.version(),
        ))
    })();
    result.unwrap_or_else(IntoResponse::into_response)
}
