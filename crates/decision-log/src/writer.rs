//! The append path and the writer thread.
//!
//! An append frames its record into a shared in-memory buffer under a mutex held for a copy: the
//! sequence is assigned there so that buffer order is sequence order. A dedicated thread (fsync
//! blocks, so it does not belong on the async runtime) swaps the buffer out, writes it to the
//! active segment, fsyncs, and then publishes the new durable position. Under `fsync = "interval"`
//! it first lets the batch gather for `fsync_interval_ms` (group commit); under `"always"` it
//! writes at once and appenders wait for the publication, so concurrent appends share an fsync.

use std::io::Write;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::sync::Condvar;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::sync::PoisonError;
use std::time::Duration;

use tokio::sync::watch;

use crate::backoff;
use crate::config::FsyncMode;
use crate::config::WhenFull;
use crate::frame;
use crate::frame::HEADER_LEN;
use crate::metrics::DropReason;
use crate::metrics::Metrics;
use crate::queue::Active;
use crate::queue::Queue;

/// How far the queue is durable: every frame with a sequence ≤ `seq` is fsynced, and the active
/// segment (`segment`) is durable up to byte `len`. Readers never read past it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Durable {
    pub(crate) seq: u64,
    pub(crate) segment: u64,
    pub(crate) len: u64,
}

/// Writer settings, copied out of the config.
#[derive(Debug, Clone)]
pub(crate) struct WriterOptions {
    pub(crate) fsync: FsyncMode,
    pub(crate) interval: Duration,
    pub(crate) max_bytes: u64,
    pub(crate) when_full: WhenFull,
    pub(crate) segment_bytes: u64,
    pub(crate) retry_base: Duration,
    pub(crate) retry_max: Duration,
}

#[derive(Debug, Default)]
struct Pending {
    /// Frames not yet handed to the writer thread.
    buf: Vec<u8>,
    records: u64,
    /// Highest sequence assigned.
    last_seq: u64,
    /// Set by shutdown: no more appends; the writer flushes and exits.
    closed: bool,
    /// Set by an append over the limit under `drop_oldest`: the writer evicts before writing.
    evict: bool,
}

/// What an append attempt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Push {
    Logged(u64),
    Dropped,
    /// `when_full = "block"` and no space: wait for [`Queue::space`] and try again.
    Full,
    Closed,
}

/// State shared by appenders and the writer thread.
#[derive(Debug)]
pub(crate) struct Writer {
    pending: Mutex<Pending>,
    wake: Condvar,
    pub(crate) durable: watch::Sender<Durable>,
    queue: Arc<Queue>,
    metrics: Arc<Metrics>,
    opts: WriterOptions,
}

impl Writer {
    pub(crate) fn new(
        queue: Arc<Queue>,
        metrics: Arc<Metrics>,
        opts: WriterOptions,
        durable: Durable,
    ) -> Self {
        metrics.last_seq.store(durable.seq, Relaxed);
        metrics.durable_seq.store(durable.seq, Relaxed);
        Self {
            pending: Mutex::new(Pending {
                last_seq: durable.seq,
                ..Pending::default()
            }),
            wake: Condvar::new(),
            durable: watch::Sender::new(durable),
            queue,
            metrics,
            opts,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Frames `payload` into the buffer, or says why not: [`Writer::push_all`] of one.
    #[cfg(test)]
    pub(crate) fn push(&self, payload: &[u8], timestamp_ms: u64) -> Push {
        self.push_all(&[(payload, timestamp_ms)])
    }

    /// Frames every `(payload, timestamp_ms)` of `group` into the buffer with consecutive
    /// sequences, all or none: the space check covers the whole group, so a full queue never
    /// leaves the first records of a batch logged and the rest not. Answers the first sequence.
    /// Never blocks beyond the mutex.
    ///
    /// The group is never split across write batches (the writer takes the whole buffer at once),
    /// hence never across segments either.
    pub(crate) fn push_all(&self, group: &[(&[u8], u64)]) -> Push {
        let records = group.len() as u64;
        let len: u64 = group
            .iter()
            .map(|(payload, _)| (HEADER_LEN + payload.len()) as u64)
            .sum();
        let mut p = self.lock();
        if p.closed {
            return Push::Closed;
        }
        let mut wake = p.buf.is_empty();
        if self.metrics.queue_bytes.load(Relaxed) + len > self.opts.max_bytes {
            match self.opts.when_full {
                WhenFull::Block => return Push::Full,
                WhenFull::DropNewest => {
                    self.metrics.drops.add(DropReason::QueueFull, records);
                    return Push::Dropped;
                }
                WhenFull::DropOldest => {
                    // Eviction frees whole sealed segments; memory is bounded all the same if the
                    // writer cannot keep up at all.
                    if p.buf.len() as u64 + len > self.opts.max_bytes {
                        self.metrics.drops.add(DropReason::QueueFull, records);
                        return Push::Dropped;
                    }
                    wake |= !p.evict;
                    p.evict = true;
                }
            }
        }
        let first = p.last_seq + 1;
        p.buf.reserve(len as usize);
        for (payload, timestamp_ms) in group {
            p.last_seq += 1;
            let seq = p.last_seq;
            frame::encode(&mut p.buf, seq, *timestamp_ms, payload);
        }
        p.records += records;
        let last = p.last_seq;
        self.metrics.queue_bytes.fetch_add(len, Relaxed);
        self.metrics.appended.fetch_add(records, Relaxed);
        self.metrics.last_seq.store(last, Relaxed);
        drop(p);
        if wake {
            self.wake.notify_one();
        }
        Push::Logged(first)
    }

    /// Stops appends; the writer thread writes what is buffered, fsyncs and exits.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_one();
    }

    /// The writer thread's loop.
    pub(crate) fn run(self: Arc<Self>, mut active: Active) {
        let mut batch = Vec::new();
        loop {
            let (records, last_seq, closed, evict) = {
                let mut p = self.lock();
                while p.buf.is_empty() && !p.closed && !p.evict {
                    p = self.wake.wait(p).unwrap_or_else(PoisonError::into_inner);
                }
                if self.opts.fsync == FsyncMode::Interval && !p.closed && !p.buf.is_empty() {
                    // Group commit: let the batch gather. This sleep is the loss window.
                    drop(p);
                    std::thread::sleep(self.opts.interval);
                    p = self.lock();
                }
                std::mem::swap(&mut p.buf, &mut batch);
                let r = std::mem::take(&mut p.records);
                (r, p.last_seq, p.closed, std::mem::take(&mut p.evict))
            };
            if evict {
                if let Err(e) = self.queue.evict(self.opts.max_bytes) {
                    tracing::error!(error = %e, "decision log: cannot evict the oldest segment");
                    self.metrics
                        .writer_error
                        .set(format!("cannot evict the oldest segment: {e}"));
                }
            }
            if !batch.is_empty() {
                self.write(&mut active, &batch, records, last_seq, closed);
                batch.clear();
            }
            if closed {
                return;
            }
        }
    }

    /// Writes and fsyncs one batch, retrying with backoff until it succeeds (appends meanwhile
    /// fill the queue, and `when_full` decides), then publishes it as durable.
    fn write(&self, active: &mut Active, batch: &[u8], records: u64, last_seq: u64, closing: bool) {
        let first_seq = last_seq + 1 - records;
        let mut attempt = 0u32;
        while let Err(e) = self.try_write(active, batch, first_seq, records, attempt > 0) {
            attempt += 1;
            tracing::error!(error = %e, attempt, "decision log: cannot write the queue, retrying");
            self.metrics
                .writer_error
                .set(format!("cannot write the queue: {e}"));
            if closing && attempt >= 3 {
                self.metrics.drops.add(DropReason::WriteFailed, records);
                return;
            }
            std::thread::sleep(backoff::delay(
                attempt,
                self.opts.retry_base,
                self.opts.retry_max,
            ));
        }
        self.metrics.durable_seq.store(last_seq, Relaxed);
        self.durable.send_replace(Durable {
            seq: last_seq,
            segment: active.base,
            len: active.len,
        });
    }

    fn try_write(
        &self,
        active: &mut Active,
        batch: &[u8],
        first_seq: u64,
        records: u64,
        retry: bool,
    ) -> std::io::Result<()> {
        if active.len >= self.opts.segment_bytes {
            // INVARIANT: everything in the old segment was fsynced by an earlier write, so
            // readers may treat it as sealed as soon as the new segment exists.
            let file = self.queue.create_segment(first_seq)?;
            *active = Active {
                base: first_seq,
                file,
                len: 0,
            };
        } else if retry {
            // A failed write or fsync may have left part of the batch in the file, or in pages the
            // kernel has since dropped: cut back to what is known durable and write it all again.
            active.file.set_len(active.len)?;
        }
        active.file.write_all(batch)?;
        active.file.sync_data()?;
        active.len += batch.len() as u64;
        self.queue.set_len(active.base, active.len);
        if active.len >= self.opts.segment_bytes {
            // Seal now rather than at the next write: only sealed segments can be released, and
            // under `when_full = "block"` the next write may be waiting for exactly that space.
            // On failure the check above tries again before the next write.
            let next = first_seq + records;
            match self.queue.create_segment(next) {
                Ok(file) => {
                    *active = Active {
                        base: next,
                        file,
                        len: 0,
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "decision log: cannot start a new segment yet")
                }
            }
        }
        Ok(())
    }
}
