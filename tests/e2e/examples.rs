//! The committed examples, loaded through the CLI and checked request by request and as one batch.

use reqwest::Method;
use serde_json::{json, Value};
use verdict_fixtures::{pretty, project_rbac, samples_to_json, surfconext, zero_trust, Sample};

use crate::harness::{assert_decision, Example, Node};

/// Starts a node, loads `examples/<name>` with the CLI, and checks every request singly and in
/// one `execute_all` batch. Returns the node, the example and the version after loading.
async fn check_example(name: &str) -> (Node, Example, u64) {
    let node = Node::start().await;
    let example = Example::read(name);
    let loaded = example.load_via_cli(&node).await;
    let api = node.api();

    let list = api.policy_list().await;
    let count = list["policies"].as_array().map_or(0, Vec::len);
    assert_eq!(
        count, example.policy_count,
        "{name}: policies after `policy load`"
    );
    let schema = api.get("/v1/schema").await.ok();
    assert_eq!(
        schema.json["format"], "cedar",
        "{name}: GET /v1/schema {}",
        schema.text
    );

    for sample in &example.requests {
        let resp = api.evaluate_at(&sample["request"], loaded).await.ok();
        let version = resp.version_header();
        assert!(
            version >= loaded,
            "{name}: answered from {version}, before {loaded}"
        );
        assert_eq!(
            resp.json["context"]["version"], version,
            "{name}: context.version"
        );
        assert_decision(&resp.json, sample, &format!("{name} single"));
    }

    let items: Vec<Value> = example
        .requests
        .iter()
        .map(|s| s["request"].clone())
        .collect();
    for options in [None, Some(json!({"evaluations_semantic": "execute_all"}))] {
        let mut body = json!({"evaluations": items});
        if let Some(options) = &options {
            body["options"] = options.clone();
        }
        let resp = api.evaluations(&body).await.ok();
        let results = resp.json["evaluations"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            results.len(),
            items.len(),
            "{name}: batch size; {}",
            resp.text
        );
        for (result, sample) in results.iter().zip(&example.requests) {
            assert_decision(result, sample, &format!("{name} batch"));
        }
    }
    (node, example, loaded)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn surfconext_example_through_the_cli() {
    let (_node, example, _) = check_example("surfconext").await;
    assert_eq!(example.policy_count, surfconext::DEFAULT_POLICIES);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn project_rbac_example_through_the_cli() {
    check_example("project-rbac").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_trust_example_and_host_updates_flip_decisions() {
    let (node, example, loaded) = check_example("zero-trust").await;
    let api = node.api();
    let stored: Value = serde_json::from_str(
        &std::fs::read_to_string(example.dir.join("entities.json")).expect("entities.json"),
    )
    .expect("entities.json parses");
    let fleet = zero_trust::Fleet::new(zero_trust::DEFAULT_HOSTS);
    let mut version = loaded;
    // Once a host that lets its owner in (it starts failing a critical check), once a host that
    // keeps its owner out (it gets fixed); then each is put back.
    for allowed_before in [true, false] {
        let host = (0..fleet.host_count())
            .map(|i| fleet.flippable_host(i))
            .find(|&h| fleet.flip(h).before == allowed_before)
            .expect("the fleet has such a host");
        let update = fleet.flip(host);
        let what = format!("h-{host} ({} before)", update.before);
        let original = stored
            .as_array()
            .and_then(|all| all.iter().find(|e| e["uid"] == update.entity["uid"]))
            .cloned()
            .expect("the host is in entities.json");

        let before = api.evaluate_at(&update.request, version).await.ok();
        assert_eq!(
            before.json["decision"], update.before,
            "{what}: {}",
            before.text
        );

        version = api.upsert_entities(&json!([update.entity])).await;
        let after = api.evaluate_at(&update.request, version).await.ok();
        assert!(after.version_header() >= version);
        assert_eq!(
            after.json["decision"], update.after,
            "{what} after update: {}",
            after.text
        );
        let got = api.get(&format!("/v1/entities/Host/h-{host}")).await.ok();
        assert_eq!(
            got.json["entity"]["attrs"]["failing_checks"], update.entity["attrs"]["failing_checks"],
            "{what}: GET after upsert {}",
            got.text
        );

        version = api.upsert_entities(&json!([original])).await;
        let back = api.evaluate_at(&update.request, version).await.ok();
        assert_eq!(
            back.json["decision"], update.before,
            "{what} put back: {}",
            back.text
        );
    }
    // Deleting the host leaves only the default deny.
    let update = fleet.flip(fleet.flippable_host(0));
    let uid = &update.entity["uid"];
    let deleted = api
        .json(Method::DELETE, "/v1/entities", &json!([uid]))
        .await
        .written();
    let resp = api.evaluate_at(&update.request, deleted).await.ok();
    assert_eq!(
        resp.json["decision"], false,
        "after deleting {uid}: {}",
        resp.text
    );
}

/// The committed example files are what the generators produce (regenerate with
/// `cargo run --example <name>` if this fails).
#[test]
fn committed_examples_match_their_generators() {
    let surf = surfconext::Dataset::default();
    let fleet = zero_trust::Fleet::new(zero_trust::DEFAULT_HOSTS);
    let org = project_rbac::Org::new(project_rbac::DEFAULT_USERS, project_rbac::DEFAULT_PROJECTS);
    let cases: [(&str, String, Value, Vec<Sample>); 3] = [
        (
            "surfconext",
            surf.policies_text(),
            surf.entities(),
            surf.samples(),
        ),
        (
            "zero-trust",
            zero_trust::POLICIES.into(),
            fleet.entities(),
            fleet.samples(),
        ),
        (
            "project-rbac",
            project_rbac::POLICIES.into(),
            org.entities(),
            org.samples(),
        ),
    ];
    for (name, policies, entities, samples) in cases {
        let example = Example::read(name);
        let read = |f: &str| std::fs::read_to_string(example.dir.join(f)).unwrap_or_default();
        let hint = format!("examples/{name} is stale: run `cargo run --example {name}`");
        assert!(
            read("policies.cedar").ends_with(&policies),
            "{hint} (policies.cedar)"
        );
        assert_eq!(
            read("entities.json"),
            pretty(&entities),
            "{hint} (entities.json)"
        );
        assert_eq!(
            read("requests.json"),
            samples_to_json(&samples),
            "{hint} (requests.json)"
        );
    }
}
