//! `GET /v1/watch`: one event per applied version naming what changed, on every node, resumable
//! from a version, and a `resync` event when the asked version is no longer listed.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::cluster::Cluster;

/// Reads server-sent events from `resp` until `n` events arrived (or 20 s passed):
/// `(event name, id, data)` each.
async fn read_events(mut resp: reqwest::Response, n: usize) -> Vec<(String, u64, Value)> {
    let mut buf = String::new();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while out.len() < n {
        let chunk = tokio::time::timeout_at(deadline, resp.chunk())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} events within 20 s: {out:?}", out.len()))
            .expect("stream")
            .unwrap_or_else(|| panic!("stream ended after {} events", out.len()));
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let (mut name, mut id, mut data) = (String::new(), 0, String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    name = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().parse().expect("numeric id");
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            if !data.is_empty() {
                out.push((name, id, serde_json::from_str(&data).expect("JSON data")));
            }
        }
    }
    out
}

async fn open(c: &Cluster, node: u64, from: Option<u64>) -> reqwest::Response {
    let api = c.member(node).api();
    let path = match from {
        Some(v) => format!("/v1/watch?from={v}"),
        None => "/v1/watch".to_string(),
    };
    let resp = api
        .req(Method::GET, &path)
        .send()
        .await
        .expect("watch answers");
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    resp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_streams_what_changed_at_each_version() {
    let c = Cluster::start(3, &[]).await;
    let start = c
        .member(1)
        .api()
        .put_policy("seed", "permit(principal, action, resource);")
        .await;
    // Let node 3 apply the seed, then watch it from "now".
    c.member(3).api().evaluate_at(&json!({"subject": {"type": "U", "id": "a"}, "action": {"name": "v"}, "resource": {"type": "R", "id": "r"}}), start).await.ok();
    let stream = open(&c, 3, Some(start)).await;
    let v1 = c
        .member(1)
        .api()
        .put_policy(
            "p1",
            "permit(principal == User::\"alice\", action, resource);",
        )
        .await;
    let v2 = c
        .member(2)
        .api()
        .upsert_entities(
            &json!([{"uid": {"type": "User", "id": "alice"}, "attrs": {}, "parents": []}]),
        )
        .await;
    let v3 = c
        .member(3)
        .api()
        .delete("/v1/policies/p1")
        .await
        .ok()
        .written();
    let events = read_events(stream, 3).await;
    let got: Vec<(String, u64, String)> = events
        .iter()
        .map(|(name, id, d)| {
            (
                name.clone(),
                *id,
                d["kind"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("change".into(), v1, "put_policy".into()),
            ("change".into(), v2, "upsert_entities".into()),
            ("change".into(), v3, "delete_policy".into()),
        ]
    );
    assert_eq!(events[0].2["policies"], json!(["p1"]));
    assert_eq!(events[1].2["entities"], json!(["User::\"alice\""]));
    assert_eq!(events[0].2["version"], json!(v1));
    assert_eq!(events[0].2["changed"], json!(true));

    // Resuming from a version replays the same events, on another node.
    let again = read_events(open(&c, 2, Some(v1)).await, 2).await;
    assert_eq!(again.iter().map(|e| e.1).collect::<Vec<_>>(), vec![v2, v3]);
    // `Last-Event-ID` resumes likewise (what a browser's EventSource sends on reconnect).
    let resp = c
        .member(1)
        .api()
        .req(Method::GET, "/v1/watch")
        .header("last-event-id", v2.to_string())
        .send()
        .await
        .expect("watch");
    let resumed = read_events(resp, 1).await;
    assert_eq!(resumed[0].1, v3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_older_than_the_window_gets_a_resync_event() {
    // A one-member cluster that snapshots every 5 entries: after a restart, the versions before
    // its snapshot are not listed any more.
    let mut c = Cluster::start(
        1,
        &["--snapshot-every", "5", "--keep-log-behind-snapshot", "0"],
    )
    .await;
    let mut last = 0;
    for i in 0..20 {
        last = c
            .member(1)
            .api()
            .put_policy(&format!("p{i}"), "permit(principal, action, resource);")
            .await;
    }
    c.member_mut(1).restart();
    c.member(1).wait_ready(Duration::from_secs(30)).await;
    // Read-your-writes: the restarted node has re-applied every acknowledged write.
    c.member(1)
        .api()
        .evaluate_at(
            &json!({"subject": {"type": "U", "id": "a"}, "action": {"name": "v"},
                    "resource": {"type": "R", "id": "r"}}),
            last,
        )
        .await
        .ok();
    let events = read_events(open(&c, 1, Some(1)).await, 1).await;
    let (name, id, data) = &events[0];
    assert_eq!(name, "resync", "{events:?}");
    assert!(*id >= last, "{events:?}");
    assert!(
        data["reason"].as_str().unwrap_or("").contains("reload"),
        "{data}"
    );
    // The stream continues after the resync with new changes.
    let stream = open(&c, 1, Some(1)).await;
    let v = c
        .member(1)
        .api()
        .put_policy("after", "permit(principal, action, resource);")
        .await;
    let events = read_events(stream, 2).await;
    assert_eq!(events[0].0, "resync");
    assert_eq!(events[1].1, v, "{events:?}");
}
