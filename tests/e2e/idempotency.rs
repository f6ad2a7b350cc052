//! `Idempotency-Key`: a retried write answers the first application's version and is not applied
//! again — also when the retries race, and after a crash.

use reqwest::Method;
use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::harness::{Api, Node, Resp};

async fn keyed(api: &Api, method: Method, path: &str, key: &str, body: Option<&str>) -> Resp {
    let mut builder = api.req(method, path).header("idempotency-key", key);
    if let Some(body) = body {
        let content_type = if body.starts_with('[') {
            "application/json"
        } else {
            "text/plain"
        };
        builder = builder
            .header("content-type", content_type)
            .body(body.to_owned());
    }
    api.send(builder).await
}

fn policy(who: &str) -> String {
    format!("permit(principal == User::\"{who}\", action == Action::\"view\", resource);")
}

async fn cedar_of(api: &Api, id: &str) -> (String, Value) {
    let got = api.get(&format!("/v1/policies/{id}")).await.ok();
    (
        got.json["cedar"].as_str().unwrap_or_default().to_owned(),
        got.json["version"].clone(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_write_is_applied_once() {
    let mut node = Node::start().await;
    let api = node.api().clone();
    let path = "/v1/policies/idem";

    let v1 = keyed(&api, Method::PUT, path, "key-a", Some(&policy("alice")))
        .await
        .written();
    let again = keyed(&api, Method::PUT, path, "key-a", Some(&policy("alice")))
        .await
        .written();
    assert_eq!(again, v1, "the same key twice must answer the same version");
    let v2 = keyed(&api, Method::PUT, path, "key-b", Some(&policy("bob")))
        .await
        .written();
    assert!(v2 > v1);
    // Retrying the first write must not undo the second.
    assert_eq!(
        keyed(&api, Method::PUT, path, "key-a", Some(&policy("alice")))
            .await
            .written(),
        v1
    );
    let (cedar, version) = cedar_of(&api, "idem").await;
    assert!(
        cedar.contains("bob"),
        "a retry re-applied an old write: {cedar}"
    );
    assert_eq!(version, v2);

    // Deletes.
    let v3 = keyed(&api, Method::DELETE, path, "key-c", None)
        .await
        .written();
    api.put_policy("idem", &policy("carol")).await;
    assert_eq!(
        keyed(&api, Method::DELETE, path, "key-c", None)
            .await
            .written(),
        v3
    );
    assert!(
        cedar_of(&api, "idem").await.0.contains("carol"),
        "a retried delete deleted again"
    );

    // Entity upserts.
    let entity = |n: u64| {
        json!([{"uid": {"type": "User", "id": "u1"}, "attrs": {"n": n}, "parents": []}]).to_string()
    };
    let v5 = keyed(
        &api,
        Method::POST,
        "/v1/entities",
        "key-d",
        Some(&entity(1)),
    )
    .await
    .written();
    api.upsert_entities(&serde_json::from_str(&entity(2)).unwrap_or_default())
        .await;
    assert_eq!(
        keyed(
            &api,
            Method::POST,
            "/v1/entities",
            "key-d",
            Some(&entity(1))
        )
        .await
        .written(),
        v5
    );
    let got = api.get("/v1/entities/User/u1").await.ok();
    assert_eq!(
        got.json["entity"]["attrs"]["n"], 2,
        "a retried upsert was applied again: {}",
        got.text
    );

    // Racing retries all get the one version.
    let mut racers = JoinSet::new();
    for _ in 0..8 {
        let api = api.clone();
        racers.spawn(async move {
            keyed(
                &api,
                Method::PUT,
                "/v1/policies/race",
                "key-e",
                Some(&policy("dave")),
            )
            .await
            .written()
        });
    }
    let mut raced = Vec::new();
    while let Some(v) = racers.join_next().await {
        raced.push(v.expect("racer panicked"));
    }
    raced.dedup();
    assert_eq!(
        raced.len(),
        1,
        "concurrent retries answered different versions: {raced:?}"
    );
    let race_version = raced[0];
    let after_race = api.get("/v1/policies/race").await.ok();
    assert_eq!(after_race.json["version"], race_version);

    // Keys are part of the replicated, durable state.
    node.sigkill();
    node.restart().await;
    let api = node.api().clone();
    assert_eq!(
        keyed(&api, Method::PUT, path, "key-a", Some(&policy("alice")))
            .await
            .written(),
        v1
    );
    assert_eq!(
        keyed(
            &api,
            Method::PUT,
            "/v1/policies/race",
            "key-e",
            Some(&policy("dave"))
        )
        .await
        .written(),
        race_version
    );
    assert!(
        cedar_of(&api, "idem").await.0.contains("carol"),
        "retry after restart re-applied"
    );
}
