//! Dynamic membership through the CLI and API while writes keep landing: add a learner, promote it,
//! remove an old voter (ids are never reused, a removed node cannot come back with its old data),
//! move leadership, drain. Plus the peer listener's refusal of callers without the cluster secret,
//! and fail-closed decisions on a node cut off from its quorum.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::cluster::{wait_for, Cluster};
use crate::harness::{assert_problem, cli_at, cli_json_at, Api};

fn request(user: &str) -> Value {
    json!({"subject": {"type": "User", "id": user}, "action": {"name": "view"},
           "resource": {"type": "Doc", "id": "d1"}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_promote_remove_and_transfer_while_writes_keep_landing() {
    let mut c = Cluster::start(3, &[]).await;
    let via = Api::new(&c.member(2).url());
    for i in 0..50 {
        via.put_policy(
            &format!("seed-{i}"),
            &format!("permit(principal == User::\"s{i}\", action, resource);"),
        )
        .await;
    }

    // A steady writer through node 2; each write may retry (bounded) across a leader change.
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let failed: Arc<Mutex<Vec<String>>> = Arc::default();
    // The slowest write, retries included: a write proposed on a leader that is then removed once
    // hung for the forwarding client's 30 s timeout while the writer waited behind it.
    let slowest: Arc<Mutex<(Duration, String)>> = Arc::default();
    let writer = {
        let (stop, acked, failed, api) = (stop.clone(), acked.clone(), failed.clone(), via.clone());
        let slowest = slowest.clone();
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let id = format!("live-{n}");
                n += 1;
                let mut last = String::new();
                let mut ok = false;
                let started = std::time::Instant::now();
                for attempt in 0..10u64 {
                    match api
                        .try_send(
                            api.req(Method::PUT, &format!("/v1/policies/{id}"))
                                .header("content-type", "text/plain")
                                .header("idempotency-key", format!("key-{id}"))
                                .body(format!(
                                    "permit(principal == User::\"{id}\", action, resource);"
                                )),
                        )
                        .await
                    {
                        Ok(r) if r.status == 200 => {
                            acked.lock().unwrap().push((id.clone(), r.written()));
                            ok = true;
                            break;
                        }
                        Ok(r) => last = format!("{} {}", r.status, r.text),
                        Err(e) => last = e,
                    }
                    tokio::time::sleep(Duration::from_millis(100 * (attempt + 1))).await;
                }
                if !ok {
                    failed.lock().unwrap().push(format!("{id}: {last}"));
                }
                let took = started.elapsed();
                {
                    let mut slowest = slowest.lock().unwrap();
                    if took > slowest.0 {
                        *slowest = (took, id.clone());
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    // Node 4 starts empty with --join and is added as a learner through a follower, by the CLI.
    let (api4, peer4) = {
        let m = c.spawn_joiner(4, &[]);
        (m.api_addr.clone(), m.peer_addr.clone())
    };
    let leader = c.leader(&[1, 2, 3], Duration::from_secs(10)).await;
    let follower = [1, 2, 3]
        .into_iter()
        .find(|i| *i != leader)
        .expect("follower");
    let out = cli_json_at(
        &c.member(follower).url(),
        &[
            "cluster",
            "add-learner",
            "4",
            "--api",
            &api4,
            "--peer",
            &peer4,
        ],
    )
    .await;
    assert!(out["version"].as_u64().is_some(), "{out}");
    c.member(4).wait_ready(Duration::from_secs(30)).await;
    // The learner serves decisions at the cluster's version.
    let v = via
        .put_policy(
            "for-learner",
            "permit(principal == User::\"learner\", action, resource);",
        )
        .await;
    let r = c
        .member(4)
        .api()
        .evaluate_at(&request("learner"), v)
        .await
        .ok();
    assert_eq!(r.json["decision"], json!(true), "{}", r.text);
    let view = c.view(1).await;
    assert_eq!(view["learners"], json!([4]), "{view}");

    // Promote by CLI, then remove node 1 (perhaps the leader).
    cli_json_at(&c.member(3).url(), &["cluster", "promote", "4"]).await;
    let view = c.view(3).await;
    assert_eq!(view["voters"], json!([1, 2, 3, 4]), "{view}");
    cli_json_at(&c.member(3).url(), &["cluster", "remove", "1"]).await;
    let new_leader = c
        .leader_except(&[2, 3, 4], Some(1), Duration::from_secs(15))
        .await;
    let view = c.view(new_leader).await;
    assert_eq!(view["voters"], json!([2, 3, 4]), "{view}");
    assert_eq!(view["removed"], json!([1]), "{view}");

    // Hand leadership to node 4 through the CLI.
    if new_leader != 4 {
        cli_json_at(&c.member(2).url(), &["cluster", "transfer-leader", "4"]).await;
        let l = c.leader(&[2, 3, 4], Duration::from_secs(10)).await;
        assert_eq!(l, 4);
    }

    // Writes kept landing throughout. The deadline is generous because the suite runs its clusters
    // side by side on two cores (10 s was once too short there); writes that stop fail it all the same.
    let before = acked.lock().unwrap().len();
    wait_for(Duration::from_secs(30), || async {
        let n = acked.lock().unwrap().len();
        if n >= before + 20 {
            Ok(())
        } else {
            let failed = failed.lock().unwrap();
            Err(format!(
                "{n} acknowledged ({before} before the changes); {} writes failed, the last: {:?}",
                failed.len(),
                failed.last()
            ))
        }
    })
    .await
    .expect("writes after the membership changes");
    stop.store(true, Ordering::Relaxed);
    let _ = writer.await;
    let failed = failed.lock().unwrap().clone();
    assert!(failed.is_empty(), "writes failed: {failed:?}");
    // Leader changes cost an election or a retry (well under a second here, a few seconds on a
    // loaded CI machine), never a timeout.
    let (took, id) = slowest.lock().unwrap().clone();
    assert!(
        took < Duration::from_secs(10),
        "write {id} took {took:?} to be acknowledged through the membership changes"
    );
    let acked = acked.lock().unwrap().clone();
    let newest = acked.iter().map(|(_, v)| *v).max().unwrap_or(0);
    c.member(4)
        .api()
        .evaluate_at(&request("x"), newest)
        .await
        .ok();
    let list = c.member(4).api().get("/v1/policies").await.ok().json;
    let ids: std::collections::BTreeSet<&str> = list["policies"]
        .as_array()
        .expect("policies")
        .iter()
        .filter_map(|p| p["id"].as_str())
        .collect();
    let missing: Vec<&String> = acked
        .iter()
        .map(|(id, _)| id)
        .filter(|id| !ids.contains(id.as_str()))
        .collect();
    assert!(missing.is_empty(), "missing on the new member: {missing:?}");

    // The removed node, restarted with its old data, does not rejoin and says why.
    c.member_mut(1).restart();
    let why = wait_for(Duration::from_secs(20), || async {
        match c.member(1).api().try_get("/readyz").await {
            Ok(r) if r.status == 503 && r.text.contains("removed") => Ok(r.text),
            Ok(r) => Err(format!("{} {}", r.status, r.text)),
            Err(e) => Err(e),
        }
    })
    .await;
    assert!(why.is_ok(), "{why:?}");
    // Its id is never accepted again.
    let m1 = c.member(1);
    let resp = c
        .member(2)
        .api()
        .json(
            Method::POST,
            "/v1/cluster/learners",
            &json!({"id": 1, "api_addr": m1.api_addr, "peer_addr": m1.peer_addr}),
        )
        .await;
    assert_problem(&resp, 400, "invalid_membership");
    assert!(resp.text.contains("never reused"), "{}", resp.text);
    // The cluster is unaffected: a write still commits everywhere.
    let v = c
        .member(3)
        .api()
        .put_policy(
            "after",
            "permit(principal == User::\"after\", action, resource);",
        )
        .await;
    for id in [2, 3, 4] {
        let r = c
            .member(id)
            .api()
            .evaluate_at(&request("after"), v)
            .await
            .ok();
        assert_eq!(r.json["decision"], json!(true), "node {id}: {}", r.text);
    }

    // Drain the leader: it hands leadership over and reports not ready.
    let leader = c.leader(&[2, 3, 4], Duration::from_secs(10)).await;
    let out = cli_json_at(&c.member(leader).url(), &["cluster", "drain"]).await;
    let to = out["transferred_to"]
        .as_u64()
        .expect("leadership handed over");
    assert_ne!(to, leader);
    let r = c.member(leader).api().get("/readyz").await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert!(r.text.contains("draining"), "{}", r.text);
    // It still answers decisions until it is stopped.
    let r = c.member(leader).api().evaluate(&request("after")).await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_mistakes_get_clear_errors() {
    let c = Cluster::start(3, &[]).await;
    let api = c.member(1).api();
    let resp = api
        .json(
            Method::PUT,
            "/v1/cluster/voters",
            &json!({"ids": [1, 2, 9]}),
        )
        .await;
    assert_problem(&resp, 400, "invalid_membership");
    assert!(resp.text.contains("learner first"), "{}", resp.text);
    let resp = api
        .json(Method::PUT, "/v1/cluster/voters", &json!({"ids": []}))
        .await;
    assert_problem(&resp, 400, "invalid_membership");
    let resp = api
        .json(
            Method::POST,
            "/v1/cluster/learners",
            &json!({"id": 2, "api_addr": "x:1", "peer_addr": "x:2"}),
        )
        .await;
    assert_problem(&resp, 400, "invalid_membership");
    let resp = api
        .json(Method::POST, "/v1/cluster/learners", &json!({"id": "four"}))
        .await;
    assert_problem(&resp, 400, "invalid_request");
    let resp = api.delete("/v1/cluster/members/42").await;
    assert_problem(&resp, 400, "invalid_membership");
    let resp = api
        .json(
            Method::POST,
            "/v1/cluster/transfer-leader",
            &json!({"to": 42}),
        )
        .await;
    assert_problem(&resp, 400, "invalid_membership");
    // The CLI says the same and exits 1.
    let out = cli_at(&c.member(2).url(), &["cluster", "remove", "42"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid_membership"));
    // Nothing changed.
    let view = c.view(3).await;
    assert_eq!(view["voters"], json!([1, 2, 3]), "{view}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_listener_refuses_callers_without_the_secret_and_counts_them() {
    let c = Cluster::start(3, &[]).await;
    let m = c.member(2);
    let peer = Api::new(&format!("http://{}", m.peer_addr));
    for secret in [None, Some("wrong")] {
        let mut rb = peer.req(Method::POST, "/raft/vote").body(vec![1u8, 2, 3]);
        if let Some(s) = secret {
            rb = rb.header("verdict-cluster-secret", s);
        }
        let r = peer.send(rb).await;
        assert_eq!(r.status, 401, "{}", r.text);
    }
    let metrics = m.api().get("/metrics").await.text;
    assert!(
        metrics.contains("verdict_peer_rpcs_refused_total 2"),
        "{metrics}"
    );
    // The cluster is unharmed.
    c.member(1)
        .api()
        .put_policy("p", "permit(principal, action, resource);")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fail_closed_node_cut_off_from_its_quorum_refuses_decisions() {
    let mut c = Cluster::start(3, &["--fail-closed"]).await;
    let leader = c.leader(&[1, 2, 3], Duration::from_secs(10)).await;
    let v = c
        .member(leader)
        .api()
        .put_policy("p", "permit(principal, action, resource);")
        .await;
    let r = c
        .member(leader)
        .api()
        .evaluate_at(&request("a"), v)
        .await
        .ok();
    assert_eq!(r.json["decision"], json!(true));
    let others: Vec<u64> = [1, 2, 3].into_iter().filter(|i| *i != leader).collect();
    for id in &others {
        c.member_mut(*id).sigkill();
    }
    // Within the silence limit (3 s) plus the monitor's tick, decisions are refused as stale.
    let refused = wait_for(Duration::from_secs(10), || async {
        let r = c.member(leader).api().evaluate(&request("a")).await;
        if r.status == 503 && r.json["code"] == "stale" {
            Ok(r.text)
        } else {
            Err(format!("{} {}", r.status, r.text))
        }
    })
    .await;
    assert!(refused.is_ok(), "{refused:?}");
    let ready = c.member(leader).api().get("/readyz").await;
    assert_eq!(ready.status, 503, "{}", ready.text);
    // A follower comes back: the quorum is restored and decisions are answered again.
    c.member_mut(others[0]).restart();
    let back = wait_for(Duration::from_secs(30), || async {
        let r = c
            .member(others[0])
            .api()
            .try_send(
                c.member(others[0])
                    .api()
                    .req(Method::POST, "/access/v1/evaluation")
                    .json(&request("a")),
            )
            .await?;
        if r.status == 200 {
            Ok(())
        } else {
            Err(format!("{} {}", r.status, r.text))
        }
    })
    .await;
    assert!(back.is_ok(), "{back:?}");
    let metrics = c.member(leader).api().get("/metrics").await.text;
    assert!(
        !metrics.contains("verdict_decisions_refused_stale_total 0"),
        "{metrics}"
    );
}
