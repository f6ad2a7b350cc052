//! Format levels on clusters of this release only: a fresh cluster reaches the top level at once
//! and offers its features; with `auto_finalize = false` the level holds until an operator
//! finalises, and the upgrade endpoints refuse bad requests with clear codes. Mixed releases are
//! in `mixed_versions`.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use serde_json::Value;

use crate::harness::assert_problem;
use crate::harness::cli_at;
use crate::harness::cluster::wait_for;
use crate::harness::cluster::Cluster;
use crate::harness::Api;

/// The highest format level this release supports.
const TOP: u64 = 2;

/// A user, two groups and a policy that admits members of `admins`.
pub async fn seed(api: &Api) {
    api.text(
        Method::PUT,
        "/v1/policies/admins",
        r#"permit(principal in Group::"admins", action, resource);"#,
    )
    .await
    .ok();
    api.upsert_entities(&json!([
        {"uid": {"type": "Group", "id": "admins"}, "attrs": {}, "parents": []},
        {"uid": {"type": "Group", "id": "staff"}, "attrs": {}, "parents": []},
        {"uid": {"type": "User", "id": "alice"}, "attrs": {}, "parents": [{"type": "Group", "id": "staff"}]},
    ]))
    .await;
}

/// Alice's decision on `api` (at least at `version`).
pub async fn alice_allowed(api: &Api, version: u64) -> bool {
    let r = api
        .evaluate_at(
            &json!({
                "subject": {"type": "User", "id": "alice"},
                "action": {"name": "view"},
                "resource": {"type": "Doc", "id": "d"},
            }),
            version,
        )
        .await
        .ok();
    r.json["decision"].as_bool().unwrap_or(false)
}

/// `POST /v1/entities/User/alice/parents` adding `admins` and removing `staff`.
pub async fn promote_alice(api: &Api) -> crate::harness::Resp {
    api.json(
        Method::POST,
        "/v1/entities/User/alice/parents",
        &json!({"add": [{"type": "Group", "id": "admins"}], "remove": [{"type": "Group", "id": "staff"}]}),
    )
    .await
}

/// Waits until `api` reports active level `level`.
pub async fn wait_level(api: &Api, level: u64, within: Duration) -> Value {
    wait_for(within, || async {
        let r = api.try_get("/v1/cluster/upgrade").await?;
        if r.json["active_level"].as_u64() == Some(level) {
            Ok(r.json)
        } else {
            Err(format!("{} {}", r.status, r.text))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("not at level {level} within {within:?}: {e}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fresh_cluster_reaches_the_top_level_and_edits_parents() {
    let c = Cluster::start(3, &[]).await;
    let api = c.member(2).api();
    let status = wait_level(api, TOP, Duration::from_secs(20)).await;
    assert_eq!(status["final"], true, "{status}");
    assert_eq!(status["cluster_supports"], TOP, "{status}");
    assert_eq!(status["holding_back"], json!([]), "{status}");
    let members = status["members"].as_array().expect("members");
    assert_eq!(members.len(), 3);
    for m in members {
        assert_eq!(m["supported_level"], TOP, "{m}");
        assert!(
            m["release"].as_str().is_some_and(|r| r.contains('+')),
            "{m}"
        );
    }
    // `GET /v1/cluster` shows each member's release and level too.
    let view = c.view(3).await;
    assert_eq!(view["active_level"], TOP, "{view}");
    for m in view["members"].as_array().expect("members") {
        assert_eq!(m["supported_level"], TOP, "{m}");
        assert!(m["release"].is_string(), "{m}");
    }

    seed(api).await;
    let v = promote_alice(api).await.ok().written();
    for id in 1..=3 {
        assert!(
            alice_allowed(c.member(id).api(), v).await,
            "node {id} at {v}"
        );
    }
    let alice = api.get("/v1/entities/User/alice").await.ok().json;
    assert_eq!(
        alice["entity"]["parents"],
        json!([{"type": "Group", "id": "admins"}]),
        "{alice}"
    );

    // Bad input: a clear 4xx each, nothing written.
    let bad = |body: Value| async move {
        api.json(Method::POST, "/v1/entities/User/alice/parents", &body)
            .await
    };
    assert_problem(&bad(json!({})).await, 400, "missing_field");
    assert_problem(&bad(json!([1])).await, 400, "invalid_request");
    assert_problem(&bad(json!({"add": "x"})).await, 400, "entity_invalid");
    assert_problem(
        &bad(json!({"add": [], "nope": 1})).await,
        400,
        "invalid_request",
    );
    assert_problem(
        &bad(json!({"add": [{"type": "User", "id": "alice"}]})).await,
        400,
        "entity_invalid",
    );
    let ghost = api
        .json(
            Method::POST,
            "/v1/entities/User/ghost/parents",
            &json!({"add": [{"type": "Group", "id": "admins"}]}),
        )
        .await;
    assert_problem(&ghost, 404, "not_found");
    // A cycle is refused by the closure check like any write that would make one.
    let cycle = api
        .json(
            Method::POST,
            "/v1/entities/Group/admins/parents",
            &json!({"add": [{"type": "User", "id": "alice"}]}),
        )
        .await;
    assert!(
        (400..500).contains(&cycle.status),
        "a cycle: {} {}",
        cycle.status,
        cycle.text
    );

    // The CLI: `verdict entity parents` and `verdict cluster upgrade status`.
    let out = cli_at(
        &c.member(1).url(),
        &[
            "entity",
            "parents",
            "User",
            "alice",
            "--add",
            "Group::\"staff\"",
            "--remove",
            "Group::admins",
        ],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let alice = api.get("/v1/entities/User/alice").await.ok().json;
    assert_eq!(
        alice["entity"]["parents"],
        json!([{"type": "Group", "id": "staff"}]),
        "{alice}"
    );
    let out = cli_at(&c.member(1).url(), &["cluster", "upgrade", "status"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("final"), "{out:?}");
    let out = cli_at(&c.member(1).url(), &["cluster", "status"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("format level 2"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_auto_finalize_the_level_holds_until_finalised() {
    let c = Cluster::start(3, &["--auto-finalize", "false"]).await;
    let api = c.member(1).api();
    seed(api).await;
    // Every member supports level 2, nobody raises it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let status = api.get("/v1/cluster/upgrade").await.ok().json;
    assert_eq!(status["active_level"], 1, "{status}");
    assert_eq!(status["cluster_supports"], TOP, "{status}");
    assert_eq!(status["next_level"], TOP, "{status}");
    assert_eq!(status["holding_back"], json!([]), "{status}");

    let refused = promote_alice(api).await;
    assert_problem(&refused, 409, "feature_not_active");
    assert!(refused.text.contains("not finalised"), "{}", refused.text);

    // Bad levels.
    for body in [
        json!({"level": 0}),
        json!({"level": 9}),
        json!({"level": "two"}),
    ] {
        let r = api
            .json(Method::POST, "/v1/cluster/upgrade/finalize", &body)
            .await;
        assert_problem(&r, 400, "invalid_level");
    }
    let r = api
        .json(
            Method::POST,
            "/v1/cluster/upgrade/finalize",
            &json!({"level": 1}),
        )
        .await;
    assert_problem(&r, 409, "already_final");

    // Finalise through the CLI on a follower; every member switches.
    let out = cli_at(&c.member(3).url(), &["cluster", "upgrade", "finalize"]).await;
    assert!(out.status.success(), "{out:?}");
    for id in 1..=3 {
        wait_level(c.member(id).api(), TOP, Duration::from_secs(10)).await;
    }
    let v = promote_alice(api).await.ok().written();
    assert!(alice_allowed(c.member(2).api(), v).await);

    let again = api.req(Method::POST, "/v1/cluster/upgrade/finalize");
    let again = api.send(again).await;
    assert_problem(&again, 409, "already_final");
}

#[tokio::test(flavor = "multi_thread")]
async fn finalising_with_a_member_that_does_not_answer_is_refused() {
    let mut c = Cluster::start(3, &["--auto-finalize", "false"]).await;
    c.member_mut(3).sigkill();
    let api = c.member(1).api();
    let r = api
        .json(
            Method::POST,
            "/v1/cluster/upgrade/finalize",
            &json!({"level": 2}),
        )
        .await;
    assert_problem(&r, 409, "upgrade_incomplete");
    assert!(r.text.contains("node 3"), "{}", r.text);
    let status = api.get("/v1/cluster/upgrade").await.ok().json;
    assert_eq!(status["active_level"], 1, "{status}");
    assert_eq!(status["holding_back"][0]["id"], 3, "{status}");
    let refused = promote_alice(api).await;
    assert_problem(&refused, 409, "feature_not_active");
    assert!(refused.text.contains("node 3"), "{}", refused.text);
}
