//! The queue end to end: round trip, restart, crash recovery.

use std::io::Write;

use verdict_decision_log::Appended;
use verdict_decision_log::DecisionLog;
use verdict_decision_log::FsyncMode;

use crate::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_round_trip_through_the_queue_to_a_file_sink_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.ndjson");
    let log = DecisionLog::open(&config(dir.path(), vec![file_sink(&out)]), 7, dir.path())
        .await
        .unwrap();
    let mut appended = Vec::new();
    for n in 1..=500 {
        let r = record(n);
        appended.push(r.clone());
        assert_eq!(log.append(r).await.unwrap(), Appended::Logged { seq: n });
    }
    wait_until(20, "all 500 in the file", || read_lines(&out).len() == 500).await;
    let got = read_lines(&out);
    assert_eq!(seqs(&got), (1..=500).collect::<Vec<_>>());
    for (line, sent) in got.iter().zip(&appended) {
        assert_eq!(line.node_id, 7);
        assert_eq!(line.record.decision_id, sent.decision_id);
        assert_eq!(line.record.policies, sent.policies);
        assert_eq!(
            line.record.request["context"]["n"],
            sent.request["context"]["n"]
        );
    }
    wait_until(10, "cursor at 500", || {
        log.status().sinks[0].acked_seq == 500
    })
    .await;
    let s = log.status();
    assert_eq!((s.appended, s.last_seq, s.durable_seq), (500, 500, 500));
    assert_eq!(s.sinks[0].lag, 0);
    assert_eq!(s.sinks[0].delivered, 500);
    assert_eq!(s.drops, Default::default());
    log.shutdown().await.unwrap();
    assert!(matches!(
        log.append(record(501)).await,
        Err(verdict_decision_log::AppendError::Closed)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sequence_continues_after_a_restart_and_nothing_is_sent_twice() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.ndjson");
    let cfg = config(dir.path(), vec![file_sink(&out)]);
    let log = DecisionLog::open(&cfg, 1, dir.path()).await.unwrap();
    for n in 1..=10 {
        log.append(record(n)).await.unwrap();
    }
    wait_until(10, "10 acknowledged", || {
        log.status().sinks[0].acked_seq == 10
    })
    .await;
    log.shutdown().await.unwrap();
    drop(log);

    let log = DecisionLog::open(&cfg, 1, dir.path()).await.unwrap();
    assert_eq!(log.status().last_seq, 10);
    assert_eq!(
        log.append(record(11)).await.unwrap(),
        Appended::Logged { seq: 11 }
    );
    wait_until(10, "11 in the file", || read_lines(&out).len() == 11).await;
    assert_eq!(seqs(&read_lines(&out)), (1..=11).collect::<Vec<_>>());
    log.shutdown().await.unwrap();
}

/// Appends 10 records with fsync per record and no reachable sink, so the queue keeps them all,
/// then shuts down and returns the segment holding them.
async fn ten_records_then_stop(
    dir: &std::path::Path,
) -> (verdict_decision_log::Config, std::path::PathBuf) {
    let sock = dir.join("sidecar.sock");
    let mut cfg = config(dir, vec![unix_sink(&sock)]);
    cfg.fsync = FsyncMode::Always;
    let log = DecisionLog::open(&cfg, 1, dir).await.unwrap();
    for n in 1..=10 {
        let Appended::Logged { seq } = log.append(record(n)).await.unwrap() else {
            panic!("dropped");
        };
        // `always`: durable when append returns.
        assert!(log.status().durable_seq >= seq);
    }
    log.shutdown().await.unwrap();
    let segs = segments(dir);
    let with_data = segs
        .into_iter()
        .find(|p| std::fs::metadata(p).unwrap().len() > 0)
        .unwrap();
    (cfg, with_data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_cuts_garbage_after_the_last_record_and_keeps_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, seg) = ten_records_then_stop(dir.path()).await;
    let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&[0x17, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3])
        .unwrap();
    drop(f);

    let log = DecisionLog::open(&cfg, 1, dir.path()).await.unwrap();
    let s = log.status();
    assert_eq!(s.queue.truncated_at_open, 11);
    assert_eq!(s.last_seq, 10);
    assert_eq!(
        log.append(record(11)).await.unwrap(),
        Appended::Logged { seq: 11 }
    );
    let sidecar = Sidecar::start(&dir.path().join("sidecar.sock"), false);
    wait_until(20, "sidecar has 11", || sidecar.distinct_seqs().len() == 11).await;
    assert_eq!(sidecar.distinct_seqs(), (1..=11).collect::<Vec<_>>());
    log.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_cuts_a_torn_last_record_and_keeps_everything_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, seg) = ten_records_then_stop(dir.path()).await;
    // A crash in the middle of writing record 10: only part of its frame reached the disk.
    let len = std::fs::metadata(&seg).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 20)
        .unwrap();

    let log = DecisionLog::open(&cfg, 1, dir.path()).await.unwrap();
    let s = log.status();
    assert_eq!(s.last_seq, 9);
    assert!(s.queue.truncated_at_open > 0);
    let mut replacement = record(10);
    replacement.latency_us = 999;
    assert_eq!(
        log.append(replacement).await.unwrap(),
        Appended::Logged { seq: 10 }
    );
    let sidecar = Sidecar::start(&dir.path().join("sidecar.sock"), false);
    wait_until(20, "sidecar has 10", || sidecar.distinct_seqs().len() == 10).await;
    let got = sidecar.records();
    assert_eq!(sidecar.distinct_seqs(), (1..=10).collect::<Vec<_>>());
    // The new record 10 is the one appended after recovery, not the torn one.
    assert_eq!(got.last().unwrap().1.record.latency_us, 999);
    log.shutdown().await.unwrap();
}
