//! Drain as an operator expects it (issue 14): a drained node turns not-ready at once, hands
//! leadership only to a voter that is ready and not draining (or says why it cannot, without
//! draining), keeps answering what is still sent to it, and can be undrained; a draining node
//! that is elected hands leadership away again.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::cluster::{wait_for, Cluster};
use crate::harness::{assert_problem, cli_json_at};

fn request(user: &str) -> Value {
    json!({"subject": {"type": "User", "id": user}, "action": {"name": "view"},
           "resource": {"type": "Doc", "id": "d1"}})
}

/// Waits until every member in `among` names `leader`.
async fn wait_leader(c: &Cluster, among: &[u64], leader: u64) {
    let agreed = wait_for(Duration::from_secs(20), || async {
        match c.leader(among, Duration::from_secs(10)).await {
            now if now == leader => Ok(()),
            now => Err(format!("node {now} leads")),
        }
    })
    .await;
    agreed.unwrap_or_else(|e| panic!("node {leader} did not become the leader: {e}"));
}

/// Hands leadership to `to` (through the current leader) and waits until `among` agree.
async fn make_leader(c: &Cluster, among: &[u64], to: u64) {
    let leader = c.leader(among, Duration::from_secs(15)).await;
    if leader != to {
        transfer(c, leader, to).await;
    }
    wait_leader(c, among, to).await;
}

/// Asks `via` (the leader) to hand leadership to `to`.
async fn transfer(c: &Cluster, via: u64, to: u64) {
    let r = c
        .member(via)
        .api()
        .json(
            Method::POST,
            "/v1/cluster/transfer-leader",
            &json!({"to": to}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

async fn post(c: &Cluster, on: u64, path: &str) -> crate::harness::Resp {
    let api = c.member(on).api();
    api.send(api.req(Method::POST, path)).await
}

/// The bounce of issue 14: with node 1 drained, draining the next leader must not hand
/// leadership back to node 1. The old rule (most caught-up other voter, lowest id among equals)
/// picked node 1 here: both others have applied the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_hands_leadership_only_to_ready_voters_and_says_why_it_cannot() {
    let c = Cluster::start(3, &[]).await;
    let all = [1, 2, 3];
    make_leader(&c, &all, 1).await;
    c.member(1)
        .api()
        .put_policy("p", "permit(principal, action, resource);")
        .await;

    // Drain the leader at its own address: not ready at once, leadership to 2 or 3.
    let r = post(&c, 1, "/v1/node/drain").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let x = r.json["transferred_to"].as_u64().expect("handed over");
    assert!(x == 2 || x == 3, "{}", r.text);
    let ready = c.member(1).api().get("/readyz").await;
    assert_eq!(ready.status, 503, "{}", ready.text);
    assert_eq!(ready.json["reason"], "draining", "{}", ready.text);
    wait_leader(&c, &all, x).await;

    // Drain the new leader: the only voter ready and not draining is the third one.
    let y = 5 - x;
    let r = post(&c, x, "/v1/node/drain").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.json["transferred_to"].as_u64(),
        Some(y),
        "leadership went back to a draining node: {}",
        r.text
    );
    wait_leader(&c, &all, y).await;

    // The last one cannot be drained: nobody could take over. Nothing changed.
    let r = post(&c, y, "/v1/node/drain").await;
    assert_problem(&r, 409, "no_ready_voter");
    let detail = r.json["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("node 1 is not ready (draining)") && detail.contains("was not drained"),
        "{detail}"
    );
    let ready = c.member(y).api().get("/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.text);
    assert_eq!(c.leader(&all, Duration::from_secs(10)).await, y);

    // Drained nodes keep answering what still reaches them.
    for id in [1, x] {
        let r = c.member(id).api().evaluate(&request("u")).await;
        assert_eq!(r.status, 200, "node {id}: {}", r.text);
        assert_eq!(r.json["decision"], json!(true), "node {id}: {}", r.text);
    }

    // Undrain node 1 through node y, then drain y by id through node 1 with the CLI.
    let r = c
        .member(y)
        .api()
        .delete("/v1/cluster/members/1/drain")
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["draining"], json!(false), "{}", r.text);
    c.member(1).wait_ready(Duration::from_secs(15)).await;
    let out = cli_json_at(&c.member(1).url(), &["cluster", "drain", &y.to_string()]).await;
    assert_eq!(out["node_id"].as_u64(), Some(y), "{out}");
    assert_eq!(out["transferred_to"].as_u64(), Some(1), "{out}");
    let out = cli_json_at(&c.member(1).url(), &["cluster", "undrain", &x.to_string()]).await;
    assert_eq!(out["node_id"].as_u64(), Some(x), "{out}");
    c.member(x).wait_ready(Duration::from_secs(15)).await;

    // Bad input to the by-id routes.
    assert_problem(
        &post(&c, 1, "/v1/cluster/members/9/drain").await,
        404,
        "unknown_node",
    );
    assert_problem(
        &post(&c, 1, "/v1/cluster/members/abc/drain").await,
        400,
        "invalid_request",
    );
    assert_problem(
        &c.member(1)
            .api()
            .delete("/v1/cluster/members/9/drain")
            .await,
        404,
        "unknown_node",
    );
}

/// A draining node can still come to lead (here: leadership is handed to it on purpose, as an
/// election could); it hands leadership on to a ready voter within a few seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_that_comes_to_lead_hands_leadership_away() {
    let c = Cluster::start(3, &[]).await;
    let all = [1, 2, 3];
    let leader = c.leader(&all, Duration::from_secs(15)).await;
    let drained = if leader == 3 { 2 } else { 3 };
    let r = post(&c, drained, "/v1/node/drain").await;
    assert_eq!(r.status, 200, "{}", r.text);
    transfer(&c, leader, drained).await;
    let away = wait_for(Duration::from_secs(20), || async {
        match c.leader(&all, Duration::from_secs(5)).await {
            l if l == drained => Err(format!("node {drained} (draining) still leads")),
            l => Ok(l),
        }
    })
    .await;
    away.unwrap_or_else(|e| panic!("{e}\n{}", c.member(drained).log_tail(30)));
}
