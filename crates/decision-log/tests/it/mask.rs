//! Masking applies to every record before it is stored.

use verdict_decision_log::Config;
use verdict_decision_log::DecisionLog;
use verdict_decision_log::MaskMode;

use crate::*;

async fn logged_with(mode: MaskMode) -> (Vec<verdict_decision_log::LoggedRecord>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.ndjson");
    let cfg = Config {
        mask: vec!["subject.properties.ssn".into(), "context.password".into()],
        mask_mode: mode,
        ..config(dir.path(), vec![file_sink(&out)])
    };
    let log = DecisionLog::open(&cfg, 1, dir.path()).await.unwrap();
    for n in 1..=50 {
        log.append(record(n)).await.unwrap();
    }
    wait_until(10, "50 in the file", || read_lines(&out).len() == 50).await;
    log.shutdown().await.unwrap();
    // The secrets are not in the queue files either.
    let mut stored = Vec::new();
    for seg in segments(dir.path()) {
        stored.extend(std::fs::read(seg).unwrap());
    }
    (read_lines(&out), stored)
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_mode_removes_the_configured_fields_from_every_record() {
    let (lines, stored) = logged_with(MaskMode::Remove).await;
    for l in &lines {
        let req = &l.record.request;
        assert!(req["subject"]["properties"].get("ssn").is_none());
        assert!(req["context"].get("password").is_none());
        assert_eq!(req["subject"]["properties"]["dept"], "ops");
        assert_eq!(req["context"]["n"], l.seq);
    }
    assert!(!contains(&stored, "123-45-6789") && !contains(&stored, "hunter2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mask_mode_replaces_the_configured_values_in_every_record() {
    let (lines, stored) = logged_with(MaskMode::Mask).await;
    for l in &lines {
        let req = &l.record.request;
        assert_eq!(req["subject"]["properties"]["ssn"], "***");
        assert_eq!(req["context"]["password"], "***");
        assert_eq!(req["subject"]["id"], format!("u{}", l.seq));
    }
    assert!(!contains(&stored, "123-45-6789") && !contains(&stored, "hunter2"));
}
