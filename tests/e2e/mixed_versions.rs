//! A cluster mixing the real previous release (commit in tests/upgrade/previous-release, built by
//! scripts/previous-release.sh) with this one: writes and decisions work on every member, the
//! format level stays 1 while an old member remains, features of level 2 are refused naming the
//! old members; upgrading them in place (same id, same data directory, new binary) raises the
//! level by itself; and the previous release refuses, with a clear message, data written after
//! finalisation.
//!
//! The previous release's binary comes from `VERDICT_PREVIOUS_BIN`. Without it the test is
//! skipped loudly, or fails under CI (`CI` set), where `.ci/run` always provides it.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use crate::harness::assert_problem;
use crate::harness::cli_at;
use crate::harness::cluster::wait_for;
use crate::harness::cluster::Cluster;
use crate::levels::alice_allowed;
use crate::levels::promote_alice;
use crate::levels::seed;
use crate::levels::wait_level;

/// The previous release's `verdict`, or `None` (after saying why) when the test cannot run.
fn previous_release() -> Option<PathBuf> {
    match std::env::var_os("VERDICT_PREVIOUS_BIN") {
        Some(path) => {
            let path = PathBuf::from(path);
            assert!(
                path.is_file(),
                "VERDICT_PREVIOUS_BIN={} is not a file; build it with scripts/previous-release.sh",
                path.display()
            );
            Some(path)
        }
        None if std::env::var_os("CI").is_some() => panic!(
            "VERDICT_PREVIOUS_BIN is not set under CI: export \
             VERDICT_PREVIOUS_BIN=$(scripts/previous-release.sh) before the tests"
        ),
        None => {
            eprintln!(
                "\n!!! SKIPPED mixed_versions: VERDICT_PREVIOUS_BIN is not set. Run \
                 `export VERDICT_PREVIOUS_BIN=$(scripts/previous-release.sh)` to test against \
                 the previous release.\n"
            );
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn old_and_new_members_work_together_until_the_old_ones_are_upgraded() {
    let Some(old) = previous_release() else {
        return;
    };
    // Nodes 1 and 2 run the previous release (which knows no `--auto-finalize`), node 3 this one,
    // snapshotting often and keeping no log behind, so a lagging member gets a snapshot from it.
    let mut c = Cluster::start_each(3, |id| {
        if id <= 2 {
            (Some(old.clone()), Vec::new())
        } else {
            let flags = ["--snapshot-every", "20", "--keep-log-behind-snapshot", "0"];
            (None, flags.iter().map(|f| f.to_string()).collect())
        }
    })
    .await;
    let new = c.member(3).api().clone();

    // Writes through every member, decisions on every member.
    seed(c.member(1).api()).await;
    let mut version = 0;
    for id in 1..=3 {
        version = c
            .member(id)
            .api()
            .upsert_entities(&json!([
                {"uid": {"type": "User", "id": format!("u{id}")}, "attrs": {}, "parents": [{"type": "Group", "id": "admins"}]},
            ]))
            .await;
    }
    for id in 1..=3 {
        let api = c.member(id).api();
        let r = api
            .evaluate_at(
                &json!({"subject": {"type": "User", "id": "u1"}, "action": {"name": "view"},
                        "resource": {"type": "Doc", "id": "d"}}),
                version,
            )
            .await
            .ok();
        assert_eq!(r.json["decision"], true, "node {id}: {}", r.text);
        assert!(!alice_allowed(api, version).await, "node {id}");
    }

    // The new member leads; an old member that fell behind catches up from its snapshot, which
    // at level 1 is in the format the previous release reads.
    let r = new
        .json(
            reqwest::Method::POST,
            "/v1/cluster/transfer-leader",
            &json!({"to": 3}),
        )
        .await;
    let led = wait_for(Duration::from_secs(20), || async {
        let view = new.try_get("/v1/cluster").await?;
        if view.json["leader"] == 3 {
            Ok(())
        } else {
            Err(format!("leader {}", view.json["leader"]))
        }
    })
    .await;
    assert!(
        led.is_ok(),
        "{led:?}; transfer-leader answered {} {}",
        r.status,
        r.text
    );
    c.member_mut(2).sigstop();
    let mut newest = 0;
    for n in 0..60 {
        newest = new
            .upsert_entities(&json!([{"uid": {"type": "User", "id": format!("w{n}")}, "attrs": {}, "parents": []}]))
            .await;
    }
    c.member_mut(2).sigcont();
    let caught_up = wait_for(Duration::from_secs(30), || async {
        match c.member(2).version().await {
            Some(v) if v >= newest => Ok(v),
            other => Err(format!("old node 2 at {other:?}, want {newest}")),
        }
    })
    .await;
    assert!(
        caught_up.is_ok(),
        "{caught_up:?}\n{}",
        c.member(2).log_tail(30)
    );
    let w59 = c.member(2).api().get("/v1/entities/User/w59").await;
    assert_eq!(w59.status, 200, "{}", w59.text);

    // The level stays 1 (give auto_finalize on node 3 time to misbehave), and the new member
    // names the old ones.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = new.get("/v1/cluster/upgrade").await.ok().json;
    assert_eq!(status["active_level"], 1, "{status}");
    assert_eq!(status["cluster_supports"], 1, "{status}");
    let holding: Vec<u64> = status["holding_back"]
        .as_array()
        .expect("holding_back")
        .iter()
        .filter_map(|h| h["id"].as_u64())
        .collect();
    assert_eq!(holding, [1, 2], "{status}");
    let view = c.view(3).await;
    for m in view["members"].as_array().expect("members") {
        let id = m["id"].as_u64().expect("id");
        if id <= 2 {
            assert_eq!(m["supported_level"], 1, "{m}");
            assert!(m["release"].is_null(), "{m}");
        } else {
            assert_eq!(m["supported_level"], 2, "{m}");
        }
    }
    let out = cli_at(&c.member(3).url(), &["cluster", "upgrade", "status"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("previous (no levels)") && text.contains("held back"),
        "{out:?}"
    );
    let refused = promote_alice(&new).await;
    assert_problem(&refused, 409, "feature_not_active");
    for id in [1, 2] {
        assert!(
            refused
                .text
                .contains(&format!("node {id} runs the release before")),
            "{}",
            refused.text
        );
    }
    let r = new
        .json(
            reqwest::Method::POST,
            "/v1/cluster/upgrade/finalize",
            &json!({}),
        )
        .await;
    assert_problem(&r, 409, "upgrade_incomplete");

    // Upgrade the old members in place, one at a time, as an operator would.
    for id in [1, 2] {
        let m = c.member_mut(id);
        m.sigterm();
        m.wait_exit(Duration::from_secs(30)).await;
        m.set_binary(None, &[]);
        m.restart();
        m.wait_ready(Duration::from_secs(30)).await;
    }
    for id in 1..=3 {
        wait_level(c.member(id).api(), 2, Duration::from_secs(20)).await;
    }
    let v = promote_alice(c.member(1).api()).await.ok().written();
    for id in 1..=3 {
        assert!(alice_allowed(c.member(id).api(), v).await, "node {id}");
    }

    // Rolling node 2 back to the previous release after finalisation: it refuses, saying why,
    // instead of wedging silently.
    let m = c.member_mut(2);
    m.sigterm();
    m.wait_exit(Duration::from_secs(30)).await;
    m.set_binary(Some(old.clone()), &[]);
    m.restart();
    let said = wait_for(Duration::from_secs(30), || async {
        let m = c.member(2);
        if m.log_contains("written by a newer release") {
            return Ok(());
        }
        match m.api().try_get("/readyz").await {
            Ok(r) if r.status == 200 => Err("ready on data of a newer level".to_string()),
            Ok(r) if r.text.contains("newer release") => Ok(()),
            Ok(r) => Err(format!("{} {}", r.status, r.text)),
            Err(e) => Err(e),
        }
    })
    .await;
    assert!(said.is_ok(), "{said:?}\n{}", c.member(2).log_tail(30));
    // The rest of the cluster carries on.
    let v = c
        .member(1)
        .api()
        .upsert_entities(
            &json!([{"uid": {"type": "User", "id": "late"}, "attrs": {}, "parents": []}]),
        )
        .await;
    assert!(alice_allowed(c.member(3).api(), v).await);
}
