//! The Raft log, vote and committed index on sled.
//!
//! Trees: `log` (u64 big-endian index → encoded entry, so keys sort by index) and `meta` (vote,
//! committed, last purged). sled flushes in the background only every 500 ms, so every operation
//! that openraft must see as durable (append, vote) calls `flush` before reporting success: an early
//! acknowledgement could double-vote or lose acknowledged writes after a crash.
//!
//! Purging (after each snapshot) records the purge point durably and then deletes the entries at
//! or below it on a blocking thread, a chunk at a time: deleting thousands of entries inline held
//! up appends and put a 60-300 ms stall into every write in flight at each snapshot. Entries at or
//! below the purge point are never read, and a sweep at open removes any a crash left behind.

use std::fmt::Debug;
use std::io;
use std::ops::Bound;
use std::ops::RangeBounds;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use openraft::alias::EntryOf;
use openraft::alias::LogIdOf;
use openraft::alias::VoteOf;
use openraft::entry::RaftEntry;
use openraft::storage::IOFlushed;
use openraft::storage::RaftLogStorage;
use openraft::LogState;
use openraft::OptionalSend;
use openraft::RaftLogReader;

use crate::codec::decode;
use crate::codec::encode;
use crate::flusher::Flusher;
use crate::types::TypeConfig;

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";
/// Entries deleted per batch by the background purge.
const PURGE_CHUNK: usize = 128;
/// Pause between chunks of the background purge.
const PURGE_PAUSE: std::time::Duration = std::time::Duration::from_millis(2);

/// The log store. Cheap to clone (sled handles are reference counted).
#[derive(Clone)]
pub struct LogStore {
    log: sled::Tree,
    meta: sled::Tree,
    /// Group commit: one flush covers every write waiting for it, answered in order.
    flusher: Arc<Flusher>,
    /// One background purge at a time (a later one covers what an earlier one has not reached).
    purge_lock: Arc<std::sync::Mutex<()>>,
    /// The first index not purged (0 before any purge): reads skip entries below it that the
    /// background purge has not deleted yet.
    first_kept: Arc<AtomicU64>,
}

impl LogStore {
    /// Opens (or creates) the log trees in `db`.
    pub fn open(db: sled::Db) -> Result<Self, io::Error> {
        let log = db.open_tree("log").map_err(io_err)?;
        let meta = db.open_tree("meta").map_err(io_err)?;
        let flusher = Arc::new(Flusher::start(db)?);
        let store = Self {
            log,
            meta,
            flusher,
            purge_lock: Arc::new(std::sync::Mutex::new(())),
            first_kept: Arc::new(AtomicU64::new(0)),
        };
        // Finish a purge that a crash interrupted.
        let last_purged: Option<LogIdOf<TypeConfig>> = store.get_meta(LAST_PURGED)?;
        if let Some(log_id) = last_purged {
            store
                .first_kept
                .store(log_id.index().saturating_add(1), Ordering::Release);
            store.delete_through(log_id.index(), false)?;
        }
        Ok(store)
    }

    /// Deletes the entries at or below `index`, `PURGE_CHUNK` at a time. Not flushed: the purge
    /// point is already durable, and entries a crash brings back are swept again at open.
    fn delete_through(&self, index: u64, pace: bool) -> Result<(), io::Error> {
        let Ok(_guard) = self.purge_lock.lock() else {
            return Err(io::Error::other("purge lock poisoned"));
        };
        loop {
            let mut batch = sled::Batch::default();
            let mut n = 0;
            for item in self.log.range(..=key(index)).take(PURGE_CHUNK) {
                let (k, _) = item.map_err(io_err)?;
                batch.remove(k);
                n += 1;
            }
            if n == 0 {
                return Ok(());
            }
            self.log.apply_batch(batch).map_err(io_err)?;
            if pace {
                // Leave room for appends between chunks: purging is never urgent.
                std::thread::sleep(PURGE_PAUSE);
            }
        }
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, io::Error> {
        match self.meta.get(key).map_err(io_err)? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    fn put_meta<T: serde::Serialize>(&self, key: &[u8], value: &T) -> Result<(), io::Error> {
        self.meta.insert(key, encode(value)?).map_err(io_err)?;
        Ok(())
    }

    async fn flush(&self) -> Result<(), io::Error> {
        self.flusher.flush().await
    }
}

fn io_err(e: sled::Error) -> io::Error {
    io::Error::other(format!("sled: {e}"))
}

fn key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<EntryOf<TypeConfig>>, io::Error> {
        let start = match range.start_bound() {
            Bound::Included(x) => *x,
            Bound::Excluded(x) => x.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let start = start.max(self.first_kept.load(Ordering::Acquire));
        let mut out = Vec::new();
        for item in self.log.range(key(start)..) {
            let (k, v) = item.map_err(io_err)?;
            let mut idx = [0u8; 8];
            if k.len() != 8 {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "bad log key"));
            }
            idx.copy_from_slice(&k);
            let index = u64::from_be_bytes(idx);
            if !range.contains(&index) {
                break;
            }
            out.push(decode::<EntryOf<TypeConfig>>(&v)?);
        }
        Ok(out)
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<TypeConfig>>, io::Error> {
        self.get_meta(VOTE)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged: Option<LogIdOf<TypeConfig>> = self.get_meta(LAST_PURGED)?;
        let last_entry = match self.log.last().map_err(io_err)? {
            Some((_, v)) => Some(decode::<EntryOf<TypeConfig>>(&v)?.log_id()),
            None => None,
        };
        // An entry not yet deleted by the background purge can sit at or below the purge point.
        let last = match (last_entry, last_purged) {
            (Some(e), Some(p)) if e.index() <= p.index() => Some(p),
            (Some(e), _) => Some(e),
            (None, p) => p,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<TypeConfig>) -> Result<(), io::Error> {
        self.put_meta(VOTE, vote)?;
        // Durable before returning: a vote forgotten in a crash allows voting twice in one term.
        self.flush().await
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogIdOf<TypeConfig>>,
    ) -> Result<(), io::Error> {
        // Not flushed here: it rides on the next append/vote flush. Losing the latest value only
        // means replaying fewer entries at start-up; the committed entries themselves are durable.
        self.put_meta(COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<TypeConfig>>, io::Error> {
        Ok(self
            .get_meta::<Option<LogIdOf<TypeConfig>>>(COMMITTED)?
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = EntryOf<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = sled::Batch::default();
        for entry in entries {
            batch.insert(&key(entry.index()), encode(&entry)?);
        }
        // Written (readable) before returning, as openraft requires; durable only when the flush
        // below completes, and only then is the callback told so. Appends are amortised: one flush
        // covers every entry written before it.
        self.log.apply_batch(batch).map_err(io_err)?;
        self.flusher
            .request(Box::new(move |res| callback.io_completed(res)));
        Ok(())
    }

    async fn truncate_after(
        &mut self,
        last_log_id: Option<LogIdOf<TypeConfig>>,
    ) -> Result<(), io::Error> {
        let from = last_log_id.map(|l| l.index() + 1).unwrap_or(0);
        let mut batch = sled::Batch::default();
        for item in self.log.range(key(from)..) {
            let (k, _) = item.map_err(io_err)?;
            batch.remove(k);
        }
        self.log.apply_batch(batch).map_err(io_err)?;
        // Flushed so a restart cannot resurrect entries a new leader overwrote.
        self.flush().await
    }

    async fn purge(&mut self, log_id: LogIdOf<TypeConfig>) -> Result<(), io::Error> {
        // Record the purge point first: entries at or before it are ignored even if still present.
        self.put_meta(LAST_PURGED, &log_id)?;
        self.flush().await?;
        let index = log_id.index();
        self.first_kept
            .fetch_max(index.saturating_add(1), Ordering::AcqRel);
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = this.delete_through(index, true) {
                // The entries stay on disk until the next purge or start-up sweeps them.
                tracing::warn!(error = %e, index, "background log purge failed");
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use openraft::testing::log_id;

    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn put_entries(store: &LogStore, indexes: std::ops::RangeInclusive<u64>) -> TestResult {
        for i in indexes {
            let entry = EntryOf::<TypeConfig>::new_blank(log_id::<TypeConfig>(1, 1, i));
            store.log.insert(key(i), encode(&entry)?)?;
        }
        Ok(())
    }

    #[tokio::test]
    async fn purged_entries_are_hidden_at_once_and_swept_at_open_after_a_crash() -> TestResult {
        let dir = tempfile::tempdir()?;
        let db = sled::Config::new().path(dir.path()).open()?;
        let mut store = LogStore::open(db.clone())?;
        put_entries(&store, 1..=100)?;

        store.purge(log_id::<TypeConfig>(1, 1, 60)).await?;
        // Hidden before the background deletion has necessarily run.
        let read = store.try_get_log_entries(0..=100).await?;
        let indexes: Vec<u64> = read.iter().map(|e| e.index()).collect();
        assert_eq!(indexes, (61..=100).collect::<Vec<_>>());

        // A crash after the purge point was made durable but before the deletion: the entries
        // are back on disk. Opening the store sweeps them before anything can read them.
        put_entries(&store, 1..=60)?;
        drop(store);
        let mut store = LogStore::open(db)?;
        assert!(store.log.range(..=key(60)).next().is_none());
        assert_eq!(store.log.len(), 40);
        let state = store.get_log_state().await?;
        assert_eq!(state.last_purged_log_id.map(|l| l.index()), Some(60));
        assert_eq!(state.last_log_id.map(|l| l.index()), Some(100));
        Ok(())
    }

    #[tokio::test]
    async fn a_purge_of_everything_reports_the_purge_point_as_the_last_entry() -> TestResult {
        let dir = tempfile::tempdir()?;
        let db = sled::Config::new().path(dir.path()).open()?;
        let mut store = LogStore::open(db)?;
        put_entries(&store, 1..=10)?;
        store.purge(log_id::<TypeConfig>(1, 1, 10)).await?;
        let state = store.get_log_state().await?;
        assert_eq!(state.last_log_id.map(|l| l.index()), Some(10));
        assert!(store.try_get_log_entries(0..=10).await?.is_empty());
        Ok(())
    }
}
