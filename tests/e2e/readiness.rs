//! Readiness while a node restarts (issue 14): it never tells an operator that a healthy
//! restarting node "was removed" before Raft has loaded its membership.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use crate::harness::cluster::Cluster;

/// Issue 14: once in ~24 restarts a node answered `/readyz` with "node 3 was removed from the
/// cluster; wipe its data directory…" before Raft had loaded its membership. Node 3 is restarted
/// many times (a snapshot after every entry and no log kept behind it, so its state at start
/// already names every member and covers all it had committed), and `/readyz` is polled as fast
/// as it answers from the first moment; no answer may say "removed". On a5c32ea this failed in
/// rounds 56, 25 and 6 of three runs. `VERDICT_E2E_RESTARTS` sets the count (default 150, about
/// 80 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_never_says_removed_while_a_member_restarts() {
    let restarts: usize = std::env::var("VERDICT_E2E_RESTARTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150);
    let mut c = Cluster::start(
        3,
        &["--snapshot-every", "1", "--keep-log-behind-snapshot", "0"],
    )
    .await;
    let leader = c.leader(&[1, 2, 3], Duration::from_secs(15)).await;
    if leader == 3 {
        let r = c
            .member(3)
            .api()
            .json(
                Method::POST,
                "/v1/cluster/transfer-leader",
                &json!({"to": 1}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    for i in 0..5 {
        c.member(1)
            .api()
            .put_policy(&format!("p{i}"), "permit(principal, action, resource);")
            .await;
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut answers = 0usize;
    let mut not_ready: Vec<String> = Vec::new();
    for round in 0..restarts {
        assert!(Instant::now() < deadline, "restarts took over 10 minutes");
        c.member_mut(3).restart();
        let member = c.member(3);
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(
                Instant::now() < until,
                "round {round}: node 3 not ready within 60 s\n{}",
                member.log_tail(30)
            );
            match member.api().try_get("/readyz").await {
                Ok(r) => {
                    answers += 1;
                    assert!(
                        !r.text.contains("removed"),
                        "round {round}: a restarting member said it was removed: {}",
                        r.text
                    );
                    if r.status == 200 {
                        break;
                    }
                    if !not_ready.contains(&r.text) && not_ready.len() < 20 {
                        not_ready.push(r.text);
                    }
                }
                // Not listening yet: try again at once.
                Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
    }
    eprintln!(
        "{restarts} restarts, {answers} /readyz answers; not-ready answers seen: {not_ready:?}"
    );
}
