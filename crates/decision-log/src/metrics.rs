//! Counters kept in atomics (the append path only increments them) and the [`Status`] snapshot
//! built from them, the body of `GET /v1/decision-logs/status`.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Mutex;

use serde::Deserialize;
use serde::Serialize;

use crate::config::FsyncMode;
use crate::config::WhenFull;
use crate::record::now_ms;

/// Why records were not (or will not be) delivered. Every drop is counted under one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DropReason {
    QueueFull,
    Evicted,
    BlockTimeout,
    WriteFailed,
    RetriesExhausted,
    Corrupt,
}

/// Drop counters, by reason.
#[derive(Debug, Default)]
pub(crate) struct DropCounters {
    queue_full: AtomicU64,
    evicted: AtomicU64,
    block_timeout: AtomicU64,
    write_failed: AtomicU64,
    retries_exhausted: AtomicU64,
    corrupt: AtomicU64,
}

impl DropCounters {
    pub(crate) fn add(&self, reason: DropReason, n: u64) {
        let c = match reason {
            DropReason::QueueFull => &self.queue_full,
            DropReason::Evicted => &self.evicted,
            DropReason::BlockTimeout => &self.block_timeout,
            DropReason::WriteFailed => &self.write_failed,
            DropReason::RetriesExhausted => &self.retries_exhausted,
            DropReason::Corrupt => &self.corrupt,
        };
        c.fetch_add(n, Relaxed);
    }

    pub(crate) fn write_failed(&self) -> u64 {
        self.write_failed.load(Relaxed)
    }

    fn snapshot(&self) -> Drops {
        Drops {
            queue_full: self.queue_full.load(Relaxed),
            evicted: self.evicted.load(Relaxed),
            block_timeout: self.block_timeout.load(Relaxed),
            write_failed: self.write_failed.load(Relaxed),
            retries_exhausted: self.retries_exhausted.load(Relaxed),
            corrupt: self.corrupt.load(Relaxed),
        }
    }
}

/// A failure remembered for the status: the last one only.
#[derive(Debug, Default)]
pub(crate) struct LastError(Mutex<Option<ErrorStatus>>);

impl LastError {
    pub(crate) fn set(&self, message: String) {
        let mut g = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *g = Some(ErrorStatus {
            message,
            at_ms: now_ms(),
        });
    }

    pub(crate) fn get(&self) -> Option<ErrorStatus> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Queue-wide counters.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// Records accepted by `append` since open.
    pub(crate) appended: AtomicU64,
    /// Highest sequence assigned (0: none yet).
    pub(crate) last_seq: AtomicU64,
    /// Highest sequence fsynced.
    pub(crate) durable_seq: AtomicU64,
    /// First sequence still stored (the oldest segment's base).
    pub(crate) oldest_seq: AtomicU64,
    /// Bytes on disk plus bytes waiting for the writer.
    pub(crate) queue_bytes: AtomicU64,
    /// Segment files.
    pub(crate) segments: AtomicU64,
    /// Bytes cut from a torn tail when the queue was opened.
    pub(crate) truncated_at_open: AtomicU64,
    pub(crate) drops: DropCounters,
    pub(crate) writer_error: LastError,
}

/// One sink's counters, shared between its task and the status.
#[derive(Debug)]
pub(crate) struct SinkState {
    pub(crate) name: String,
    pub(crate) kind: &'static str,
    /// Highest sequence acknowledged and persisted in the cursor. Segments are deleted by the
    /// minimum of these, so it is only raised after the cursor file is durable.
    pub(crate) acked: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) retries: AtomicU64,
    /// Timestamp of the oldest record read but not yet acknowledged (0: none).
    pub(crate) oldest_unacked_ms: AtomicU64,
    pub(crate) last_error: LastError,
}

impl SinkState {
    pub(crate) fn new(name: String, kind: &'static str, acked: u64) -> Self {
        Self {
            name,
            kind,
            acked: AtomicU64::new(acked),
            delivered: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            oldest_unacked_ms: AtomicU64::new(0),
            last_error: LastError::default(),
        }
    }
}

/// The decision log's state, for `GET /v1/decision-logs/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The node whose records these are.
    pub node_id: u64,
    /// Configured fsync mode.
    pub fsync: FsyncMode,
    /// Configured full-queue policy.
    pub when_full: WhenFull,
    /// Records accepted since the log was opened.
    pub appended: u64,
    /// Highest sequence assigned.
    pub last_seq: u64,
    /// Highest sequence fsynced; records up to here survive a crash.
    pub durable_seq: u64,
    /// The on-disk queue.
    pub queue: QueueStatus,
    /// Records not delivered, by reason.
    pub drops: Drops,
    /// The writer's last I/O failure (it retries until the write succeeds).
    pub writer_last_error: Option<ErrorStatus>,
    /// Per sink, in configuration order.
    pub sinks: Vec<SinkStatus>,
}

/// The queue's size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueStatus {
    /// Records stored (including acknowledged ones whose segment is not deleted yet).
    pub records: u64,
    /// Records some sink has not acknowledged.
    pub unacknowledged: u64,
    /// Bytes stored plus bytes waiting to be written.
    pub bytes: u64,
    /// Configured maximum.
    pub max_bytes: u64,
    /// Segment files.
    pub segments: u64,
    /// Age of the oldest record a sink has read but not had acknowledged, in ms; `None` when every
    /// sink is caught up.
    pub oldest_unacked_age_ms: Option<u64>,
    /// Bytes of torn or corrupt tail cut off when the queue was opened.
    pub truncated_at_open: u64,
}

/// Drop counters, by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drops {
    /// `when_full = "drop_newest"`: appends refused because the queue was full.
    pub queue_full: u64,
    /// `when_full = "drop_oldest"`: records deleted before every sink acknowledged them.
    pub evicted: u64,
    /// `when_full = "block"`: appends that waited `append_timeout_ms` for space and failed.
    pub block_timeout: u64,
    /// Records lost because the writer could not write them before shutdown.
    pub write_failed: u64,
    /// Records skipped by a sink after `max_retries` failed attempts (counted once per sink).
    pub retries_exhausted: u64,
    /// Records lost to corruption found inside a sealed segment.
    pub corrupt: u64,
}

/// A remembered failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorStatus {
    /// What went wrong.
    pub message: String,
    /// When, in ms since the Unix epoch.
    pub at_ms: u64,
}

/// One sink's progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SinkStatus {
    /// The sink's name (see [`crate::SinkConfig::name`]).
    pub name: String,
    /// `file`, `http` or `unix`.
    pub kind: String,
    /// Highest sequence acknowledged (persisted in its cursor).
    pub acked_seq: u64,
    /// Records appended but not yet acknowledged by this sink.
    pub lag: u64,
    /// Records acknowledged since open.
    pub delivered: u64,
    /// Failed delivery attempts since open.
    pub retries: u64,
    /// Age of the oldest record this sink has read but not had acknowledged, in ms.
    pub oldest_unacked_age_ms: Option<u64>,
    /// The last delivery failure.
    pub last_error: Option<ErrorStatus>,
}

impl Metrics {
    /// Builds the status; reads atomics and, for the error messages only, two small mutexes.
    pub(crate) fn status(
        &self,
        node_id: u64,
        fsync: FsyncMode,
        when_full: WhenFull,
        max_bytes: u64,
        sinks: &[std::sync::Arc<SinkState>],
    ) -> Status {
        let now = now_ms();
        let last_seq = self.last_seq.load(Relaxed);
        let age = |ts: u64| (ts != 0).then(|| now.saturating_sub(ts));
        let sinks: Vec<SinkStatus> = sinks
            .iter()
            .map(|s| {
                let acked = s.acked.load(Relaxed);
                SinkStatus {
                    name: s.name.clone(),
                    kind: s.kind.to_string(),
                    acked_seq: acked,
                    lag: last_seq.saturating_sub(acked),
                    delivered: s.delivered.load(Relaxed),
                    retries: s.retries.load(Relaxed),
                    oldest_unacked_age_ms: age(s.oldest_unacked_ms.load(Relaxed)),
                    last_error: s.last_error.get(),
                }
            })
            .collect();
        Status {
            node_id,
            fsync,
            when_full,
            appended: self.appended.load(Relaxed),
            last_seq,
            durable_seq: self.durable_seq.load(Relaxed),
            queue: QueueStatus {
                records: (last_seq + 1).saturating_sub(self.oldest_seq.load(Relaxed)),
                unacknowledged: sinks.iter().map(|s| s.lag).max().unwrap_or(0),
                bytes: self.queue_bytes.load(Relaxed),
                max_bytes,
                segments: self.segments.load(Relaxed),
                oldest_unacked_age_ms: sinks.iter().filter_map(|s| s.oldest_unacked_age_ms).max(),
                truncated_at_open: self.truncated_at_open.load(Relaxed),
            },
            drops: self.drops.snapshot(),
            writer_last_error: self.writer_error.get(),
            sinks,
        }
    }
}
