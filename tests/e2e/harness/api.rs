//! Raw HTTP against a node: every call returns status, headers and body, and never hides an error.

use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder};
use serde_json::{json, Value};

/// The answer to one request.
#[derive(Debug, Clone)]
pub struct Resp {
    /// What was sent, for failure messages (`METHOD path`).
    pub what: String,
    /// HTTP status code.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// The body as text.
    pub text: String,
    /// The body as JSON, `Value::Null` if it is not JSON.
    pub json: Value,
}

impl Resp {
    /// A header as text, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `Verdict-Version` header as a number; panics if missing or malformed.
    pub fn version_header(&self) -> u64 {
        let raw = self.header("verdict-version");
        raw.and_then(|v| v.trim().parse().ok()).unwrap_or_else(|| {
            panic!(
                "{}: bad or missing Verdict-Version header {raw:?}",
                self.what
            )
        })
    }

    /// Panics unless the status is 200; returns self for chaining.
    pub fn ok(self) -> Self {
        assert_eq!(self.status, 200, "{} failed: {}", self.what, self.text);
        self
    }

    /// For a successful write: asserts `200 {"version": N}` with a matching `Verdict-Version`
    /// header and returns N.
    pub fn written(&self) -> u64 {
        assert_eq!(self.status, 200, "{} failed: {}", self.what, self.text);
        let version = self.json["version"]
            .as_u64()
            .unwrap_or_else(|| panic!("{}: no numeric `version` in {}", self.what, self.text));
        assert_eq!(
            self.version_header(),
            version,
            "{}: Verdict-Version header differs from body",
            self.what
        );
        version
    }
}

/// A client for one node's public API.
#[derive(Debug, Clone)]
pub struct Api {
    client: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Api {
    /// A client with its own connection pool for `base` (`http://host:port`).
    pub fn new(base: &str) -> Api {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("build reqwest client");
        Api {
            client,
            base: base.to_owned(),
            token: None,
        }
    }

    /// The same API (same connection pool), sending `Authorization: Bearer <credential>`.
    pub fn with_token(&self, credential: &str) -> Api {
        Api {
            token: Some(credential.to_owned()),
            ..self.clone()
        }
    }

    /// A client for an `https://` `base` that trusts the CA certificate(s) in `ca_pem`.
    pub fn with_ca(base: &str, ca_pem: &[u8]) -> Api {
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(5));
        for cert in reqwest::Certificate::from_pem_bundle(ca_pem).expect("parse the CA PEM") {
            builder = builder.add_root_certificate(cert);
        }
        Api {
            client: builder.build().expect("build reqwest client"),
            base: base.to_owned(),
            token: None,
        }
    }

    /// A request to `path`, to be finished with headers and a body and passed to [`Api::send`].
    pub fn req(&self, method: Method, path: &str) -> RequestBuilder {
        let rb = self.client.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    /// Sends a request; panics if there is no HTTP answer at all.
    pub async fn send(&self, builder: RequestBuilder) -> Resp {
        match self.try_send(builder).await {
            Ok(resp) => resp,
            Err(e) => panic!("{e}"),
        }
    }

    /// Sends a request; an error if the connection failed.
    pub async fn try_send(&self, builder: RequestBuilder) -> Result<Resp, String> {
        let request = builder.build().map_err(|e| format!("bad request: {e}"))?;
        let what = format!("{} {}", request.method(), request.url().path());
        let resp = self
            .client
            .execute(request)
            .await
            .map_err(|e| format!("{what}: no answer: {e:?}"))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp
            .text()
            .await
            .map_err(|e| format!("{what}: body: {e}"))?;
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Resp {
            what,
            status,
            headers,
            text,
            json,
        })
    }

    /// `GET path`; an error if the connection failed (used while waiting for readiness).
    pub async fn try_get(&self, path: &str) -> Result<Resp, String> {
        self.try_send(self.req(Method::GET, path)).await
    }

    /// Waits up to `within` until `GET path` answers 200 (e.g. until a bootstrap credential
    /// works); the last answer if it never does.
    pub async fn wait_ok(&self, path: &str, within: Duration) -> Result<(), String> {
        super::cluster::wait_for(within, || async {
            match self.try_get(path).await {
                Ok(r) if r.status == 200 => Ok(()),
                Ok(r) => Err(format!("{} {}", r.status, r.text)),
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Resp {
        self.send(self.req(Method::GET, path)).await
    }

    /// `DELETE path` without a body.
    pub async fn delete(&self, path: &str) -> Resp {
        self.send(self.req(Method::DELETE, path)).await
    }

    /// `method path` with a JSON body.
    pub async fn json(&self, method: Method, path: &str, body: &Value) -> Resp {
        self.send(self.req(method, path).json(body)).await
    }

    /// `method path` with a `text/plain` body.
    pub async fn text(&self, method: Method, path: &str, body: &str) -> Resp {
        let builder = self
            .req(method, path)
            .header("content-type", "text/plain")
            .body(body.to_owned());
        self.send(builder).await
    }

    /// `POST /access/v1/evaluation`.
    pub async fn evaluate(&self, body: &Value) -> Resp {
        self.json(Method::POST, "/access/v1/evaluation", body).await
    }

    /// `POST /access/v1/evaluation` with `Verdict-Min-Version`.
    pub async fn evaluate_at(&self, body: &Value, min_version: u64) -> Resp {
        let builder = self
            .req(Method::POST, "/access/v1/evaluation")
            .header("verdict-min-version", min_version.to_string())
            .json(body);
        self.send(builder).await
    }

    /// `POST /access/v1/evaluations`.
    pub async fn evaluations(&self, body: &Value) -> Resp {
        self.json(Method::POST, "/access/v1/evaluations", body)
            .await
    }

    /// `PUT /v1/policies/{id}` with Cedar text; returns the version.
    pub async fn put_policy(&self, id: &str, cedar: &str) -> u64 {
        self.text(Method::PUT, &format!("/v1/policies/{id}"), cedar)
            .await
            .written()
    }

    /// `PUT /v1/policies` (replace the set) with Cedar text; returns the version.
    pub async fn replace_policies(&self, cedar: &str) -> u64 {
        self.text(Method::PUT, "/v1/policies", cedar)
            .await
            .written()
    }

    /// `POST /v1/entities` (upsert); returns the version.
    pub async fn upsert_entities(&self, entities: &Value) -> u64 {
        self.json(Method::POST, "/v1/entities", entities)
            .await
            .written()
    }

    /// `PUT /v1/entities` (replace all); returns the version.
    pub async fn replace_entities(&self, entities: &Value) -> u64 {
        self.json(Method::PUT, "/v1/entities", entities)
            .await
            .written()
    }

    /// `PUT /v1/schema` in the human-readable format; returns the version.
    pub async fn put_schema(&self, schema: &str) -> u64 {
        self.text(Method::PUT, "/v1/schema", schema).await.written()
    }

    /// Sets schema, policies and entities of a data set over HTTP; returns the last version.
    pub async fn load(&self, schema: Option<&str>, policies: &str, entities: &Value) -> u64 {
        if let Some(schema) = schema {
            self.put_schema(schema).await;
        }
        self.replace_policies(policies).await;
        self.replace_entities(entities).await
    }

    /// `GET /v1/policies`, asserting 200.
    pub async fn policy_list(&self) -> Value {
        self.get("/v1/policies").await.ok().json
    }

    /// The version decisions are answered from now (`Verdict-Version` of a throwaway decision that
    /// needs no schema).
    pub async fn decision_version(&self) -> u64 {
        let probe = json!({
            "subject": {"type": "User", "id": "version-probe"},
            "action": {"name": "probe"},
            "resource": {"type": "Probe", "id": "probe"},
        });
        self.version_of(&probe).await
    }

    /// `Verdict-Version` of the decision on `probe` (which must be answerable: 200).
    pub async fn version_of(&self, probe: &Value) -> u64 {
        self.evaluate(probe).await.ok().version_header()
    }

    /// What bad input must not change: the policy list (with its version) and the decision version
    /// (of `probe`).
    pub async fn fingerprint(&self, probe: &Value) -> (Value, u64) {
        (self.policy_list().await, self.version_of(probe).await)
    }
}

/// Asserts an RFC 9457 problem: status, `application/problem+json`, the stable `code`, the `status`
/// member, and a non-empty `detail`.
pub fn assert_problem(resp: &Resp, status: u16, code: &str) {
    if let Err(e) = check_problem(resp, status, code) {
        panic!("{e}");
    }
}

/// What [`assert_problem`] checks, as a result, so a test can report every failing case at once.
pub fn check_problem(resp: &Resp, status: u16, code: &str) -> Result<(), String> {
    let ctx = format!(
        "{}: expected {status} `{code}`, got {} {}",
        resp.what, resp.status, resp.text
    );
    let content_type = resp.header("content-type").unwrap_or_default();
    let detail = resp.json["detail"].as_str().unwrap_or_default();
    if resp.status != status || resp.json["code"] != code {
        Err(ctx)
    } else if !content_type.starts_with("application/problem+json") {
        Err(format!("{ctx}: content-type `{content_type}`"))
    } else if resp.json["status"] != status {
        Err(format!("{ctx}: `status` member"))
    } else if detail.is_empty() {
        Err(format!("{ctx}: empty `detail`"))
    } else {
        Ok(())
    }
}
