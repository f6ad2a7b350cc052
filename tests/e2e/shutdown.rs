//! SIGTERM as an operator expects it (issue 14): the node stops accepting connections at once,
//! finishes the requests it is handling (for at most `shutdown_grace_ms`), flushes the decision
//! log, hands leadership over if it leads, stops Raft and exits 0.
//!
//! A request is known to be "in flight" when the node has answered its `Expect: 100-continue`:
//! hyper sends `100 Continue` only once the handler reads the body, so the node has accepted the
//! connection, parsed the head and is inside the request when the signal is sent.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::cluster::{wait_for, Cluster};
use crate::harness::Node;

const DECISION: &str = r#"{"subject":{"type":"User","id":"u"},"action":{"name":"view"},"resource":{"type":"Doc","id":"d"}}"#;

/// Opens a connection and sends a decision request's head with `Expect: 100-continue`; returns
/// once the node has answered `100 Continue` (the handler is reading the body).
async fn start_request(addr: &str) -> TcpStream {
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /access/v1/evaluation HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        DECISION.len()
    );
    conn.write_all(head.as_bytes()).await.expect("send head");
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    let until = Instant::now() + Duration::from_secs(30);
    while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
        assert!(Instant::now() < until, "no 100 Continue within 30 s");
        let n = tokio::time::timeout(Duration::from_secs(30), conn.read(&mut buf))
            .await
            .expect("100 Continue in time")
            .expect("read");
        assert!(
            n > 0,
            "closed before 100 Continue: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 100"), "{text}");
    conn
}

/// Reads a whole HTTP/1.1 response (the node closes the connection after it when stopping, or
/// it carries a Content-Length): status line and headers, and the body.
async fn read_response(conn: &mut TcpStream) -> (u16, String) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(30), conn.read(&mut buf))
            .await
            .expect("the response in time")
            .expect("read");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let head = &text[..end];
            let length = head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())
                    .flatten()
            });
            if n == 0 || length.is_some_and(|len| got.len() >= end + 4 + len) {
                let status = head
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                return (status, text);
            }
        }
        assert!(n > 0, "connection closed mid-response: {text}");
    }
}

/// Waits until a new connection to `addr` is refused.
async fn wait_refused(addr: &str) {
    let refused = wait_for(Duration::from_secs(15), || async {
        match TcpStream::connect(addr).await {
            Err(_) => Ok(()),
            Ok(_) => Err("still accepting".to_string()),
        }
    })
    .await;
    refused.unwrap_or_else(|e| panic!("{addr}: new connections after SIGTERM: {e}"));
}

/// The decision ids in a file sink.
fn logged_ids(path: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|r| r["decision_id"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_request_in_flight_refuses_new_ones_and_flushes_the_decision_log() {
    let out = TempDir::with_prefix("verdict-e2e-shutdown-").expect("sink dir");
    let sink = out.path().join("decisions.ndjson");
    // Three seconds of group commit: the records answered below stay in the writer's buffer, in
    // memory only, until the shutdown (a SIGKILL at that point loses them). The writer sleeps
    // out its interval before it sees the log closed, so the stop waits for up to that long.
    let mut node = Node::start_with_config(&format!(
        r#"
[decision_log]
enabled = true
fsync_interval_ms = 3000

[[decision_log.sinks]]
type = "file"
path = {:?}
"#,
        sink.display().to_string()
    ))
    .await;
    node.api()
        .put_policy("p", "permit(principal, action, resource);")
        .await;
    let mut answered = BTreeSet::new();
    for _ in 0..20 {
        let r = node
            .api()
            .evaluate(&serde_json::from_str(DECISION).unwrap())
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        answered.insert(r.header("verdict-decision-id").expect("logged").to_string());
    }

    let addr = node.api_addr().to_string();
    let mut in_flight = start_request(&addr).await;
    node.sigterm();
    wait_refused(&addr).await;
    // The request that was in flight when the signal came still gets its answer.
    in_flight
        .write_all(DECISION.as_bytes())
        .await
        .expect("send body");
    let (status, text) = read_response(&mut in_flight).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"decision\":true"), "{text}");
    let id = text
        .lines()
        .find_map(|l| l.strip_prefix("verdict-decision-id: "))
        .expect("decision id header")
        .trim()
        .to_string();
    answered.insert(id);
    let status = node.wait_exit(Duration::from_secs(60)).await;
    assert!(status.success(), "exit {status}\n{}", node.log_tail(30));
    assert!(
        node.log_text().contains("decision log flushed"),
        "{}",
        node.log_tail(30)
    );

    // Restarted, the node ships what the shutdown flushed: every answered decision.
    node.restart().await;
    let all = wait_for(Duration::from_secs(30), || async {
        let got = logged_ids(&sink);
        let missing = answered.difference(&got).count();
        if missing == 0 {
            Ok(())
        } else {
            Err(format!(
                "{missing} of {} answered decisions not in the sink",
                answered.len()
            ))
        }
    })
    .await;
    all.unwrap_or_else(|e| panic!("{e}"));
}

/// A request that never finishes (its client stalls mid-body) holds the stop up for
/// `shutdown_grace_ms`, not for the request timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_within_the_grace_when_a_request_never_finishes() {
    let mut node =
        Node::start_with_config("shutdown_grace_ms = 2000\nrequest_timeout_ms = 300000\n").await;
    let addr = node.api_addr().to_string();
    let _stalled = start_request(&addr).await;
    let sent = Instant::now();
    node.sigterm();
    let status = node.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "exit {status}\n{}", node.log_tail(30));
    eprintln!("stopped {:?} after SIGTERM", sent.elapsed());
    assert!(
        node.log_text().contains("shutdown_grace_ms ran out"),
        "{}",
        node.log_tail(30)
    );
}

/// SIGTERM on the leader: it hands leadership to another voter before it stops, and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_on_the_leader_hands_leadership_over_first() {
    let mut c = Cluster::start(3, &[]).await;
    let leader = c.leader(&[1, 2, 3], Duration::from_secs(15)).await;
    c.member(leader)
        .api()
        .put_policy("p", "permit(principal, action, resource);")
        .await;
    let m = c.member_mut(leader);
    m.sigterm();
    let status = m.wait_exit(Duration::from_secs(60)).await;
    assert!(status.success(), "exit {status}\n{}", m.log_tail(30));
    assert!(
        m.log_contains("handed leadership over before stopping"),
        "{}",
        m.log_tail(30)
    );
    let others: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != leader).collect();
    let next = c.leader(&others, Duration::from_secs(15)).await;
    assert_ne!(next, leader);
    // Writes go on through the new leader.
    c.member(next)
        .api()
        .put_policy("q", "forbid(principal, action, resource);")
        .await;
}
