//! [`Client`]: one method per endpoint of `docs/api.md`.

use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::header::CONTENT_TYPE;
use reqwest::Method;
use reqwest::RequestBuilder;
use reqwest::Response;
use reqwest::StatusCode;
use reqwest::Url;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::types::Written;
use crate::Decision;
use crate::EntityRecord;
use crate::Error;
use crate::EvaluationRequest;
use crate::EvaluationResponse;
use crate::EvaluationsRequest;
use crate::EvaluationsResponse;
use crate::Policy;
use crate::PolicyList;
use crate::Readiness;
use crate::Result;
use crate::Schema;

const MIN_VERSION: &str = "verdict-min-version";
const VERSION: &str = "verdict-version";
const IF_MATCH: &str = "if-match";
const IDEMPOTENCY_KEY: &str = "idempotency-key";
const TEXT: &str = "text/plain; charset=utf-8";

/// Connects within 5 s and gives up on an answer after 60 s.
fn default_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(60))
}

/// A handle on one Verdict node. Cheap to clone; clones share one connection pool.
///
/// Every write takes `if_match` (fail with `precondition_failed` unless the resource is still at that
/// version; `Some(0)` means "must not exist") and `idempotency_key` (a retry with the same key is
/// applied once), and returns the committed version of the write.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
}

impl Client {
    /// A client for the node at `base_url`, e.g. `http://127.0.0.1:8080`.
    ///
    /// Connects within 5 s and gives up on an answer after 60 s; use [`Client::with_http_client`]
    /// for other settings.
    pub fn new(base_url: &str) -> Result<Self> {
        let http = default_builder().build().map_err(Error::Transport)?;
        Self::with_http_client(base_url, http)
    }

    /// [`Client::new`] that also trusts the CA certificate(s) in `ca_pem` (PEM, one or more
    /// `CERTIFICATE` blocks) for an `https://` node, e.g. a cluster with its own CA. The usual
    /// web roots stay trusted.
    pub fn with_ca_pem(base_url: &str, ca_pem: &[u8]) -> Result<Self> {
        let invalid = |message: String| Error::InvalidCa { message };
        let certs = reqwest::Certificate::from_pem_bundle(ca_pem)
            .map_err(|e| invalid(format!("not a PEM certificate bundle: {e}")))?;
        if certs.is_empty() {
            return Err(invalid(
                "no `-----BEGIN CERTIFICATE-----` block in it".to_owned(),
            ));
        }
        let mut builder = default_builder();
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
        let http = builder.build().map_err(|e| invalid(e.to_string()))?;
        Self::with_http_client(base_url, http)
    }

    /// A client that sends through `http` (custom timeouts, TLS roots, pool size).
    pub fn with_http_client(base_url: &str, http: reqwest::Client) -> Result<Self> {
        let invalid = |message: &str| Error::InvalidUrl {
            url: base_url.to_owned(),
            message: message.to_owned(),
        };
        let base = Url::parse(base_url).map_err(|e| invalid(&e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(invalid("the scheme must be http or https"));
        }
        if base.cannot_be_a_base() {
            return Err(invalid("it cannot hold a path"));
        }
        Ok(Self {
            http,
            base,
            token: None,
        })
    }

    /// The same client, sending `Authorization: Bearer <credential>` (`<id>.<secret>`, as
    /// `verdict credential create` printed it) with every request.
    pub fn with_token(mut self, credential: &str) -> Self {
        self.token = Some(credential.trim().to_owned());
        self
    }

    /// The node this client talks to.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// `GET /livez`: succeeds while the process runs.
    pub async fn livez(&self) -> Result<()> {
        self.send(self.request(Method::GET, &["livez"])?).await?;
        Ok(())
    }

    /// `GET /readyz`. A not-ready node (503 with a readiness body) is `Ok` with `ready: false`.
    pub async fn readyz(&self) -> Result<Readiness> {
        let resp = self
            .request(Method::GET, &["readyz"])?
            .send()
            .await
            .map_err(Error::Transport)?;
        let status = resp.status();
        if status.is_success() || status == StatusCode::SERVICE_UNAVAILABLE {
            let bytes = resp.bytes().await.map_err(Error::Transport)?;
            if let Ok(r) = serde_json::from_slice::<Readiness>(&bytes) {
                return Ok(r);
            }
            return Err(Error::from_error_response(status.as_u16(), &bytes));
        }
        Err(error_from(resp).await)
    }

    /// `POST /access/v1/evaluation`. With `min_version`, the node answers from a snapshot at least
    /// that new (or fails with `stale` / `future_version`).
    pub async fn evaluation(
        &self,
        request: &EvaluationRequest,
        min_version: Option<u64>,
    ) -> Result<Decision<EvaluationResponse>> {
        self.decide(&["access", "v1", "evaluation"], request, min_version)
            .await
    }

    /// `POST /access/v1/evaluations` (batch).
    pub async fn evaluations(
        &self,
        request: &EvaluationsRequest,
        min_version: Option<u64>,
    ) -> Result<Decision<EvaluationsResponse>> {
        self.decide(&["access", "v1", "evaluations"], request, min_version)
            .await
    }

    /// `PUT /v1/policies/{id}` with the Cedar text of one static policy.
    pub async fn put_policy(
        &self,
        id: &str,
        cedar: &str,
        if_match: Option<u64>,
        idempotency_key: Option<&str>,
    ) -> Result<u64> {
        let rb = self
            .request(Method::PUT, &["v1", "policies", id])?
            .header(CONTENT_TYPE, TEXT)
            .body(cedar.to_owned());
        self.write(rb, if_match, idempotency_key).await
    }

    /// `GET /v1/policies/{id}`.
    pub async fn get_policy(&self, id: &str) -> Result<Policy> {
        let resp = self
            .send(self.request(Method::GET, &["v1", "policies", id])?)
            .await?;
        decode(resp).await
    }

    /// `GET /v1/policies`: every policy, sorted by id.
    pub async fn list_policies(&self) -> Result<PolicyList> {
        let resp = self
            .send(self.request(Method::GET, &["v1", "policies"])?)
            .await?;
        decode(resp).await
    }

    /// `DELETE /v1/policies/{id}`; `not_found` if absent.
    pub async fn delete_policy(
        &self,
        id: &str,
        if_match: Option<u64>,
        idempotency_key: Option<&str>,
    ) -> Result<u64> {
        let rb = self.request(Method::DELETE, &["v1", "policies", id])?;
        self.write(rb, if_match, idempotency_key).await
    }

    /// `PUT /v1/policies`: replaces the whole policy set with the policies of `cedar`, atomically.
    /// Ids come from `@id("…")` annotations, else `policy0`, `policy1`, … by position.
    pub async fn replace_policies(
        &self,
        cedar: &str,
        if_match: Option<u64>,
        idempotency_key: Option<&str>,
    ) -> Result<u64> {
        let rb = self
            .request(Method::PUT, &["v1", "policies"])?
            .header(CONTENT_TYPE, TEXT)
            .body(cedar.to_owned());
        self.write(rb, if_match, idempotency_key).await
    }

    /// `PUT /v1/schema`: `text` is Cedar's JSON schema format when `is_json`, else human-readable
    /// Cedar schema text.
    pub async fn put_schema(
        &self,
        text: &str,
        is_json: bool,
        if_match: Option<u64>,
        idempotency_key: Option<&str>,
    ) -> Result<u64> {
        let content_type = if is_json { "application/json" } else { TEXT };
        let rb = self
            .request(Method::PUT, &["v1", "schema"])?
            .header(CONTENT_TYPE, content_type)
            .body(text.to_owned());
        self.write(rb, if_match, idempotency_key).await
    }

    /// `GET /v1/schema`; `not_found` if none is set.
    pub async fn get_schema(&self) -> Result<Schema> {
        let resp = self
            .send(self.request(Method::GET, &["v1", "schema"])?)
            .await?;
        decode(resp).await
    }

    /// `DELETE /v1/schema`.
    pub async fn delete_schema(
        &self,
        if_match: Option<u64>,
        idempotency_key: Option<&str>,
    ) -> Result<u64> {
        let rb = self.request(Method::DELETE, &["v1", "schema"])?;
        self.write(rb, if_match, idempotency_key).await
    }

    /// `POST /v1/entities`: upserts `entities`, a JSON array in Cedar's entity format (a
    /// `serde_json::Value` or anything that serializes to one).
    pub async fn upsert_entities<T: Serialize + ?Sized>(
        &self,
        entities: &T,
        if_match: Option<u64>,
        idempotency_key: Option<&str>,
    ) -> Result<u64> {
        let rb = self
            .request(Method::POST, &["v1", "entities"])?
            .json(entities);
        self.write(rb, if_match, idempotency_key).await
    }

    /// `DELETE /v1/entities`: `uids` is an array of `{"type", "id"}` (e.g. `&[EntityUid]`).
    pub async fn delete_entities<T: Serialize + ?Sized>(
        &self,
        uids: &T,
        if_match: Option<u64>,
        idempotency_key: Option<&str>,
    ) -> Result<u64> {
        let rb = self
            .request(Method::DELETE, &["v1", "entities"])?
            .json(uids);
        self.write(rb, if_match, idempotency_key).await
    }

    /// `GET /v1/entities/{type}/{id}`; `not_found` if absent.
    pub async fn get_entity(&self, r#type: &str, id: &str) -> Result<EntityRecord> {
        let resp = self
            .send(self.request(Method::GET, &["v1", "entities", r#type, id])?)
            .await?;
        decode(resp).await
    }

    /// `PUT /v1/entities`: replaces all entities with `entities`, atomically.
    pub async fn replace_entities<T: Serialize + ?Sized>(
        &self,
        entities: &T,
        if_match: Option<u64>,
        idempotency_key: Option<&str>,
    ) -> Result<u64> {
        let rb = self
            .request(Method::PUT, &["v1", "entities"])?
            .json(entities);
        self.write(rb, if_match, idempotency_key).await
    }

    /// `POST /v1/entities/{type}/{id}/parents`: adds and removes direct parents of one entity
    /// (`(type, id)` pairs), in one write.
    pub async fn edit_parents(
        &self,
        (r#type, id): (&str, &str),
        add: &[(String, String)],
        remove: &[(String, String)],
        if_match: Option<u64>,
        idempotency_key: Option<&str>,
    ) -> Result<u64> {
        let uids = |pairs: &[(String, String)]| -> Vec<serde_json::Value> {
            pairs
                .iter()
                .map(|(t, i)| serde_json::json!({"type": t, "id": i}))
                .collect()
        };
        let rb = self
            .request(Method::POST, &["v1", "entities", r#type, id, "parents"])?
            .json(&serde_json::json!({"add": uids(add), "remove": uids(remove)}));
        self.write(rb, if_match, idempotency_key).await
    }

    /// `GET /v1/watch?from=N`: the raw server-sent-event response, to read with
    /// `Response::chunk` (each event is `id:`, `event:` and `data:` lines and a blank line).
    pub async fn watch(&self, from: Option<u64>) -> Result<Response> {
        let mut rb = self.request(Method::GET, &["v1", "watch"])?;
        if let Some(v) = from {
            rb = rb.query(&[("from", v)]);
        }
        // A stream has no overall deadline.
        rb = rb.timeout(Duration::from_secs(365 * 24 * 3600));
        self.send(rb).await
    }

    /// `POST /v1/keys/rotate`: one rotation of the token key ring; the version it committed at.
    pub async fn rotate_keys(&self) -> Result<u64> {
        let rb = self
            .request(Method::POST, &["v1", "keys", "rotate"])?
            .json(&serde_json::json!({}));
        self.write(rb, None, None).await
    }

    /// `POST /v1/credentials`: a new credential with `name` and `scopes` (e.g. `read`,
    /// `policy:write:tenant-a/`); the answer holds `id`, `scopes` and the `secret`, shown once.
    pub async fn create_credential(
        &self,
        name: &str,
        scopes: &[String],
    ) -> Result<serde_json::Value> {
        let rb = self
            .request(Method::POST, &["v1", "credentials"])?
            .json(&serde_json::json!({"name": name, "scopes": scopes}));
        decode(self.send(rb).await?).await
    }

    /// `GET /v1/credentials`: ids, names, scopes and creation times (never secrets).
    pub async fn list_credentials(&self) -> Result<serde_json::Value> {
        decode(
            self.send(self.request(Method::GET, &["v1", "credentials"])?)
                .await?,
        )
        .await
    }

    /// `DELETE /v1/credentials/{id}`: revokes it on every node at the returned version.
    pub async fn revoke_credential(&self, id: &str) -> Result<u64> {
        let rb = self.request(Method::DELETE, &["v1", "credentials", id])?;
        self.write(rb, None, None).await
    }

    /// `GET /v1/keys`: ids, states and ages of the keys, and the ring's policy.
    pub async fn list_keys(&self) -> Result<serde_json::Value> {
        decode(
            self.send(self.request(Method::GET, &["v1", "keys"])?)
                .await?,
        )
        .await
    }

    /// `POST /v1/tokens`: `request` is `{"sub", "scope"?, "lifetime_ms"?, "aud_chain"?,
    /// "claims"?}`; the answer holds `token` and `claims`.
    pub async fn issue_token(&self, request: &serde_json::Value) -> Result<serde_json::Value> {
        let rb = self.request(Method::POST, &["v1", "tokens"])?.json(request);
        decode(self.send(rb).await?).await
    }

    /// `POST /v1/tokens/introspect`, at (at least) `min_version` if given.
    pub async fn introspect(
        &self,
        token: &str,
        min_version: Option<u64>,
    ) -> Result<serde_json::Value> {
        let mut rb = self
            .request(Method::POST, &["v1", "tokens", "introspect"])?
            .json(&serde_json::json!({ "token": token }));
        if let Some(v) = min_version {
            rb = rb.header(MIN_VERSION, v);
        }
        decode(self.send(rb).await?).await
    }

    /// `POST /v1/revocations`: one event (`{"by": …}`) or an array of them.
    pub async fn revoke(
        &self,
        events: &serde_json::Value,
        idempotency_key: Option<&str>,
    ) -> Result<u64> {
        let rb = self
            .request(Method::POST, &["v1", "revocations"])?
            .json(events);
        self.write(rb, None, idempotency_key).await
    }

    /// `GET /v1/revocations`: one page, after the `next` cursor of the previous one.
    pub async fn list_revocations(
        &self,
        after: Option<&str>,
        limit: Option<usize>,
    ) -> Result<serde_json::Value> {
        let mut rb = self.request(Method::GET, &["v1", "revocations"])?;
        if let Some(a) = after {
            rb = rb.query(&[("after", a)]);
        }
        if let Some(l) = limit {
            rb = rb.query(&[("limit", l)]);
        }
        decode(self.send(rb).await?).await
    }

    /// A request to the base URL plus `segments`, each percent-encoded as one path segment (so a
    /// policy id with `/` or an entity type with `::` stays one segment).
    pub(crate) fn request(&self, method: Method, segments: &[&str]) -> Result<RequestBuilder> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| Error::InvalidUrl {
                url: self.base.to_string(),
                message: "it cannot hold a path".to_owned(),
            })?
            .pop_if_empty()
            .extend(segments);
        let rb = self.http.request(method, url);
        Ok(match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        })
    }

    async fn decide<B: Serialize, T: DeserializeOwned>(
        &self,
        segments: &[&str],
        body: &B,
        min_version: Option<u64>,
    ) -> Result<Decision<T>> {
        let mut rb = self.request(Method::POST, segments)?.json(body);
        if let Some(v) = min_version {
            rb = rb.header(MIN_VERSION, v);
        }
        let resp = self.send(rb).await?;
        let version = version_header(resp.headers());
        Ok(Decision {
            body: decode(resp).await?,
            version,
        })
    }

    pub(crate) async fn write(
        &self,
        mut rb: RequestBuilder,
        if_match: Option<u64>,
        idempotency_key: Option<&str>,
    ) -> Result<u64> {
        if let Some(v) = if_match {
            rb = rb.header(IF_MATCH, v);
        }
        if let Some(key) = idempotency_key {
            rb = rb.header(IDEMPOTENCY_KEY, key);
        }
        let written: Written = decode(self.send(rb).await?).await?;
        Ok(written.version)
    }

    /// Sends and turns any non-success answer into an [`Error`].
    pub(crate) async fn send(&self, rb: RequestBuilder) -> Result<Response> {
        let resp = rb.send().await.map_err(Error::Transport)?;
        if resp.status().is_success() {
            Ok(resp)
        } else {
            Err(error_from(resp).await)
        }
    }
}

fn version_header(headers: &HeaderMap) -> Option<u64> {
    headers.get(VERSION)?.to_str().ok()?.trim().parse().ok()
}

async fn error_from(resp: Response) -> Error {
    let status = resp.status().as_u16();
    match resp.bytes().await {
        Ok(body) => Error::from_error_response(status, &body),
        Err(e) => Error::Transport(e),
    }
}

pub(crate) async fn decode<T: DeserializeOwned>(resp: Response) -> Result<T> {
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.map_err(Error::Transport)?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Decode {
        status,
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url_of(client: &Client, segments: &[&str]) -> String {
        let rb = client.request(Method::GET, segments).unwrap();
        rb.build().unwrap().url().to_string()
    }

    #[test]
    fn path_segments_are_escaped_one_by_one() {
        let c = Client::new("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            url_of(&c, &["v1", "entities", "Ns::User", "a b/c"]),
            "http://127.0.0.1:8080/v1/entities/Ns::User/a%20b%2Fc"
        );
    }

    #[test]
    fn a_base_path_prefix_is_kept() {
        let c = Client::new("http://example.com/verdict/").unwrap();
        assert_eq!(
            url_of(&c, &["v1", "policies"]),
            "http://example.com/verdict/v1/policies"
        );
    }

    #[test]
    fn bad_base_urls_are_rejected() {
        assert!(matches!(
            Client::new("127.0.0.1:8080"),
            Err(Error::InvalidUrl { .. })
        ));
        assert!(matches!(
            Client::new("ftp://example.com"),
            Err(Error::InvalidUrl { .. })
        ));
    }

    #[test]
    fn the_version_header_is_read() {
        let mut h = HeaderMap::new();
        h.insert(VERSION, "42".parse().unwrap());
        assert_eq!(version_header(&h), Some(42));
        assert_eq!(version_header(&HeaderMap::new()), None);
    }
}
