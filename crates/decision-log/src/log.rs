//! [`DecisionLog`]: opens the queue, starts the writer thread and one task per sink, and is the
//! handle the server appends through.

use std::path::Path;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

use crate::config::Config;
use crate::config::FsyncMode;
use crate::cursor::Cursor;
use crate::error::AppendError;
use crate::error::OpenError;
use crate::error::ShutdownError;
use crate::frame::MAX_PAYLOAD;
use crate::mask::Masker;
use crate::metrics::DropReason;
use crate::metrics::Metrics;
use crate::metrics::SinkState;
use crate::metrics::Status;
use crate::queue::Queue;
use crate::reader::Reader;
use crate::record::encode_batch_payload;
use crate::record::encode_payload;
use crate::record::BatchRecord;
use crate::record::Record;
use crate::sink::Retry;
use crate::sink::Shipper;
use crate::sink::Sink;
use crate::writer::Durable;
use crate::writer::Push;
use crate::writer::Writer;
use crate::writer::WriterOptions;

/// What [`DecisionLog::append`] did with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Queued under this sequence: durable already under `fsync = "always"`, within
    /// `fsync_interval_ms` under `"interval"`.
    Logged {
        /// The record's per-node sequence (of a batch: its batch line's; its decisions follow).
        seq: u64,
    },
    /// The queue was full and `when_full` dropped the record, or a batch's records, whole
    /// (counted in the status).
    Dropped,
}

/// The decision log of one node. Cheap to clone; every clone is the same log.
#[derive(Debug, Clone)]
pub struct DecisionLog {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    node_id: u64,
    sample_rate: f64,
    only_denies: bool,
    fsync: FsyncMode,
    when_full: crate::config::WhenFull,
    max_queue_bytes: u64,
    append_timeout: Duration,
    max_batch_bytes: u64,
    masker: Masker,
    writer: Arc<Writer>,
    queue: Arc<Queue>,
    metrics: Arc<Metrics>,
    sinks: Arc<[Arc<SinkState>]>,
    stop: watch::Sender<bool>,
    tasks: Mutex<Option<Tasks>>,
}

#[derive(Debug)]
struct Tasks {
    writer: std::thread::JoinHandle<()>,
    sinks: Vec<JoinHandle<()>>,
}

impl Drop for Inner {
    /// Dropped without [`DecisionLog::shutdown`]: the writer still flushes what it holds (on its
    /// own thread) and the sinks stop; nobody waits for either.
    fn drop(&mut self) {
        self.writer.close();
        self.queue.space.send_modify(|n| *n += 1);
        self.stop.send_replace(true);
    }
}

impl DecisionLog {
    /// Opens the queue in `config.dir` (default `DATA_DIR/decision-log`), recovering it after a
    /// crash, and starts the writer thread and one task per sink on the current Tokio runtime.
    /// Opens regardless of `config.enabled`: the caller decides whether to open at all.
    pub async fn open(
        config: &Config,
        node_id: u64,
        data_dir: &Path,
    ) -> Result<DecisionLog, OpenError> {
        config.validate().map_err(OpenError::Config)?;
        let dir = config
            .dir
            .clone()
            .unwrap_or_else(|| data_dir.join("decision-log"));
        let mut built = Vec::new();
        for sink in &config.sinks {
            let name = sink.name();
            let b =
                Sink::new(sink).map_err(|e| OpenError::Config(format!("sink `{name}`: {e}")))?;
            built.push((name, sink.kind(), b));
        }
        let metrics = Arc::new(Metrics::default());
        let names: Vec<(String, &'static str)> =
            built.iter().map(|(n, k, _)| (n.clone(), *k)).collect();
        let m = metrics.clone();
        let recovered = tokio::task::spawn_blocking(move || recover(&dir, &names, m))
            .await
            .map_err(|e| OpenError::Config(format!("start-up task failed: {e}")))??;
        let Recovered {
            queue,
            active,
            last_seq,
            cursors,
            sinks,
        } = recovered;

        let durable = Durable {
            seq: last_seq,
            segment: active.base,
            len: active.len,
        };
        let writer = Arc::new(Writer::new(
            queue.clone(),
            metrics.clone(),
            WriterOptions {
                fsync: config.fsync,
                interval: Duration::from_millis(config.fsync_interval_ms),
                max_bytes: config.max_queue_bytes,
                when_full: config.when_full,
                segment_bytes: config.segment_bytes,
                retry_base: Duration::from_millis(config.retry_base_ms),
                retry_max: Duration::from_millis(config.retry_max_ms),
            },
            durable,
        ));
        let w = writer.clone();
        let writer_thread = std::thread::Builder::new()
            .name("decision-log-writer".to_string())
            .spawn(move || w.run(active))
            .map_err(|source| OpenError::Io {
                path: PathBuf::from("decision-log-writer thread"),
                source,
            })?;

        let (stop, _) = watch::channel(false);
        let retry = Retry {
            base: Duration::from_millis(config.retry_base_ms),
            max: Duration::from_millis(config.retry_max_ms),
            max_attempts: config.max_retries,
        };
        let mut tasks = Vec::new();
        for (((_, _, (sink, batch_max, linger)), cursor), state) in
            built.into_iter().zip(cursors).zip(sinks.iter())
        {
            let acked = state.acked.load(Relaxed);
            let span = tracing::info_span!("decision_log_sink", sink = %state.name);
            let shipper = Shipper {
                sink,
                batch_max,
                linger,
                state: state.clone(),
                cursor,
                reader: Reader::new(queue.clone(), metrics.clone(), acked),
                durable: writer.durable.subscribe(),
                queue: queue.clone(),
                metrics: metrics.clone(),
                all: sinks.clone(),
                retry,
                stop: stop.subscribe(),
            };
            tasks.push(tokio::spawn(shipper.run().instrument(span)));
        }
        Ok(DecisionLog {
            inner: Arc::new(Inner {
                node_id,
                sample_rate: config.sample_rate,
                only_denies: config.only_denies,
                fsync: config.fsync,
                when_full: config.when_full,
                max_queue_bytes: config.max_queue_bytes,
                append_timeout: Duration::from_millis(config.append_timeout_ms),
                max_batch_bytes: config.max_batch_bytes.min(config.max_queue_bytes / 2),
                masker: Masker::new(&config.mask, config.mask_mode, &config.mask_with),
                writer,
                queue,
                metrics,
                sinks,
                stop,
                tasks: Mutex::new(Some(Tasks {
                    writer: writer_thread,
                    sinks: tasks,
                })),
            }),
        })
    }

    /// Whether a decision with this outcome should be logged (`only_denies`, `sample_rate`). Ask
    /// before building a [`Record`], so unlogged decisions cost nothing more.
    pub fn wants(&self, decision: bool) -> bool {
        let i = &self.inner;
        if i.only_denies && decision {
            return false;
        }
        i.sample_rate >= 1.0 || rand::random::<f64>() < i.sample_rate
    }

    /// Masks the record's request and queues it. Under `fsync = "interval"` with space in the
    /// queue this completes without awaiting anything (a serialisation and a short lock). It
    /// waits only under `when_full = "block"` when the queue is full, and under `fsync = "always"`
    /// until the record is fsynced; each wait is bounded by `append_timeout_ms`.
    pub async fn append(&self, mut record: Record) -> Result<Appended, AppendError> {
        let i = &*self.inner;
        i.masker.apply(&mut record.request);
        let payload = checked(encode_payload(i.node_id, &record)?)?;
        self.queue_group(&[(&payload, record.timestamp_ms)]).await
    }

    /// Queues the records of one batch's decisions behind one line holding the batch's defaults
    /// (see [`crate::record`], "Line schema"): sets `batch.items` and each record's `batch_id`,
    /// masks the defaults and every request, and queues the lines all or none, with consecutive
    /// sequences (the batch line's is answered), sharing one write and fsync. A full queue under
    /// `drop_newest` drops the whole group; a failure leaves none of it queued. Waits as
    /// [`DecisionLog::append`] does. With no records nothing is queued (`Dropped`, not counted).
    pub async fn append_batch(
        &self,
        mut batch: BatchRecord,
        mut records: Vec<Record>,
    ) -> Result<Appended, AppendError> {
        if records.is_empty() {
            return Ok(Appended::Dropped);
        }
        let i = &*self.inner;
        batch.items = records.len() as u64;
        i.masker.apply(&mut batch.defaults);
        let mut payloads = Vec::with_capacity(records.len() + 1);
        payloads.push((
            checked(encode_batch_payload(i.node_id, &batch)?)?,
            batch.timestamp_ms,
        ));
        for record in &mut records {
            record.batch_id = Some(batch.batch_id);
            i.masker.apply(&mut record.request);
            payloads.push((
                checked(encode_payload(i.node_id, record)?)?,
                record.timestamp_ms,
            ));
        }
        // The requests are serialised: free them before waiting for space or an fsync.
        drop(records);
        let group: Vec<(&[u8], u64)> = payloads.iter().map(|(p, t)| (&p[..], *t)).collect();
        self.queue_group(&group).await
    }

    /// The largest estimated size of one batch's records that [`DecisionLog::append_batch`]
    /// should be asked to take: `max_batch_bytes`, but at most half the queue, so that a batch
    /// refused as too large is told so rather than waiting for space it can never get.
    pub fn max_batch_bytes(&self) -> u64 {
        self.inner.max_batch_bytes
    }

    /// Pushes a group of framed payloads (all or none), waits for space under `block` and for the
    /// fsync under `always`; answers the group's first sequence.
    async fn queue_group(&self, group: &[(&[u8], u64)]) -> Result<Appended, AppendError> {
        let i = &*self.inner;
        let first = match i.writer.push_all(group) {
            Push::Logged(seq) => seq,
            Push::Dropped => return Ok(Appended::Dropped),
            Push::Closed => return Err(AppendError::Closed),
            Push::Full => match self.wait_for_space(group).await? {
                Some(seq) => seq,
                None => return Ok(Appended::Dropped),
            },
        };
        let last = first + group.len() as u64 - 1;
        if i.fsync == FsyncMode::Always {
            let mut durable = i.writer.durable.subscribe();
            let waited =
                tokio::time::timeout(i.append_timeout, durable.wait_for(|d| d.seq >= last)).await;
            match waited {
                Ok(Ok(_)) => {}
                Ok(Err(_)) => return Err(AppendError::Closed),
                Err(_) => {
                    return Err(AppendError::NotDurable {
                        waited_ms: i.append_timeout.as_millis() as u64,
                    })
                }
            }
        }
        Ok(Appended::Logged { seq: first })
    }

    /// `when_full = "block"`: retries the push each time a segment is deleted, until the deadline.
    async fn wait_for_space(&self, group: &[(&[u8], u64)]) -> Result<Option<u64>, AppendError> {
        let i = &*self.inner;
        let deadline = Instant::now() + i.append_timeout;
        // Subscribed before the retry below, so a deletion between the two is not missed.
        let mut space = i.queue.space.subscribe();
        loop {
            match i.writer.push_all(group) {
                Push::Logged(seq) => return Ok(Some(seq)),
                Push::Dropped => return Ok(None),
                Push::Closed => return Err(AppendError::Closed),
                Push::Full => {}
            }
            if tokio::time::timeout_at(deadline, space.changed())
                .await
                .is_err()
            {
                i.metrics
                    .drops
                    .add(DropReason::BlockTimeout, group.len() as u64);
                return Err(AppendError::Full {
                    waited_ms: i.append_timeout.as_millis() as u64,
                });
            }
        }
    }

    /// The log's counters, for `GET /v1/decision-logs/status`. Reads atomics only, plus the
    /// last-error slots.
    pub fn status(&self) -> Status {
        let i = &self.inner;
        i.metrics
            .status(i.node_id, i.fsync, i.when_full, i.max_queue_bytes, &i.sinks)
    }

    /// Stops taking records, writes and fsyncs everything appended so far, then stops the sinks
    /// (what they have not had acknowledged stays queued for the next start). Later calls, and
    /// appends after it, return at once.
    pub async fn shutdown(&self) -> Result<(), ShutdownError> {
        let i = &*self.inner;
        // 1. The writer: no more appends, flush, fsync, exit. Sinks keep running meanwhile, so a
        //    slow final fsync does not also stall delivery.
        i.writer.close();
        // Appends blocked on a full queue wake up, see the log closed and fail.
        i.queue.space.send_modify(|n| *n += 1);
        let tasks = i
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(tasks) = tasks else {
            return Ok(());
        };
        let failed_before = i.metrics.drops.write_failed();
        let joined = tokio::task::spawn_blocking(move || tasks.writer.join()).await;
        // 2. The sinks, at their next await point; cursors are replaced atomically, so stopping
        //    anywhere is safe.
        i.stop.send_replace(true);
        for t in tasks.sinks {
            let _ = t.await;
        }
        match joined {
            Ok(Ok(())) => {}
            _ => return Err(ShutdownError::WriterPanicked),
        }
        if i.metrics.drops.write_failed() > failed_before {
            let message = i
                .metrics
                .writer_error
                .get()
                .map(|e| e.message)
                .unwrap_or_default();
            return Err(ShutdownError::WriteFailed(message));
        }
        Ok(())
    }
}

/// A payload the frame format can hold, or [`AppendError::TooLarge`].
fn checked(payload: Vec<u8>) -> Result<Vec<u8>, AppendError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(AppendError::TooLarge {
            bytes: payload.len(),
            limit: MAX_PAYLOAD,
        });
    }
    Ok(payload)
}

struct Recovered {
    queue: Arc<Queue>,
    active: crate::queue::Active,
    last_seq: u64,
    cursors: Vec<Cursor>,
    sinks: Arc<[Arc<SinkState>]>,
}

/// Start-up, on a blocking thread: load the cursors, open the queue after the furthest of them,
/// and release what every sink has already acknowledged.
fn recover(
    dir: &Path,
    sinks: &[(String, &'static str)],
    metrics: Arc<Metrics>,
) -> Result<Recovered, OpenError> {
    let io = |path: PathBuf| move |source| OpenError::Io { path, source };
    let cursor_dir = dir.join("cursors");
    std::fs::create_dir_all(&cursor_dir).map_err(io(cursor_dir.clone()))?;
    let mut cursors = Vec::new();
    let mut loaded = Vec::new();
    for (name, _) in sinks {
        let c = Cursor::new(&cursor_dir, name);
        loaded.push(c.load().map_err(io(cursor_dir.clone()))?);
        cursors.push(c);
    }
    let min_next = loaded.iter().flatten().max().map_or(0, |a| a + 1);
    let queue_dir = dir.join("queue");
    let opened =
        Queue::open(&queue_dir, min_next, metrics.clone()).map_err(io(queue_dir.clone()))?;
    let queue = Arc::new(opened.queue);
    // A sink without a cursor starts from the oldest record still stored.
    let oldest = metrics.oldest_seq.load(Relaxed);
    let states: Arc<[Arc<SinkState>]> = sinks
        .iter()
        .zip(&loaded)
        .map(|((name, kind), acked)| {
            Arc::new(SinkState::new(
                name.clone(),
                kind,
                acked.unwrap_or(oldest.saturating_sub(1)),
            ))
        })
        .collect();
    let min = states
        .iter()
        .map(|s| s.acked.load(Relaxed))
        .min()
        .unwrap_or(0);
    queue.release(min).map_err(io(queue_dir))?;
    Ok(Recovered {
        queue,
        active: opened.active,
        last_seq: opened.last_seq,
        cursors,
        sinks: states,
    })
}
