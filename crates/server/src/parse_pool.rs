//! The parse pool: a few dedicated threads, each with a generous stack, on which admin writes are
//! parsed and validated before they are proposed.
//!
//! Why not on the async workers: parsing a schema or a policy set and validating policies against
//! a schema can take long on large input, and Cedar's parser recurses once per nesting level. On a
//! tokio worker the first stalls every request the worker carries (`/livez` included); the second
//! can overflow its 2 MiB stack, which aborts the whole process. `spawn_blocking` frees the worker
//! but its threads have the same small stack, and its pool is unbounded. Here, the recursion
//! measures (`verdict_engine::limits`) bound the depth, the stack leaves a wide margin above it,
//! the threads are few, and the queue is bounded: when it is full a write is answered `503
//! parse_busy` at once instead of piling up.
//!
//! The pool lives in the server, not the engine: the engine is pure and spawns nothing; how many
//! threads a node spends is the node's configuration.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::PoisonError;

use serde::Deserialize;
use serde::Serialize;

use crate::error::ApiError;

/// The `[parse]` table of the configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ParsePoolConfig {
    /// Threads that parse and validate admin writes. Writes are rare next to decisions; two let one
    /// large schema write not hold up every policy write.
    pub threads: usize,
    /// Writes waiting for a thread beyond which a write is answered `503 parse_busy`.
    pub queue: usize,
    /// Stack of each thread, in MiB: far above what the admitted nesting needs (a few hundred KiB
    /// in a debug build), and only reserved address space until used.
    pub stack_mib: usize,
}

impl Default for ParsePoolConfig {
    fn default() -> Self {
        Self {
            threads: 2,
            queue: 64,
            stack_mib: 64,
        }
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// A handle to the pool's threads; they end when the last handle is dropped.
pub struct ParsePool {
    jobs: mpsc::SyncSender<Job>,
}

impl ParsePool {
    /// Starts the threads.
    pub fn start(config: &ParsePoolConfig) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::sync_channel::<Job>(config.queue.max(1));
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..config.threads.max(1) {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("verdict-parse-{n}"))
                .stack_size(config.stack_mib.max(8) * 1024 * 1024)
                .spawn(move || loop {
                    // The lock is held only while waiting for the next job, never while running it.
                    let next = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
                    match next {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                })?;
        }
        Ok(Self { jobs })
    }

    /// Runs `work` on a pool thread and answers its result; `503 parse_busy` at once when the
    /// queue is full. A panic in `work` is answered `500` and leaves the thread serving.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let (done, answer) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(std::panic::catch_unwind(AssertUnwindSafe(work)));
        });
        self.jobs.try_send(job).map_err(|_| {
            ApiError::unavailable(
                "parse_busy",
                "every parse thread is busy and the queue of writes waiting for one is full \
                 (`[parse] queue`); retry shortly",
            )
        })?;
        match answer.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_)) => Err(ApiError::internal(
                "parsing the write failed unexpectedly; the state is unchanged",
            )),
            Err(_) => Err(ApiError::internal(
                "the parse thread ended without answering",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Recursion that overflows a 2 MiB stack (what tokio's workers and `spawn_blocking` threads
    /// have) runs fine on a pool thread.
    #[tokio::test]
    async fn runs_deep_recursion_and_survives_panics() {
        fn deep(n: u64) -> u64 {
            let pad = std::hint::black_box([n; 64]);
            if n == 0 {
                0
            } else {
                deep(n - 1) + pad[1] / n.max(1)
            }
        }
        let pool = ParsePool::start(&ParsePoolConfig::default()).unwrap();
        assert_eq!(pool.run(|| deep(20_000)).await.unwrap(), 20_000);
        let e = pool.run(|| -> u64 { panic!("boom") }).await.unwrap_err();
        assert_eq!(e.code, "internal");
        assert_eq!(pool.run(|| 7).await.unwrap(), 7);
    }

    #[tokio::test]
    async fn a_full_queue_is_refused_at_once() {
        let pool = ParsePool::start(&ParsePoolConfig {
            threads: 1,
            queue: 1,
            stack_mib: 8,
        })
        .unwrap();
        // The one thread is busy, and one job waits in the queue of one.
        let (started_tx, started) = mpsc::channel::<()>();
        let (release, wait) = mpsc::channel::<()>();
        pool.jobs
            .try_send(Box::new(move || {
                let _ = started_tx.send(());
                let _ = wait.recv();
            }))
            .unwrap();
        started.recv().unwrap();
        pool.jobs.try_send(Box::new(|| {})).unwrap();
        let refused = pool.run(|| true).await.unwrap_err();
        assert_eq!(refused.code, "parse_busy");
        assert_eq!(refused.status, axum::http::StatusCode::SERVICE_UNAVAILABLE);
        // Once the thread is free again, the pool serves (the queue drains first).
        release.send(()).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match pool.run(|| 5).await {
                Ok(v) => break assert_eq!(v, 5),
                Err(e) if std::time::Instant::now() < deadline => {
                    assert_eq!(e.code, "parse_busy");
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                Err(e) => panic!("the pool never served again: {e:?}"),
            }
        }
    }
}
