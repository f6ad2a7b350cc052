//! Bad input is refused with the documented status and `code`, changes nothing, and the node keeps
//! answering.

use reqwest::Method;
use serde_json::{json, Value};
use verdict_fixtures::zero_trust;

use crate::harness::{assert_problem, check_problem, Api, Node};

const ALICE_VIEWS: &str = r#"@id("alice-views")
permit (principal == User::"alice", action == Action::"view", resource);"#;

fn alice_request() -> Value {
    json!({
        "subject": {"type": "User", "id": "alice"},
        "action": {"name": "view"},
        "resource": {"type": "Doc", "id": "d1"},
    })
}

/// A node with one policy (alice may view anything) and the state fingerprint to compare with.
async fn seeded_node() -> (Node, (Value, u64)) {
    let node = Node::start().await;
    node.api().replace_policies(ALICE_VIEWS).await;
    let fingerprint = node.api().fingerprint(&alice_request()).await;
    (node, fingerprint)
}

/// The state is what it was, and a good request is still answered correctly.
async fn assert_unchanged(api: &Api, probe: &Value, before: &(Value, u64), after_what: &str) {
    let now = api.fingerprint(probe).await;
    assert_eq!(&now, before, "state changed after {after_what}");
    let resp = api.evaluate(probe).await.ok();
    assert_eq!(
        resp.json["decision"], true,
        "after {after_what}: {}",
        resp.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_decision_requests_are_400_with_their_code() {
    let (node, before) = seeded_node().await;
    let api = node.api();
    let good = alice_request();
    let without = |field: &str| {
        let mut r = good.clone();
        r.as_object_mut().unwrap().remove(field);
        r
    };
    let with = |pointer: &str, value: Value| {
        let mut r = good.clone();
        *r.pointer_mut(pointer).unwrap() = value;
        r
    };
    let with_root = |key: &str, value: Value| {
        let mut r = good.clone();
        r[key] = value;
        r
    };
    let without_member = |object: &str, member: &str| {
        let mut r = good.clone();
        r[object].as_object_mut().unwrap().remove(member);
        r
    };
    let json_cases: Vec<(&str, String, &str)> = vec![
        (
            "truncated JSON",
            r#"{"subject": {"type": "User""#.into(),
            "invalid_json",
        ),
        ("not JSON at all", "subject=alice".into(), "invalid_json"),
        ("a JSON array", "[]".into(), "invalid_json"),
        ("a JSON string", r#""alice""#.into(), "invalid_json"),
        (
            "no subject",
            without("subject").to_string(),
            "missing_field",
        ),
        ("no action", without("action").to_string(), "missing_field"),
        (
            "no resource",
            without("resource").to_string(),
            "missing_field",
        ),
        (
            "no subject.type",
            without_member("subject", "type").to_string(),
            "missing_field",
        ),
        (
            "no subject.id",
            without_member("subject", "id").to_string(),
            "missing_field",
        ),
        (
            "no action.name",
            without_member("action", "name").to_string(),
            "missing_field",
        ),
        (
            "no resource.type",
            without_member("resource", "type").to_string(),
            "missing_field",
        ),
        (
            "no resource.id",
            without_member("resource", "id").to_string(),
            "missing_field",
        ),
        (
            "empty subject.id",
            with("/subject/id", json!("")).to_string(),
            "missing_field",
        ),
        (
            "empty action.name",
            with("/action/name", json!("")).to_string(),
            "missing_field",
        ),
        (
            "subject is a string",
            with("/subject", json!("alice")).to_string(),
            "invalid_json",
        ),
        (
            "subject.id is a number",
            with("/subject/id", json!(42)).to_string(),
            "invalid_json",
        ),
        (
            "action.name is a bool",
            with("/action/name", json!(true)).to_string(),
            "invalid_json",
        ),
        // null counts as missing, as for an optional field.
        (
            "resource.type is null",
            with("/resource/type", Value::Null).to_string(),
            "missing_field",
        ),
        (
            "resource.type is a number",
            with("/resource/type", json!(7)).to_string(),
            "invalid_json",
        ),
        (
            "subject.properties is a string",
            with(
                "/subject",
                json!({"type": "User", "id": "alice", "properties": "x"}),
            )
            .to_string(),
            "invalid_json",
        ),
        (
            "context is a string",
            with_root("context", json!("x")).to_string(),
            "invalid_json",
        ),
        (
            "context is an array",
            with_root("context", json!([])).to_string(),
            "invalid_json",
        ),
        (
            "properties is an array",
            with(
                "/subject",
                json!({"type": "User", "id": "alice", "properties": [1]}),
            )
            .to_string(),
            "invalid_json",
        ),
    ];
    let mut failures = Vec::new();
    for (i, (what, body, code)) in json_cases.iter().enumerate() {
        let request_id = format!("bad-decision-{i}");
        let builder = api
            .req(Method::POST, "/access/v1/evaluation")
            .header("content-type", "application/json")
            .header("x-request-id", &request_id)
            .body(body.clone());
        let resp = api.send(builder).await;
        if let Err(e) = check_problem(&resp, 400, code) {
            failures.push(format!("{what}: {e}"));
        }
        if resp.header("x-request-id") != Some(request_id.as_str()) {
            failures.push(format!("{what}: X-Request-ID not echoed"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        json_cases.len(),
        failures.join("\n")
    );

    let empty = api
        .req(Method::POST, "/access/v1/evaluation")
        .header("content-type", "application/json");
    assert_problem(&api.send(empty).await, 400, "empty_body");
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/xml",
    ] {
        let builder = api
            .req(Method::POST, "/access/v1/evaluation")
            .header("content-type", content_type)
            .body(good.to_string());
        assert_problem(&api.send(builder).await, 400, "invalid_content_type");
    }
    // The batch endpoint parses the same way.
    let builder = api
        .req(Method::POST, "/access/v1/evaluations")
        .header("content-type", "application/json")
        .body("{\"evaluations\": [");
    assert_problem(&api.send(builder).await, 400, "invalid_json");
    let builder = api
        .req(Method::POST, "/access/v1/evaluations")
        .header("content-type", "text/plain")
        .body(json!({"evaluations": [good]}).to_string());
    assert_problem(&api.send(builder).await, 400, "invalid_content_type");
    let not_array = json!({"subject": good["subject"], "action": good["action"],
        "resource": good["resource"], "evaluations": {"0": good}});
    assert_problem(&api.evaluations(&not_array).await, 400, "invalid_json");

    assert_unchanged(api, &good, &before, "bad decision requests").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tolerated_decision_input_and_request_ids() {
    let (node, _) = seeded_node().await;
    let api = node.api();
    // Unknown fields are ignored; a charset parameter is still JSON.
    let mut extra = alice_request();
    extra["unknown"] = json!({"x": 1});
    extra["subject"]["unknown"] = json!(true);
    let builder = api
        .req(Method::POST, "/access/v1/evaluation")
        .header("content-type", "application/json; charset=utf-8")
        .header("x-request-id", "req-123")
        .body(extra.to_string());
    let resp = api.send(builder).await.ok();
    assert_eq!(resp.json["decision"], true, "{}", resp.text);
    assert_eq!(resp.header("x-request-id"), Some("req-123"));
    assert!(
        resp.header("content-type")
            .unwrap_or_default()
            .starts_with("application/json"),
        "decisions are application/json"
    );
    // X-Request-ID is echoed on admin answers and on errors too.
    for (method, path) in [
        (Method::GET, "/v1/policies"),
        (Method::GET, "/v1/policies/nope"),
        (Method::GET, "/nope"),
    ] {
        let builder = api.req(method, path).header("x-request-id", "trace-7");
        let resp = api.send(builder).await;
        assert_eq!(
            resp.header("x-request-id"),
            Some("trace-7"),
            "{}: {}",
            resp.what,
            resp.status
        );
    }
    assert_problem(&api.get("/v1/policies/nope").await, 404, "not_found");
    assert_problem(&api.get("/v1/no-such-route").await, 404, "not_found");
    assert_problem(
        &api.get("/access/v1/evaluation").await,
        405,
        "method_not_allowed",
    );

    let meta = api.get("/.well-known/authzen-configuration").await.ok();
    let pdp = meta.json["policy_decision_point"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!pdp.is_empty(), "{}", meta.text);
    assert_eq!(
        meta.json["access_evaluation_endpoint"],
        format!("{pdp}/access/v1/evaluation")
    );
    assert_eq!(
        meta.json["access_evaluations_endpoint"],
        format!("{pdp}/access/v1/evaluations")
    );
    assert_eq!(api.get("/livez").await.status, 200);
}

/// The 1-based line and column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

fn assert_location(resp: &Value, text: &str, offset: usize, what: &str) {
    let (line, column) = line_column(text, offset);
    let loc = &resp["location"];
    assert_eq!(
        (&loc["line"], &loc["column"], &loc["offset"]),
        (&json!(line), &json!(column), &json!(offset)),
        "{what}: location in {resp}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_policies_are_refused_with_their_code() {
    let (node, before) = seeded_node().await;
    let api = node.api();
    let probe = alice_request();

    let typo = "permitt(principal, action, resource);";
    let resp = api.text(Method::PUT, "/v1/policies/typo", typo).await;
    assert_problem(&resp, 400, "cedar_syntax");
    assert_location(&resp.json, typo, 0, "misspelt effect");

    let missing_comma = "permit(\n  principal,\n  action resource\n);";
    let resp = api
        .text(Method::PUT, "/v1/policies/comma", missing_comma)
        .await;
    assert_problem(&resp, 400, "cedar_syntax");
    let at = missing_comma.find("resource").unwrap_or_default();
    assert_location(&resp.json, missing_comma, at, "missing comma");

    // In a whole set the location is within the whole text.
    let set = "@id(\"a\")\npermit(principal, action, resource);\n@id(\"b\")\npermit(principal, action resource);\n";
    let resp = api.text(Method::PUT, "/v1/policies", set).await;
    assert_problem(&resp, 400, "cedar_syntax");
    let at = set.find("action resource").unwrap_or_default() + "action ".len();
    assert_location(&resp.json, set, at, "error in the second policy of a set");
    // The same through `{"cedar": ...}`.
    let resp = api
        .json(Method::PUT, "/v1/policies/typo", &json!({"cedar": typo}))
        .await;
    assert_problem(&resp, 400, "cedar_syntax");

    let two = "permit(principal, action, resource);\nforbid(principal, action, resource);";
    assert_problem(
        &api.text(Method::PUT, "/v1/policies/two", two).await,
        400,
        "unsupported_policy",
    );
    let template = "permit(principal == ?principal, action, resource);";
    assert_problem(
        &api.text(Method::PUT, "/v1/policies/tpl", template).await,
        400,
        "unsupported_policy",
    );
    assert_problem(
        &api.text(Method::PUT, "/v1/policies/none", "// nothing\n")
            .await,
        400,
        "unsupported_policy",
    );
    let dup = "@id(\"x\")\npermit(principal, action, resource);\n@id(\"x\")\nforbid(principal, action, resource);";
    assert_problem(
        &api.text(Method::PUT, "/v1/policies", dup).await,
        400,
        "unsupported_policy",
    );

    let long = "p".repeat(129);
    for bad_id in [
        "-leading-dash",
        "has%20space",
        "semi;colon",
        long.as_str(),
        "caf%C3%A9",
    ] {
        let resp = api
            .text(Method::PUT, &format!("/v1/policies/{bad_id}"), ALICE_VIEWS)
            .await;
        assert_problem(&resp, 400, "invalid_id");
    }
    let longest_ok = "p".repeat(128);
    let path = format!("/v1/policies/{longest_ok}");
    api.text(Method::PUT, &path, ALICE_VIEWS).await.written();
    api.delete(&path).await.written();

    let wrong_type = api
        .json(Method::PUT, "/v1/policies/x", &json!({"cedar": 5}))
        .await;
    assert_problem(&wrong_type, 400, "invalid_json");
    let malformed = api
        .req(Method::PUT, "/v1/policies/x")
        .header("content-type", "application/json")
        .body("{\"cedar\": ");
    assert_problem(&api.send(malformed).await, 400, "invalid_json");
    let empty = api
        .req(Method::PUT, "/v1/policies/x")
        .header("content-type", "text/plain");
    assert_problem(&api.send(empty).await, 400, "empty_body");
    assert_problem(&api.delete("/v1/policies/absent").await, 404, "not_found");

    // The 128-character policy was written and deleted: two versions later, otherwise the same.
    let (policies, _) = api.fingerprint(&probe).await;
    assert_eq!(
        policies["policies"], before.0["policies"],
        "policy list changed"
    );
    let resp = api.evaluate(&probe).await.ok();
    assert_eq!(resp.json["decision"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_guards_policies_and_entities() {
    let node = Node::start().await;
    let api = node.api();
    let fleet = zero_trust::Fleet::new(4);
    // A policy the zero-trust schema rejects (Host has no `color`), stored while no schema is set.
    let colorful = "permit(principal, action == Action::\"login\", resource) when { resource.color == \"red\" };";
    api.put_policy("colorful", colorful).await;
    let resp = api
        .text(Method::PUT, "/v1/schema", zero_trust::SCHEMA)
        .await;
    assert_problem(&resp, 400, "schema_conflict");
    assert_problem(&api.get("/v1/schema").await, 404, "not_found");
    api.delete("/v1/policies/colorful").await.written();

    let resp = api
        .text(
            Method::PUT,
            "/v1/schema",
            "entity User {\n  name: String,\n",
        )
        .await;
    assert_problem(&resp, 400, "schema_syntax");

    api.load(
        Some(zero_trust::SCHEMA),
        zero_trust::POLICIES,
        &fleet.entities(),
    )
    .await;
    let probe = fleet.samples()[0].request.clone();
    let before = api.fingerprint(&probe).await;

    let resp = api
        .text(Method::PUT, "/v1/policies/colorful", colorful)
        .await;
    assert_problem(&resp, 400, "schema_validation");
    let unknown_action = "permit(principal, action == Action::\"fly\", resource);";
    let resp = api
        .text(Method::PUT, "/v1/policies/fly", unknown_action)
        .await;
    assert_problem(&resp, 400, "schema_validation");
    let resp = api.text(Method::PUT, "/v1/policies", colorful).await;
    assert_problem(&resp, 400, "schema_validation");

    let spaceship =
        json!([{"uid": {"type": "Spaceship", "id": "enterprise"}, "attrs": {}, "parents": []}]);
    assert_problem(
        &api.json(Method::POST, "/v1/entities", &spaceship).await,
        400,
        "entity_invalid",
    );
    assert_problem(
        &api.get("/v1/entities/Spaceship/enterprise").await,
        404,
        "not_found",
    );
    let wrong_attr = json!([{"uid": {"type": "User", "id": "u-99"},
        "attrs": {"email": "u-99@example.com", "suspended": "no"}, "parents": []}]);
    assert_problem(
        &api.json(Method::POST, "/v1/entities", &wrong_attr).await,
        400,
        "entity_invalid",
    );
    let missing_attr = json!([{"uid": {"type": "User", "id": "u-99"}, "attrs": {}, "parents": []}]);
    assert_problem(
        &api.json(Method::POST, "/v1/entities", &missing_attr).await,
        400,
        "entity_invalid",
    );
    assert_problem(&api.get("/v1/entities/User/u-99").await, 404, "not_found");
    let no_uid_id = json!([{"uid": {"type": "User"}, "attrs": {}, "parents": []}]);
    assert_problem(
        &api.json(Method::POST, "/v1/entities", &no_uid_id).await,
        400,
        "entity_invalid",
    );
    // A batch with one bad entity writes none of them.
    let mut mixed = fleet.entities();
    let good_new = json!({"uid": {"type": "User", "id": "u-98"},
        "attrs": {"email": "u-98@example.com", "suspended": false}, "parents": []});
    mixed
        .as_array_mut()
        .unwrap()
        .extend([good_new, spaceship[0].clone()]);
    assert_problem(
        &api.json(Method::POST, "/v1/entities", &mixed).await,
        400,
        "entity_invalid",
    );
    assert_problem(&api.get("/v1/entities/User/u-98").await, 404, "not_found");

    assert_eq!(
        api.fingerprint(&probe).await,
        before,
        "state changed after refused writes"
    );
    let schema = api.get("/v1/schema").await.ok();
    assert_eq!(schema.json["format"], "cedar");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_are_413() {
    let (node, before) = seeded_node().await;
    let api = node.api();
    let probe = alice_request();
    let mut big = alice_request();
    // Just under the 1 MiB decision cap is answered.
    big["context"] = json!({"pad": "x".repeat(1024 * 1024 - 1024)});
    let resp = api.evaluate(&big).await.ok();
    assert_eq!(resp.json["decision"], true);
    big["context"] = json!({"pad": "x".repeat(1024 * 1024 + 1)});
    assert_problem(&api.evaluate(&big).await, 413, "payload_too_large");
    let batch = json!({"evaluations": [big]});
    assert_problem(&api.evaluations(&batch).await, 413, "payload_too_large");

    // Admin writes may be bigger than decisions, up to 16 MiB: about 2 MiB of entities.
    let pad = "x".repeat(100);
    let bulk: Vec<Value> = (0..16_000)
        .map(|i| json!({"uid": {"type": "User", "id": format!("bulk-{i}")}, "attrs": {"pad": pad}, "parents": []}))
        .collect();
    let bulk = json!(bulk);
    assert!(bulk.to_string().len() > 2 * 1024 * 1024);
    api.upsert_entities(&bulk).await;
    api.get("/v1/entities/User/bulk-15999").await.ok();

    let huge = format!("// {}\n{ALICE_VIEWS}", "x".repeat(16 * 1024 * 1024));
    let resp = api.text(Method::PUT, "/v1/policies/huge", &huge).await;
    assert_problem(&resp, 413, "payload_too_large");
    assert_problem(&api.get("/v1/policies/huge").await, 404, "not_found");
    let (policies, _) = api.fingerprint(&probe).await;
    assert_eq!(
        policies["policies"], before.0["policies"],
        "policy list changed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_writes_and_freshness_headers() {
    let (node, _) = seeded_node().await;
    let api = node.api();
    let probe = alice_request();
    let v1 = api
        .put_policy(
            "cond",
            "forbid(principal == User::\"mallory\", action, resource);",
        )
        .await;
    let got = api.get("/v1/policies/cond").await.ok();
    assert_eq!(
        got.json["version"], v1,
        "GET returns the version that wrote it: {}",
        got.text
    );
    assert_eq!(got.json["id"], "cond");

    let put_if = |if_match: &str, text: &str| {
        api.req(Method::PUT, "/v1/policies/cond")
            .header("content-type", "text/plain")
            .header("if-match", if_match)
            .body(text.to_owned())
    };
    let second = "forbid(principal == User::\"eve\", action, resource);";
    let v2 = api.send(put_if(&v1.to_string(), second)).await.written();
    assert!(v2 > v1);
    let before = api.fingerprint(&probe).await;
    let stale = api
        .send(put_if(
            &v1.to_string(),
            "forbid(principal, action, resource);",
        ))
        .await;
    assert_problem(&stale, 412, "precondition_failed");
    assert_problem(
        &api.send(put_if("0", second)).await,
        412,
        "precondition_failed",
    );
    assert_problem(
        &api.send(put_if("abc", second)).await,
        400,
        "invalid_header",
    );
    let stale_delete = api
        .req(Method::DELETE, "/v1/policies/cond")
        .header("if-match", v1.to_string());
    assert_problem(&api.send(stale_delete).await, 412, "precondition_failed");
    assert_eq!(
        api.fingerprint(&probe).await,
        before,
        "refused conditional writes changed state"
    );
    let got = api.get("/v1/policies/cond").await.ok();
    assert_eq!(
        (
            &got.json["version"],
            got.json["cedar"].as_str().map(|c| c.contains("eve"))
        ),
        (&json!(v2), Some(true))
    );

    // If-Match: 0 means "must not exist".
    let create = api
        .req(Method::PUT, "/v1/policies/fresh")
        .header("content-type", "text/plain")
        .header("if-match", "0")
        .body(ALICE_VIEWS);
    let v3 = api.send(create).await.written();

    // Freshness: a version no write produced yet is refused at once on the leader.
    let current = api.decision_version().await;
    assert!(current >= v3);
    let ask = |min: String| {
        api.req(Method::POST, "/access/v1/evaluation")
            .header("verdict-min-version", min)
            .json(&probe)
    };
    let resp = api.send(ask(current.to_string())).await.ok();
    assert!(resp.version_header() >= current);
    assert_problem(
        &api.send(ask((current + 1000).to_string())).await,
        400,
        "future_version",
    );
    assert_problem(&api.send(ask("soon".into())).await, 400, "invalid_header");
    assert_problem(&api.send(ask("-1".into())).await, 400, "invalid_header");
    let long_key = api
        .req(Method::PUT, "/v1/policies/k")
        .header("content-type", "text/plain")
        .header("idempotency-key", "k".repeat(129))
        .body(ALICE_VIEWS);
    assert_problem(&api.send(long_key).await, 400, "invalid_header");
    assert_problem(&api.get("/v1/policies/k").await, 404, "not_found");
}
