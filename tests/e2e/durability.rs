//! Every acknowledged write survives SIGKILL: write concurrently, kill the node while writes are
//! still in flight, restart it on the same data directory, and find every acknowledged write.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::harness::{Api, Node};

/// Concurrent writers (and readers when verifying).
const TASKS: usize = 8;
/// The longest one iteration's writes may take before the test gives up.
const WRITE_DEADLINE: Duration = Duration::from_secs(120);

/// One acknowledged write: a policy (even `n`) or an entity (odd `n`), and the version it answered.
#[derive(Debug, Clone)]
struct Ack {
    n: usize,
    id: String,
    version: u64,
}

impl Ack {
    fn is_policy(&self) -> bool {
        self.n.is_multiple_of(2)
    }
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_sigkill() {
    let iterations = env_or("VERDICT_E2E_DURABILITY_ITERATIONS", 20);
    let writes = env_or("VERDICT_E2E_DURABILITY_WRITES", 1000);
    let started = Instant::now();
    let mut node = Node::start().await;
    let mut policies: BTreeSet<String> = BTreeSet::new();
    let mut versions: BTreeSet<u64> = BTreeSet::new();
    let mut max_acked = 0;
    for iteration in 0..iterations {
        let round = Instant::now();
        let acks = write_then_kill(&mut node, iteration, writes).await;
        let written = round.elapsed();
        assert!(
            acks.iter().all(|a| a.version > max_acked),
            "iteration {iteration}: a write after the restart answered a version ≤ {max_acked}"
        );
        for ack in &acks {
            assert!(
                versions.insert(ack.version),
                "two acknowledged writes answered version {}",
                ack.version
            );
            if ack.is_policy() {
                policies.insert(ack.id.clone());
            }
        }
        max_acked = max_acked.max(acks.iter().map(|a| a.version).max().unwrap_or(0));

        let restarting = Instant::now();
        node.restart().await;
        let restarted = restarting.elapsed();
        let api = node.api().clone();
        verify(&api, &acks, iteration).await;
        let now = api.decision_version().await;
        assert!(
            now >= max_acked,
            "after restart decisions answer from {now} < acknowledged {max_acked}"
        );
        let list = api.policy_list().await;
        let listed: BTreeSet<String> = list["policies"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .filter_map(|p| p["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let lost: Vec<&String> = policies.difference(&listed).take(5).collect();
        assert!(
            lost.is_empty(),
            "iteration {iteration}: acknowledged policies missing from the list: {lost:?}…"
        );
        eprintln!(
            "durability iteration {iteration}: {} of {writes} writes acknowledged in {written:?}; \
             ready again after {restarted:?}; verified in {:?}",
            acks.len(),
            round.elapsed() - written - restarted
        );
    }
    eprintln!(
        "durability: {iterations} iterations × {writes} writes in {:?}",
        started.elapsed()
    );
}

/// Starts `TASKS` writers over `writes` writes, SIGKILLs the node once 90% are acknowledged, and
/// returns the acknowledged ones.
async fn write_then_kill(node: &mut Node, iteration: usize, writes: usize) -> Vec<Ack> {
    let acked = Arc::new(AtomicUsize::new(0));
    let threshold = (writes * 9 / 10).max(1);
    let reached = Arc::new(Notify::new());
    let mut writers = JoinSet::new();
    for task in 0..TASKS {
        let api = node.api().clone();
        let (acked, reached) = (acked.clone(), reached.clone());
        writers.spawn(async move {
            let mut acks = Vec::new();
            for n in (task..writes).step_by(TASKS) {
                let id = format!("dur-{iteration}-{n}");
                let request = if n.is_multiple_of(2) {
                    let cedar = format!(
                        "permit(principal == User::\"{id}\", action == Action::\"view\", resource);"
                    );
                    api.req(Method::PUT, &format!("/v1/policies/{id}"))
                        .header("content-type", "text/plain")
                        .body(cedar)
                } else {
                    let entity = json!([{"uid": {"type": "User", "id": id},
                        "attrs": {"n": n, "iteration": iteration}, "parents": []}]);
                    api.req(Method::POST, "/v1/entities").json(&entity)
                };
                match api.try_send(request).await {
                    // The node was killed: what was not acknowledged may or may not be there.
                    Err(_) => break,
                    Ok(resp) if resp.status == 200 => {
                        acks.push(Ack {
                            n,
                            id,
                            version: resp.written(),
                        });
                        if acked.fetch_add(1, Ordering::SeqCst) + 1 == threshold {
                            reached.notify_one();
                        }
                    }
                    Ok(resp) => {
                        return Err(format!("write {id} answered {} {}", resp.status, resp.text))
                    }
                }
            }
            Ok(acks)
        });
    }
    let waited = tokio::time::timeout(WRITE_DEADLINE, reached.notified()).await;
    node.sigkill();
    let mut acks = Vec::new();
    while let Some(joined) = writers.join_next().await {
        match joined.expect("writer task panicked") {
            Ok(mine) => acks.extend(mine),
            Err(e) => panic!("iteration {iteration}: {e}"),
        }
    }
    assert!(
        waited.is_ok(),
        "iteration {iteration}: only {} of {threshold} writes acknowledged within {WRITE_DEADLINE:?}",
        acks.len()
    );
    acks
}

/// Reads back every acknowledged write of one iteration, `TASKS` readers at a time.
async fn verify(api: &Api, acks: &[Ack], iteration: usize) {
    let mut readers = JoinSet::new();
    for task in 0..TASKS {
        let api = api.clone();
        let mine: Vec<Ack> = acks.iter().skip(task).step_by(TASKS).cloned().collect();
        readers.spawn(async move {
            for ack in mine {
                if ack.is_policy() {
                    let resp = api.get(&format!("/v1/policies/{}", ack.id)).await;
                    assert_eq!(
                        resp.status, 200,
                        "iteration {iteration}: lost policy {ack:?}: {}",
                        resp.text
                    );
                    assert_eq!(
                        resp.json["version"], ack.version,
                        "policy {ack:?}: {}",
                        resp.text
                    );
                    let cedar = resp.json["cedar"].as_str().unwrap_or_default();
                    assert!(
                        cedar.contains(&format!("User::\"{}\"", ack.id)),
                        "policy {ack:?}: {cedar}"
                    );
                } else {
                    let resp = api.get(&format!("/v1/entities/User/{}", ack.id)).await;
                    assert_eq!(
                        resp.status, 200,
                        "iteration {iteration}: lost entity {ack:?}: {}",
                        resp.text
                    );
                    assert_eq!(
                        resp.json["entity"]["attrs"]["n"], ack.n,
                        "entity {ack:?}: {}",
                        resp.text
                    );
                    let version = resp.json["version"].as_u64().unwrap_or(0);
                    assert!(
                        version >= ack.version,
                        "entity {ack:?} read at version {version}"
                    );
                }
            }
        });
    }
    while let Some(joined) = readers.join_next().await {
        if let Err(e) = joined {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}
