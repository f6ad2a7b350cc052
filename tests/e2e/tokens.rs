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

    let list = api.get("/v1/revocations?limit=1").await.ok();
    assert_eq!(list.json["total"], json!(2), "{}", list.text);
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
