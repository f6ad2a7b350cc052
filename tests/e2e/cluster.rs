//! Three-node clusters on loopback: writes through any node, identical answers at one version,
//! a leader killed under write load, a frozen follower catching up, read-your-writes across nodes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::cluster::{wait_for, Cluster};
use crate::harness::{Api, Example};

fn request(user: &str) -> Value {
    json!({"subject": {"type": "User", "id": user}, "action": {"name": "view"},
           "resource": {"type": "Doc", "id": "d1"}})
}

/// Puts a policy through `api`, retrying (bounded) while the cluster has no leader; the version.
async fn put_with_retry(api: &Api, id: &str, cedar: &str) -> Result<u64, String> {
    let mut last = String::new();
    for attempt in 0..20 {
        match api
            .try_send(
                api.req(Method::PUT, &format!("/v1/policies/{id}"))
                    .header("content-type", "text/plain")
                    .header("idempotency-key", format!("k-{id}"))
                    .body(cedar.to_string()),
            )
            .await
        {
            Ok(r) if r.status == 200 => return Ok(r.written()),
            Ok(r) => last = format!("{} {}", r.status, r.text),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(100 * (attempt + 1))).await;
    }
    Err(last)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_any_node_is_visible_on_every_node() {
    let c = Cluster::start(3, &[]).await;
    let leader = c.leader(&[1, 2, 3], Duration::from_secs(10)).await;
    for v in [c.view(1).await, c.view(2).await, c.view(3).await] {
        assert_eq!(v["members"].as_array().map(Vec::len), Some(3), "{v}");
        assert_eq!(v["voters"], json!([1, 2, 3]), "{v}");
    }
    for (i, through) in c.members.iter().enumerate() {
        let version = through
            .api()
            .put_policy(
                &format!("via-{i}"),
                &format!("permit(principal == User::\"u{i}\", action, resource);"),
            )
            .await;
        for m in &c.members {
            let resp = m
                .api()
                .evaluate_at(&request(&format!("u{i}")), version)
                .await
                .ok();
            assert_eq!(
                resp.json["decision"],
                json!(true),
                "write via node {} (leader {leader}), read on node {}: {}",
                i + 1,
                m.id,
                resp.text
            );
            assert!(resp.version_header() >= version);
        }
    }
    // Status shows every node's applied version, and they converge on one.
    let converged = wait_for(Duration::from_secs(5), || async {
        let v = c.view(2).await;
        let applied: Vec<Option<u64>> = v["members"]
            .as_array()
            .map(|a| a.iter().map(|m| m["applied_version"].as_u64()).collect())
            .unwrap_or_default();
        match applied.first() {
            Some(Some(x)) if applied.len() == 3 && applied.iter().all(|a| *a == Some(*x)) => Ok(()),
            _ => Err(format!("{applied:?}")),
        }
    })
    .await;
    assert!(converged.is_ok(), "applied versions: {converged:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_gives_identical_answers_for_the_examples_at_one_version() {
    for name in ["surfconext", "zero-trust", "project-rbac"] {
        // A fresh cluster per example: each comes with its own schema.
        let c = Cluster::start(3, &[]).await;
        let ex = Example::read(name);
        let via = c.member(2).api();
        let read = |f: &str| std::fs::read_to_string(ex.dir.join(f)).expect("example file");
        let schema = read("schema.cedarschema");
        via.put_schema(&schema).await;
        via.replace_policies(&read("policies.cedar")).await;
        let entities: Value = serde_json::from_str(&read("entities.json")).expect("entities");
        let version = via.replace_entities(&entities).await;
        for sample in &ex.requests {
            let mut answers = Vec::new();
            for m in &c.members {
                let r = m.api().evaluate_at(&sample["request"], version).await.ok();
                answers.push((r.json.clone(), r.version_header()));
            }
            // Same version everywhere (no write in between), so the same answer.
            assert!(
                answers.windows(2).all(|w| w[0] == w[1]),
                "{name} {}: {answers:?}",
                sample["name"]
            );
            assert_eq!(
                answers[0].0["decision"], sample["expect"],
                "{name} {}",
                sample["name"]
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_under_write_load_loses_no_acknowledged_write() {
    let mut c = Cluster::start(3, &[]).await;
    let leader = c.leader(&[1, 2, 3], Duration::from_secs(10)).await;
    let survivors: Vec<u64> = [1, 2, 3].into_iter().filter(|i| *i != leader).collect();
    let apis: Vec<Api> = survivors
        .iter()
        .map(|i| Api::new(&c.member(*i).url()))
        .collect();
    let leader_api = Api::new(&c.member(leader).url());

    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let decision_failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let decisions = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    // Writers: through the leader and both followers, until stopped. A write that fails (its
    // node died, or no leader for a moment) is simply not acknowledged.
    for (w, api) in [leader_api.clone(), apis[0].clone(), apis[1].clone()]
        .into_iter()
        .enumerate()
    {
        let (stop, acked) = (stop.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let id = format!("w{w}-{n}");
                n += 1;
                let cedar = format!("permit(principal == User::\"{id}\", action, resource);");
                if let Ok(r) = api
                    .try_send(
                        api.req(Method::PUT, &format!("/v1/policies/{id}"))
                            .header("content-type", "text/plain")
                            .body(cedar),
                    )
                    .await
                {
                    if r.status == 200 {
                        acked.lock().unwrap().push((id, r.written()));
                    }
                } else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }
    // Readers on the survivors: every decision must succeed throughout.
    for api in apis.clone() {
        let (stop, failures, decisions) =
            (stop.clone(), decision_failures.clone(), decisions.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match api
                    .try_send(
                        api.req(Method::POST, "/access/v1/evaluation")
                            .json(&request("x")),
                    )
                    .await
                {
                    Ok(r) if r.status == 200 => {
                        decisions.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => failures
                        .lock()
                        .unwrap()
                        .push(format!("{} {}", r.status, r.text)),
                    Err(e) => failures.lock().unwrap().push(e),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    let acked_before = wait_for(Duration::from_secs(20), || async {
        let n = acked.lock().unwrap().len();
        if n >= 100 {
            Ok(n)
        } else {
            Err(format!("{n} writes acknowledged"))
        }
    })
    .await
    .expect("writes before the kill");
    c.member_mut(leader).sigkill();
    let new_leader = c
        .leader_except(&survivors, Some(leader), Duration::from_secs(15))
        .await;
    assert!(survivors.contains(&new_leader));
    // Keep writing under the new leader for a while.
    wait_for(Duration::from_secs(20), || async {
        let n = acked.lock().unwrap().len();
        if n >= acked_before + 100 {
            Ok(())
        } else {
            Err(format!("{n} acknowledged"))
        }
    })
    .await
    .expect("writes after the kill");
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let failures = decision_failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "decisions failed on survivors: {failures:?}"
    );
    assert!(decisions.load(Ordering::Relaxed) > 50);

    // Every acknowledged write is on both survivors.
    let acked = acked.lock().unwrap().clone();
    let newest = acked.iter().map(|(_, v)| *v).max().unwrap_or(0);
    for api in &apis {
        // Wait until this survivor has applied the newest acknowledged version, then list.
        api.evaluate_at(&request("x"), newest).await.ok();
        let list = api.get("/v1/policies").await.ok().json;
        let ids: std::collections::BTreeSet<String> = list["policies"]
            .as_array()
            .expect("policies")
            .iter()
            .filter_map(|p| p["id"].as_str().map(String::from))
            .collect();
        let missing: Vec<&String> = acked
            .iter()
            .map(|(id, _)| id)
            .filter(|id| !ids.contains(*id))
            .collect();
        assert!(
            missing.is_empty(),
            "{} acknowledged writes missing: {:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        );
    }
    // The old leader comes back as a follower and catches up.
    c.member_mut(leader).restart();
    c.member(leader).wait_ready(Duration::from_secs(30)).await;
    let r = c
        .member(leader)
        .api()
        .evaluate_at(&request("x"), newest)
        .await
        .ok();
    assert!(r.version_header() >= newest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_follower_catches_up_by_snapshot_after_5000_writes() {
    // Snapshots every 1,000 entries and only 100 kept behind: the follower's gap is purged from
    // the leader's log, so it must be sent a snapshot.
    let mut c = Cluster::start(
        3,
        &[
            "--snapshot-every",
            "1000",
            "--keep-log-behind-snapshot",
            "100",
        ],
    )
    .await;
    let leader = c.leader(&[1, 2, 3], Duration::from_secs(10)).await;
    let frozen = [1, 2, 3]
        .into_iter()
        .find(|i| *i != leader)
        .expect("a follower");
    c.member_mut(frozen).sigstop();
    let api = Api::new(&c.member(leader).url());
    // 5,000 writes from 16 concurrent writers.
    let mut tasks = Vec::new();
    for w in 0..16 {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            let mut newest = 0;
            for n in (w..5000).step_by(16) {
                let v = put_with_retry(
                    &api,
                    &format!("p{n}"),
                    &format!("permit(principal == User::\"u{n}\", action, resource);"),
                )
                .await
                .expect("write");
                newest = newest.max(v);
            }
            newest
        }));
    }
    let mut newest = 0;
    for t in tasks {
        newest = newest.max(t.await.expect("writer"));
    }
    c.member_mut(frozen).sigcont();
    let caught_up = wait_for(Duration::from_secs(60), || async {
        match c.member(frozen).version().await {
            Some(v) if v >= newest => Ok(v),
            other => Err(format!("frozen node at {other:?}, want {newest}")),
        }
    })
    .await;
    assert!(
        caught_up.is_ok(),
        "{caught_up:?}\n{}",
        c.member(frozen).log_tail(30)
    );
    let list = c.member(frozen).api().get("/v1/policies").await.ok().json;
    assert_eq!(list["policies"].as_array().map(Vec::len), Some(5000));
    let r = c
        .member(frozen)
        .api()
        .evaluate_at(&request("u4999"), newest)
        .await
        .ok();
    assert_eq!(r.json["decision"], json!(true), "{}", r.text);
    c.member(frozen).wait_ready(Duration::from_secs(10)).await;
    assert!(
        c.member(frozen)
            .log_contains("snapshot installed from the leader"),
        "the follower should have caught up by snapshot\n{}",
        c.member(frozen).log_tail(30)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_version_after_a_write_on_another_node_never_answers_older() {
    let c = Cluster::start(3, &[]).await;
    for i in 0..60usize {
        let writer = &c.members[i % 3];
        let reader = &c.members[(i + 1) % 3];
        let effect = if i % 2 == 0 { "permit" } else { "forbid" };
        // One policy flipped between permit and forbid: an older snapshot gives the other answer.
        let v = writer
            .api()
            .put_policy(
                "flip",
                &format!("{effect}(principal == User::\"alice\", action, resource);"),
            )
            .await;
        let r = reader.api().evaluate_at(&request("alice"), v).await.ok();
        assert!(
            r.version_header() >= v,
            "asked for {v}, answered at {}",
            r.version_header()
        );
        assert_eq!(
            r.json["decision"],
            json!(effect == "permit"),
            "round {i}: {}",
            r.text
        );
    }
}
