//! `append_batch`: a batch's defaults are stored once, ahead of its decisions, which name it; the
//! group is queued all or none.

use serde_json::json;
use serde_json::Value;
use verdict_decision_log::AppendError;
use verdict_decision_log::Appended;
use verdict_decision_log::BatchRecord;
use verdict_decision_log::Config;
use verdict_decision_log::DecisionLog;
use verdict_decision_log::Line;
use verdict_decision_log::Record;
use verdict_decision_log::WhenFull;

use crate::*;

/// A default `context` of this many bytes: what used to be copied into every item's record.
const BIG: usize = 64 * 1024;

fn defaults() -> Value {
    json!({
        "subject": {"type": "User", "id": "u", "properties": {"token": "v4.local.secret-token"}},
        "action": {"name": "read"},
        "context": {"blob": "x".repeat(BIG), "password": "hunter2"},
    })
}

/// The records of `n` items that bring only their own resource (and item 0 its own context).
fn items(n: u64) -> Vec<Record> {
    (0..n)
        .map(|i| {
            let mut request = json!({"resource": {"type": "Doc", "id": format!("d{i}")}});
            if i == 0 {
                request["context"] = json!({"password": "own-secret"});
            }
            Record::new(4, request, i % 2 == 0)
        })
        .collect()
}

fn parse_any(bytes: &[u8]) -> Vec<Line> {
    bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_stores_its_defaults_once_masked_and_each_item_names_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.ndjson");
    let cfg = Config {
        mask: vec!["context.password".into()],
        ..config(dir.path(), vec![file_sink(&out)])
    };
    let log = DecisionLog::open(&cfg, 1, dir.path()).await.unwrap();
    log.append(record(1)).await.unwrap();
    let batch = BatchRecord::new(4, defaults());
    let id = batch.batch_id;
    let got = log.append_batch(batch, items(50)).await.unwrap();
    assert_eq!(
        got,
        Appended::Logged { seq: 2 },
        "the batch line's sequence"
    );
    log.append(record(2)).await.unwrap();
    wait_until(10, "53 lines in the file", || {
        std::fs::read(&out).map_or(0, |b| parse_any(&b).len()) == 53
    })
    .await;
    log.shutdown().await.unwrap();

    let bytes = std::fs::read(&out).unwrap();
    // The defaults once, not once per item.
    assert!(bytes.len() < BIG + 50 * 1024, "{} bytes", bytes.len());
    for secret in ["hunter2", "own-secret", "secret-token"] {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{secret} reached the sink"
        );
    }
    let lines = parse_any(&bytes);
    let Some(Line::Batch(b)) = lines.get(1) else {
        panic!("line 2 is not the batch line: {:?}", lines.get(1));
    };
    assert_eq!((b.seq, b.batch.items, b.batch.batch_id), (2, 50, id));
    assert_eq!(b.batch.defaults["context"]["password"], "***");
    assert_eq!(
        b.batch.defaults["subject"]["properties"]["token"], "***",
        "a token in the defaults is masked like one in a request"
    );
    for (i, line) in lines[2..52].iter().enumerate() {
        let Line::Decision(d) = line else {
            panic!("item {i} is not a decision line: {line:?}");
        };
        assert_eq!(
            d.seq,
            3 + i as u64,
            "consecutive, right after the batch line"
        );
        assert_eq!(d.record.batch_id, Some(id));
        let full = b.batch.request_of(&d.record);
        assert_eq!(full["resource"]["id"], format!("d{i}"));
        assert_eq!(full["subject"]["id"], "u");
        if i == 0 {
            assert_eq!(
                full["context"],
                json!({"password": "***"}),
                "its own context"
            );
        } else {
            assert_eq!(full["context"]["blob"].as_str().map(str::len), Some(BIG));
        }
    }
    let Line::Decision(last) = &lines[52] else {
        panic!("the last line is not a decision");
    };
    assert_eq!((last.seq, last.record.batch_id), (53, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_does_not_fit_is_queued_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let sidecar = dir.path().join("sidecar.sock");
    for when_full in [WhenFull::Block, WhenFull::DropNewest] {
        let sub = dir.path().join(format!("{when_full:?}"));
        let cfg = Config {
            when_full,
            max_queue_bytes: 256 * 1024,
            segment_bytes: 64 * 1024,
            append_timeout_ms: 200,
            // Nobody listens, so nothing is acknowledged and nothing freed.
            ..config(&sub, vec![unix_sink(&sidecar)])
        };
        let log = DecisionLog::open(&cfg, 1, &sub).await.unwrap();
        // Two batches of ~66 KiB fit, with room to spare; the third does not.
        for _ in 0..2 {
            let b = BatchRecord::new(4, defaults());
            assert!(matches!(
                log.append_batch(b, items(20)).await,
                Ok(Appended::Logged { .. })
            ));
        }
        let before = log.status();
        let mut fills = 0;
        let outcome = loop {
            let b = BatchRecord::new(4, defaults());
            let before_this = log.status().last_seq;
            match log.append_batch(b, items(20)).await {
                Ok(Appended::Logged { seq }) => assert_eq!(seq, before_this + 1),
                other => break other,
            }
            fills += 1;
            assert!(fills < 10, "the queue never filled");
        };
        let s = log.status();
        let expected_last = before.last_seq + fills * 21;
        assert_eq!(
            s.last_seq, expected_last,
            "{when_full:?}: none of it queued"
        );
        assert_eq!(s.appended, expected_last);
        match when_full {
            WhenFull::Block => {
                assert!(
                    matches!(outcome, Err(AppendError::Full { .. })),
                    "{outcome:?}"
                );
                assert_eq!(s.drops.block_timeout, 21, "the whole group counted");
            }
            _ => {
                assert_eq!(outcome.unwrap(), Appended::Dropped);
                assert_eq!(s.drops.queue_full, 21, "the whole group counted");
            }
        }
        // A single record that fits is still taken.
        assert!(matches!(
            log.append(record(1)).await,
            Ok(Appended::Logged { .. })
        ));
        log.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_batch_budget_is_at_most_half_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), vec![file_sink(&dir.path().join("o"))]);
    let log = DecisionLog::open(&cfg, 1, dir.path()).await.unwrap();
    assert_eq!(log.max_batch_bytes(), 4 * 1024 * 1024);
    log.shutdown().await.unwrap();
    let small = Config {
        max_queue_bytes: 1024 * 1024,
        segment_bytes: 256 * 1024,
        ..config(dir.path(), vec![file_sink(&dir.path().join("o"))])
    };
    let log = DecisionLog::open(&small, 1, dir.path()).await.unwrap();
    assert_eq!(log.max_batch_bytes(), 512 * 1024);
    log.shutdown().await.unwrap();
}
