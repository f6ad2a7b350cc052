//! Configuration: one serde struct, every field documented, defaults from named functions.
//!
//! In the node's TOML it is meant to sit under `[decision_log]`, with one `[[decision_log.sinks]]`
//! table per sink:
//!
//! ```toml
//! [decision_log]
//! enabled = true
//! fsync = "interval"          # or "always": an append returns only after its fsync
//! fsync_interval_ms = 10
//! when_full = "block"         # or "drop_newest", "drop_oldest"
//! max_batch_bytes = 4194304   # the records of one batch, estimated before it is decided
//! mask = ["subject.properties.ssn", "context.password"]
//!
//! [[decision_log.sinks]]
//! type = "file"
//! path = "/var/log/verdict/decisions.ndjson"
//!
//! [[decision_log.sinks]]
//! type = "http"
//! url = "https://collector.example/ingest"
//!
//! [[decision_log.sinks]]
//! type = "unix"
//! path = "/run/verdict/decisions.sock"
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use serde::Serialize;

/// Decision-log settings. Off by default; when off the server should not open a [`crate::DecisionLog`]
/// at all (it holds an `Option`), so logging costs nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Turns decision logging on.
    pub enabled: bool,
    /// Where the queue (`queue/`) and the sinks' cursors (`cursors/`) live. Unset: `decision-log`
    /// under the node's data directory (the `data_dir` argument of [`crate::DecisionLog::open`]).
    pub dir: Option<PathBuf>,
    /// Fraction of decisions logged, from 0.0 to 1.0, drawn at random per decision.
    pub sample_rate: f64,
    /// Log only denies (then `sample_rate` applies to the denies).
    pub only_denies: bool,
    /// Dotted JSON paths in the request to mask or remove before a record is written, e.g.
    /// `subject.properties.ssn`; a `*` segment matches every key of an object or element of an array
    /// (`resource.properties.*`). Keys containing a dot cannot be named.
    pub mask: Vec<String>,
    /// What happens to a value at a `mask` path.
    pub mask_mode: MaskMode,
    /// The value written in place of a masked one under `mask_mode = "mask"`.
    pub mask_with: String,
    /// When an appended record is fsynced.
    pub fsync: FsyncMode,
    /// Group-commit interval for `fsync = "interval"`, in milliseconds: the writer waits this long
    /// after the first record of a batch arrives, then writes and fsyncs the batch. A crash loses at
    /// most the records appended in the last interval plus one write.
    pub fsync_interval_ms: u64,
    /// Most bytes the queue holds: records on disk not yet deleted (a segment is deleted whole, once
    /// every sink has acknowledged it) plus records waiting for the writer. At least twice
    /// `segment_bytes`.
    pub max_queue_bytes: u64,
    /// What an append does when the queue is full.
    pub when_full: WhenFull,
    /// Most bytes the records of one batch (`POST /access/v1/evaluations`) may be estimated to
    /// take, checked before the batch is decided: its batch line with the defaults, plus each
    /// item's own request fields and [`crate::record::DECISION_LINE_OVERHEAD`] per item. A batch
    /// over it is refused whole (`413 decision_log_batch_too_large`), nothing decided or logged.
    /// At most half of `max_queue_bytes` is used, whatever is set. The default takes every batch
    /// the default body and batch limits allow (1 MiB, 1,000 items: about 1.5 MiB of records).
    pub max_batch_bytes: u64,
    /// Longest an append waits, in milliseconds: for space under `when_full = "block"`, and for its
    /// fsync under `fsync = "always"`. Past it the append fails (and the decision should too).
    pub append_timeout_ms: u64,
    /// A segment file is closed and a new one started once it holds this many bytes (it may exceed
    /// it by one write batch).
    pub segment_bytes: u64,
    /// First retry delay of a failing sink, in milliseconds; it doubles per attempt.
    pub retry_base_ms: u64,
    /// Longest retry delay, in milliseconds. Each delay is drawn at random between half of it and
    /// all of it (jitter), so that nodes do not retry in step.
    pub retry_max_ms: u64,
    /// Attempts per batch before it is skipped and counted as dropped (`retries_exhausted`).
    /// Unset: retry forever.
    pub max_retries: Option<u32>,
    /// Where records go. Each sink reads the queue on its own, in order, from its own cursor.
    pub sinks: Vec<SinkConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            enabled: false,
            dir: None,
            sample_rate: 1.0,
            only_denies: false,
            mask: Vec::new(),
            mask_mode: MaskMode::Mask,
            mask_with: default_mask_with(),
            fsync: FsyncMode::Interval,
            fsync_interval_ms: 10,
            max_queue_bytes: 512 * 1024 * 1024,
            when_full: WhenFull::Block,
            max_batch_bytes: 4 * 1024 * 1024,
            append_timeout_ms: 1000,
            segment_bytes: 16 * 1024 * 1024,
            retry_base_ms: 100,
            retry_max_ms: 30_000,
            max_retries: None,
            sinks: Vec::new(),
        }
    }
}

fn default_mask_with() -> String {
    "***".to_string()
}

/// What happens to a value at a masked path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskMode {
    /// Replace the value with `mask_with` (the field stays visible, its value does not).
    Mask,
    /// Remove the field (or array element) altogether.
    Remove,
}

/// When a record becomes durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncMode {
    /// Audit-grade: an append returns only after its record is fsynced. Concurrent appends share
    /// one fsync.
    Always,
    /// Group commit every `fsync_interval_ms`; an append returns at once.
    Interval,
}

/// What an append does when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Wait up to `append_timeout_ms` for sinks to free space, then fail with
    /// [`crate::AppendError::Full`] (counted as `block_timeout`).
    Block,
    /// Drop the record being appended (counted as `queue_full`).
    DropNewest,
    /// Delete the oldest segment even if some sink has not acknowledged it (its records counted as
    /// `evicted`); sinks behind it skip ahead, leaving a gap in the sequence they see. A sink that
    /// had already read into an evicted segment may still deliver those records.
    DropOldest,
}

/// One destination for records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SinkConfig {
    /// ndjson appended to a local file, rotated by size, for log shippers.
    File(FileSinkConfig),
    /// Batched `POST`s of (gzipped) ndjson; a 2xx answer acknowledges the batch.
    Http(HttpSinkConfig),
    /// An ndjson stream to a sidecar over a unix domain socket; see the crate docs for the protocol.
    Unix(UnixSinkConfig),
}

impl SinkConfig {
    /// The sink's name: the configured one, or `file:PATH`, `http:URL`, `unix:PATH`. The cursor is
    /// kept under this name, so renaming a sink (or changing its target when unnamed) starts it
    /// afresh from the oldest record in the queue.
    pub fn name(&self) -> String {
        match self {
            SinkConfig::File(c) => c
                .name
                .clone()
                .unwrap_or_else(|| format!("file:{}", c.path.display())),
            SinkConfig::Http(c) => c.name.clone().unwrap_or_else(|| format!("http:{}", c.url)),
            SinkConfig::Unix(c) => c
                .name
                .clone()
                .unwrap_or_else(|| format!("unix:{}", c.path.display())),
        }
    }

    /// `file`, `http` or `unix`.
    pub fn kind(&self) -> &'static str {
        match self {
            SinkConfig::File(_) => "file",
            SinkConfig::Http(_) => "http",
            SinkConfig::Unix(_) => "unix",
        }
    }
}

/// A file sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// Names the sink's cursor; see [`SinkConfig::name`].
    #[serde(default)]
    pub name: Option<String>,
    /// The file records are appended to.
    pub path: PathBuf,
    /// Rotate before a write would take the file past this many bytes: `path` becomes `path.1`,
    /// `path.1` becomes `path.2`, and so on.
    #[serde(default = "default_rotate_bytes")]
    pub rotate_bytes: u64,
    /// Rotated files kept (`path.1` … `path.N`); older ones are deleted. 0 keeps none.
    #[serde(default = "default_keep")]
    pub keep: u32,
    /// Most records written (and fsynced) at once.
    #[serde(default = "default_file_batch_max")]
    pub batch_max: usize,
}

fn default_rotate_bytes() -> u64 {
    100 * 1024 * 1024
}

fn default_keep() -> u32 {
    5
}

fn default_file_batch_max() -> usize {
    1000
}

/// An HTTP sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSinkConfig {
    /// Names the sink's cursor; see [`SinkConfig::name`].
    #[serde(default)]
    pub name: Option<String>,
    /// Where batches are `POST`ed (`http://` or `https://`).
    pub url: String,
    /// Most records in one request.
    #[serde(default = "default_http_batch_max")]
    pub batch_max: usize,
    /// How long a batch that is not full waits for more records before it is sent, in ms.
    #[serde(default = "default_batch_linger_ms")]
    pub batch_linger_ms: u64,
    /// Send bodies with `Content-Encoding: gzip`.
    #[serde(default = "default_true")]
    pub gzip: bool,
    /// A request that has not been answered in this many milliseconds fails (and is retried).
    #[serde(default = "default_http_timeout_ms")]
    pub timeout_ms: u64,
    /// Extra request headers, e.g. `Authorization`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

fn default_http_batch_max() -> usize {
    500
}

fn default_batch_linger_ms() -> u64 {
    100
}

fn default_true() -> bool {
    true
}

fn default_http_timeout_ms() -> u64 {
    10_000
}

/// A unix domain socket sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnixSinkConfig {
    /// Names the sink's cursor; see [`SinkConfig::name`].
    #[serde(default)]
    pub name: Option<String>,
    /// The sidecar's listening socket.
    pub path: PathBuf,
    /// Most records written before waiting for the sidecar's acknowledgement.
    #[serde(default = "default_unix_batch_max")]
    pub batch_max: usize,
    /// How long to wait for an acknowledgement covering a batch, in ms, before reconnecting and
    /// sending it again.
    #[serde(default = "default_ack_timeout_ms")]
    pub ack_timeout_ms: u64,
}

fn default_unix_batch_max() -> usize {
    500
}

fn default_ack_timeout_ms() -> u64 {
    10_000
}

impl Config {
    /// Checks what serde cannot; the message says which field to fix.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.sample_rate) {
            return Err(format!(
                "`sample_rate` is {}: it must be between 0.0 and 1.0",
                self.sample_rate
            ));
        }
        if self.max_batch_bytes == 0 {
            return Err("`max_batch_bytes` must be positive".to_string());
        }
        if self.segment_bytes == 0 {
            return Err("`segment_bytes` must be positive".to_string());
        }
        if self.max_queue_bytes < 2 * self.segment_bytes {
            return Err(format!(
                "`max_queue_bytes` ({}) must be at least twice `segment_bytes` ({}): space is freed a \
                 segment at a time",
                self.max_queue_bytes, self.segment_bytes
            ));
        }
        if self.sinks.is_empty() {
            return Err(
                "decision logging has no sink: add a `[[decision_log.sinks]]` table".to_string(),
            );
        }
        let mut names = std::collections::BTreeSet::new();
        for sink in &self.sinks {
            let name = sink.name();
            if !names.insert(name.clone()) {
                return Err(format!(
                    "two sinks are named `{name}`: give each a distinct `name`"
                ));
            }
            let batch_max = match sink {
                SinkConfig::File(c) => c.batch_max,
                SinkConfig::Http(c) => c.batch_max,
                SinkConfig::Unix(c) => c.batch_max,
            };
            if batch_max == 0 {
                return Err(format!("sink `{name}`: `batch_max` must be positive"));
            }
        }
        for path in &self.mask {
            if path.is_empty() || path.split('.').any(str::is_empty) {
                return Err(format!(
                    "mask path `{path}` has an empty segment: write dotted keys like `context.password`"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_off_and_valid_once_a_sink_is_added() {
        let mut c = Config::default();
        assert!(!c.enabled);
        assert_eq!(c.fsync, FsyncMode::Interval);
        assert_eq!(c.fsync_interval_ms, 10);
        assert_eq!(c.max_retries, None);
        assert!(c.validate().is_err(), "no sink");
        c.sinks.push(SinkConfig::Unix(UnixSinkConfig {
            name: None,
            path: "/tmp/s".into(),
            batch_max: 1,
            ack_timeout_ms: 1,
        }));
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn parses_a_toml_table_with_every_sink_kind() {
        let text = r#"
            enabled = true
            fsync = "always"
            when_full = "drop_oldest"
            max_batch_bytes = 1048576
            mask = ["subject.properties.ssn", "context.*"]
            mask_mode = "remove"

            [[sinks]]
            type = "file"
            path = "/var/log/d.ndjson"
            keep = 3

            [[sinks]]
            type = "http"
            name = "collector"
            url = "http://127.0.0.1:9/ingest"
            headers = { authorization = "Bearer x" }

            [[sinks]]
            type = "unix"
            path = "/run/d.sock"
        "#;
        let c: Config = toml::from_str(text).unwrap();
        assert!(c.enabled);
        assert_eq!(c.fsync, FsyncMode::Always);
        assert_eq!(c.when_full, WhenFull::DropOldest);
        assert_eq!(c.max_batch_bytes, 1 << 20);
        assert_eq!(c.mask_mode, MaskMode::Remove);
        let names: Vec<String> = c.sinks.iter().map(SinkConfig::name).collect();
        assert_eq!(
            names,
            ["file:/var/log/d.ndjson", "collector", "unix:/run/d.sock"]
        );
        match &c.sinks[1] {
            SinkConfig::Http(h) => {
                assert!(h.gzip);
                assert_eq!(h.batch_max, 500);
                assert_eq!(h.headers["authorization"], "Bearer x");
            }
            other => panic!("expected http, got {other:?}"),
        }
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn rejects_unknown_fields_and_bad_values() {
        assert!(toml::from_str::<Config>("enabeld = true").is_err());
        assert!(
            toml::from_str::<Config>("[[sinks]]\ntype = \"file\"\npath = \"x\"\nbogus = 1")
                .is_err()
        );
        let c = Config {
            sample_rate: 1.5,
            ..Config::default()
        };
        assert!(c.validate().unwrap_err().contains("sample_rate"));
        let c = Config {
            max_queue_bytes: 10,
            segment_bytes: 10,
            ..Config::default()
        };
        assert!(c.validate().unwrap_err().contains("max_queue_bytes"));
        let c = Config {
            max_batch_bytes: 0,
            ..Config::default()
        };
        assert!(c.validate().unwrap_err().contains("max_batch_bytes"));
    }
}
