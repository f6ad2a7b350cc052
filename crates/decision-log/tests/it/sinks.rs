//! Sinks that are down for a while, then come back; file rotation.

use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use verdict_decision_log::DecisionLog;
use verdict_decision_log::FileSinkConfig;
use verdict_decision_log::HttpSinkConfig;
use verdict_decision_log::LoggedRecord;
use verdict_decision_log::SinkConfig;

use crate::*;

#[derive(Clone, Default)]
struct Collector {
    /// Records from requests answered 2xx, in arrival order.
    got: Arc<Mutex<Vec<LoggedRecord>>>,
    /// Requests still to refuse with 503.
    refuse: Arc<AtomicUsize>,
    bad_headers: Arc<AtomicUsize>,
}

async fn ingest(State(c): State<Collector>, headers: HeaderMap, body: Bytes) -> StatusCode {
    if c.refuse
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    if headers["content-type"] != "application/x-ndjson"
        || headers["content-encoding"] != "gzip"
        || headers["authorization"] != "Bearer t"
    {
        c.bad_headers.fetch_add(1, Ordering::SeqCst);
        return StatusCode::BAD_REQUEST;
    }
    c.got.lock().unwrap().extend(parse_lines(&gunzip(&body)));
    StatusCode::NO_CONTENT
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_sink_that_is_down_for_a_while_then_comes_back_receives_every_record_in_order() {
    let dir = tempfile::tempdir().unwrap();
    // A port nobody listens on until the collector starts.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sink = SinkConfig::Http(HttpSinkConfig {
        name: Some("collector".into()),
        url: format!("http://127.0.0.1:{port}/ingest"),
        batch_max: 40,
        batch_linger_ms: 5,
        gzip: true,
        timeout_ms: 2000,
        headers: [("authorization".to_string(), "Bearer t".to_string())].into(),
    });
    let log = DecisionLog::open(&config(dir.path(), vec![sink]), 2, dir.path())
        .await
        .unwrap();
    for n in 1..=300 {
        log.append(record(n)).await.unwrap();
    }
    wait_until(10, "a failed delivery", || {
        let s = &log.status().sinks[0];
        s.retries >= 2 && s.last_error.is_some()
    })
    .await;
    assert_eq!(log.status().sinks[0].acked_seq, 0);
    assert!(log.status().queue.oldest_unacked_age_ms.is_some());

    // The collector comes up, and refuses its first two requests.
    let collector = Collector {
        refuse: Arc::new(AtomicUsize::new(2)),
        ..Collector::default()
    };
    let app = Router::new()
        .route("/ingest", post(ingest))
        .with_state(collector.clone());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    for n in 301..=320 {
        log.append(record(n)).await.unwrap();
    }
    wait_until(20, "collector has 320", || {
        collector.got.lock().unwrap().len() >= 320
    })
    .await;
    let got = collector.got.lock().unwrap().clone();
    assert_eq!(seqs(&got), (1..=320).collect::<Vec<_>>());
    assert_eq!(collector.refuse.load(Ordering::SeqCst), 0);
    assert_eq!(collector.bad_headers.load(Ordering::SeqCst), 0);
    wait_until(10, "acknowledged", || {
        log.status().sinks[0].acked_seq == 320
    })
    .await;
    let s = log.status();
    assert_eq!(s.sinks[0].lag, 0);
    assert_eq!(s.queue.oldest_unacked_age_ms, None);
    log.shutdown().await.unwrap();
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unix_sidecar_that_is_down_then_hangs_up_once_receives_every_record_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("sidecar.sock");
    let log = DecisionLog::open(&config(dir.path(), vec![unix_sink(&sock)]), 4, dir.path())
        .await
        .unwrap();
    for n in 1..=200 {
        log.append(record(n)).await.unwrap();
    }
    wait_until(10, "a failed connection", || {
        log.status().sinks[0].retries >= 2
    })
    .await;
    let err = log.status().sinks[0].last_error.clone().unwrap().message;
    assert!(err.contains("cannot connect"), "{err}");

    let sidecar = Sidecar::start(&sock, true);
    for n in 201..=250 {
        log.append(record(n)).await.unwrap();
    }
    wait_until(20, "sidecar has 250", || {
        sidecar.distinct_seqs().len() == 250
    })
    .await;
    assert_eq!(sidecar.distinct_seqs(), (1..=250).collect::<Vec<_>>());
    let got = sidecar.records();
    // The first connection hung up without acknowledging: its record came again on the next.
    assert_eq!(got.iter().filter(|(c, _)| *c == 0).count(), 1);
    assert_eq!(got.iter().filter(|(_, r)| r.seq == 1).count(), 2);
    // Within each connection the stream is in order.
    for conn in 0..=got.last().unwrap().0 {
        let s: Vec<u64> = got
            .iter()
            .filter(|(c, _)| *c == conn)
            .map(|(_, r)| r.seq)
            .collect();
        assert!(
            s.windows(2).all(|w| w[0] < w[1]),
            "connection {conn}: {s:?}"
        );
    }
    wait_until(10, "acknowledged", || {
        log.status().sinks[0].acked_seq == 250
    })
    .await;
    log.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_sink_rotates_by_size_and_keeps_n_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("d.ndjson");
    let sink = SinkConfig::File(FileSinkConfig {
        name: None,
        path: out.clone(),
        rotate_bytes: 4096,
        keep: 2,
        batch_max: 3,
    });
    let log = DecisionLog::open(&config(dir.path(), vec![sink]), 1, dir.path())
        .await
        .unwrap();
    for n in 1..=200 {
        log.append(record(n)).await.unwrap();
    }
    wait_until(20, "200 acknowledged", || {
        log.status().sinks[0].acked_seq == 200
    })
    .await;
    log.shutdown().await.unwrap();

    let rotated = |i: u32| dir.path().join(format!("d.ndjson.{i}"));
    assert!(rotated(1).exists() && rotated(2).exists());
    assert!(!rotated(3).exists(), "only `keep` rotated files");
    let mut all = Vec::new();
    for path in [rotated(2), rotated(1), out.clone()] {
        let len = std::fs::metadata(&path).unwrap().len();
        assert!(len <= 4096, "{} has {len} bytes", path.display());
        all.extend(seqs(&read_lines(&path)));
    }
    // Oldest to newest, the kept files hold a contiguous run ending at the last record.
    assert_eq!(*all.last().unwrap(), 200);
    assert!(all.windows(2).all(|w| w[1] == w[0] + 1), "{all:?}");
    assert!(all.len() >= 9, "{all:?}");
}
