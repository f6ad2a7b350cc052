//! Group commit for the sled log: one thread makes sled durable for everyone waiting.
//!
//! Each append used to start its own `flush_async`, which runs on sled's IO thread pool; under
//! many concurrent writes the flushes queued behind a lock, ran one after another, and every
//! submission woke the whole pool. Here writers register a waiter after their data is in sled's
//! buffers; the flush thread takes every waiter registered so far, calls sled's synchronous
//! `flush` once, and answers them all in registration order. A waiter is answered only by a flush
//! that started after it was registered, so its data is covered.
//!
//! The flush thread also keeps a durable mark: a counter the log store raises after each write of
//! a value it must know is on disk (the committed index). The thread reads the written mark before
//! each flush and, once that flush succeeds, publishes it as durable; waiting for the durable mark
//! costs no flush of its own while writes keep the thread busy.

use std::io;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Condvar;
use std::sync::Mutex;
use std::thread::JoinHandle;

use tokio::sync::watch;

/// Told the outcome of the flush that covered its data.
pub(crate) type Waiter = Box<dyn FnOnce(Result<(), io::Error>) + Send>;

#[derive(Default)]
struct Queue {
    waiters: Vec<Waiter>,
    /// A flush is wanted though nobody waits on its answer (see [`Flusher::nudge`]).
    wanted: bool,
    closed: bool,
}

/// How far the durable mark has got, as the flush thread last saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Durable {
    /// The highest mark a completed flush covered.
    pub(crate) mark: u64,
    /// The error of the last flush, if it failed (cleared by the next one that succeeds).
    pub(crate) failed: Option<String>,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    /// The highest mark written to sled (not necessarily flushed yet).
    written: AtomicU64,
    durable: watch::Sender<Durable>,
}

/// The flush thread. It stops (after answering what is queued) when this is dropped.
pub(crate) struct Flusher {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Flusher {
    /// Starts the flush thread for `db`, whose durable mark is `mark` (what is on disk already).
    pub(crate) fn start(db: sled::Db, mark: u64) -> Result<Self, io::Error> {
        let shared = Arc::new(Shared {
            queue: Mutex::default(),
            wake: Condvar::new(),
            written: AtomicU64::new(mark),
            durable: watch::Sender::new(Durable { mark, failed: None }),
        });
        let for_thread = shared.clone();
        let thread = std::thread::Builder::new()
            .name("verdict-log-flush".to_string())
            .spawn(move || run(&for_thread, &db))?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Queues `waiter` for the next flush. The caller's writes must already be in sled.
    pub(crate) fn request(&self, waiter: Waiter) {
        let refused = match self.shared.queue.lock() {
            Ok(mut q) if !q.closed => {
                q.waiters.push(waiter);
                None
            }
            Ok(_) => Some((waiter, "the log store is closing")),
            Err(_) => Some((waiter, "the log flush queue is poisoned")),
        };
        match refused {
            Some((waiter, why)) => waiter(Err(io::Error::other(why))),
            None => self.shared.wake.notify_one(),
        }
    }

    /// Records that `mark` has been written to sled: the next flush to start covers it.
    pub(crate) fn mark_written(&self, mark: u64) {
        // Release: the flush thread that reads this value (Acquire) sees the write behind it.
        self.shared.written.fetch_max(mark, Ordering::Release);
    }

    /// Watches the durable mark.
    pub(crate) fn durable(&self) -> watch::Receiver<Durable> {
        self.shared.durable.subscribe()
    }

    /// Makes sure a flush will start after this call, without waiting for it: a no-op when one is
    /// already queued (queued requests are only taken by a flush that has not started yet).
    pub(crate) fn nudge(&self) {
        if let Ok(mut q) = self.shared.queue.lock() {
            if !q.waiters.is_empty() || q.wanted {
                return;
            }
            q.wanted = true;
        }
        self.shared.wake.notify_one();
    }

    /// Waits until everything written to sled before this call is durable.
    pub(crate) async fn flush(&self) -> Result<(), io::Error> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.request(Box::new(move |res| {
            let _ = tx.send(res);
        }));
        rx.await
            .map_err(|_| io::Error::other("the log flush thread stopped"))?
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        if let Ok(mut q) = self.shared.queue.lock() {
            q.closed = true;
        }
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            // Joined so the thread's handle on the database is gone when the store is: the data
            // directory can be reopened at once.
            let _ = thread.join();
        }
    }
}

fn run(shared: &Shared, db: &sled::Db) {
    loop {
        let batch = {
            let Ok(mut q) = shared.queue.lock() else {
                return;
            };
            while q.waiters.is_empty() && !q.wanted && !q.closed {
                q = match shared.wake.wait(q) {
                    Ok(q) => q,
                    Err(_) => return,
                };
            }
            if q.waiters.is_empty() && !q.wanted {
                return;
            }
            q.wanted = false;
            std::mem::take(&mut q.waiters)
        };
        // Read after taking the batch: a mark written before a request (or nudge) that this
        // batch took is seen here, so the flush below covers the value behind it.
        let mark = shared.written.load(Ordering::Acquire);
        let res = db.flush().map(drop).map_err(|e| format!("sled: {e}"));
        shared.durable.send_if_modified(|d| match &res {
            Ok(()) if mark > d.mark || d.failed.is_some() => {
                d.mark = d.mark.max(mark);
                d.failed = None;
                true
            }
            Ok(()) => false,
            Err(e) => {
                d.failed = Some(e.clone());
                true
            }
        });
        for waiter in batch {
            waiter(res.clone().map_err(io::Error::other));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[tokio::test]
    async fn a_written_mark_is_durable_only_after_a_flush_that_started_after_it() -> TestResult {
        let dir = tempfile::tempdir()?;
        let db = sled::Config::new().path(dir.path()).open()?;
        let flusher = Flusher::start(db.clone(), 3)?;
        let mut durable = flusher.durable();
        assert_eq!(durable.borrow().mark, 3, "what was on disk at start");

        db.insert(b"committed", b"7")?;
        flusher.mark_written(7);
        // Nothing asked for a flush: the mark stays where it was.
        let early = tokio::time::timeout(
            Duration::from_millis(200),
            durable.wait_for(|d| d.mark >= 7),
        )
        .await
        .is_ok();
        assert!(!early, "durable without a flush");

        flusher.nudge();
        tokio::time::timeout(Duration::from_secs(10), durable.wait_for(|d| d.mark >= 7)).await??;
        assert_eq!(durable.borrow().mark, 7);
        assert_eq!(durable.borrow().failed, None);

        // A flush requested by a writer carries the mark too, and a lower mark never lowers it.
        flusher.mark_written(5);
        flusher.mark_written(9);
        flusher.flush().await?;
        assert_eq!(flusher.durable().borrow().mark, 9);
        Ok(())
    }
}
