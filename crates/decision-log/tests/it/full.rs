//! A full queue under each `when_full` policy. The only sink is a sidecar that is not running, so
//! nothing is acknowledged and nothing freed until the test starts it.

use std::time::Duration;

use verdict_decision_log::AppendError;
use verdict_decision_log::Appended;
use verdict_decision_log::Config;
use verdict_decision_log::DecisionLog;
use verdict_decision_log::WhenFull;

use crate::*;

const MAX: u64 = 16 * 1024;

fn small_queue(dir: &std::path::Path, when_full: WhenFull) -> Config {
    Config {
        when_full,
        max_queue_bytes: MAX,
        segment_bytes: 4 * 1024,
        ..config(dir, vec![unix_sink(&dir.join("sidecar.sock"))])
    }
}

/// Appends `n` records one at a time, letting the writer roll segments, and sorts the outcomes.
async fn append_many(log: &DecisionLog, n: u64) -> (Vec<u64>, u64) {
    let (mut logged, mut dropped) = (Vec::new(), 0);
    for i in 1..=n {
        match log.append(record(i)).await.unwrap() {
            Appended::Logged { seq } => logged.push(seq),
            Appended::Dropped => dropped += 1,
        }
        if i % 5 == 0 {
            let seq = log.status().last_seq;
            wait_until(10, "durable", || log.status().durable_seq >= seq).await;
        }
    }
    (logged, dropped)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_newest_refuses_new_records_counts_them_and_keeps_the_old_ones() {
    let dir = tempfile::tempdir().unwrap();
    let log = DecisionLog::open(
        &small_queue(dir.path(), WhenFull::DropNewest),
        1,
        dir.path(),
    )
    .await
    .unwrap();
    let (logged, dropped) = append_many(&log, 200).await;
    assert!(dropped > 0, "the queue never filled");
    assert_eq!(logged, (1..=logged.len() as u64).collect::<Vec<_>>());
    let s = log.status();
    assert_eq!(s.drops.queue_full, dropped);
    assert!(s.queue.bytes <= MAX, "{} bytes", s.queue.bytes);
    assert_eq!(s.appended, logged.len() as u64);

    let sidecar = Sidecar::start(&dir.path().join("sidecar.sock"), false);
    wait_until(20, "all logged delivered", || {
        sidecar.distinct_seqs().len() == logged.len()
    })
    .await;
    assert_eq!(sidecar.distinct_seqs(), logged);
    // Space is back once the sidecar acknowledged: appends are logged again.
    wait_until(10, "segments released", || log.status().queue.segments == 1).await;
    assert!(matches!(
        log.append(record(0)).await.unwrap(),
        Appended::Logged { .. }
    ));
    log.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_oldest_evicts_whole_old_segments_and_counts_their_records() {
    let dir = tempfile::tempdir().unwrap();
    let log = DecisionLog::open(
        &small_queue(dir.path(), WhenFull::DropOldest),
        1,
        dir.path(),
    )
    .await
    .unwrap();
    let (logged, dropped) = append_many(&log, 200).await;
    assert_eq!(dropped, 0, "drop_oldest takes every new record");
    assert_eq!(logged, (1..=200).collect::<Vec<_>>());
    let seq = log.status().last_seq;
    wait_until(10, "durable", || log.status().durable_seq >= seq).await;
    // The last append may have set off an eviction the writer has not done yet.
    log.append(record(201)).await.unwrap();
    wait_until(10, "within the limit", || {
        log.status().queue.bytes <= MAX + 4 * 1024
    })
    .await;
    let s = log.status();
    assert!(s.drops.evicted > 0);
    assert_eq!(s.drops.queue_full, 0);

    let sidecar = Sidecar::start(&dir.path().join("sidecar.sock"), false);
    wait_until(20, "the newest delivered", || {
        sidecar.distinct_seqs().last() == Some(&201)
    })
    .await;
    let got = sidecar.distinct_seqs();
    assert!(got.windows(2).all(|w| w[0] < w[1]), "in order: {got:?}");
    // Whatever is missing was evicted and counted (a batch the sink had read before its segment
    // was evicted may still arrive, so the count can exceed what is missing).
    let missing = 201 - got.len() as u64;
    assert!(missing > 0);
    assert!(missing <= log.status().drops.evicted);
    log.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_waits_bounded_then_fails_and_proceeds_once_a_sink_frees_space() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        append_timeout_ms: 1500,
        ..small_queue(dir.path(), WhenFull::Block)
    };
    let log = DecisionLog::open(&cfg, 1, dir.path()).await.unwrap();
    let mut n = 0;
    let started = loop {
        n += 1;
        let started = tokio::time::Instant::now();
        match log.append(record(n)).await {
            Ok(Appended::Logged { seq }) => assert_eq!(seq, n),
            Ok(Appended::Dropped) => panic!("block never drops"),
            Err(AppendError::Full { waited_ms }) => {
                assert_eq!(waited_ms, 1500);
                break started;
            }
            Err(e) => panic!("{e}"),
        }
        assert!(n < 1000, "the queue never filled");
    };
    assert!(started.elapsed() >= Duration::from_millis(1500));
    let s = log.status();
    assert_eq!(s.drops.block_timeout, 1);
    assert_eq!(s.appended, n - 1);

    // A blocked append proceeds as soon as the sidecar acknowledges and segments are deleted.
    let waiting = {
        let log = log.clone();
        tokio::spawn(async move { log.append(record(0)).await })
    };
    let sidecar = Sidecar::start(&dir.path().join("sidecar.sock"), false);
    let outcome = waiting.await.unwrap();
    assert_eq!(outcome.unwrap(), Appended::Logged { seq: n });
    wait_until(20, "all delivered", || {
        sidecar.distinct_seqs().len() as u64 == n
    })
    .await;
    assert_eq!(sidecar.distinct_seqs(), (1..=n).collect::<Vec<_>>());
    log.shutdown().await.unwrap();
}
