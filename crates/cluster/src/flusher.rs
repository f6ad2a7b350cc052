//! Group commit for the sled log: one thread makes sled durable for everyone waiting.
//!
//! Each append used to start its own `flush_async`, which runs on sled's IO thread pool; under
//! many concurrent writes the flushes queued behind a lock, ran one after another, and every
//! submission woke the whole pool. Here writers register a waiter after their data is in sled's
//! buffers; the flush thread takes every waiter registered so far, calls sled's synchronous
//! `flush` once, and answers them all in registration order. A waiter is answered only by a flush
//! that started after it was registered, so its data is covered.

use std::io;
use std::sync::Arc;
use std::sync::Condvar;
use std::sync::Mutex;
use std::thread::JoinHandle;

/// Told the outcome of the flush that covered its data.
pub(crate) type Waiter = Box<dyn FnOnce(Result<(), io::Error>) + Send>;

#[derive(Default)]
struct Queue {
    waiters: Vec<Waiter>,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
}

/// The flush thread. It stops (after answering what is queued) when this is dropped.
pub(crate) struct Flusher {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Flusher {
    /// Starts the flush thread for `db`.
    pub(crate) fn start(db: sled::Db) -> Result<Self, io::Error> {
        let shared = Arc::new(Shared::default());
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
            while q.waiters.is_empty() && !q.closed {
                q = match shared.wake.wait(q) {
                    Ok(q) => q,
                    Err(_) => return,
                };
            }
            if q.waiters.is_empty() {
                return;
            }
            std::mem::take(&mut q.waiters)
        };
        let res = db.flush().map(drop).map_err(|e| format!("sled: {e}"));
        for waiter in batch {
            waiter(res.clone().map_err(io::Error::other));
        }
    }
}
