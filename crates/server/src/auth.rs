//! Who may call what: authentication of API credentials (`Authorization: Bearer <id>.<secret>`)
//! against the replicated credential table, and authorization of each route by scope.
//!
//! When credentials are required:
//! - admin endpoints: once any credential was ever created (the bootstrap admin or another), on a
//!   node whose API listens beyond loopback, or with `require_credentials = true`;
//! - decisions and token introspection: with `decisions_require_credential = true`, or by default
//!   when the API listens beyond loopback.
//!
//! Health (`/livez`, `/readyz`), `/metrics`, `/v1/decision-logs/status` and the AuthZEN metadata
//! are never behind authentication.
//!
//! Verifying a secret is argon2id, slow on purpose (~20 ms). A verified secret is remembered as a
//! keyed BLAKE2b tag of (id, secret) under a random per-process key, with the version that created
//! the credential; later requests cost one MAC and one map look-up, and a revoked credential fails
//! at once because the look-up starts from the current snapshot's table. At most two verifications
//! run at once, so guessing costs the node bounded CPU.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::RwLock;
use std::time::Duration;

use axum::extract::MatchedPath;
use axum::extract::Request;
use axum::extract::State;
use axum::http::header;
use axum::http::HeaderMap;
use axum::http::Method;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::IntoResponse;
use axum::response::Response;
use blake2::digest::Mac;
use verdict_engine::credential::split_presented;
use verdict_engine::credential::verify_secret;
use verdict_engine::credential::Credential;
use verdict_engine::credential::Need;

use crate::error::ApiError;
use crate::state::Metrics;
use crate::state::Shared;

/// Most remembered verified secrets; the table is cleared when full (they are re-verified).
const MAX_REMEMBERED: usize = 4096;
/// Most argon2 verifications at once.
const MAX_VERIFYING: usize = 2;
/// How long a request waits for a verification slot before `503 overloaded`.
const VERIFY_WAIT: Duration = Duration::from_secs(2);
/// Shortest accepted bootstrap admin secret.
pub const MIN_SECRET_LEN: usize = 16;

type Tag = [u8; 32];

/// The node's authentication state: the settings and the remembered verifications.
pub struct Auth {
    admin_required: bool,
    decisions_required: bool,
    key: [u8; 32],
    remembered: RwLock<HashMap<Tag, u64>>,
    verifying: tokio::sync::Semaphore,
}

/// Who is calling, as the middleware established it; handlers that check body-dependent scopes
/// (entity types) read it from the request extensions.
#[derive(Debug, Clone)]
pub enum Caller {
    /// Credentials are not required for this request.
    Open,
    /// A verified credential.
    Credential(Arc<Credential>),
}

impl Caller {
    /// `Ok` if the caller may do what `need` names; `403 forbidden` saying what is missing.
    pub fn require(&self, need: Need<'_>) -> Result<(), ApiError> {
        match self {
            Caller::Open => Ok(()),
            Caller::Credential(c) if c.allows(need) => Ok(()),
            Caller::Credential(c) => {
                let scopes: Vec<String> = c.scopes.iter().map(ToString::to_string).collect();
                Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    format!(
                        "credential `{}` ({}) has scopes [{}]; this request needs {need}. Ask an \
                         admin for a credential with that scope (`verdict credential create \
                         --scope …`)",
                        c.id,
                        c.name,
                        scopes.join(", ")
                    ),
                ))
            }
        }
    }
}

/// Which rule decides whether a route needs a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Admin,
    Decision,
}

/// What a route needs, before looking at its body.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RouteNeed {
    Admin,
    Read,
    Decide,
    Revoke,
    TokenIssue,
    Policy(String),
    AllPolicies,
    AllEntities,
    /// The handler checks the entity types it parses from the body.
    EntitiesInBody,
}

impl Auth {
    /// The settings for a node with `config`; `bootstrapping`: a bootstrap admin secret is
    /// configured, so admin endpoints are closed from the first request, before the credential
    /// it creates is applied (they would otherwise be open for that moment on a loopback node).
    pub fn new(config: &crate::config::Config, bootstrapping: bool) -> Self {
        use rand::Rng;
        let beyond_loopback = !config.listen.ip().is_loopback();
        Self {
            admin_required: config.require_credentials || beyond_loopback || bootstrapping,
            decisions_required: config.decisions_need_credential(),
            key: rand::rng().random(),
            remembered: RwLock::new(HashMap::new()),
            verifying: tokio::sync::Semaphore::new(MAX_VERIFYING),
        }
    }

    /// Whether decisions need a `decide` credential on this node.
    pub fn decisions_required(&self) -> bool {
        self.decisions_required
    }

    fn tag(&self, id: &str, secret: &str) -> Option<Tag> {
        let mut mac =
            blake2::Blake2bMac::<blake2::digest::consts::U32>::new_from_slice(&self.key).ok()?;
        mac.update(id.as_bytes());
        mac.update(&[0]);
        mac.update(secret.as_bytes());
        Some(mac.finalize().into_bytes().into())
    }

    /// Establishes the caller of a request of `class`: `Open` when credentials are not required,
    /// else a verified credential or `401 unauthorized`.
    async fn caller(
        &self,
        state: &Shared,
        headers: &HeaderMap,
        class: Class,
    ) -> Result<Caller, ApiError> {
        // Open decisions cost one branch: no snapshot load on that path.
        if class == Class::Decision && !self.decisions_required {
            return Ok(Caller::Open);
        }
        let snapshot = state.node.published().load_full();
        let table = snapshot.credentials();
        if class == Class::Admin && !self.admin_required && !table.enabled() {
            return Ok(Caller::Open);
        }
        // A client that just created or revoked a credential (on any node) names that version:
        // judge its credential by a table at least that new.
        let snapshot = match crate::body::u64_header(headers, crate::body::MIN_VERSION_HEADER)? {
            Some(min) if snapshot.version() < min => {
                state.wait_for_version(min).await?;
                state.node.published().load_full()
            }
            _ => snapshot,
        };
        let table = snapshot.credentials();
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let Some(presented) = presented else {
            return Err(unauthorized(
                "this endpoint needs a credential: send `Authorization: Bearer <id>.<secret>` \
                 (the CLI reads it from VERDICT_TOKEN or VERDICT_TOKEN_FILE)",
            ));
        };
        if table.is_empty() {
            return Err(unauthorized(
                "no credentials exist on this cluster yet: a configured bootstrap admin is created \
                 as soon as the cluster commits a write (retry shortly); otherwise start a node \
                 with `--admin-secret-file` (or VERDICT_ADMIN_SECRET) to create it",
            ));
        }
        let refuse = |id: &str, why: &str| {
            Metrics::inc(&state.metrics.auth_failures);
            tracing::warn!(
                credential = id,
                reason = why,
                "refused a request's credential"
            );
            unauthorized(format!(
                "credential refused ({why}); it looks like `<id>.<secret>` as printed once by \
                 `verdict credential create`"
            ))
        };
        let Some((id, secret)) = split_presented(presented) else {
            return Err(refuse("-", "malformed"));
        };
        let Some(credential) = table.get(id) else {
            return Err(refuse(id, "unknown or revoked credential id"));
        };
        let Some(tag) = self.tag(id, secret) else {
            return Err(ApiError::internal("credential MAC key"));
        };
        let known = self
            .remembered
            .read()
            .map(|m| m.get(&tag) == Some(&credential.version))
            .unwrap_or(false);
        if known {
            return Ok(Caller::Credential(credential.clone()));
        }
        let Ok(Ok(_permit)) = tokio::time::timeout(VERIFY_WAIT, self.verifying.acquire()).await
        else {
            return Err(ApiError::unavailable(
                "overloaded",
                "too many credentials are being verified right now; retry shortly",
            ));
        };
        let (secret, hash) = (secret.to_string(), credential.hash.clone());
        let ok = tokio::task::spawn_blocking(move || verify_secret(&secret, &hash))
            .await
            .unwrap_or(false);
        if !ok {
            return Err(refuse(id, "wrong secret"));
        }
        if let Ok(mut m) = self.remembered.write() {
            if m.len() >= MAX_REMEMBERED {
                m.clear();
            }
            m.insert(tag, credential.version);
        }
        Ok(Caller::Credential(credential.clone()))
    }
}

fn unauthorized(detail: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
}

/// The need of a route, from its method and matched path (`path` is the raw request path, for the
/// policy id).
fn route_need(method: &Method, matched: &str, path: &str) -> Option<(Class, RouteNeed)> {
    let read = method == Method::GET || method == Method::HEAD;
    let need = match matched {
        // A read, but it asks every member and tells how the cluster would fare without some:
        // for operators only.
        "/v1/cluster/capacity" | "/v1/cluster/upgrade" => RouteNeed::Admin,
        "/access/v1/evaluation" | "/access/v1/evaluations" | "/v1/tokens/introspect" => {
            return Some((Class::Decision, RouteNeed::Decide))
        }
        _ if read => RouteNeed::Read,
        "/v1/policies" => RouteNeed::AllPolicies,
        "/v1/policies/{id}" => {
            let raw = path.strip_prefix("/v1/policies/").unwrap_or_default();
            RouteNeed::Policy(
                percent_encoding::percent_decode_str(raw)
                    .decode_utf8_lossy()
                    .into_owned(),
            )
        }
        "/v1/schema" => RouteNeed::AllPolicies,
        "/v1/entities" if method == Method::PUT => RouteNeed::AllEntities,
        "/v1/entities" => RouteNeed::EntitiesInBody,
        // The entity's type and its new parents' types are checked by the handler.
        "/v1/entities/{type}/{id}/parents" => RouteNeed::EntitiesInBody,
        "/v1/tokens" => RouteNeed::TokenIssue,
        "/v1/revocations" => RouteNeed::Revoke,
        // Keys, cluster membership, drain, credentials, and anything added later.
        _ => RouteNeed::Admin,
    };
    // Credentials are listed by admins only, even for reading.
    if matched.starts_with("/v1/credentials") {
        return Some((Class::Admin, RouteNeed::Admin));
    }
    Some((Class::Admin, need))
}

/// Middleware (as a route layer, so the matched path is known): authenticates the caller,
/// checks the route's scope, and leaves the [`Caller`] in the request's extensions where a
/// handler reads it back. For long-lived routes (the watch stream).
pub async fn authorize(State(state): State<Shared>, req: Request, next: Next) -> Response {
    match admit(&state, req).await {
        Ok(req) => next.run(req).await,
        Err(refused) => refused,
    }
}

/// [`authorize`], then the request (reading its body included) gets `request_timeout_ms`, else
/// `408 request_timeout` and its in-flight slot is freed — unless it has proposed a write (see
/// [`crate::proposed`]). One layer for both: each layer costs
/// every decision a boxed future.
pub async fn authorize_within_time(
    State(state): State<Shared>,
    req: Request,
    next: Next,
) -> Response {
    let req = match admit(&state, req).await {
        Ok(req) => req,
        Err(refused) => return refused,
    };
    let limit = Duration::from_millis(state.config.request_timeout_ms.max(1));
    let proposal = crate::proposed::Proposal::default();
    let request = proposal.scope(next.run(req));
    tokio::pin!(request);
    match tokio::time::timeout(limit, &mut request).await {
        Ok(resp) => resp,
        // A proposed write may commit: answer its outcome, never `408` (the proposal's own wait is
        // bounded, ending in `503`).
        Err(_) if proposal.was_proposed() => request.await,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the request took longer than {} ms (`request_timeout_ms`), reading its body \
                 included; send it faster or raise the limit",
                limit.as_millis()
            ),
        )
        .into_response(),
    }
}

async fn admit(state: &Shared, mut req: Request) -> Result<Request, Response> {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .and_then(|m| route_need(req.method(), m.as_str(), req.uri().path()));
    let Some((class, need)) = route else {
        return Ok(req);
    };
    let caller = match state.auth.caller(state, req.headers(), class).await {
        Ok(c) => c,
        Err(e) => return Err(e.into_response()),
    };
    let checked = match &need {
        RouteNeed::Admin => caller.require(Need::Admin),
        RouteNeed::Read => caller.require(Need::Read),
        RouteNeed::Decide => caller.require(Need::Decide),
        RouteNeed::Revoke => caller.require(Need::Revoke),
        RouteNeed::TokenIssue => caller.require(Need::TokenIssue),
        RouteNeed::Policy(id) => caller.require(Need::Policies(&[id.as_str()])),
        RouteNeed::AllPolicies => caller.require(Need::AllPolicies),
        RouteNeed::AllEntities => caller.require(Need::AllEntities),
        RouteNeed::EntitiesInBody => Ok(()),
    };
    if let Err(e) = checked {
        Metrics::inc(&state.metrics.auth_forbidden);
        return Err(e.into_response());
    }
    // Only entity writes read the caller back (for their body's types).
    if need == RouteNeed::EntitiesInBody {
        req.extensions_mut().insert(caller);
    }
    Ok(req)
}

/// Reads the bootstrap admin secret: `admin_secret_file` if set, else the `VERDICT_ADMIN_SECRET`
/// environment variable; `None` if neither is set. Too short a secret stops start-up.
pub fn bootstrap_secret(config: &crate::config::Config) -> anyhow::Result<Option<String>> {
    let secret = match &config.admin_secret_file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot read admin_secret_file {}: {e}; give a file holding the bootstrap admin secret",
                    path.display()
                )
            })?
            .trim()
            .to_string(),
        None => match std::env::var("VERDICT_ADMIN_SECRET") {
            Ok(s) => s.trim().to_string(),
            Err(_) => return Ok(None),
        },
    };
    if secret.len() < MIN_SECRET_LEN || secret.contains(char::is_whitespace) {
        anyhow::bail!(
            "the bootstrap admin secret must be at least {MIN_SECRET_LEN} characters without \
             whitespace (e.g. `openssl rand -hex 32`)"
        );
    }
    Ok(Some(secret))
}

/// Creates the bootstrap admin credential `admin` from `secret` once the cluster can take a write,
/// unless a bootstrap already happened (then it does nothing: the first node's secret counts).
/// Retries until it succeeds or the node stops.
pub async fn bootstrap(state: Shared, secret: String) {
    use rand::Rng;
    let mut logged = false;
    loop {
        if state.node.published().load().credentials().bootstrapped() {
            return;
        }
        if *state.stop.borrow() {
            return;
        }
        let salt: [u8; 16] = rand::rng().random();
        let secret = secret.clone();
        let hash = tokio::task::spawn_blocking(move || {
            verdict_engine::credential::hash_secret(&secret, &salt)
        })
        .await;
        let result = match hash {
            Ok(Ok(hash)) => {
                state
                    .propose(verdict_engine::Write {
                        command: verdict_engine::Command::BootstrapAdmin { hash },
                        if_match: None,
                        idempotency_key: None,
                        stamped_ms: 0,
                    })
                    .await
            }
            Ok(Err(e)) => Err(e.into()),
            Err(e) => Err(ApiError::internal(e.to_string())),
        };
        match result {
            Ok(version) => {
                let made_here = state
                    .node
                    .published()
                    .load()
                    .credentials()
                    .get(verdict_engine::credential::BOOTSTRAP_ID)
                    .is_some_and(|c| c.version == version);
                if made_here {
                    tracing::info!(version, "created the bootstrap admin credential `admin`");
                }
                return;
            }
            Err(e) if !logged => {
                tracing::info!(reason = %e.detail, "bootstrap admin credential not created yet; retrying");
                logged = true;
            }
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_map_to_their_scopes() {
        let n = |m: Method, p: &str, raw: &str| route_need(&m, p, raw).map(|(_, n)| n);
        assert_eq!(
            n(
                Method::PUT,
                "/v1/policies/{id}",
                "/v1/policies/tenant-a%2Fp1"
            ),
            Some(RouteNeed::Policy("tenant-a/p1".into()))
        );
        assert_eq!(
            n(Method::GET, "/v1/policies/{id}", "/v1/policies/x"),
            Some(RouteNeed::Read)
        );
        assert_eq!(
            n(Method::PUT, "/v1/policies", ""),
            Some(RouteNeed::AllPolicies)
        );
        assert_eq!(
            n(Method::DELETE, "/v1/schema", ""),
            Some(RouteNeed::AllPolicies)
        );
        assert_eq!(
            n(Method::POST, "/v1/entities", ""),
            Some(RouteNeed::EntitiesInBody)
        );
        assert_eq!(
            n(Method::PUT, "/v1/entities", ""),
            Some(RouteNeed::AllEntities)
        );
        assert_eq!(
            n(Method::POST, "/v1/keys/rotate", ""),
            Some(RouteNeed::Admin)
        );
        assert_eq!(
            n(Method::GET, "/v1/credentials", ""),
            Some(RouteNeed::Admin)
        );
        assert_eq!(
            n(Method::GET, "/v1/cluster/capacity", ""),
            Some(RouteNeed::Admin)
        );
        assert_eq!(
            n(Method::DELETE, "/v1/cluster/members/{id}/drain", ""),
            Some(RouteNeed::Admin)
        );
        assert_eq!(
            n(Method::POST, "/v1/tokens", ""),
            Some(RouteNeed::TokenIssue)
        );
        assert_eq!(
            n(Method::POST, "/v1/revocations", ""),
            Some(RouteNeed::Revoke)
        );
        assert_eq!(
            route_need(&Method::POST, "/access/v1/evaluation", ""),
            Some((Class::Decision, RouteNeed::Decide))
        );
    }
}
