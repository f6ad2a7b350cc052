//! Semantics an attacker or a confused client could use (issue #13, item 5): an
//! `Idempotency-Key` reused for a different write, tokens in decision logs, parents outside a
//! writer's scope, one entity as subject and resource, and `__expr` in `context`.

use std::path::Path;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::harness::cluster::{wait_for, Cluster};
use crate::harness::{assert_problem, Api, Node, Resp};

async fn keyed(api: &Api, method: Method, path: &str, key: &str, cedar: Option<&str>) -> Resp {
    let mut builder = api.req(method, path).header("idempotency-key", key);
    if let Some(cedar) = cedar {
        builder = builder
            .header("content-type", "text/plain")
            .body(cedar.to_owned());
    }
    api.send(builder).await
}

fn policy(who: &str) -> String {
    format!("permit(principal == User::\"{who}\", action, resource);")
}

/// Reuse with the same write: the first version; with a different one (another body, another
/// path, a delete): `422 idempotency_key_reused`, and the first write stands.
async fn check_key_reuse(api: &Api, prefix: &str) {
    let path = format!("/v1/policies/{prefix}-p");
    let key = format!("{prefix}-key");
    let first = keyed(api, Method::PUT, &path, &key, Some(&policy("alice")))
        .await
        .written();
    let retry = keyed(api, Method::PUT, &path, &key, Some(&policy("alice")))
        .await
        .written();
    assert_eq!(retry, first, "a retry answers the first version");
    let other_body = keyed(api, Method::PUT, &path, &key, Some(&policy("bob"))).await;
    assert_problem(&other_body, 422, "idempotency_key_reused");
    let other_path = format!("/v1/policies/{prefix}-q");
    let other_target = keyed(api, Method::PUT, &other_path, &key, Some(&policy("alice"))).await;
    assert_problem(&other_target, 422, "idempotency_key_reused");
    let delete = keyed(api, Method::DELETE, &path, &key, None).await;
    assert_problem(&delete, 422, "idempotency_key_reused");
    let got = api.get(&path).await.ok();
    assert!(
        got.json["cedar"]
            .as_str()
            .is_some_and(|c| c.contains("alice")),
        "the first write must stand: {}",
        got.text
    );
    assert_eq!(api.get(&other_path).await.status, 404);
    // A delete's key reused for another delete.
    let del_key = format!("{prefix}-del");
    let deleted = keyed(api, Method::DELETE, &path, &del_key, None)
        .await
        .written();
    assert_eq!(
        keyed(api, Method::DELETE, &path, &del_key, None)
            .await
            .written(),
        deleted
    );
    let other_delete = keyed(api, Method::DELETE, &other_path, &del_key, None).await;
    assert_problem(&other_delete, 422, "idempotency_key_reused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_reused_for_another_write_is_refused() {
    let node = Node::start().await;
    check_key_reuse(node.api(), "single").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_reused_through_a_follower_is_refused() {
    let cluster = Cluster::start(3, &[]).await;
    let leader = cluster.leader(&[1, 2, 3], Duration::from_secs(30)).await;
    let follower = [1, 2, 3]
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    check_key_reuse(cluster.member(follower).api(), "forwarded").await;
}

fn toml_path(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_never_reach_the_decision_log() {
    let out = TempDir::with_prefix("verdict-e2e-semantics-").expect("sink dir");
    let sink = out.path().join("decisions.ndjson");
    let node = Node::start_with_config(&format!(
        "decision_bearer_tokens = true\n\n[decision_log]\nenabled = true\n\n\
         [[decision_log.sinks]]\ntype = \"file\"\npath = {}\n",
        toml_path(&sink)
    ))
    .await;
    let api = node.api();
    api.put_policy("all", "permit(principal, action, resource);")
        .await;
    api.json(Method::POST, "/v1/keys/rotate", &json!({}))
        .await
        .written();
    let token = api
        .json(Method::POST, "/v1/tokens", &json!({"sub": "gina"}))
        .await
        .ok()
        .json["token"]
        .as_str()
        .expect("a token")
        .to_string();
    let in_body = json!({"subject": {"type": "User", "id": "-", "properties": {"token": token}},
                         "action": {"name": "view"}, "resource": {"type": "Doc", "id": "d"}});
    assert_eq!(api.evaluate(&in_body).await.ok().json["decision"], true);
    let batch = json!({"subject": in_body["subject"], "action": {"name": "view"},
                       "evaluations": [{"resource": {"type": "Doc", "id": "b"}}]});
    assert_eq!(
        api.evaluations(&batch).await.ok().json["evaluations"][0]["decision"],
        true
    );
    let plain = json!({"subject": {"type": "User", "id": "-"}, "action": {"name": "view"},
                       "resource": {"type": "Doc", "id": "h"}});
    let by_header = api
        .send(
            api.req(Method::POST, "/access/v1/evaluation")
                .header("content-type", "application/json")
                .header("authorization", format!("Bearer {token}"))
                .body(plain.to_string()),
        )
        .await
        .ok();
    assert_eq!(by_header.json["decision"], true, "{}", by_header.text);
    let text = wait_for(Duration::from_secs(60), || {
        let text = std::fs::read_to_string(&sink).unwrap_or_default();
        async move {
            if text.lines().count() >= 3 {
                Ok(text)
            } else {
                Err(format!("3 records expected in the sink, got:\n{text}"))
            }
        }
    })
    .await
    .expect("every decision in the sink");
    assert!(
        !text.contains(&token),
        "a token reached the decision log:\n{text}"
    );
    let first: Value =
        serde_json::from_str(text.lines().next().unwrap_or_default()).expect("a JSON record");
    assert_eq!(
        first["request"]["subject"]["properties"]["token"], "***",
        "masked, not removed, by default: {first}"
    );
}

/// A node whose admin endpoints need credentials, and an admin credential.
const SECRET: &str = "e2e-semantics-admin-secret-0123";
const ADMIN: &str = "admin.e2e-semantics-admin-secret-0123";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typed_entity_writer_may_not_give_parents_of_other_types() {
    let dir = TempDir::with_prefix("verdict-e2e-secret-").expect("secret dir");
    let path = dir.path().join("admin-secret");
    std::fs::write(&path, format!("{SECRET}\n")).expect("write secret");
    let node = Node::start_with_config(&format!(
        "admin_secret_file = {:?}\n",
        path.display().to_string()
    ))
    .await;
    let admin = node.api().with_token(ADMIN);
    admin
        .wait_ok("/v1/credentials", Duration::from_secs(20))
        .await
        .expect("the bootstrap admin works");
    let created = admin
        .json(
            Method::POST,
            "/v1/credentials",
            &json!({"name": "host-facts", "scopes": ["entity:write:Host"]}),
        )
        .await
        .ok();
    let hosts = node
        .api()
        .with_token(created.json["secret"].as_str().expect("a secret"));
    let host = |parents: Value| json!([{"uid": {"type": "Host", "id": "h1"}, "attrs": {"os": "linux"}, "parents": parents}]);

    let escalation = hosts
        .json(
            Method::POST,
            "/v1/entities",
            &host(json!([{"type": "Admins", "id": "root"}])),
        )
        .await;
    assert_problem(&escalation, 403, "forbidden_parent");
    assert!(escalation.text.contains("Admins"), "{}", escalation.text);
    let stored = admin.get("/v1/entities/Host/h1").await;
    assert_eq!(stored.status, 404, "nothing was written: {}", stored.text);
    // Parents of a type the scope covers, or none, are fine.
    hosts
        .json(
            Method::POST,
            "/v1/entities",
            &host(json!([{"type": "Host", "id": "rack-1"}])),
        )
        .await
        .written();
    hosts
        .json(Method::POST, "/v1/entities", &host(json!([])))
        .await
        .written();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_entity_as_subject_and_resource_has_both_property_sets() {
    let node = Node::start().await;
    let api = node.api();
    api.put_policy(
        "self",
        "permit(principal, action, resource) when { principal has a && resource has b && principal.a == 1 && resource.b == 2 };",
    )
    .await;
    let me = |subject: Value, resource: Value| {
        json!({"subject": {"type": "User", "id": "me", "properties": subject},
               "action": {"name": "edit"},
               "resource": {"type": "User", "id": "me", "properties": resource}})
    };
    let both = api
        .evaluate(&me(json!({"a": 1}), json!({"b": 2})))
        .await
        .ok();
    assert_eq!(both.json["decision"], true, "{}", both.text);
    let agree = api
        .evaluate(&me(json!({"a": 1, "b": 2}), json!({"b": 2})))
        .await
        .ok();
    assert_eq!(agree.json["decision"], true, "{}", agree.text);
    let conflict = api
        .evaluate(&me(json!({"a": 1, "b": 3}), json!({"b": 2})))
        .await;
    assert_problem(&conflict, 400, "conflicting_properties");
    let in_batch = api
        .evaluations(&json!({"evaluations": [me(json!({"a": 1}), json!({"b": 2}))]}))
        .await
        .ok();
    assert_eq!(
        in_batch.json["evaluations"][0]["decision"], true,
        "{}",
        in_batch.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expr_escape_in_context_is_refused_on_every_path() {
    let node = Node::start().await;
    let api = node.api();
    api.put_policy("all", "permit(principal, action, resource);")
        .await;
    let request = |context: Value| {
        json!({"subject": {"type": "User", "id": "u"}, "action": {"name": "view"},
               "resource": {"type": "Doc", "id": "d"}, "context": context})
    };
    // Alone (plain JSON everywhere else), and beside a value that needs Cedar's own parser.
    for context in [
        json!({"x": {"__expr": "1 + 1"}}),
        json!({"x": {"__expr": "1 + 1"}, "ip": {"__extn": {"fn": "ip", "arg": "10.0.0.1"}}}),
    ] {
        let single = api.evaluate(&request(context.clone())).await;
        assert_problem(&single, 400, "invalid_json");
        assert!(single.text.contains("__expr"), "{}", single.text);
        let batch = api
            .evaluations(&json!({"evaluations": [request(context)]}))
            .await
            .ok();
        assert_eq!(
            batch.json["evaluations"][0]["context"]["error"]["code"], "invalid_json",
            "{}",
            batch.text
        );
    }
}
