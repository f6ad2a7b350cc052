//! No request panics the node (issue #12). The exact case reported — a valid bearer token with
//! `"subject": "x"` — and a mutation test in the style of bad_input.rs: every decision and admin
//! route that takes a JSON body gets a valid body with each object in it (the body itself, nested
//! objects, array items) replaced in turn by a string, a number, an array, `null` and a bool, with
//! and without a bearer token. Every answer must be a 4xx problem+json (or, where the documented
//! contract accepts the value, a 2xx), and afterwards `verdict_panics_total` is 0 and the node's
//! log holds no panic.

use reqwest::Method;
use serde_json::json;
use serde_json::Value;
use tempfile::TempDir;

use crate::harness::check_problem;
use crate::harness::Api;
use crate::harness::Node;
use crate::harness::Resp;

const ADMIN_SECRET: &str = "e2e-no-panics-admin-secret-0123";
const ADMIN: &str = "admin.e2e-no-panics-admin-secret-0123";

/// Rotates the key ring and issues a token for `gina`, with `admin` as the caller's credential.
async fn subject_token(admin: &Api) -> String {
    admin
        .json(Method::POST, "/v1/keys/rotate", &json!({}))
        .await
        .written();
    let resp = admin
        .json(Method::POST, "/v1/tokens", &json!({"sub": "gina"}))
        .await
        .ok();
    let token = resp.json["token"].as_str().unwrap_or_default().to_owned();
    assert!(token.starts_with("v4.local."), "{}", resp.text);
    token
}

/// The value of an unlabelled metric on `/metrics`.
async fn metric(api: &Api, name: &str) -> u64 {
    let resp = api.get("/metrics").await.ok();
    resp.text
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no `{name}` in /metrics:\n{}", resp.text))
}

/// Panics on the node show in the counter and in its log (our one line, or the default hook's).
async fn assert_no_panic(node: &Node) {
    assert_eq!(
        metric(node.api(), "verdict_panics_total").await,
        0,
        "{}",
        node.log_tail(40)
    );
    let log = node.log_text();
    let panics: Vec<&str> = log.lines().filter(|l| l.contains("panicked")).collect();
    assert!(
        panics.is_empty(),
        "the node logged panics:\n{}",
        panics.join("\n")
    );
}

fn evaluation(subject: Value) -> Value {
    json!({"subject": subject, "action": {"name": "view"}, "resource": {"type": "Doc", "id": "d1"}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bearer_token_with_a_subject_that_is_not_an_object_is_400() {
    let node = Node::start_with_config("decision_bearer_tokens = true\n").await;
    let api = node.api();
    let token = subject_token(api).await;
    for subject in [json!("x"), json!(["x"])] {
        let builder = api
            .req(Method::POST, "/access/v1/evaluation")
            .header("authorization", format!("Bearer {token}"))
            .json(&evaluation(subject.clone()));
        let resp = api.send(builder).await;
        if let Err(e) = check_problem(&resp, 400, "invalid_json") {
            panic!("subject {subject}: {e}");
        }
        let detail = resp.json["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("`subject` must be an object"), "{detail}");
    }
    let object = api
        .req(Method::POST, "/access/v1/evaluation")
        .header("authorization", format!("Bearer {token}"))
        .json(&evaluation(json!({"type": "User", "id": "-"})));
    api.send(object).await.ok();
    assert_no_panic(&node).await;
}

/// A route and a valid body for it.
struct Route {
    method: Method,
    path: &'static str,
    decision: bool,
    body: Value,
    /// JSON pointers of objects whose replacement the contract accepts (a 2xx is fine there as
    /// well as a 4xx), each with the reason.
    lenient: &'static [(&'static str, &'static str)],
}

const FROM_ITEM: &str = "an item's own field replaces the default";
const IN_200: &str = "an item that cannot be evaluated is answered inside the 200 (docs/api.md)";
const ANY_VALUE: &str = "an attribute value may be any JSON value";

/// Every JSON-bodied decision and admin route. Writes that may succeed with a mutation change the
/// node's state, which is fine: only the shape of each answer is checked. The schema comes last
/// so that a schema a mutation happens to set judges no earlier write. Not here: routes without a
/// body (GETs, deletes by path, key rotation, drain).
fn routes() -> Vec<Route> {
    let entities = json!([{"uid": {"type": "User", "id": "alice"},
        "attrs": {"team": {"name": "ops"}}, "parents": [{"type": "Group", "id": "g"}], "tags": {}}]);
    vec![
        Route {
            method: Method::POST,
            path: "/access/v1/evaluation",
            decision: true,
            body: json!({"subject": {"type": "User", "id": "alice", "properties": {"a": 1}},
                "action": {"name": "view", "properties": {}},
                "resource": {"type": "Doc", "id": "d1", "properties": {}}, "context": {"ip": "10.0.0.1"}}),
            lenient: &[(
                "/action/properties",
                "Verdict does not read action properties",
            )],
        },
        Route {
            method: Method::POST,
            path: "/access/v1/evaluations",
            decision: true,
            body: json!({"subject": {"type": "User", "id": "alice"}, "action": {"name": "view"},
                "resource": {"type": "Doc", "id": "d1"}, "context": {},
                "options": {"evaluations_semantic": "execute_all"},
                "evaluations": [{"subject": {"type": "User", "id": "bob", "properties": {}}}]}),
            lenient: &[
                ("/subject", FROM_ITEM),
                ("/action", IN_200),
                ("/resource", IN_200),
                ("/context", IN_200),
                ("/evaluations/0", IN_200),
                ("/evaluations/0/subject", IN_200),
                ("/evaluations/0/subject/properties", IN_200),
                (
                    "/options",
                    "options are optional; only `evaluations_semantic` is read",
                ),
            ],
        },
        Route {
            method: Method::PUT,
            path: "/v1/policies/p1",
            decision: false,
            body: json!({"cedar": "permit(principal, action, resource);"}),
            lenient: &[],
        },
        Route {
            method: Method::PUT,
            path: "/v1/policies",
            decision: false,
            body: json!({"policies": {"p2": "permit(principal, action, resource);"}}),
            lenient: &[],
        },
        Route {
            method: Method::POST,
            path: "/v1/entities",
            decision: false,
            body: entities.clone(),
            lenient: &[("/0/attrs/team", ANY_VALUE)],
        },
        Route {
            method: Method::PUT,
            path: "/v1/entities",
            decision: false,
            body: entities,
            lenient: &[("/0/attrs/team", ANY_VALUE)],
        },
        Route {
            method: Method::DELETE,
            path: "/v1/entities",
            decision: false,
            body: json!([{"type": "User", "id": "nobody"}]),
            lenient: &[],
        },
        Route {
            method: Method::POST,
            path: "/v1/tokens",
            decision: false,
            body: json!({"sub": "gina", "claims": {"team": {"name": "ops"}}}),
            lenient: &[("/claims/team", "a claim may be any JSON value")],
        },
        Route {
            method: Method::POST,
            path: "/v1/tokens/introspect",
            decision: false,
            body: json!({"token": "v4.local.x"}),
            lenient: &[],
        },
        Route {
            method: Method::POST,
            path: "/v1/revocations",
            decision: false,
            body: json!([{"by": "subject", "sub": "nobody"}]),
            lenient: &[],
        },
        Route {
            method: Method::POST,
            path: "/v1/credentials",
            decision: false,
            body: json!({"name": "n", "scopes": ["read"]}),
            lenient: &[],
        },
        Route {
            method: Method::POST,
            path: "/v1/cluster/learners",
            decision: false,
            body: json!({"id": 9, "api_addr": "127.0.0.1:1", "peer_addr": "127.0.0.1:2"}),
            lenient: &[],
        },
        Route {
            method: Method::PUT,
            path: "/v1/cluster/voters",
            decision: false,
            body: json!({"ids": [1]}),
            lenient: &[],
        },
        Route {
            method: Method::POST,
            path: "/v1/cluster/transfer-leader",
            decision: false,
            body: json!({"to": 1}),
            lenient: &[],
        },
        Route {
            method: Method::PUT,
            path: "/v1/schema",
            decision: false,
            body: json!({"": {
                "entityTypes": {"User": {"memberOfTypes": ["Group"],
                    "shape": {"type": "Record", "attributes": {"team": {"type": "String"}}}},
                    "Group": {}, "Doc": {}},
                "actions": {"view": {"appliesTo": {"principalTypes": ["User"], "resourceTypes": ["Doc"]}}}}}),
            lenient: &[],
        },
    ]
}

/// The JSON pointers of every object in `value` (itself included, as ""), outermost first.
fn object_positions(value: &Value, at: String, out: &mut Vec<String>) {
    match value {
        Value::Object(m) => {
            out.push(at.clone());
            for (k, v) in m {
                let key = k.replace('~', "~0").replace('/', "~1");
                object_positions(v, format!("{at}/{key}"), out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                object_positions(v, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// `body` with the value at `pointer` replaced by `with`.
fn mutated(body: &Value, pointer: &str, with: &Value) -> Value {
    let mut b = body.clone();
    if let Some(slot) = b.pointer_mut(pointer) {
        *slot = with.clone();
    }
    b
}

/// Sends every mutation of every route, each with and without a bearer token (`decision_bearer`
/// on decision routes, `admin_bearer` on admin routes); returns the failures and the count sent.
async fn drive_every_route(
    api: &Api,
    decision_bearer: &str,
    admin_bearer: &str,
) -> (Vec<String>, usize) {
    let not_objects = [json!("x"), json!(7), json!(["x"]), Value::Null, json!(true)];
    let mut failures = Vec::new();
    let mut sent = 0;
    for route in routes() {
        let mut positions = Vec::new();
        object_positions(&route.body, String::new(), &mut positions);
        let bearer = if route.decision {
            decision_bearer
        } else {
            admin_bearer
        };
        for pointer in &positions {
            for value in &not_objects {
                let body = mutated(&route.body, pointer, value);
                for token in [Some(bearer), None] {
                    let mut builder = api
                        .req(route.method.clone(), route.path)
                        .header("content-type", "application/json")
                        .body(body.to_string());
                    if let Some(t) = token {
                        builder = builder.header("authorization", format!("Bearer {t}"));
                    }
                    sent += 1;
                    let what = format!(
                        "{} {} with {value} at `{pointer}`, bearer: {}",
                        route.method,
                        route.path,
                        token.is_some()
                    );
                    let resp = match api.try_send(builder).await {
                        Ok(r) => r,
                        Err(e) => {
                            failures.push(format!("{what}: no answer: {e}"));
                            continue;
                        }
                    };
                    let lenient =
                        value.is_null() || route.lenient.iter().any(|(p, _)| p == pointer);
                    if let Err(e) = acceptable(&resp, lenient) {
                        failures.push(format!("{what}: {e}"));
                    }
                }
            }
        }
    }
    (failures, sent)
}

/// A 4xx problem+json; or, where `lenient` (the contract accepts the value: `null` counts as
/// absent), a 2xx as well. Never a 5xx.
fn acceptable(resp: &Resp, lenient: bool) -> Result<(), String> {
    match resp.status {
        200..=299 if lenient => Ok(()),
        400..=499 => {
            let code = resp.json["code"].as_str().unwrap_or_default().to_owned();
            check_problem(resp, resp.status, &code).and_then(|()| {
                if code.is_empty() {
                    Err(format!("no `code` in {}", resp.text))
                } else {
                    Ok(())
                }
            })
        }
        status => Err(format!(
            "expected a 4xx problem, got {status} {}",
            resp.text
        )),
    }
}

fn report(failures: &[String], sent: usize) {
    assert!(
        failures.is_empty(),
        "{} of {sent} mutated requests were answered wrongly:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// On a loopback node without credentials (admin routes open, the bearer header ignored there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_objects_in_every_object_position_are_4xx_on_an_open_node() {
    let node = Node::start_with_config("decision_bearer_tokens = true\n").await;
    let token = subject_token(node.api()).await;
    let (failures, sent) = drive_every_route(node.api(), &token, &token).await;
    assert_no_panic(&node).await;
    report(&failures, sent);
    assert!(sent > 400, "only {sent} mutated requests");
}

/// On a node with a bootstrap admin: admin routes with the admin credential and without it (401).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_objects_in_every_object_position_are_4xx_with_credentials() {
    let dir = TempDir::with_prefix("verdict-e2e-secret-").expect("secret dir");
    let path = dir.path().join("admin-secret");
    std::fs::write(&path, format!("{ADMIN_SECRET}\n")).expect("write secret");
    let node = Node::start_with_config(&format!(
        "admin_secret_file = {:?}\ndecision_bearer_tokens = true\n",
        path.display().to_string()
    ))
    .await;
    let admin = node.api().with_token(ADMIN);
    let ready = admin
        .wait_ok("/v1/credentials", std::time::Duration::from_secs(20))
        .await;
    assert!(ready.is_ok(), "bootstrap admin never worked: {ready:?}");
    let token = subject_token(&admin).await;
    let (failures, sent) = drive_every_route(node.api(), &token, ADMIN).await;
    assert_no_panic(&node).await;
    report(&failures, sent);
}
