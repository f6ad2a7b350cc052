//! Segments are deleted only when every sink has acknowledged them.

use verdict_decision_log::Config;
use verdict_decision_log::DecisionLog;

use crate::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_is_deleted_only_after_every_sink_acknowledged_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.ndjson");
    let sock = dir.path().join("sidecar.sock");
    let cfg = Config {
        segment_bytes: 2048,
        ..config(dir.path(), vec![file_sink(&out), unix_sink(&sock)])
    };
    let log = DecisionLog::open(&cfg, 1, dir.path()).await.unwrap();
    for n in 1..=60 {
        log.append(record(n)).await.unwrap();
        if n % 4 == 0 {
            wait_until(10, "durable", || log.status().durable_seq >= n).await;
        }
    }
    // The file sink has everything; the sidecar is not running.
    wait_until(10, "file sink caught up", || {
        log.status().sinks[0].acked_seq == 60
    })
    .await;
    let before = segments(dir.path());
    assert!(before.len() > 3, "{} segments", before.len());
    assert_eq!(log.status().sinks[1].acked_seq, 0);
    assert_eq!(log.status().queue.records, 60);
    assert_eq!(
        segments(dir.path()),
        before,
        "nothing deleted while the sidecar lags"
    );

    let sidecar = Sidecar::start(&sock, false);
    wait_until(20, "sidecar caught up", || {
        log.status().sinks[1].acked_seq == 60
    })
    .await;
    wait_until(10, "sealed segments deleted", || {
        segments(dir.path()).len() == 1
    })
    .await;
    assert_eq!(
        segments(dir.path())[0],
        *before.last().unwrap(),
        "the active one stays"
    );
    assert_eq!(sidecar.distinct_seqs(), (1..=60).collect::<Vec<_>>());
    let s = log.status();
    assert_eq!(s.queue.segments, 1);
    assert_eq!(s.queue.unacknowledged, 0);
    log.shutdown().await.unwrap();

    // Restart: nothing is re-sent, the queue starts where it was.
    let log = DecisionLog::open(&cfg, 1, dir.path()).await.unwrap();
    assert_eq!(log.status().sinks[0].acked_seq, 60);
    assert_eq!(log.status().sinks[1].acked_seq, 60);
    log.shutdown().await.unwrap();
    assert_eq!(read_lines(&out).len(), 60);
}
