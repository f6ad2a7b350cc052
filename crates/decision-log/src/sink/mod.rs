//! Sinks and the shipper that drives each one.
//!
//! Every sink runs as its own task with its own [`Reader`] and persisted [`Cursor`]: read a batch
//! of durable records after the cursor, deliver it (retrying with backoff and jitter until it is
//! acknowledged), persist the cursor, then let the queue delete the segments every sink has
//! passed. A batch is acknowledged whole or not at all, so after a crash a sink resumes at the
//! first unacknowledged batch: at-least-once, in order.
//!
//! Acknowledgements are coalesced: the cursor is persisted at most once per [`ACK_INTERVAL`], and
//! at the latest that long after a delivery (each store is a file sync, a file write, two fsyncs
//! and a rename; once per group commit it cost several per cent of a busy node's CPU). A crash
//! re-delivers what was delivered but not yet acknowledged: at most one interval's worth.

mod file;
mod http;
mod unix;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use tokio::sync::watch;

use crate::backoff;
use crate::config::SinkConfig;
use crate::cursor::Cursor;
use crate::metrics::DropReason;
use crate::metrics::Metrics;
use crate::metrics::SinkState;
use crate::queue::Queue;
use crate::reader::Batch;
use crate::reader::Reader;
use crate::writer::Durable;

/// Under load, the longest a delivered batch waits for its acknowledgement (cursor store).
pub(crate) const ACK_INTERVAL: Duration = Duration::from_millis(100);

/// Delivered, not yet acknowledged: the last sequence number and how many records.
#[derive(Debug, Clone, Copy)]
struct Pending {
    last_seq: u64,
    count: u64,
}

/// What [`Shipper::next_batch`] found.
enum Next {
    Batch(Batch),
    /// The pending acknowledgement is due: nothing more to read came before its deadline.
    AckDue,
}

/// A configured destination.
#[derive(Debug)]
pub(crate) enum Sink {
    File(file::FileSink),
    Http(http::HttpSink),
    Unix(unix::UnixSink),
}

impl Sink {
    /// Builds a sink and says how it batches: `(sink, batch_max, linger)`.
    pub(crate) fn new(config: &SinkConfig) -> Result<(Self, usize, Duration), String> {
        Ok(match config {
            SinkConfig::File(c) => (
                Sink::File(file::FileSink::new(c)),
                c.batch_max,
                Duration::ZERO,
            ),
            SinkConfig::Http(c) => (
                Sink::Http(http::HttpSink::new(c)?),
                c.batch_max,
                Duration::from_millis(c.batch_linger_ms),
            ),
            SinkConfig::Unix(c) => (
                Sink::Unix(unix::UnixSink::new(c)),
                c.batch_max,
                Duration::ZERO,
            ),
        })
    }

    async fn deliver(&mut self, batch: &Batch) -> Result<(), String> {
        match self {
            Sink::File(s) => s.deliver(batch).await,
            Sink::Http(s) => s.deliver(batch).await,
            Sink::Unix(s) => s.deliver(batch).await,
        }
    }

    /// Makes everything delivered so far durable at the destination, before it is acknowledged.
    /// HTTP and unix-socket deliveries are acknowledged by the receiver and need nothing more.
    async fn sync(&mut self) -> Result<(), String> {
        match self {
            Sink::File(s) => s.sync().await,
            Sink::Http(_) | Sink::Unix(_) => Ok(()),
        }
    }
}

/// Retry settings, from the config.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retry {
    pub(crate) base: Duration,
    pub(crate) max: Duration,
    /// `None`: forever.
    pub(crate) max_attempts: Option<u32>,
}

/// Everything one sink's task owns.
#[derive(Debug)]
pub(crate) struct Shipper {
    pub(crate) sink: Sink,
    pub(crate) batch_max: usize,
    pub(crate) linger: Duration,
    pub(crate) state: Arc<SinkState>,
    pub(crate) cursor: Cursor,
    pub(crate) reader: Reader,
    pub(crate) durable: watch::Receiver<Durable>,
    pub(crate) queue: Arc<Queue>,
    pub(crate) metrics: Arc<Metrics>,
    /// Every sink's state: segments are released by the minimum acknowledgement.
    pub(crate) all: Arc<[Arc<SinkState>]>,
    pub(crate) retry: Retry,
    /// Becomes `true` at shutdown. The task then stops at its next await point; anything not
    /// acknowledged stays in the queue for the next start.
    pub(crate) stop: watch::Receiver<bool>,
}

impl Shipper {
    /// Ships until shutdown.
    pub(crate) async fn run(mut self) {
        let mut pending: Option<Pending> = None;
        let mut last_ack = Instant::now();
        loop {
            let due = last_ack + ACK_INTERVAL;
            if let Some(p) = pending.filter(|_| Instant::now() >= due) {
                if !self.acknowledge(p).await {
                    return;
                }
                pending = None;
                last_ack = Instant::now();
            }
            let batch = match self.next_batch(pending.map(|_| due)).await {
                Some(Next::Batch(batch)) => batch,
                Some(Next::AckDue) => {
                    if let Some(p) = pending.take() {
                        if !self.acknowledge(p).await {
                            return;
                        }
                        last_ack = Instant::now();
                    }
                    continue;
                }
                None => return,
            };
            if pending.is_none() {
                self.state.oldest_unacked_ms.store(batch.first_ts, Relaxed);
            }
            if !self.deliver(&batch).await {
                return;
            }
            pending = Some(Pending {
                last_seq: batch.last_seq,
                count: pending.map_or(0, |p| p.count) + batch.count as u64,
            });
        }
    }

    /// Waits for durable records after what was read and reads up to `batch_max` of them,
    /// lingering for more if the batch is not full. With `ack_due`, waits no longer than that
    /// and then returns [`Next::AckDue`]. `None` at shutdown.
    async fn next_batch(&mut self, ack_due: Option<Instant>) -> Option<Next> {
        let mut attempt = 0;
        loop {
            let durable = *self.durable.borrow_and_update();
            if durable.seq > self.reader.position() {
                match self.read(Batch::default(), durable).await {
                    Ok(batch) if !batch.is_empty() => {
                        return self.linger(batch).await.map(Next::Batch);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        attempt += 1;
                        self.failed(attempt, format!("cannot read the queue: {e}"));
                        self.pause(attempt).await?;
                        continue;
                    }
                }
            }
            let Some(due) = ack_due else {
                tokio::select! {
                    changed = self.durable.changed() => changed.ok()?,
                    _ = self.stop.wait_for(|&s| s) => return None,
                }
                continue;
            };
            tokio::select! {
                changed = self.durable.changed() => changed.ok()?,
                _ = self.stop.wait_for(|&s| s) => return None,
                _ = tokio::time::sleep_until(due.into()) => return Some(Next::AckDue),
            }
        }
    }

    /// Gives a short batch `linger` to fill up. A read error here is not worth a retry: the batch
    /// goes as it is and the records are read next time.
    async fn linger(&mut self, batch: Batch) -> Option<Batch> {
        if self.linger.is_zero() || batch.count >= self.batch_max {
            return Some(batch);
        }
        tokio::select! {
            _ = tokio::time::sleep(self.linger) => {}
            _ = self.stop.wait_for(|&s| s) => return None,
        }
        let durable = *self.durable.borrow_and_update();
        let fallback = batch.clone();
        Some(self.read(batch, durable).await.unwrap_or(fallback))
    }

    /// Reads on a blocking thread (the reader moves there and back).
    async fn read(&mut self, mut batch: Batch, durable: Durable) -> std::io::Result<Batch> {
        let placeholder = Reader::new(self.queue.clone(), self.metrics.clone(), 0);
        let mut reader = std::mem::replace(&mut self.reader, placeholder);
        let max = self.batch_max;
        let fallback_acked = self.state.acked.load(Relaxed);
        let joined = tokio::task::spawn_blocking(move || {
            let r = reader.read_into(&mut batch, durable, max);
            (reader, batch, r)
        })
        .await;
        match joined {
            Ok((reader, batch, r)) => {
                self.reader = reader;
                r.map(|()| batch)
            }
            Err(e) => {
                // The reader is gone with the task: start again from the acknowledgement.
                self.reader = Reader::new(self.queue.clone(), self.metrics.clone(), fallback_acked);
                Err(std::io::Error::other(e.to_string()))
            }
        }
    }

    /// Delivers until acknowledged (or, with `max_retries`, given up on). `false` at shutdown.
    async fn deliver(&mut self, batch: &Batch) -> bool {
        let mut attempt = 0;
        loop {
            let result = tokio::select! {
                r = self.sink.deliver(batch) => r,
                _ = self.stop.wait_for(|&s| s) => return false,
            };
            let Err(message) = result else {
                return true;
            };
            attempt += 1;
            self.state.retries.fetch_add(1, Relaxed);
            self.failed(attempt, message);
            if self.retry.max_attempts.is_some_and(|max| attempt >= max) {
                tracing::error!(
                    sink = %self.state.name,
                    first_seq = batch.first_seq,
                    last_seq = batch.last_seq,
                    "decision log: giving up on a batch after max_retries attempts"
                );
                self.metrics
                    .drops
                    .add(DropReason::RetriesExhausted, batch.count as u64);
                return true;
            }
            if self.pause(attempt).await.is_none() {
                return false;
            }
        }
    }

    /// Makes the delivered records durable at the sink, persists the cursor past them, publishes
    /// it, and deletes segments every sink has passed. `false` at shutdown.
    async fn acknowledge(&mut self, pending: Pending) -> bool {
        let mut attempt = 0;
        loop {
            if let Err(e) = self.sink.sync().await {
                attempt += 1;
                self.failed(attempt, e);
                if self.pause(attempt).await.is_none() {
                    return false;
                }
                continue;
            }
            let cursor = self.cursor.clone();
            let state = self.state.clone();
            let all = self.all.clone();
            let queue = self.queue.clone();
            let last = pending.last_seq;
            let result = tokio::task::spawn_blocking(move || {
                cursor.store(last)?;
                // INVARIANT: `acked` is raised only once the cursor is durable, so a segment is
                // never deleted before every sink's restart point is past it.
                state.acked.store(last, Relaxed);
                let min = all
                    .iter()
                    .map(|s| s.acked.load(Relaxed))
                    .min()
                    .unwrap_or(last);
                queue.release(min)
            })
            .await;
            let message = match result {
                Ok(Ok(())) => break,
                Ok(Err(e)) => format!("cannot persist the cursor or release segments: {e}"),
                Err(e) => format!("cursor task failed: {e}"),
            };
            attempt += 1;
            self.failed(attempt, message);
            if self.pause(attempt).await.is_none() {
                return false;
            }
        }
        self.state.delivered.fetch_add(pending.count, Relaxed);
        self.state.oldest_unacked_ms.store(0, Relaxed);
        true
    }

    fn failed(&self, attempt: u32, message: String) {
        tracing::warn!(sink = %self.state.name, attempt, error = %message, "decision log: delivery failed, will retry");
        self.state.last_error.set(message);
    }

    /// Sleeps the backoff delay for `attempt`; `None` if shutdown came first.
    async fn pause(&mut self, attempt: u32) -> Option<()> {
        let delay = backoff::delay(attempt, self.retry.base, self.retry.max);
        tokio::select! {
            _ = tokio::time::sleep(delay) => Some(()),
            _ = self.stop.wait_for(|&s| s) => None,
        }
    }
}
