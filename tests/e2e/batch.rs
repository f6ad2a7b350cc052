//! `POST /access/v1/evaluations`: semantics, defaults, and items that cannot be evaluated.

use serde_json::{json, Value};
use verdict_fixtures::project_rbac::{self, Org};
use verdict_fixtures::Sample;

use crate::harness::{assert_problem, Node};

/// A node loaded with the project-RBAC data set, its permit and deny samples, and the version.
async fn rbac_node() -> (Node, Org, Vec<Sample>, Vec<Sample>, u64) {
    let node = Node::start().await;
    let org = Org::new(project_rbac::DEFAULT_USERS, project_rbac::DEFAULT_PROJECTS);
    let version = node
        .api()
        .load(
            Some(project_rbac::SCHEMA),
            project_rbac::POLICIES,
            &org.entities(),
        )
        .await;
    let (permits, denies) = org.samples().into_iter().partition(|s| s.expect());
    (node, org, permits, denies, version)
}

fn decisions(resp: &Value) -> Vec<Value> {
    resp["evaluations"]
        .as_array()
        .map(|items| items.iter().map(|i| i["decision"].clone()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_semantics_stop_where_they_say() {
    let (node, _org, p, d, _) = rbac_node().await;
    let api = node.api();
    let cases = [
        (
            "execute_all",
            vec![&p[0], &d[0], &p[1], &d[1]],
            vec![true, false, true, false],
        ),
        (
            "deny_on_first_deny",
            vec![&p[0], &p[1], &d[0], &p[2]],
            vec![true, true, false],
        ),
        (
            "deny_on_first_deny",
            vec![&p[0], &p[1], &p[2]],
            vec![true, true, true],
        ),
        (
            "permit_on_first_permit",
            vec![&d[0], &d[1], &p[0], &d[2]],
            vec![false, false, true],
        ),
        (
            "permit_on_first_permit",
            vec![&d[0], &d[1]],
            vec![false, false],
        ),
    ];
    for (semantic, items, expected) in cases {
        let body = json!({
            "options": {"evaluations_semantic": semantic},
            "evaluations": items.iter().map(|s| s.request.clone()).collect::<Vec<_>>(),
        });
        let resp = api.evaluations(&body).await.ok();
        let expected: Vec<Value> = expected.into_iter().map(Value::Bool).collect();
        assert_eq!(decisions(&resp.json), expected, "{semantic}: {}", resp.text);
        assert!(resp.version_header() > 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_defaults_are_replaced_as_whole_objects() {
    let (node, org, _, _, _) = rbac_node().await;
    let api = node.api();
    // u-0 is the platform admin: GET on any project is a permit, so a merged subject would show.
    let top = project_rbac::request(0, "GET", 0);
    let mut items = Vec::new();
    let mut expected = Vec::new();
    for project in 0..project_rbac::DEFAULT_PROJECTS {
        let resource = json!({"type": "Project", "id": format!("p-{project}")});
        items.push(json!({"resource": resource}));
        expected.push(json!(org.outcome(0, project, "GET").decision));
        for action in ["DELETE", "PATCH"] {
            items.push(json!({"action": {"name": action}, "resource": resource}));
            expected.push(json!(org.outcome(0, project, action).decision));
        }
        let user = 1 + project;
        items.push(
            json!({"subject": {"type": "User", "id": format!("u-{user}")}, "resource": resource}),
        );
        expected.push(json!(org.outcome(user, project, "GET").decision));
    }
    // An item subject without `type` replaces the default whole: it is not merged with the
    // default's type, so the item cannot be evaluated.
    items.push(json!({"subject": {"id": "u-1"}}));
    expected.push(json!(false));
    let body = json!({
        "subject": top["subject"], "action": top["action"], "resource": top["resource"],
        "evaluations": items,
    });
    let resp = api.evaluations(&body).await.ok();
    assert_eq!(decisions(&resp.json), expected, "{}", resp.text);
    let last = &resp.json["evaluations"][items.len() - 1];
    assert_eq!(
        last["context"]["error"]["code"], "missing_field",
        "no merging: {last}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_without_items_is_one_evaluation() {
    let (node, _org, p, d, _) = rbac_node().await;
    let api = node.api();
    for sample in [&p[0], &d[0]] {
        for evaluations in [None, Some(json!([]))] {
            let mut body = sample.request.clone();
            if let Some(e) = &evaluations {
                body["evaluations"] = e.clone();
            }
            // AuthZEN 1.0 §7.1: answered exactly like the single Access Evaluation API.
            let resp = api.evaluations(&body).await.ok();
            let single = api.evaluate(&sample.request).await.ok();
            assert_eq!(
                resp.json["decision"],
                json!(sample.expect()),
                "{} with evaluations {evaluations:?}: {}",
                sample.name,
                resp.text
            );
            assert!(
                resp.json.get("evaluations").is_none(),
                "not an array: {}",
                resp.text
            );
            assert_eq!(
                resp.json["context"], single.json["context"],
                "same shape and content as a single evaluation"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_items_deny_alone_and_oversized_batches_are_refused() {
    let (node, _org, p, _d, _) = rbac_node().await;
    let api = node.api();
    let good = &p[0].request;
    let bad_items = [
        json!({"subject": {"type": "User"}, "action": good["action"], "resource": good["resource"]}),
        json!({"subject": good["subject"], "action": {}, "resource": good["resource"]}),
        json!({"subject": good["subject"], "action": good["action"], "resource": {"id": "p-0"}}),
        json!({"subject": good["subject"], "action": good["action"]}),
        json!({"subject": {"type": "User", "id": ""}, "action": good["action"], "resource": good["resource"]}),
    ];
    for bad in bad_items {
        let body = json!({"evaluations": [good, bad, good]});
        let resp = api.evaluations(&body).await.ok();
        assert_eq!(
            decisions(&resp.json),
            [json!(true), json!(false), json!(true)],
            "bad item {bad}: {}",
            resp.text
        );
        let error = &resp.json["evaluations"][1]["context"]["error"];
        assert_eq!(error["code"], "missing_field", "bad item {bad}: {error}");
        assert!(
            error["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{error}"
        );
    }

    // The cap is 1,000 items: 1,000 are answered, 1,001 are refused.
    let defaults = json!({"subject": good["subject"], "action": good["action"]});
    let item = json!({"resource": good["resource"]});
    for (n, ok) in [(1000, true), (1001, false)] {
        let mut body = defaults.clone();
        body["evaluations"] = json!(vec![item.clone(); n]);
        let resp = api.evaluations(&body).await;
        if ok {
            let resp = resp.ok();
            assert_eq!(decisions(&resp.json).len(), n);
            assert!(decisions(&resp.json).iter().all(|d| d == true));
        } else {
            assert_problem(&resp, 413, "too_many_evaluations");
        }
    }
}
