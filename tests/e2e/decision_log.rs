//! Decision logs end to end (issue 5): a node configured with `[decision_log]` answers each logged
//! decision with its id, and the sinks receive every answered decision at least once, in per-node
//! order, masked, across SIGKILLs and sink outages; a full queue behaves as `when_full` says.

use std::collections::BTreeSet;
use std::future::Future;
use std::io::Read;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use reqwest::Method;
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::task::JoinSet;

use crate::decision_log_batch::decisions;
use crate::harness::{assert_problem, unique_port, Api, Node, Resp};

/// Everyone may do anything (with an obligation), except `User::"blocked"` (with a reason).
const POLICIES: &str = r#"
@id("permit-all")
@obligation("loa:2")
permit(principal, action, resource);

@id("deny-blocked")
@reason_user("You are blocked.")
forbid(principal == User::"blocked", action, resource);
"#;

/// How long a sink may take to catch up once it can.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(60);

/// A single decision request; every fifth is denied. Carries secrets the masking test looks for.
fn single(n: usize) -> Value {
    let who = if n.is_multiple_of(5) {
        "blocked".to_string()
    } else {
        format!("u-{n}")
    };
    json!({
        "subject": {"type": "User", "id": who, "properties": {"ssn": format!("ssn-secret-{n}")}},
        "action": {"name": "read"},
        "resource": {"type": "Doc", "id": format!("d-{n}"), "properties": {"note": format!("note-secret-{n}")}},
        "context": {"idp": "idp-1", "password": format!("pw-secret-{n}")},
    })
}

/// A batch of three with top-level defaults (a secret among them); the second item is denied, the
/// third brings its own context.
fn batch(n: usize) -> Value {
    json!({
        "subject": {"type": "User", "id": format!("u-{n}")},
        "action": {"name": "read"},
        "context": {"idp": "idp-1", "password": format!("pw-secret-{n}")},
        "evaluations": [
            {"resource": {"type": "Doc", "id": format!("b-{n}-0")}},
            {"resource": {"type": "Doc", "id": format!("b-{n}-1")}, "subject": {"type": "User", "id": "blocked"}},
            {"resource": {"type": "Doc", "id": format!("b-{n}-2")}, "context": {"idp": "idp-2", "password": format!("pw-secret-{n}-own")}},
        ],
    })
}

/// Request `n`: a batch every fourth time, else a single evaluation.
fn decision_request(n: usize) -> (&'static str, Value) {
    if n % 4 == 3 {
        ("/access/v1/evaluations", batch(n))
    } else {
        ("/access/v1/evaluation", single(n))
    }
}

/// The decision ids an answer carries: the `Verdict-Decision-Id` header of a single evaluation,
/// each item's `context.decision_id` in a batch (in item order).
fn decision_ids(resp: &Resp) -> Vec<String> {
    if let Some(items) = resp.json["evaluations"].as_array() {
        return items
            .iter()
            .filter_map(|i| i["context"]["decision_id"].as_str().map(str::to_string))
            .collect();
    }
    resp.header("verdict-decision-id")
        .map(str::to_string)
        .into_iter()
        .collect()
}

/// Lines the log holds for requests `0..n`: one per decision, plus a batch line per batch.
fn lines_for(n: usize) -> usize {
    (0..n)
        .map(|i| match decision_request(i).0 {
            "/access/v1/evaluations" => 4,
            _ => 1,
        })
        .sum()
}

/// Sends request `n`; asserts 200 and that every decision in it was logged; returns the ids.
async fn decide_logged(api: &Api, n: usize) -> Vec<String> {
    let (path, body) = decision_request(n);
    let resp = api.json(Method::POST, path, &body).await.ok();
    let ids = decision_ids(&resp);
    let expected = if path.ends_with('s') { 3 } else { 1 };
    assert_eq!(
        ids.len(),
        expected,
        "{path}: not every decision logged: {resp:?}"
    );
    ids
}

/// A path as a TOML string.
fn toml_path(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

/// Polls `check` until it answers `Ok`, panicking with its last complaint after `deadline`.
async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let until = Instant::now() + deadline;
    loop {
        let last = match check().await {
            Ok(v) => return v,
            Err(e) => e,
        };
        assert!(
            Instant::now() < until,
            "{what}: not within {deadline:?}; last: {last}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The records in a file sink, strictly parsed: every whole line must be one JSON object (a line
/// glued to a torn one would not be). A last line still being written is left for the next look.
fn file_records(path: &Path) -> Vec<Value> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => panic!("cannot read the file sink `{}`: {e}", path.display()),
    };
    let whole = text.rfind('\n').map_or("", |i| &text[..=i]);
    whole
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| {
                panic!("the file sink holds a line that is not JSON ({e}): {l}")
            })
        })
        .collect()
}

/// What a sink received, with re-sent records taken once: the way the crate tells consumers to
/// de-duplicate (drop `seq` ≤ the highest taken). Fails unless the rest is exactly 1, 2, 3, … (in
/// order, no gap) and every re-sent record is the one first received under that sequence.
fn deduplicated(received: &[Value]) -> Result<Vec<Value>, String> {
    let mut taken: Vec<Value> = Vec::new();
    for r in received {
        let seq = r["seq"]
            .as_u64()
            .ok_or_else(|| format!("a record without `seq`: {r}"))?;
        assert_eq!(r["node_id"], 1, "record from another node: {r}");
        let last = taken.len() as u64;
        if seq == 0 || seq > last + 1 {
            return Err(format!(
                "after sequence {last} came {seq}: a gap or out of order"
            ));
        }
        if seq <= last {
            let first = &taken[(seq - 1) as usize];
            assert!(
                first["decision_id"] == r["decision_id"] && first["batch_id"] == r["batch_id"],
                "sequence {seq} delivered twice with different records: {first} and {r}"
            );
            continue;
        }
        taken.push(r.clone());
    }
    Ok(taken)
}

/// Fails unless every id in `answered` is among the `decision_id`s of `records`.
fn all_delivered<'a>(
    records: &[Value],
    answered: impl IntoIterator<Item = &'a String>,
) -> Result<(), String> {
    let got: BTreeSet<&str> = records
        .iter()
        .filter_map(|r| r["decision_id"].as_str())
        .collect();
    let missing: Vec<&String> = answered
        .into_iter()
        .filter(|id| !got.contains(id.as_str()))
        .collect();
    match missing.first() {
        None => Ok(()),
        Some(first) => Err(format!(
            "{} answered decisions not delivered yet (first: {first}); {} records received",
            missing.len(),
            records.len()
        )),
    }
}

async fn status(api: &Api) -> Value {
    api.get("/v1/decision-logs/status").await.ok().json
}

/// A sample's value in `/metrics` text, e.g. `metric(&text, "x_total{reason=\"a\"}")`.
fn metric(text: &str, sample: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
}

// ---------------------------------------------------------------------------------------------
// At-least-once across crashes
// ---------------------------------------------------------------------------------------------

/// SIGKILL rounds.
const KILL_ROUNDS: usize = 5;
/// Concurrent clients per round.
const CLIENTS: usize = 6;
/// Decisions answered in a round before the node is killed (with requests still in flight).
const PER_ROUND: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_answered_decision_reaches_the_file_sink_across_repeated_sigkills() {
    let out = TempDir::with_prefix("verdict-e2e-declog-").expect("create sink dir");
    let sink = out.path().join("decisions.ndjson");
    let mut node = Node::start_with_config(&format!(
        r#"
[decision_log]
enabled = true
fsync = "always"
# Generous: a loaded CI machine can take long over an fsync; this test is about crashes.
append_timeout_ms = 15000

[[decision_log.sinks]]
type = "file"
path = {}
"#,
        toml_path(&sink)
    ))
    .await;
    node.api().replace_policies(POLICIES).await;

    let mut answered: Vec<String> = Vec::new();
    for round in 0..KILL_ROUNDS {
        let ids = Arc::new(Mutex::new(Vec::new()));
        let mut clients = JoinSet::new();
        for c in 0..CLIENTS {
            let api = node.api().clone();
            let ids = ids.clone();
            clients.spawn(async move {
                for i in 0.. {
                    let n = round * 1_000_000 + c * 100_000 + i;
                    let (path, body) = decision_request(n);
                    let Ok(resp) = api.try_send(api.req(Method::POST, path).json(&body)).await
                    else {
                        return; // killed
                    };
                    assert_eq!(resp.status, 200, "{path} in round {round}: {}", resp.text);
                    let got = decision_ids(&resp);
                    let expected = if path.ends_with('s') { 3 } else { 1 };
                    assert_eq!(got.len(), expected, "a decision answered without its id");
                    ids.lock().unwrap().extend(got);
                }
            });
        }
        let until = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(joined) = clients.try_join_next() {
                match joined {
                    Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    _ => panic!("round {round}: a client stopped before the kill"),
                }
            }
            let n = ids.lock().unwrap().len();
            if n >= PER_ROUND {
                break;
            }
            assert!(
                Instant::now() < until,
                "round {round}: only {n} decisions answered within 120 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        node.sigkill();
        while let Some(joined) = clients.join_next().await {
            if let Err(e) = joined {
                std::panic::resume_unwind(e.into_panic());
            }
        }
        answered.extend(ids.lock().unwrap().drain(..));
        node.restart().await;
    }

    let distinct: BTreeSet<&String> = answered.iter().collect();
    assert_eq!(
        distinct.len(),
        answered.len(),
        "a decision id was answered twice"
    );
    let delivered = eventually(
        "every answered decision in the file sink",
        DELIVERY_DEADLINE,
        || {
            let records = file_records(&sink);
            let result =
                deduplicated(&records).and_then(|d| all_delivered(&d, &answered).map(|()| d));
            async move { result }
        },
    )
    .await;
    // The log may hold more than was answered (a decision whose record became durable while
    // the node was being killed), never less.
    assert!(delivered.len() >= answered.len());
    let s = status(node.api()).await;
    assert!(
        s["last_seq"].as_u64() >= Some(delivered.len() as u64),
        "{s}"
    );
    eprintln!(
        "{} decisions answered over {KILL_ROUNDS} SIGKILLs; {} records delivered ({} lines with re-sends)",
        answered.len(),
        delivered.len(),
        file_records(&sink).len()
    );
}

// ---------------------------------------------------------------------------------------------
// Sinks that are down for a while
// ---------------------------------------------------------------------------------------------

/// Everything an HTTP collector or a unix sidecar received, in arrival order, and the bodies or
/// lines it could not read.
#[derive(Clone, Default)]
struct Received {
    records: Arc<Mutex<Vec<Value>>>,
    bad: Arc<Mutex<Vec<String>>>,
}

impl Received {
    fn take_line(&self, line: &str) -> Option<u64> {
        match serde_json::from_str::<Value>(line) {
            Ok(v) => {
                let seq = v["seq"].as_u64();
                self.records.lock().unwrap().push(v);
                seq
            }
            Err(e) => {
                self.bad.lock().unwrap().push(format!("{e}: {line}"));
                None
            }
        }
    }

    fn records(&self) -> Vec<Value> {
        self.records.lock().unwrap().clone()
    }

    fn assert_nothing_bad(&self, who: &str) {
        let bad = self.bad.lock().unwrap();
        assert!(bad.is_empty(), "{who} received unreadable data: {bad:?}");
    }
}

/// The HTTP collector: every 2xx acknowledges the batch.
async fn ingest(State(got): State<Received>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let mut text = String::new();
    let read = if headers.get("content-encoding").is_some_and(|v| v == "gzip") {
        flate2::read::GzDecoder::new(&body[..]).read_to_string(&mut text)
    } else {
        (&body[..]).read_to_string(&mut text)
    };
    if let Err(e) = read {
        got.bad.lock().unwrap().push(format!("body: {e}"));
        return StatusCode::BAD_REQUEST;
    }
    for line in text.lines() {
        got.take_line(line);
    }
    StatusCode::NO_CONTENT
}

async fn start_collector(port: u16, got: Received) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind the collector's port");
    let app = axum::Router::new()
        .route("/ingest", axum::routing::post(ingest))
        .with_state(got);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    })
}

/// The unix-socket sidecar: takes each line and acknowledges its sequence.
fn start_sidecar(path: &Path, got: Received) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::UnixListener::bind(path).expect("bind the sidecar's socket");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let got = got.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let Some(seq) = got.take_line(&line) else {
                        return;
                    };
                    let ack = format!("{{\"ack\": {seq}}}\n");
                    if write.write_all(ack.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sinks_that_are_down_then_come_back_receive_every_record_in_order() {
    let dir = TempDir::with_prefix("verdict-e2e-declog-").expect("create sidecar dir");
    let socket = dir.path().join("sidecar.sock");
    // Nobody listens on this port until the collector starts.
    let port = unique_port();
    let node = Node::start_with_config(&format!(
        r#"
[decision_log]
enabled = true
fsync = "interval"
fsync_interval_ms = 10
retry_base_ms = 50
retry_max_ms = 400

[[decision_log.sinks]]
type = "http"
name = "collector"
url = "http://127.0.0.1:{port}/ingest"
batch_max = 50
batch_linger_ms = 20
timeout_ms = 2000

[[decision_log.sinks]]
type = "unix"
name = "sidecar"
path = {}
batch_max = 50
ack_timeout_ms = 2000
"#,
        toml_path(&socket)
    ))
    .await;
    let api = node.api();
    api.replace_policies(POLICIES).await;

    // One client, so the order decisions were answered in is the order they were logged in.
    let mut answered = Vec::new();
    for n in 0..200 {
        answered.extend(decide_logged(api, n).await);
    }
    eventually("both sinks failing", Duration::from_secs(30), || async {
        let s = status(api).await;
        let sinks = s["sinks"].as_array().cloned().unwrap_or_default();
        let down = sinks.len() == 2
            && sinks.iter().all(|k| {
                k["retries"].as_u64() >= Some(2)
                    && !k["last_error"].is_null()
                    && k["acked_seq"] == 0
            });
        if down {
            Ok(())
        } else {
            Err(s.to_string())
        }
    })
    .await;

    let http = Received::default();
    let unix = Received::default();
    let collector = start_collector(port, http.clone()).await;
    let sidecar = start_sidecar(&socket, unix.clone());
    for n in 200..300 {
        answered.extend(decide_logged(api, n).await);
    }

    for (who, got) in [("the HTTP collector", &http), ("the unix sidecar", &unix)] {
        let delivered = eventually(&format!("every record at {who}"), DELIVERY_DEADLINE, || {
            let result = deduplicated(&got.records()).and_then(|d| {
                if d.len() == lines_for(300) {
                    Ok(d)
                } else {
                    Err(format!("{} of {} records", d.len(), lines_for(300)))
                }
            });
            async move { result }
        })
        .await;
        got.assert_nothing_bad(who);
        let in_seq_order: Vec<String> = decisions(&delivered)
            .iter()
            .map(|r| r["decision_id"].as_str().unwrap_or_default().to_string())
            .collect();
        assert_eq!(
            in_seq_order, answered,
            "{who}: records not in the order the decisions were answered"
        );
    }

    let s = eventually("both sinks caught up", Duration::from_secs(10), || async {
        let s = status(api).await;
        let caught_up = s["sinks"].as_array().is_some_and(|k| {
            k.iter()
                .all(|k| k["lag"] == 0 && k["acked_seq"] == lines_for(300))
        });
        if caught_up {
            Ok(s)
        } else {
            Err(s.to_string())
        }
    })
    .await;
    assert_eq!(s["last_seq"], lines_for(300));
    let metrics = api.get("/metrics").await.ok().text;
    for sink in ["collector", "sidecar"] {
        assert_eq!(
            metric(
                &metrics,
                &format!("verdict_decision_log_sink_lag_records{{sink=\"{sink}\"}}")
            ),
            Some(0),
            "{metrics}"
        );
        assert!(
            metric(
                &metrics,
                &format!("verdict_decision_log_sink_retries_total{{sink=\"{sink}\"}}")
            ) >= Some(2)
        );
    }
    collector.abort();
    sidecar.abort();
}

// ---------------------------------------------------------------------------------------------
// Masking and the record schema
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masked_fields_never_reach_the_sink_and_records_carry_the_answer() {
    let out = TempDir::with_prefix("verdict-e2e-declog-").expect("create sink dir");
    let sink = out.path().join("decisions.ndjson");
    let node = Node::start_with_config(&format!(
        r#"
[decision_log]
enabled = true
mask = ["subject.properties.ssn", "context.password", "resource.properties.*"]
mask_mode = "remove"

[[decision_log.sinks]]
type = "file"
path = {}
"#,
        toml_path(&sink)
    ))
    .await;
    let api = node.api();
    api.replace_policies(POLICIES).await;
    let mut answered = Vec::new();
    for n in 0..40 {
        answered.extend(decide_logged(api, n).await);
    }
    let lines = eventually("every record in the file", DELIVERY_DEADLINE, || {
        let lines = file_records(&sink);
        let result = all_delivered(&lines, &answered).map(|()| lines);
        async move { result }
    })
    .await;
    // Batch items with their batch's defaults applied, as a consumer rebuilds them.
    let records = decisions(&lines);

    let raw = std::fs::read_to_string(&sink).expect("read the file sink");
    assert!(
        !raw.contains("secret"),
        "a masked value reached the sink:\n{raw}"
    );
    for r in &records {
        let req = &r["request"];
        assert!(
            req["subject"]["type"] == "User" && req["subject"]["id"].is_string(),
            "{r}"
        );
        assert!(req["subject"]["properties"].get("ssn").is_none(), "{r}");
        assert!(req["context"].get("password").is_none(), "{r}");
        assert!(
            req["context"]["idp"].is_string(),
            "unmasked fields stay: {r}"
        );
        if let Some(props) = req["resource"].get("properties") {
            assert_eq!(props, &json!({}), "{r}");
        }
    }

    // The schema, on a permit and on a deny (request 0 is `User::"blocked"`).
    let by_id = |id: &str| {
        records
            .iter()
            .find(|r| r["decision_id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no record {id}"))
    };
    let deny = by_id(&answered[0]);
    let permit = by_id(&answered[1]);
    let fields = [
        "seq",
        "node_id",
        "decision_id",
        "timestamp_ms",
        "version",
        "request",
        "decision",
        "policies",
        "reasons",
        "obligations",
        "latency_us",
    ];
    for r in [&deny, &permit] {
        let keys: Vec<&str> = r
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default();
        assert_eq!(keys, fields, "{r}");
        assert_eq!(r["node_id"], 1);
        assert!(r["version"].as_u64() >= Some(1) && r["timestamp_ms"].as_u64() > Some(0));
    }
    assert_eq!(deny["decision"], false);
    assert_eq!(deny["policies"], json!(["deny-blocked"]));
    assert_eq!(
        deny["reasons"]["reason_user"],
        json!({"en": "You are blocked."})
    );
    assert_eq!(
        deny["reasons"]["reason_admin"]["policies"],
        json!(["deny-blocked"])
    );
    assert_eq!(deny["obligations"], json!([]));
    assert_eq!(deny["request"]["action"], json!({"name": "read"}));
    assert_eq!(permit["decision"], true);
    assert_eq!(permit["policies"], json!(["permit-all"]));
    assert_eq!(permit["obligations"], json!(["loa:2"]));
    assert!(permit["reasons"]["reason_user"].is_null());

    // A batch item's line holds only its own request fields and names its batch line, which holds
    // the defaults once, masked (`decisions` rebuilt the requests checked below from the two).
    let raw = lines.iter().find(|r| r["decision_id"] == answered[3 + 1]);
    let raw = raw.expect("the batch item's line");
    assert_eq!(
        raw["request"],
        json!({"resource": {"type": "Doc", "id": "b-3-1"}, "subject": {"type": "User", "id": "blocked"}})
    );
    let head = lines.iter().find(|l| l["batch_id"] == raw["batch_id"]);
    assert_eq!(
        head.expect("its batch line")["defaults"]["context"],
        json!({"idp": "idp-1"})
    );
    let item = by_id(&answered[3 + 1]);
    assert_eq!(item["request"]["subject"]["id"], "blocked");
    assert_eq!(item["request"]["resource"]["id"], "b-3-1");
    assert_eq!(item["request"]["context"], json!({"idp": "idp-1"}));
    let own = by_id(&answered[3 + 2]);
    assert_eq!(own["request"]["subject"]["id"], "u-3");
    assert_eq!(own["request"]["context"], json!({"idp": "idp-2"}));
}

// ---------------------------------------------------------------------------------------------
// A full queue
// ---------------------------------------------------------------------------------------------

/// A node whose queue holds two 4 KiB segments and whose only sink (a unix socket nobody listens
/// on) never acknowledges anything, so the queue fills after a dozen records.
async fn full_queue_node(when_full: &str, dir: &TempDir) -> Node {
    let node = Node::start_with_config(&format!(
        r#"
[decision_log]
enabled = true
when_full = "{when_full}"
segment_bytes = 4096
max_queue_bytes = 8192
append_timeout_ms = 300

[[decision_log.sinks]]
type = "unix"
path = {}
"#,
        toml_path(&dir.path().join("nobody.sock"))
    ))
    .await;
    node.api().replace_policies(POLICIES).await;
    node
}

/// Sends `n` single decisions, asserting each is answered; returns how many carried an id.
async fn answered_with_ids(api: &Api, n: usize) -> usize {
    let mut with_id = 0;
    for i in 0..n {
        let resp = api.evaluate(&single(i)).await.ok();
        with_id += usize::from(resp.header("verdict-decision-id").is_some());
    }
    with_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_under_drop_newest_keeps_answering_and_counts_every_drop() {
    let dir = TempDir::with_prefix("verdict-e2e-declog-").expect("create dir");
    let node = full_queue_node("drop_newest", &dir).await;
    let api = node.api();
    let with_id = answered_with_ids(api, 100).await;
    let dropped = 100 - with_id;
    assert!(with_id > 0 && dropped > 0, "{with_id} of 100 logged");
    let s = status(api).await;
    assert_eq!(s["when_full"], "drop_newest");
    assert_eq!(s["appended"], with_id, "{s}");
    assert_eq!(s["drops"]["queue_full"], dropped, "every drop counted: {s}");
    assert!(s["queue"]["bytes"].as_u64() <= Some(8192), "{s}");
    let metrics = api.get("/metrics").await.ok().text;
    assert_eq!(
        metric(
            &metrics,
            "verdict_decision_log_drops_total{reason=\"queue_full\"}"
        ),
        Some(dropped as u64),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "verdict_decision_log_queue_bytes"),
        s["queue"]["bytes"].as_u64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_under_drop_oldest_keeps_answering_and_counts_evictions() {
    let dir = TempDir::with_prefix("verdict-e2e-declog-").expect("create dir");
    let node = full_queue_node("drop_oldest", &dir).await;
    let api = node.api();
    let with_id = answered_with_ids(api, 100).await;
    let s = status(api).await;
    assert_eq!(s["when_full"], "drop_oldest");
    assert!(s["drops"]["evicted"].as_u64() > Some(0), "{s}");
    // Refused outright only if the writer fell a whole queue behind; counted all the same.
    assert_eq!(s["drops"]["queue_full"], 100 - with_id, "{s}");
    // Eviction runs on the writer thread, so the queue may briefly exceed its limit by what was
    // appended since (at most a buffer's worth, itself capped at the limit).
    assert!(s["queue"]["bytes"].as_u64() <= Some(3 * 8192), "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_under_block_refuses_decisions_after_the_bounded_wait() {
    let dir = TempDir::with_prefix("verdict-e2e-declog-").expect("create dir");
    let node = full_queue_node("block", &dir).await;
    let api = node.api();
    let mut refused = None;
    for i in 0..200 {
        let started = Instant::now();
        let resp = api.evaluate(&single(i)).await;
        if resp.status == 200 {
            assert!(
                resp.header("verdict-decision-id").is_some(),
                "under block a decision is answered only once logged"
            );
            continue;
        }
        refused = Some((resp, started.elapsed()));
        break;
    }
    let (resp, waited) = refused.expect("the queue never filled up");
    assert_problem(&resp, 503, "decision_log_unavailable");
    assert_eq!(resp.header("retry-after"), Some("1"));
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(10),
        "waited {waited:?}; append_timeout_ms is 300"
    );
    assert!(resp.header("verdict-decision-id").is_none());
    let s = status(api).await;
    assert!(s["drops"]["block_timeout"].as_u64() >= Some(1), "{s}");
    let metrics = api.get("/metrics").await.ok().text;
    assert!(metric(&metrics, "verdict_decisions_refused_unlogged_total") >= Some(1));
    assert!(
        metric(
            &metrics,
            "verdict_decision_log_drops_total{reason=\"block_timeout\"}"
        ) >= Some(1)
    );
    // Still refused while nothing frees space: no decision escapes the log.
    let again = api.evaluate(&single(1000)).await;
    assert_problem(&again, 503, "decision_log_unavailable");
}

// ---------------------------------------------------------------------------------------------
// Off, and misconfigured
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_off_answers_no_ids_and_the_status_says_how_to_turn_it_on() {
    let node = Node::start().await;
    let api = node.api();
    api.replace_policies(POLICIES).await;
    let resp = api.evaluate(&single(1)).await.ok();
    assert!(resp.header("verdict-decision-id").is_none());
    let resp = api.evaluations(&batch(3)).await.ok();
    assert!(decision_ids(&resp).is_empty(), "{}", resp.text);
    let resp = api.get("/v1/decision-logs/status").await;
    assert_problem(&resp, 404, "not_found");
    assert!(
        resp.json["detail"]
            .as_str()
            .is_some_and(|d| d.contains("[decision_log]")),
        "{}",
        resp.text
    );
    let metrics = api.get("/metrics").await.ok().text;
    assert!(!metrics.contains("verdict_decision_log_"));
}

#[tokio::test]
async fn a_bad_decision_log_table_stops_start_up_with_a_clear_message() {
    let dir = TempDir::with_prefix("verdict-e2e-declog-").expect("create dir");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[decision_log]\nenabled = true\n").expect("write config");
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_verdict"))
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--listen", "127.0.0.1:0", "--peer-listen", "127.0.0.1:0"])
        .env("NO_COLOR", "1")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("`verdict serve` with a bad [decision_log] did not exit within 60 s")
        .expect("run `verdict serve`");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started anyway: {stderr}");
    assert!(
        stderr.contains("decision logging has no sink") && stderr.contains("[decision_log]"),
        "{stderr}"
    );
}
