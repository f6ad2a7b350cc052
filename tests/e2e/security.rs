//! API credentials: every admin endpoint answers 401 without a credential, 403 with one that lacks
//! the scope, and succeeds with the right scope; delegated (prefix- and type-limited) writers stay
//! in their lane; a revoked credential stops working on every node at its version.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use serde_json::Value;
use tempfile::TempDir;

use crate::harness::assert_problem;
use crate::harness::cli_at;
use crate::harness::cli_json_at;
use crate::harness::cluster::Cluster;
use crate::harness::Api;
use crate::harness::Node;

const SECRET: &str = "e2e-bootstrap-admin-secret-0123";
const ADMIN: &str = "admin.e2e-bootstrap-admin-secret-0123";

fn secret_file() -> (TempDir, String) {
    let dir = TempDir::with_prefix("verdict-e2e-secret-").expect("secret dir");
    let path = dir.path().join("admin-secret");
    std::fs::write(&path, format!("{SECRET}\n")).expect("write secret");
    let path = path.display().to_string();
    (dir, path)
}

/// Waits until the bootstrap admin credential works on `api`.
async fn wait_bootstrapped(api: &Api) {
    let admin = api.with_token(ADMIN);
    let r = admin
        .wait_ok("/v1/credentials", Duration::from_secs(20))
        .await;
    assert!(r.is_ok(), "bootstrap admin never worked: {r:?}");
}

async fn create(api: &Api, name: &str, scopes: &[&str]) -> (String, u64) {
    let r = api
        .with_token(ADMIN)
        .json(
            Method::POST,
            "/v1/credentials",
            &json!({"name": name, "scopes": scopes}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let secret = r.json["secret"].as_str().expect("secret").to_string();
    assert!(
        secret.starts_with(r.json["id"].as_str().expect("id")),
        "{}",
        r.text
    );
    (secret, r.written())
}

/// One endpoint of the table: method, path, body, the scope it needs, the success status.
struct Endpoint {
    method: Method,
    path: String,
    body: Option<Value>,
    text: Option<&'static str>,
    scope: &'static str,
    ok: u16,
}

fn ep(method: Method, path: &str, scope: &'static str, ok: u16) -> Endpoint {
    Endpoint {
        method,
        path: path.to_string(),
        body: None,
        text: None,
        scope,
        ok,
    }
}

impl Endpoint {
    fn json(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }
    fn text(mut self, body: &'static str) -> Self {
        self.text = Some(body);
        self
    }
    async fn call(&self, api: &Api) -> crate::harness::Resp {
        let mut rb = api.req(self.method.clone(), &self.path);
        if let Some(b) = &self.body {
            rb = rb.json(b);
        }
        if let Some(t) = self.text {
            rb = rb.header("content-type", "text/plain").body(t);
        }
        api.send(rb).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_endpoint_needs_a_credential_with_its_scope() {
    let (_dir, path) = secret_file();
    let health = format!("127.0.0.1:{}", crate::harness::unique_port());
    let node = Node::start_with_config(&format!(
        "admin_secret_file = {path:?}\ndecisions_require_credential = true\nhealth_listen = {health:?}\n"
    ))
    .await;
    let api = node.api().clone();
    wait_bootstrapped(&api).await;
    // The separate health listener answers probes and scrapers without credentials, and nothing
    // else.
    let probes = Api::new(&format!("http://{health}"));
    for path in ["/livez", "/readyz", "/metrics"] {
        let r = probes.get(path).await;
        assert_eq!(r.status, 200, "health listener {path}: {}", r.text);
    }
    assert_eq!(probes.get("/v1/policies").await.status, 404);

    let scopes = [
        "read",
        "policy:write",
        "entity:write",
        "revoke",
        "token:issue",
        "decide",
    ];
    let mut by_scope = std::collections::BTreeMap::new();
    for s in scopes {
        by_scope.insert(s, create(&api, &format!("only {s}"), &[s]).await.0);
    }
    by_scope.insert("admin", ADMIN.to_string());
    let (spare, _) = create(&api, "to revoke", &["read"]).await;
    let spare_id = spare.split('.').next().expect("id").to_string();

    let request = json!({"subject": {"type": "User", "id": "alice"}, "action": {"name": "view"},
                         "resource": {"type": "Doc", "id": "d1"}});
    let table = vec![
        ep(Method::PUT, "/v1/policies/p1", "policy:write", 200)
            .text("permit(principal, action, resource);"),
        ep(Method::GET, "/v1/policies", "read", 200),
        ep(Method::GET, "/v1/policies/p1", "read", 200),
        ep(Method::PUT, "/v1/policies", "policy:write", 200)
            .text("@id(\"p2\") permit(principal, action, resource);"),
        ep(Method::DELETE, "/v1/policies/p2", "policy:write", 200),
        ep(Method::PUT, "/v1/schema", "policy:write", 200).text(
            "entity User; entity Doc; action view appliesTo { principal: User, resource: Doc };",
        ),
        ep(Method::GET, "/v1/schema", "read", 200),
        ep(Method::DELETE, "/v1/schema", "policy:write", 200),
        ep(Method::POST, "/v1/entities", "entity:write", 200)
            .json(json!([{"uid": {"type": "User", "id": "alice"}, "attrs": {}, "parents": []}])),
        ep(Method::GET, "/v1/entities/User/alice", "read", 200),
        ep(Method::DELETE, "/v1/entities", "entity:write", 200)
            .json(json!([{"type": "User", "id": "alice"}])),
        ep(Method::PUT, "/v1/entities", "entity:write", 200).json(json!([])),
        ep(Method::POST, "/v1/keys/rotate", "admin", 200).json(json!({})),
        ep(Method::GET, "/v1/keys", "read", 200),
        ep(Method::POST, "/v1/tokens", "token:issue", 200).json(json!({"sub": "alice"})),
        ep(Method::POST, "/v1/revocations", "revoke", 200)
            .json(json!({"by": "subject", "sub": "mallory"})),
        ep(Method::GET, "/v1/revocations", "read", 200),
        ep(Method::GET, "/v1/cluster", "read", 200),
        ep(Method::PUT, "/v1/cluster/voters", "admin", 200).json(json!({"ids": [1]})),
        ep(Method::POST, "/v1/cluster/transfer-leader", "admin", 200).json(json!({"to": 1})),
        // Refused for what they ask (a node id that never was a member), after authorization.
        ep(Method::POST, "/v1/cluster/learners", "admin", 400)
            .json(json!({"id": 1, "api_addr": "127.0.0.1:1", "peer_addr": "127.0.0.1:2"})),
        ep(Method::DELETE, "/v1/cluster/members/9", "admin", 400),
        ep(Method::GET, "/v1/credentials", "admin", 200),
        ep(Method::POST, "/v1/credentials", "admin", 200)
            .json(json!({"name": "made in the table", "scopes": ["read"]})),
        ep(
            Method::DELETE,
            &format!("/v1/credentials/{spare_id}"),
            "admin",
            200,
        ),
        ep(Method::POST, "/access/v1/evaluation", "decide", 200).json(request.clone()),
        ep(Method::POST, "/access/v1/evaluations", "decide", 200)
            .json(json!({"evaluations": [request.clone()]})),
        ep(Method::POST, "/v1/tokens/introspect", "decide", 200).json(json!({"token": "x"})),
        ep(Method::POST, "/v1/node/drain", "admin", 200),
    ];
    for e in &table {
        let what = format!("{} {}", e.method, e.path);
        let r = e.call(&api).await;
        assert_problem(&r, 401, "unauthorized");
        assert!(
            r.header("www-authenticate").is_some(),
            "{what}: no WWW-Authenticate"
        );
        // A credential of another scope: 403, naming what is missing.
        let other = if e.scope == "read" { "decide" } else { "read" };
        let r = e.call(&api.with_token(&by_scope[other])).await;
        assert_problem(&r, 403, "forbidden");
        assert!(r.text.contains("needs"), "{what}: {}", r.text);
        // Its own scope (and admin, which covers everything, for the first rows).
        let r = e.call(&api.with_token(&by_scope[e.scope])).await;
        assert_eq!(r.status, e.ok, "{what} with `{}`: {}", e.scope, r.text);
    }
    // The credential revoked in the table no longer works; a wrong secret neither.
    let r = api.with_token(&spare).get("/v1/policies").await;
    assert_problem(&r, 401, "unauthorized");
    let r = api
        .with_token("admin.not-the-secret")
        .get("/v1/policies")
        .await;
    assert_problem(&r, 401, "unauthorized");
    // Health, metrics and discovery stay open; the failures are counted.
    for path in ["/livez", "/metrics", "/.well-known/authzen-configuration"] {
        let r = api.get(path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
    }
    let metrics = api.get("/metrics").await.text;
    for counter in [
        "verdict_auth_failures_total",
        "verdict_auth_forbidden_total",
    ] {
        let n: u64 = metrics
            .lines()
            .find(|l| l.starts_with(counter))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        assert!(n > 0, "{counter} not counted:\n{metrics}");
    }
    // `verdict bench` sends the credential too (decisions need `decide` on this node).
    let mix_dir = TempDir::with_prefix("verdict-e2e-mix-").expect("mix dir");
    let mix = mix_dir.path().join("mix.json");
    std::fs::write(&mix, json!([request]).to_string()).expect("write mix");
    let mix = mix.display().to_string();
    let bench = [
        "bench",
        "--mix",
        mix.as_str(),
        "--requests",
        "40",
        "--connections",
        "2",
    ];
    let out = cli_at(
        &node.url(),
        &[&["--token", by_scope["decide"].as_str()], &bench[..]].concat(),
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("40 ok"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli_at(&node.url(), &bench).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("40 non-200"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The secret never appears in the node's log.
    assert!(
        !node.log_tail(100_000).contains(SECRET),
        "the bootstrap secret was logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegated_writers_stay_within_their_prefix_or_entity_type() {
    let (_dir, path) = secret_file();
    let node = Node::start_with_config(&format!("admin_secret_file = {path:?}\n")).await;
    let api = node.api().clone();
    // With a bootstrap secret configured the node is closed from its first request, also before
    // the bootstrap credential is applied (a loopback node was open for that moment once).
    assert_problem(&api.get("/v1/policies").await, 401, "unauthorized");
    wait_bootstrapped(&api).await;
    let (tenant, _) = create(&api, "tenant-a admins", &["policy:write:tenant-a/", "read"]).await;
    let (agent, _) = create(&api, "host agent", &["entity:write:Host"]).await;
    let t = api.with_token(&tenant);
    let permit = "permit(principal, action, resource);";
    assert_eq!(
        t.text(Method::PUT, "/v1/policies/tenant-a%2Fread", permit)
            .await
            .status,
        200
    );
    // Another tenant's policy, the whole set, the schema: refused, nothing written.
    let r = t
        .text(Method::PUT, "/v1/policies/tenant-b%2Fread", permit)
        .await;
    assert_problem(&r, 403, "forbidden");
    assert!(r.text.contains("tenant-b/read"), "{}", r.text);
    // A policy written by an admin in another tenant's space cannot be deleted either.
    api.with_token(ADMIN)
        .text(Method::PUT, "/v1/policies/tenant-b%2Fx", permit)
        .await
        .ok();
    assert_problem(
        &t.delete("/v1/policies/tenant-b%2Fx").await,
        403,
        "forbidden",
    );
    assert_problem(
        &t.text(Method::PUT, "/v1/policies", permit).await,
        403,
        "forbidden",
    );
    assert_problem(
        &t.text(Method::PUT, "/v1/schema", "entity User;").await,
        403,
        "forbidden",
    );
    let ids: Vec<String> = t.get("/v1/policies").await.json["policies"]
        .as_array()
        .expect("policies")
        .iter()
        .filter_map(|p| p["id"].as_str().map(String::from))
        .collect();
    assert_eq!(ids, ["tenant-a/read", "tenant-b/x"]);

    let a = api.with_token(&agent);
    let host =
        json!({"uid": {"type": "Host", "id": "h1"}, "attrs": {"patched": true}, "parents": []});
    let user = json!({"uid": {"type": "User", "id": "root"}, "attrs": {}, "parents": []});
    assert_eq!(
        a.json(Method::POST, "/v1/entities", &json!([host]))
            .await
            .status,
        200
    );
    for body in [json!([user]), json!([host, user])] {
        let r = a.json(Method::POST, "/v1/entities", &body).await;
        assert_problem(&r, 403, "forbidden");
        assert!(r.text.contains("User"), "{}", r.text);
    }
    let r = a
        .json(
            Method::DELETE,
            "/v1/entities",
            &json!([{"type": "User", "id": "root"}]),
        )
        .await;
    assert_problem(&r, 403, "forbidden");
    assert_problem(
        &a.json(Method::PUT, "/v1/entities", &json!([host])).await,
        403,
        "forbidden",
    );
    // The last admin cannot be revoked, so nobody is locked out.
    let r = api.with_token(ADMIN).delete("/v1/credentials/admin").await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("last credential"), "{}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_credential_fails_on_every_node_and_the_cli_manages_them() {
    let (_dir, path) = secret_file();
    let c = Cluster::start(3, &["--admin-secret-file", &path]).await;
    for id in 1..=3 {
        wait_bootstrapped(c.member(id).api()).await;
    }
    // Created through a follower by the CLI; the secret is printed once.
    // The harness's own leader look-up carries no credential; ask as the admin.
    let leader = c
        .member(1)
        .api()
        .with_token(ADMIN)
        .get("/v1/cluster")
        .await
        .json["leader"]
        .as_u64()
        .expect("a leader");
    let follower = (1..=3).find(|i| *i != leader).expect("follower");
    let created = cli_json_at(
        &c.member(follower).url(),
        &[
            "--token",
            ADMIN,
            "credential",
            "create",
            "--name",
            "reader",
            "--scope",
            "read",
        ],
    )
    .await;
    let secret = created["secret"].as_str().expect("secret").to_string();
    let id = created["id"].as_str().expect("id").to_string();
    let v = created["version"].as_u64().expect("version");
    for n in 1..=3 {
        let r = c
            .member(n)
            .api()
            .with_token(&secret)
            .send(
                c.member(n)
                    .api()
                    .with_token(&secret)
                    .req(Method::GET, "/v1/policies")
                    .header("verdict-min-version", v),
            )
            .await;
        assert_eq!(r.status, 200, "node {n}: {}", r.text);
    }
    let listed = cli_json_at(
        &c.member(3).url(),
        &["--token", ADMIN, "credential", "list"],
    )
    .await;
    assert!(
        listed["credentials"]
            .as_array()
            .expect("list")
            .iter()
            .any(|c| c["id"] == json!(id) && c.get("hash").is_none() && c.get("secret").is_none()),
        "{listed}"
    );
    // Without a credential the CLI says how to give one.
    let out = cli_at(&c.member(1).url(), &["credential", "list"]).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("VERDICT_TOKEN"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Revoked on a third node: refused everywhere at that version.
    let out = cli_json_at(
        &c.member(leader).url(),
        &["--token", ADMIN, "credential", "revoke", &id],
    )
    .await;
    let v = out["version"].as_u64().expect("version");
    for n in 1..=3 {
        let api = c.member(n).api().with_token(&secret);
        let r = api
            .send(
                api.req(Method::GET, "/v1/policies")
                    .header("verdict-min-version", v),
            )
            .await;
        assert_problem(&r, 401, "unauthorized");
    }
}

/// Hostile input: deep nesting, too many items, a client that stalls mid-body, and a few hundred
/// mutated bodies on every write and decision endpoint. Each gets a clear 4xx (never a 5xx or a
/// crash), and the node keeps answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_gets_clear_refusals_and_the_node_stays_up() {
    use tokio::io::AsyncReadExt;
    use tokio::io::AsyncWriteExt;

    let node = Node::start_with_config(
        "max_policies_per_write = 3\nmax_entities_per_write = 3\nrequest_timeout_ms = 1500\n",
    )
    .await;
    let api = node.api().clone();
    let deep = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
    let r = api
        .text(
            Method::PUT,
            "/v1/policies/p",
            &format!(
                "permit(principal, action, resource) when {{ {} == 1 }};",
                deep(5000)
            ),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("deep"), "{}", r.text);
    let r = api
        .send(
            api.req(Method::POST, "/access/v1/evaluation")
                .header("content-type", "application/json")
                .body(format!(
                    r#"{{"subject":{{"type":"U","id":"a"}},"action":{{"name":"x"}},"resource":{{"type":"R","id":"1"}},"context":{{"x":{}}}}}"#,
                    deep(10_000)
                )),
        )
        .await;
    assert_problem(&r, 400, "invalid_json");
    assert!(r.text.contains("deep"), "{}", r.text);
    // Too many items in one write.
    let r = api
        .text(
            Method::PUT,
            "/v1/policies",
            &"permit(principal, action, resource);\n".repeat(4),
        )
        .await;
    assert_problem(&r, 413, "too_many_items");
    assert!(r.text.contains("max_policies_per_write"), "{}", r.text);
    let four: Vec<Value> = (0..4)
        .map(
            |i| json!({"uid": {"type": "User", "id": format!("u{i}")}, "attrs": {}, "parents": []}),
        )
        .collect();
    let r = api.json(Method::POST, "/v1/entities", &json!(four)).await;
    assert_problem(&r, 413, "too_many_items");
    // A client that sends half its body and stalls: answered 408 once the time limit passes.
    let mut sock = tokio::net::TcpStream::connect(node.url().trim_start_matches("http://"))
        .await
        .expect("connect");
    sock.write_all(
        b"PUT /v1/policies/slow HTTP/1.1\r\nhost: x\r\ncontent-type: text/plain\r\ncontent-length: 100\r\n\r\npermit(",
    )
    .await
    .expect("send");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        loop {
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer to a stalled body within 10 s");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");

    // Mutated bodies: a fixed-seed generator, so a failure reproduces.
    let mut seed: u64 = 0x5eed_cafe_f00d_1234;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let valid: Vec<(Method, &str, &str, String)> = vec![
        (Method::PUT, "/v1/policies/p", "text/plain",
         r#"permit(principal == User::"a", action in [Action::"v"], resource) when { context.n > 1 && resource has x };"#.into()),
        (Method::PUT, "/v1/policies", "application/json",
         r#"{"policies": {"a": "permit(principal, action, resource);"}}"#.into()),
        (Method::PUT, "/v1/schema", "text/plain",
         "entity User { n: Long }; action v appliesTo { principal: User, resource: User };".into()),
        (Method::POST, "/v1/entities", "application/json",
         r#"[{"uid": {"type": "User", "id": "a"}, "attrs": {"n": 1, "t": {"__extn": {"fn": "ip", "arg": "10.0.0.1"}}}, "parents": [{"type": "G", "id": "g"}]}]"#.into()),
        (Method::POST, "/access/v1/evaluation", "application/json",
         r#"{"subject": {"type": "User", "id": "a", "properties": {"n": 3}}, "action": {"name": "v"}, "resource": {"type": "User", "id": "b"}, "context": {"n": 2}}"#.into()),
        (Method::POST, "/access/v1/evaluations", "application/json",
         r#"{"subject": {"type": "User", "id": "a"}, "evaluations": [{"action": {"name": "v"}, "resource": {"type": "User", "id": "b"}}], "options": {"evaluations_semantic": "deny_on_first_deny"}}"#.into()),
        (Method::POST, "/v1/revocations", "application/json", r#"{"by": "subject", "sub": "x"}"#.into()),
        (Method::POST, "/v1/tokens/introspect", "application/json", r#"{"token": "v4.local.abc"}"#.into()),
    ];
    let junk = [
        "(", "[", "{", "\"", "\\", "}", "]", ")", ",", ":", "null", "-1e999", "\u{0}", "é", "::",
        ";",
    ];
    for round in 0..40 {
        for (method, path, ctype, body) in &valid {
            let mut b: Vec<char> = body.chars().collect();
            for _ in 0..(1 + next() % 4) {
                let at = (next() as usize) % (b.len() + 1);
                match next() % 4 {
                    0 => b.truncate(at),
                    1 => {
                        let j = junk[(next() as usize) % junk.len()];
                        b.splice(at..at, j.chars());
                    }
                    2 => {
                        let end = (at + (next() as usize) % 8).min(b.len());
                        b.drain(at..end);
                    }
                    _ => {
                        let c = ['[', '{', '('][(next() as usize) % 3];
                        b.splice(at..at, std::iter::repeat_n(c, (next() as usize) % 300));
                    }
                }
            }
            let body: String = b.into_iter().collect();
            let r = api
                .send(
                    api.req(method.clone(), path)
                        .header("content-type", *ctype)
                        .body(body.clone()),
                )
                .await;
            assert!(
                r.status < 500,
                "round {round}: {method} {path} answered {} to {body:?}: {}",
                r.status,
                r.text
            );
            if r.status >= 400 {
                assert!(
                    r.json["code"].is_string(),
                    "{method} {path}: no problem code: {}",
                    r.text
                );
            }
        }
    }
    assert_eq!(api.get("/livez").await.status, 200);
}
