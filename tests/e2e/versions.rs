//! A node's version never goes backwards, across any crash (issue #12): three nodes under a steady
//! write load, the leader or a follower SIGKILLed and restarted on its data, round after round,
//! while every node's version is read back to back. A reading below an earlier reading of the same
//! node fails the test; the reading that matters most is the first one after a restart against
//! the last one before the kill.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use tokio::task::JoinHandle;

use crate::harness::cluster::{wait_for, Cluster};
use crate::harness::Api;

/// Kills per run, alternating leader and follower (`VERDICT_E2E_VERSION_ROUNDS` overrides).
const ROUNDS: usize = 12;
/// Writer tasks; each writes through one node (followers forward to the leader).
const WRITERS: u64 = 6;
/// How far the victim's version must move under the load before it is killed: the kill lands in
/// the middle of a stream of commits, where an unflushed committed index is likely.
const ADVANCE_BEFORE_KILL: u64 = 40;

/// What one node's reader saw: the highest version so far, and each restart's edge.
#[derive(Default)]
struct Readings {
    /// The highest version this node has answered.
    max: Option<u64>,
    /// The last version answered before the current run of failed readings (a kill).
    last_before_gap: Option<u64>,
    /// Whether the previous reading failed (the node was down).
    in_gap: bool,
    /// `(last before the kill, first after the restart)` for every restart.
    edges: Vec<(u64, u64)>,
    /// Readings below an earlier one, the first for each highest value: `(highest, reading)`.
    backwards: Vec<(u64, u64)>,
}

impl Readings {
    fn answered(&mut self, version: u64) {
        if self.in_gap {
            self.in_gap = false;
            if let Some(before) = self.last_before_gap {
                self.edges.push((before, version));
            }
        }
        if let Some(max) = self.max.filter(|max| version < *max) {
            if self.backwards.last().map(|(m, _)| *m) != Some(max) {
                self.backwards.push((max, version));
            }
        }
        self.max = Some(self.max.map_or(version, |m| m.max(version)));
        self.last_before_gap = Some(version);
    }

    fn failed(&mut self) {
        self.in_gap = true;
    }
}

/// Reads `GET /readyz`'s version (ready or not) back to back until `stop`: one request after the
/// other, so the readings are in the order the node produced them.
fn spawn_reader(
    url: String,
    readings: Arc<Mutex<Readings>>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut api = Api::new(&url);
        while !stop.load(Ordering::Relaxed) {
            match api.try_get("/readyz").await {
                Ok(r) => match r.json["version"].as_u64() {
                    Some(v) => readings.lock().unwrap().answered(v),
                    None => panic!("/readyz without a version: {} {}", r.status, r.text),
                },
                Err(_) => {
                    readings.lock().unwrap().failed();
                    // A fresh pool: the old one's connections went with the killed process.
                    api = Api::new(&url);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        }
    })
}

/// Writes policies through `api` until `stop`; a failure (node down, no leader) pauses briefly.
fn spawn_writer(w: u64, api: Api, acked: Arc<AtomicU64>, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let id = format!("mono-{w}-{n}");
            n += 1;
            let cedar = format!("permit(principal == User::\"{id}\", action, resource);");
            let sent = api
                .try_send(
                    api.req(Method::PUT, &format!("/v1/policies/{id}"))
                        .header("content-type", "text/plain")
                        .body(cedar),
                )
                .await;
            match sent {
                Ok(r) if r.status == 200 => {
                    acked.fetch_add(1, Ordering::Relaxed);
                }
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_never_answers_a_version_below_one_it_answered_before_a_sigkill() {
    let rounds = std::env::var("VERDICT_E2E_VERSION_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ROUNDS);
    let started = Instant::now();
    let mut c = Cluster::start(3, &[]).await;
    let ids = [1u64, 2, 3];
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let readings: Vec<Arc<Mutex<Readings>>> = ids.iter().map(|_| Arc::default()).collect();
    let mut tasks = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let url = c.member(*id).url();
        tasks.push(spawn_reader(url, readings[i].clone(), stop.clone()));
    }
    for w in 0..WRITERS {
        let api = Api::new(&c.member(ids[(w % 3) as usize]).url());
        tasks.push(spawn_writer(w, api, acked.clone(), stop.clone()));
    }

    let mut kills = Vec::new();
    for round in 0..rounds {
        let leader = c.leader(&ids, Duration::from_secs(20)).await;
        let victim = if round % 2 == 0 {
            leader
        } else {
            // Each follower in turn.
            let followers: Vec<u64> = ids.iter().copied().filter(|i| *i != leader).collect();
            followers[(round / 2) % followers.len()]
        };
        let role = if victim == leader {
            "leader"
        } else {
            "follower"
        };
        let mine = readings[(victim - 1) as usize].clone();
        let from = mine.lock().unwrap().max.unwrap_or(0);
        wait_for(Duration::from_secs(20), || async {
            let now = mine.lock().unwrap().max.unwrap_or(0);
            if now >= from + ADVANCE_BEFORE_KILL {
                Ok(())
            } else {
                Err(format!("node {victim} at {now}, from {from}"))
            }
        })
        .await
        .unwrap_or_else(|e| panic!("round {round}: the write load stalled: {e}"));
        let edges_before = mine.lock().unwrap().edges.len();
        // SIGKILL, then start again on the same data at once.
        c.member_mut(victim).restart();
        c.member(victim).wait_ready(Duration::from_secs(30)).await;
        // The reader marks the restart by its failed readings while the node was down; the
        // check that matters (no reading below an earlier one) does not depend on seeing them.
        let edge = wait_for(Duration::from_secs(10), || async {
            let r = mine.lock().unwrap();
            r.edges.get(edges_before).copied().ok_or_else(String::new)
        })
        .await;
        match edge {
            Ok(edge) => {
                eprintln!(
                    "versions round {round}: {role} {victim} answered {} before the SIGKILL, {} \
                     right after the restart",
                    edge.0, edge.1
                );
                kills.push((round, victim, role, edge));
            }
            Err(_) => eprintln!("versions round {round}: no failed reading of {victim} seen"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("a reader or writer task panicked");
    }

    let acked = acked.load(Ordering::Relaxed);
    eprintln!(
        "versions: {rounds} kills, {acked} writes acknowledged, in {:?}",
        started.elapsed()
    );
    let backwards: Vec<String> = kills
        .iter()
        .filter(|(_, _, _, (before, after))| after < before)
        .map(|(round, id, role, (before, after))| {
            format!(
                "round {round}: {role} {id} answered {before} before the SIGKILL, {after} after"
            )
        })
        .chain(ids.iter().zip(&readings).flat_map(|(id, r)| {
            let r = r.lock().unwrap();
            r.backwards
                .iter()
                .map(|(max, v)| format!("node {id} answered {v} after having answered {max}"))
                .collect::<Vec<_>>()
        }))
        .collect();
    assert!(
        backwards.is_empty(),
        "versions went backwards:\n{}",
        backwards.join("\n")
    );
    assert!(
        acked >= (rounds as u64) * ADVANCE_BEFORE_KILL,
        "only {acked} writes acknowledged: the load was not steady"
    );
}
