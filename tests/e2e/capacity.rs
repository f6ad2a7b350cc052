//! The capacity pre-flight (issue 14, SURFconext's missing graph): under a known, paced load each
//! node reports its decision rate and CPU per decision on /metrics; `GET /v1/cluster/capacity`
//! and `verdict cluster drain --check` add them up and say whether the nodes left carry the load,
//! flipping with the headroom asked for; bad input gets a clear 4xx; a member that cannot be
//! asked is reported unknown.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use crate::harness::cluster::Cluster;
use crate::harness::{assert_problem, cli_at, Api};

/// Paced decisions per second sent to nodes 1 and 2 (node 3 gets none).
const RATES: [(u64, f64); 2] = [(1, 120.0), (2, 80.0)];
/// How far a reported rate may be from the rate sent over the same ten seconds.
const TOLERANCE: f64 = 0.35;

/// Sends `rate` decisions per second to `api` until `until`; records when each 200 came back.
async fn paced_load(api: Api, rate: f64, until: Instant, done: Arc<Mutex<Vec<Instant>>>) {
    let permits = Arc::new(Semaphore::new(32));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let body = json!({"subject": {"type": "User", "id": "u"}, "action": {"name": "view"},
                      "resource": {"type": "Doc", "id": "d"}});
    while Instant::now() < until {
        tick.tick().await;
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (api, body, done) = (api.clone(), body.clone(), done.clone());
        tokio::spawn(async move {
            if let Ok(r) = api
                .try_send(api.req(Method::POST, "/access/v1/evaluation").json(&body))
                .await
            {
                if r.status == 200 {
                    done.lock().unwrap().push(Instant::now());
                }
            }
            drop(permit);
        });
    }
}

/// Decisions per second answered over the last `window` before now, from the recorded times.
fn sent_rate(done: &Mutex<Vec<Instant>>, window: Duration) -> f64 {
    let now = Instant::now();
    let n = done
        .lock()
        .unwrap()
        .iter()
        .filter(|t| now.duration_since(**t) <= window)
        .count();
    n as f64 / window.as_secs_f64()
}

fn gauge(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

fn near(reported: f64, expected: f64) -> bool {
    (reported - expected).abs() <= TOLERANCE * expected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn capacity_follows_a_known_load_and_the_pre_flight_flips_with_the_threshold() {
    let mut c = Cluster::start(3, &[]).await;
    c.member(1)
        .api()
        .put_policy("p", "permit(principal, action, resource);")
        .await;
    let until = Instant::now() + Duration::from_secs(60);
    let mut done = Vec::new();
    let mut load = Vec::new();
    for (id, rate) in RATES {
        let d: Arc<Mutex<Vec<Instant>>> = Arc::default();
        load.push(tokio::spawn(paced_load(
            Api::new(&c.member(id).url()),
            rate,
            until,
            d.clone(),
        )));
        done.push((id, d));
    }
    // More than the ten-second window of the figures.
    tokio::time::sleep(Duration::from_secs(13)).await;

    // Each loaded node's own rate on /metrics matches what it answered over the same window.
    for (id, d) in &done {
        let metrics = c.member(*id).api().get("/metrics").await.ok().text;
        let sent = sent_rate(d, Duration::from_secs(10));
        let reported = gauge(&metrics, "verdict_decision_rate").expect("verdict_decision_rate");
        assert!(
            near(reported, sent),
            "node {id}: reported {reported:.1}/s, answered {sent:.1}/s"
        );
        let per = gauge(&metrics, "verdict_cpu_seconds_per_decision").expect("cpu per decision");
        assert!(per > 0.0 && per < 1.0, "node {id}: {per}");
        assert!(gauge(&metrics, "verdict_cpus").is_some_and(|n| n >= 1.0));
    }

    // The pre-flight through node 3: the whole cluster's rate, every member reporting.
    let r = c
        .member(3)
        .api()
        .get("/v1/cluster/capacity?without=1,2")
        .await
        .ok();
    let sent: f64 = done
        .iter()
        .map(|(_, d)| sent_rate(d, Duration::from_secs(10)))
        .sum();
    let total = r.json["total_decision_rate"].as_f64().expect("total rate");
    assert!(
        near(total, sent),
        "total {total:.1}/s, answered {sent:.1}/s: {}",
        r.text
    );
    assert_eq!(r.json["complete"], json!(true), "{}", r.text);
    assert_eq!(r.json["remaining"], json!([3]), "{}", r.text);
    let headroom = r.json["headroom_percent"].as_f64().expect("headroom");
    assert!(headroom < 100.0, "{}", r.text);
    eprintln!("pre-flight: {}", r.json["summary"]);

    // The CLI's verdict flips with the threshold: exit 0 with a tiny one, 2 with 100 %.
    let url = c.member(3).url();
    let low = cli_at(
        &url,
        &["cluster", "drain", "--check", "1,2", "--min-headroom", "1"],
    )
    .await;
    let stdout = String::from_utf8_lossy(&low.stdout);
    assert_eq!(
        low.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&low.stderr)
    );
    assert!(stdout.contains("OK"), "{stdout}");
    let high = cli_at(
        &url,
        &[
            "cluster",
            "drain",
            "--check",
            "1,2",
            "--min-headroom",
            "100",
        ],
    )
    .await;
    let stdout = String::from_utf8_lossy(&high.stdout);
    assert_eq!(high.status.code(), Some(2), "{stdout}");
    assert!(stdout.contains("NOT ENOUGH"), "{stdout}");

    // Bad input: a clear 4xx each.
    let api = c.member(3).api().clone();
    for (query, code) in [
        ("without=9", "unknown_node"),
        ("without=1,2,3", "no_node_left"),
        ("without=1,x", "invalid_request"),
        ("without=1,,2", "invalid_request"),
        ("without=1&min_headroom=150", "invalid_request"),
    ] {
        let r = api.get(&format!("/v1/cluster/capacity?{query}")).await;
        assert_problem(&r, 400, code);
    }

    // A member that cannot be asked is unknown, and the answer says what it assumed.
    c.member_mut(2).sigstop();
    let r = api.get("/v1/cluster/capacity?without=1").await.ok();
    c.member_mut(2).sigcont();
    assert_eq!(r.json["complete"], json!(false), "{}", r.text);
    let two: &Value = r.json["members"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["id"] == 2))
        .expect("member 2");
    assert_eq!(two["figures"], "unknown", "{}", r.text);
    assert!(
        r.json["notes"]
            .to_string()
            .contains("node 2: did not answer"),
        "{}",
        r.text
    );
    for task in load {
        task.abort();
    }
}
