//! The server's routes in-process: a real single node (Raft on sled in a temp dir) started with
//! the same steps as `verdict serve` — `Config::validate`, `Listeners::bind` on port 0,
//! `AppState::new`, `serve` — and driven over real HTTP on loopback.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use axum::routing::get;
use axum::Router;
use serde_json::json;
use serde_json::Value;
use tower::ServiceExt;
use verdict_server::AppState;
use verdict_server::Config;
use verdict_server::Listeners;
use verdict_server::Shared;

/// A node serving in this process until dropped.
struct TestNode {
    api: String,
    health: String,
    state: Shared,
    client: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _data: tempfile::TempDir,
}

struct Answer {
    status: u16,
    content_type: String,
    request_id: Option<String>,
    json: Value,
}

impl TestNode {
    /// Starts a node with the settings of `toml` on a fresh data directory and port-0 listeners,
    /// and waits until it is ready.
    async fn start(toml: &str) -> TestNode {
        let data = tempfile::tempdir().unwrap();
        let mut config = Config::from_toml_str(toml).unwrap();
        config.data_dir = data.path().to_path_buf();
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.peer_listen = "127.0.0.1:0".parse().unwrap();
        config.health_listen = Some("127.0.0.1:0".parse().unwrap());
        config.validate().unwrap();
        let listeners = Listeners::bind(&config).await.unwrap();
        listeners.advertise_bound_ports(&mut config).unwrap();
        let api = format!("http://{}", config.listen);
        let health = format!("http://{}", config.health_listen.unwrap());
        let state = AppState::new(config, None).await.unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(verdict_server::serve(listeners, state.clone(), async {
            let _ = stopped.await;
        }));
        let node = TestNode {
            api,
            health,
            state,
            client: reqwest::Client::new(),
            stop: Some(stop),
            served: Some(served),
            _data: data,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while node.get(&node.health, "/readyz").await.status != 200 {
            assert!(Instant::now() < deadline, "not ready within 30 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        node
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let resp = request.send().await.expect("an HTTP answer");
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (status, content_type) = (resp.status().as_u16(), header("content-type"));
        let request_id = header("x-request-id");
        let text = resp.text().await.unwrap();
        Answer {
            status,
            content_type: content_type.unwrap_or_default(),
            request_id,
            json: serde_json::from_str(&text).unwrap_or(Value::String(text)),
        }
    }

    async fn get(&self, base: &str, path: &str) -> Answer {
        self.send(self.client.get(format!("{base}{path}"))).await
    }

    async fn post_json(&self, path: &str, body: &Value, bearer: Option<&str>) -> Answer {
        let mut rb = self.client.post(format!("{}{path}", self.api)).json(body);
        if let Some(t) = bearer {
            rb = rb.bearer_auth(t);
        }
        self.send(rb).await
    }

    /// The value of an unlabelled counter or gauge on `/metrics` of the health listener.
    async fn metric(&self, name: &str) -> u64 {
        let Value::String(text) = self.get(&self.health, "/metrics").await.json else {
            panic!("/metrics is text");
        };
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no `{name}` in /metrics:\n{text}"))
    }

    /// Stops the node the way SIGTERM does, and waits for `serve` to return.
    async fn shut_down(mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
        let served = self.served.take().unwrap();
        let result = tokio::time::timeout(Duration::from_secs(30), served).await;
        result
            .expect("serve returned within 30 s")
            .unwrap()
            .unwrap();
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(served) = self.served.take() {
            served.abort();
        }
    }
}

fn request(subject: Value) -> Value {
    json!({"subject": subject, "action": {"name": "view"}, "resource": {"type": "Doc", "id": "d1"}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_write_reads_back_and_decides() {
    let node = TestNode::start("").await;
    let policy = r#"permit(principal == User::"alice", action == Action::"view", resource);"#;
    let put = node
        .send(
            node.client
                .put(format!("{}/v1/policies/alice-views", node.api))
                .header("content-type", "text/plain")
                .body(policy),
        )
        .await;
    assert_eq!(put.status, 200, "{}", put.json);
    let version = put.json["version"].as_u64().unwrap();
    let got = node.get(&node.api, "/v1/policies/alice-views").await;
    assert_eq!(
        (got.status, &got.json["cedar"], &got.json["version"]),
        (200, &json!(policy), &json!(version))
    );
    let alice = request(json!({"type": "User", "id": "alice"}));
    let yes = node.post_json("/access/v1/evaluation", &alice, None).await;
    assert_eq!(yes.json["decision"], true, "{}", yes.json);
    assert!(yes.json["context"]["version"].as_u64() >= Some(version));
    let bob = request(json!({"type": "User", "id": "bob"}));
    let no = node.post_json("/access/v1/evaluation", &bob, None).await;
    assert_eq!(no.json["decision"], false, "{}", no.json);
    let batch = json!({"action": {"name": "view"}, "resource": {"type": "Doc", "id": "d1"},
        "evaluations": [{"subject": {"type": "User", "id": "alice"}}, {"subject": {"type": "User", "id": "bob"}}]});
    let both = node.post_json("/access/v1/evaluations", &batch, None).await;
    assert_eq!(
        (
            &both.json["evaluations"][0]["decision"],
            &both.json["evaluations"][1]["decision"]
        ),
        (&json!(true), &json!(false)),
        "{}",
        both.json
    );
    assert_eq!(
        node.metric("verdict_decisions_total{outcome=\"allow\"}")
            .await,
        2
    );
    node.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_listener_answers_probes_and_nothing_else() {
    let node = TestNode::start("").await;
    assert_eq!(node.get(&node.health, "/livez").await.status, 200);
    let ready = node.get(&node.health, "/readyz").await;
    assert_eq!(ready.json["ready"], true, "{}", ready.json);
    assert_eq!(node.metric("verdict_panics_total").await, 0);
    let admin = node.get(&node.health, "/v1/policies").await;
    assert_eq!(admin.status, 404);
    // The API listener serves the probes too.
    assert_eq!(node.get(&node.api, "/livez").await.status, 200);
    node.shut_down().await;
}

/// Issue #12: with `decision_bearer_tokens`, a valid token and a subject that is not an object
/// panicked in `subject_of`; it is a `400` problem like the same request without a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bearer_token_with_a_subject_that_is_not_an_object_is_400() {
    let node = TestNode::start("decision_bearer_tokens = true\n").await;
    let rotated = node.post_json("/v1/keys/rotate", &json!({}), None).await;
    assert_eq!(rotated.status, 200, "{}", rotated.json);
    let issued = node
        .post_json("/v1/tokens", &json!({"sub": "gina"}), None)
        .await;
    let token = issued.json["token"].as_str().unwrap().to_owned();
    for subject in [json!("x"), json!(["x"]), json!(7), json!(true)] {
        for bearer in [Some(token.as_str()), None] {
            let a = node
                .post_json("/access/v1/evaluation", &request(subject.clone()), bearer)
                .await;
            let what = format!("subject {subject}, token: {}", bearer.is_some());
            assert_eq!(
                (a.status, a.json["code"].as_str()),
                (400, Some("invalid_json")),
                "{what}: {}",
                a.json
            );
            assert!(
                a.content_type.starts_with("application/problem+json"),
                "{what}"
            );
            let detail = a.json["detail"].as_str().unwrap_or_default();
            assert!(
                detail.contains("`subject` must be an object"),
                "{what}: {detail}"
            );
        }
    }
    // The token still stands for an object subject.
    let object = request(json!({"type": "User", "id": "-"}));
    let ok = node
        .post_json("/access/v1/evaluation", &object, Some(&token))
        .await;
    assert_eq!(ok.status, 200, "{}", ok.json);
    assert_eq!(node.metric("verdict_panics_total").await, 0);
    node.shut_down().await;
}

/// A `MakeWriter` that keeps what is logged, for counting lines.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// A panic in a handler (here a deliberate one behind the same guard as every listener's router)
/// is a `500 internal` problem with a request id, one log line, and one more in
/// `verdict_panics_total`; the node keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_is_a_500_with_a_request_id_and_one_log_line() {
    let node = TestNode::start("").await;
    let log = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(log.clone())
        .with_ansi(false)
        .finish();
    let boom = Router::new().route(
        "/boom",
        get(|| async {
            let v: Vec<u8> = Vec::new();
            // An out-of-bounds index: the kind of bug the guard is for.
            let b = v[usize::from(v.is_empty())];
            b.to_string()
        }),
    );
    let app = verdict_server::router::guarded(boom, node.state.clone());
    verdict_server::panic::install_hook();
    let mut ids = Vec::new();
    {
        // The subscriber is this thread's default: the router runs on this thread (`oneshot`).
        let _guard = tracing::subscriber::set_default(subscriber);
        for client_id in [Some("trace-42"), None] {
            let mut req = axum::http::Request::get("/boom");
            if let Some(id) = client_id {
                req = req.header("x-request-id", id);
            }
            let resp = app
                .clone()
                .oneshot(req.body(axum::body::Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(resp.status(), 500);
            let header = |n: &str| resp.headers()[n].to_str().unwrap().to_owned();
            assert!(header("content-type").starts_with("application/problem+json"));
            let id = header("x-request-id");
            let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
                .await
                .unwrap();
            let body: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(body["code"], "internal", "{body}");
            assert_eq!(body["status"], 500, "{body}");
            assert_eq!(body["request_id"], json!(id), "{body}");
            assert!(body["detail"].as_str().unwrap().contains(&id), "{body}");
            if let Some(client_id) = client_id {
                assert_eq!(id, client_id, "the client's request id is kept");
            }
            ids.push(id);
        }
    }
    assert_ne!(
        ids[1], "",
        "a request id is made up when the client sent none"
    );
    let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "one line per panic:\n{text}");
    for (line, id) in lines.iter().zip(&ids) {
        assert!(line.contains("a request panicked"), "{line}");
        assert!(line.contains(id.as_str()), "{line}");
        assert!(
            line.contains("in_process.rs"),
            "the panic's location: {line}"
        );
    }
    assert_eq!(node.metric("verdict_panics_total").await, 2);
    let alive = node.get(&node.api, "/livez").await;
    assert_eq!(alive.status, 200);
    node.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_is_echoed_on_answers_and_problems() {
    let node = TestNode::start("").await;
    let rb = node
        .client
        .get(format!("{}/v1/policies/nope", node.api))
        .header("x-request-id", "r-1");
    let a = node.send(rb).await;
    assert_eq!((a.status, a.request_id.as_deref()), (404, Some("r-1")));
    node.shut_down().await;
}
