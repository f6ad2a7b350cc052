//! Verdict's decision logs: every decision (or a sample, or only denies) becomes a [`Record`],
//! appended to a per-node on-disk queue and shipped at-least-once, in order, to file, HTTP and
//! unix-socket sinks.
//!
//! Layout:
//! - [`log`]: [`DecisionLog`], the handle: `open`, `wants`, `append`, `append_batch`, `status`,
//!   `shutdown`.
//! - [`config`]: [`Config`] and the sink configurations.
//! - [`record`]: [`Record`], [`BatchRecord`], the lines sinks receive ([`Line`], [`LoggedRecord`],
//!   [`LoggedBatch`]) and their schema.
//! - `mask`: masking or removing configured request paths.
//! - `frame`, `queue`, `writer`, `reader`: the on-disk queue. Segments of length- and
//!   CRC-framed records; the writer thread group-commits them; readers follow the durable position.
//! - `cursor`, `sink`: per-sink persisted cursors and the shipper task driving each sink.
//! - [`metrics`]: atomic counters and the [`Status`] body.
//!
//! # Guarantee
//!
//! At-least-once, from the moment a record is durable; in per-node sequence order; duplicates are
//! possible (after a crash or a failed acknowledgement a batch is sent again) and detectable by
//! `(node_id, seq)`. A record is durable when [`DecisionLog::append`] returns under
//! `fsync = "always"`, and at most `fsync_interval_ms` plus one write later under
//! `fsync = "interval"`: a crash (power loss, kernel panic) loses at most that window. A process
//! crash alone loses only records not yet handed to the kernel, which is the same window. Records
//! are lost otherwise only by a drop, and every drop is counted in [`Status::drops`]:
//! `drop_newest` and `drop_oldest` when the queue is full, `max_retries` when set, and corruption
//! found inside an old segment.
//!
//! # On disk
//!
//! `DIR/queue/NNNNNNNNNNNNNNNNNNNN.seg` are segments named by their first sequence;
//! `DIR/cursors/*.cursor` hold each sink's highest acknowledged sequence. A segment is deleted once
//! every configured sink's cursor is past it. Opening after a crash cuts a torn or corrupt tail
//! off the last segment and keeps every whole record before it; the sequence continues after the
//! last stored record (or the furthest cursor, whichever is later).
//!
//! # Sinks
//!
//! Each sink is a task with its own cursor: a slow or failing sink delays only itself (and holds
//! its segments on disk). Failed deliveries are retried with exponential backoff and jitter
//! (`retry_base_ms`, `retry_max_ms`), forever unless `max_retries` is set.
//!
//! - **file**: lines appended and fsynced per batch, then acknowledged; rotated by size.
//! - **http**: `POST` per batch, `Content-Type: application/x-ndjson`, `Content-Encoding: gzip`;
//!   any 2xx acknowledges the batch.
//! - **unix**: the protocol below.
//!
//! # Unix-socket protocol
//!
//! Verdict connects to the sidecar's stream socket and writes ndjson records, one per line, in
//! sequence order. After each batch (at most `batch_max` records) it waits for the sidecar to write
//! back a line `{"ack": SEQ}\n`, where `SEQ` is the highest sequence the sidecar has durably
//! taken; acknowledgements are cumulative, and any `SEQ` at or above the batch's last sequence
//! acknowledges the batch (lower ones are read and ignored). So the sidecar should acknowledge
//! whenever it has taken everything it has read. If no covering acknowledgement arrives within
//! `ack_timeout_ms`, or the connection closes, or a line is not of that form, Verdict closes the
//! connection, reconnects with backoff, and resends from the first unacknowledged record: the
//! sidecar may see a sequence again and should drop lines with `seq` ≤ what it has already taken.
//!
//! # Zero cost when off
//!
//! The server holds an `Option<DecisionLog>` and opens one only when [`Config::enabled`]; when
//! off, nothing here runs. When on, [`DecisionLog::wants`] decides before a record is built.
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod config;
pub mod log;
pub mod metrics;
pub mod record;

mod backoff;
mod cursor;
mod error;
mod frame;
mod mask;
mod queue;
mod reader;
mod sink;
mod writer;

pub use config::Config;
pub use config::FileSinkConfig;
pub use config::FsyncMode;
pub use config::HttpSinkConfig;
pub use config::MaskMode;
pub use config::SinkConfig;
pub use config::UnixSinkConfig;
pub use config::WhenFull;
pub use error::AppendError;
pub use error::OpenError;
pub use error::ShutdownError;
pub use log::Appended;
pub use log::DecisionLog;
pub use metrics::Status;
pub use record::BatchRecord;
pub use record::Line;
pub use record::LoggedBatch;
pub use record::LoggedRecord;
pub use record::Record;
