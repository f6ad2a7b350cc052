//! Integration tests: real files, real sockets, one binary with shared helpers.

mod batch;
mod full;
mod gc;
mod mask;
mod queue;
mod sinks;

use std::io::Read;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::json;
use tokio::io::AsyncBufReadExt;
use tokio::io::AsyncWriteExt;
use tokio::io::BufReader;
use tokio::net::UnixListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use verdict_decision_log::Config;
use verdict_decision_log::FileSinkConfig;
use verdict_decision_log::LoggedRecord;
use verdict_decision_log::Record;
use verdict_decision_log::SinkConfig;
use verdict_decision_log::UnixSinkConfig;

/// A config with fast retries and the given sinks, queue under `dir`.
pub fn config(dir: &Path, sinks: Vec<SinkConfig>) -> Config {
    Config {
        enabled: true,
        dir: Some(dir.join("declog")),
        fsync_interval_ms: 2,
        retry_base_ms: 5,
        retry_max_ms: 50,
        sinks,
        ..Config::default()
    }
}

pub fn file_sink(path: &Path) -> SinkConfig {
    SinkConfig::File(FileSinkConfig {
        name: None,
        path: path.to_path_buf(),
        rotate_bytes: 1 << 30,
        keep: 2,
        batch_max: 100,
    })
}

pub fn unix_sink(path: &Path) -> SinkConfig {
    SinkConfig::Unix(UnixSinkConfig {
        name: None,
        path: path.to_path_buf(),
        batch_max: 50,
        ack_timeout_ms: 2000,
    })
}

/// A record whose request carries `n`, a secret and some properties.
pub fn record(n: u64) -> Record {
    let mut r = Record::new(
        3,
        json!({
            "subject": {"type": "User", "id": format!("u{n}"), "properties": {"ssn": "123-45-6789", "dept": "ops"}},
            "action": {"name": "login"},
            "resource": {"type": "App", "id": "a1"},
            "context": {"n": n, "password": "hunter2"}
        }),
        !n.is_multiple_of(3),
    );
    r.policies = vec![format!("p{n}")];
    r.latency_us = n;
    r
}

/// Polls `cond` every 10 ms until it holds; fails the test after `secs` seconds.
pub async fn wait_until(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Parses ndjson.
pub fn parse_lines(bytes: &[u8]) -> Vec<LoggedRecord> {
    bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect()
}

pub fn read_lines(path: &Path) -> Vec<LoggedRecord> {
    match std::fs::read(path) {
        Ok(b) => parse_lines(&b),
        Err(_) => Vec::new(),
    }
}

pub fn seqs(records: &[LoggedRecord]) -> Vec<u64> {
    records.iter().map(|r| r.seq).collect()
}

/// Segment files in the queue directory, sorted.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("declog/queue"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

/// A sidecar on a unix socket: records every line it reads (with the connection number) and
/// acknowledges each one. With `hang_up_first`, its first connection reads one line and closes
/// without acknowledging.
pub struct Sidecar {
    pub got: Arc<Mutex<Vec<(usize, LoggedRecord)>>>,
    task: JoinHandle<()>,
}

impl Sidecar {
    pub fn start(path: &Path, hang_up_first: bool) -> Self {
        let listener = UnixListener::bind(path).unwrap();
        let got: Arc<Mutex<Vec<(usize, LoggedRecord)>>> = Arc::default();
        let sink = got.clone();
        let task = tokio::spawn(async move {
            for conn in 0.. {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let sink = sink.clone();
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut lines = BufReader::new(read).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        let r: LoggedRecord = serde_json::from_str(&line).unwrap();
                        let seq = r.seq;
                        sink.lock().unwrap().push((conn, r));
                        if hang_up_first && conn == 0 {
                            return;
                        }
                        let ack = format!("{{\"ack\": {seq}}}\n");
                        if write.write_all(ack.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self { got, task }
    }

    pub fn records(&self) -> Vec<(usize, LoggedRecord)> {
        self.got.lock().unwrap().clone()
    }

    /// Distinct sequences in the order first seen.
    pub fn distinct_seqs(&self) -> Vec<u64> {
        let mut seen = std::collections::BTreeSet::new();
        self.records()
            .into_iter()
            .map(|(_, r)| r.seq)
            .filter(|s| seen.insert(*s))
            .collect()
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn gunzip(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .read_to_end(&mut out)
        .unwrap();
    out
}
