//! Tokens through the API on one node: rotate the key ring, issue, introspect, revoke by subject
//! and by audit chain, bad input, and keys and revocations surviving a restart.

use reqwest::Method;
use serde_json::json;

use crate::harness::assert_problem;
use crate::harness::Api;
use crate::harness::Node;
use crate::harness::Resp;

async fn issue(api: &Api, sub: &str, scope: Option<&str>) -> (String, String) {
    let resp = api
        .json(
            Method::POST,
            "/v1/tokens",
            &json!({"sub": sub, "scope": scope}),
        )
        .await
        .ok();
    let token = resp.json["token"].as_str().unwrap_or_default().to_string();
    let jti = resp.json["claims"]["jti"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(token.starts_with("v4.local."), "{}", resp.text);
    (token, jti)
}

async fn introspect(api: &Api, token: &str) -> Resp {
    api.json(
        Method::POST,
        "/v1/tokens/introspect",
        &json!({"token": token}),
    )
    .await
    .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_introspect_revoke_and_restart() {
    let mut node = Node::start().await;
    let api = node.api().clone();

    // No keys yet: issuing says how to fix it.
    let none = api
        .json(Method::POST, "/v1/tokens", &json!({"sub": "alice"}))
        .await;
    assert_problem(&none, 409, "no_primary_key");

    api.json(Method::POST, "/v1/keys/rotate", &json!({}))
        .await
        .written();
    let keys = api.get("/v1/keys").await.ok();
    let states: Vec<&str> = keys.json["keys"]
        .as_array()
        .map(|a| a.iter().filter_map(|k| k["state"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(states, vec!["primary", "staged"], "{}", keys.text);
    assert!(!keys.text.contains("material"), "{}", keys.text);

    let (alice, _) = issue(&api, "alice", Some("proj-a")).await;
    let (alice_b, _) = issue(&api, "alice", Some("proj-b")).await;
    let (bob, bob_jti) = issue(&api, "bob", None).await;
    let got = introspect(&api, &alice).await;
    assert_eq!(got.json["active"], json!(true), "{}", got.text);
    assert_eq!(got.json["sub"], json!("alice"));
    assert_eq!(got.json["scope"], json!("proj-a"));

    // Revoke alice in proj-a only, then bob's chain (his token's own chain).
    api.json(
        Method::POST,
        "/v1/revocations",
        &json!({"by": "subject_scope", "sub": "alice", "scope": "proj-a"}),
    )
    .await
    .written();
    let gone = introspect(&api, &alice).await;
    assert_eq!(gone.json["active"], json!(false), "{}", gone.text);
    assert_eq!(gone.json["reason"], json!("revoked"));
    assert_eq!(introspect(&api, &alice_b).await.json["active"], json!(true));
    api.json(
        Method::POST,
        "/v1/revocations",
        &json!({"by": "audit_chain", "chain": bob_jti}),
    )
    .await
    .written();
    assert_eq!(introspect(&api, &bob).await.json["active"], json!(false));

    // A rotation keeps earlier tokens valid (their key is now a secondary).
    api.json(Method::POST, "/v1/keys/rotate", &json!({}))
        .await
        .written();
    assert_eq!(introspect(&api, &alice_b).await.json["active"], json!(true));

    // Bad input: clear 4xx or active:false, never a 5xx.
    for token in [
        "",
        "garbage",
        "v2.local.abc",
        "v4.public.abc",
        &alice_b[..alice_b.len() - 3],
    ] {
        let r = introspect(&api, token).await;
        assert_eq!(r.json["active"], json!(false), "{token:?}: {}", r.text);
    }
    let no_selector = api
        .json(
            Method::POST,
            "/v1/revocations",
            &json!({"issued_before": 5}),
        )
        .await;
    assert_problem(&no_selector, 400, "invalid_json");
    let future = api
        .json(
            Method::POST,
            "/v1/revocations",
            &json!({"by": "subject", "sub": "carol", "issued_before": 99_999_999_999_999u64}),
        )
        .await;
    assert_problem(&future, 400, "invalid_json");

    // Several events in one write: all or none.
    let mixed = api
        .json(
            Method::POST,
            "/v1/revocations",
            &json!([{"by": "token", "jti": "a"}, {"by": "subject", "sub": ""}]),
        )
        .await;
    assert_problem(&mixed, 400, "missing_field");
    assert!(mixed.text.contains("event 1"), "{}", mixed.text);
    api.json(
        Method::POST,
        "/v1/revocations",
        &json!([{"by": "token", "jti": "t-1"}, {"by": "token", "jti": "t-2"}]),
    )
    .await
    .written();

    let list = api.get("/v1/revocations?limit=1").await.ok();
    assert_eq!(list.json["total"], json!(4), "{}", list.text);
    assert_eq!(list.json["revocations"].as_array().map(Vec::len), Some(1));
    assert!(list.json["next"].is_string(), "{}", list.text);

    // Keys and revocations are replicated state: they survive a restart.
    node.restart().await;
    let api = node.api().clone();
    assert_eq!(introspect(&api, &alice_b).await.json["active"], json!(true));
    assert_eq!(
        introspect(&api, &alice).await.json["reason"],
        json!("revoked")
    );
}

/// Introspects `token` on `api` at (at least) `version`.
async fn introspect_at(api: &Api, token: &str, version: u64) -> Resp {
    api.send(
        api.req(Method::POST, "/v1/tokens/introspect")
            .header("content-type", "application/json")
            .header("verdict-min-version", version.to_string())
            .body(json!({"token": token}).to_string()),
    )
    .await
    .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_revocations_are_the_same_on_every_node() {
    use std::time::Duration;

    use crate::harness::cluster::Cluster;

    let mut c = Cluster::start(3, &[]).await;
    let leader = c.leader(&[1, 2, 3], Duration::from_secs(10)).await;
    let follower = if leader == 1 { 2 } else { 1 };
    let other = 6 - leader - follower;

    // Rotate through a follower (forwarded), then issue on the leader.
    let rotated = c
        .member(follower)
        .api()
        .json(Method::POST, "/v1/keys/rotate", &json!({}))
        .await
        .written();
    let (token, _) = issue(c.member(leader).api(), "dave", Some("proj")).await;
    // A token issued on one node validates on every other node.
    for m in &c.members {
        let r = introspect_at(m.api(), &token, rotated).await;
        assert_eq!(r.json["active"], json!(true), "node {}: {}", m.id, r.text);
    }

    // A revocation submitted on a follower is seen by every node at its version.
    let revoked = c
        .member(other)
        .api()
        .json(
            Method::POST,
            "/v1/revocations",
            &json!({"by": "subject", "sub": "dave"}),
        )
        .await
        .written();
    for m in &c.members {
        let r = introspect_at(m.api(), &token, revoked).await;
        assert_eq!(r.json["active"], json!(false), "node {}: {}", m.id, r.text);
        assert_eq!(
            r.json["reason"],
            json!("revoked"),
            "node {}: {}",
            m.id,
            r.text
        );
    }

    // A restarted node keeps keys and revocations.
    let (fresh, _) = issue(c.member(leader).api(), "erin", None).await;
    c.member_mut(follower).restart();
    c.member(follower).wait_ready(Duration::from_secs(30)).await;
    let api = c.member(follower).api();
    let r = introspect_at(api, &fresh, revoked).await;
    assert_eq!(r.json["active"], json!(true), "{}", r.text);
    let r = introspect_at(api, &token, revoked).await;
    assert_eq!(r.json["reason"], json!("revoked"), "{}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_may_carry_a_token_that_stands_for_its_subject() {
    let node = Node::start().await;
    let api = node.api();
    api.put_policy(
        "scoped-view",
        r#"permit(principal, action == Action::"view", resource) when { principal has scope && principal.scope == "proj-a" };"#,
    )
    .await;
    api.json(Method::POST, "/v1/keys/rotate", &json!({}))
        .await
        .written();
    let (in_scope, _) = issue(api, "alice", Some("proj-a")).await;
    let (out_of_scope, _) = issue(api, "alice", Some("proj-b")).await;
    let ask = |token: &str| {
        json!({"subject": {"type": "User", "id": "whoever", "properties": {"token": token}},
               "action": {"name": "view"}, "resource": {"type": "Doc", "id": "d1"}})
    };
    let yes = api.evaluate(&ask(&in_scope)).await.ok();
    assert_eq!(yes.json["decision"], json!(true), "{}", yes.text);
    let no = api.evaluate(&ask(&out_of_scope)).await.ok();
    assert_eq!(no.json["decision"], json!(false), "{}", no.text);
    assert!(
        no.json["context"]["reason_admin"]["token"].is_null(),
        "{}",
        no.text
    );

    let bad = api.evaluate(&ask("v4.local.garbage")).await.ok();
    assert_eq!(bad.json["decision"], json!(false), "{}", bad.text);
    let why = bad.json["context"]["reason_admin"]["token"]
        .as_str()
        .unwrap_or_default();
    assert!(why.starts_with("malformed_token"), "{}", bad.text);

    api.json(
        Method::POST,
        "/v1/revocations",
        &json!({"by": "subject", "sub": "alice"}),
    )
    .await
    .written();
    let revoked = api.evaluate(&ask(&in_scope)).await.ok();
    assert_eq!(revoked.json["decision"], json!(false), "{}", revoked.text);
    let why = revoked.json["context"]["reason_admin"]["token"]
        .as_str()
        .unwrap_or_default();
    assert!(why.starts_with("revoked"), "{}", revoked.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_rotates_issues_introspects_and_revokes() {
    use crate::harness::cli_at;
    use crate::harness::cli_json;

    let node = Node::start().await;
    let url = node.url();
    cli_json(&node, &["keys", "rotate"]).await;
    let keys = cli_json(&node, &["keys", "list"]).await;
    assert_eq!(keys["keys"].as_array().map(Vec::len), Some(2), "{keys}");
    let issued = cli_json(
        &node,
        &[
            "token",
            "issue",
            "frank",
            "--scope",
            "proj",
            "--claims",
            r#"{"tenant": "acme"}"#,
        ],
    )
    .await;
    let token = issued["token"].as_str().unwrap_or_default().to_string();
    assert_eq!(issued["claims"]["tenant"], json!("acme"), "{issued}");

    // Table output: exit 0 while active, 2 once revoked.
    let active = cli_at(&url, &["token", "introspect", &token]).await;
    assert_eq!(active.status.code(), Some(0), "{active:?}");
    let revoked = cli_json(&node, &["revoke", "--sub", "frank", "--scope", "proj"]).await;
    let version = revoked["version"].as_u64().unwrap_or_default().to_string();
    let gone = cli_at(
        &url,
        &["token", "introspect", &token, "--min-version", &version],
    )
    .await;
    assert_eq!(gone.status.code(), Some(2), "{gone:?}");
    assert!(
        String::from_utf8_lossy(&gone.stdout).contains("revoked"),
        "{gone:?}"
    );

    // Naming nothing to revoke is a usage error before anything is sent.
    let nothing = cli_at(&url, &["revoke"]).await;
    assert_eq!(nothing.status.code(), Some(1), "{nothing:?}");
    assert!(
        String::from_utf8_lossy(&nothing.stderr).contains("--jti"),
        "{nothing:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keystone_tokens_example_works_as_documented() {
    let node = Node::start().await;
    let api = node.api();
    let policies = std::fs::read_to_string("examples/keystone-tokens/policies.cedar")
        .expect("examples/keystone-tokens/policies.cedar");
    api.replace_policies(&policies).await;
    let empty = json!({});
    let rotate = || api.json(Method::POST, "/v1/keys/rotate", &empty);
    rotate().await.written();

    let (t1, _) = issue(api, "alice", Some("proj-a")).await;
    let (t2, _) = issue(api, "alice", Some("proj-b")).await;
    let t3 = api
        .json(
            Method::POST,
            "/v1/tokens",
            &json!({"sub": "bob", "scope": "proj-a", "claims": {"role": "admin"}}),
        )
        .await
        .ok();
    let bob_chain = t3.json["claims"]["aud_chain"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let t3 = t3.json["token"].as_str().unwrap_or_default().to_string();
    let ask = |token: &str, action: &str, project: &str| {
        json!({"subject": {"type": "User", "id": "-", "properties": {"token": token}},
               "action": {"name": action},
               "resource": {"type": "Volume", "id": "v1", "properties": {"project": project}}})
    };
    let decide = |token: String, action: &'static str, project: &'static str| async move {
        api.evaluate(&ask(&token, action, project)).await.ok().json["decision"].clone()
    };
    assert_eq!(decide(t1.clone(), "read", "proj-a").await, json!(true));
    assert_eq!(decide(t1.clone(), "read", "proj-b").await, json!(false));
    assert_eq!(decide(t1.clone(), "delete", "proj-a").await, json!(false));
    assert_eq!(decide(t3.clone(), "delete", "proj-a").await, json!(true));

    // Three more rotations; every generation's tokens stay valid.
    let mut generations = vec![t1.clone()];
    for _ in 0..3 {
        rotate().await.written();
        generations.push(issue(api, "carol", Some("proj-c")).await.0);
    }
    for (i, t) in generations.iter().enumerate() {
        let r = introspect(api, t).await;
        assert_eq!(r.json["active"], json!(true), "generation {i}: {}", r.text);
    }
    assert_problem(&rotate().await, 409, "rotation_too_fast");

    let revoke = |event: serde_json::Value| async move {
        api.json(Method::POST, "/v1/revocations", &event)
            .await
            .written()
    };
    revoke(json!({"by": "subject_scope", "sub": "alice", "scope": "proj-a"})).await;
    assert_eq!(introspect(api, &t1).await.json["reason"], json!("revoked"));
    assert_eq!(introspect(api, &t2).await.json["active"], json!(true));
    revoke(json!({"by": "audit_chain", "chain": bob_chain})).await;
    assert_eq!(introspect(api, &t3).await.json["reason"], json!("revoked"));
    assert_eq!(decide(t3.clone(), "delete", "proj-a").await, json!(false));
    revoke(json!({"by": "subject", "sub": "alice"})).await;
    assert_eq!(introspect(api, &t2).await.json["reason"], json!("revoked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bearer_token_stands_for_the_subject_when_configured() {
    let node = Node::start_with_config("decision_bearer_tokens = true\n").await;
    let api = node.api();
    api.put_policy(
        "by-scope",
        r#"permit(principal, action, resource) when { principal has scope && principal.scope == "ops" };"#,
    )
    .await;
    api.json(Method::POST, "/v1/keys/rotate", &json!({}))
        .await
        .written();
    let (ops, _) = issue(api, "gina", Some("ops")).await;
    let body = json!({"subject": {"type": "User", "id": "-"}, "action": {"name": "view"},
                      "resource": {"type": "Doc", "id": "d"}});
    let send = |auth: String| {
        api.send(
            api.req(Method::POST, "/access/v1/evaluation")
                .header("content-type", "application/json")
                .header("authorization", auth)
                .body(body.to_string()),
        )
    };
    let yes = send(format!("Bearer {ops}")).await.ok();
    assert_eq!(yes.json["decision"], json!(true), "{}", yes.text);
    let no = send("Bearer v4.local.nope".to_string()).await.ok();
    assert_eq!(no.json["decision"], json!(false), "{}", no.text);
    assert!(
        no.json["context"]["reason_admin"]["token"].is_string(),
        "{}",
        no.text
    );
    // Without the header the request is decided as sent (no token, no scope: deny).
    let plain = api.evaluate(&body).await.ok();
    assert_eq!(plain.json["decision"], json!(false), "{}", plain.text);
}
