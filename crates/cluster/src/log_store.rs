//! The Raft log, vote and committed index on sled.
//!
//! Entries live in segments: one sled tree per `segment_len` consecutive indexes (named
//! `log.<segment number in hex>`), keyed by the index in big-endian so keys sort by index. The
//! `meta` tree holds the vote, the committed index and the purge point. sled flushes in the
//! background only every 500 ms, so every operation that openraft must see as durable (append,
//! vote) waits for a flush before reporting success: an early acknowledgement could double-vote or
//! lose acknowledged writes after a crash. One flush thread serves every waiter (see `flusher`).
//!
//! The committed index is the exception: openraft does not wait for it, so `save_committed` only
//! writes it and asks for a flush. A node must still never publish a version that a crash could
//! take back (after a restart openraft re-applies only up to the committed index on disk), so the
//! state machine waits on [`DurableCommit`] before publishing; see `save_committed`.
//!
//! Purging (after each snapshot) records the purge point durably, then drops the segments that lie
//! wholly at or below it. Deleting entry by entry cost as much sled work as appending them (an
//! eighth of a follower's CPU under write load); dropping a tree costs a few page frees. Entries at
//! or below the purge point that share a segment with later ones stay on disk until their segment
//! goes, and are never read. Opening the store drops what a crash left behind.

use std::fmt::Debug;
use std::io;
use std::ops::Bound;
use std::ops::RangeBounds;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

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
use crate::codec::Kind;
use crate::flusher::Durable;
use crate::flusher::Flusher;
use crate::levels::ActiveLevel;
use crate::log_segments::index_of;
use crate::log_segments::io_err;
use crate::log_segments::key;
use crate::log_segments::Segments;
use crate::types::TypeConfig;

/// The format level to write `entry` at: the active level, or the level its command first exists
/// at if that is higher (the entry that raises the level, which every member reads by then).
pub(crate) fn entry_level(entry: &EntryOf<TypeConfig>, active: u8) -> u8 {
    match &entry.payload {
        openraft::EntryPayload::Normal(req) => active.max(req.0.command.format_level()),
        _ => active,
    }
}

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";
/// Entries per segment tree.
pub const SEGMENT_LEN: u64 = 4096;
/// The single entry tree of stores written before segments; moved into segments at open.
const LEGACY_LOG_TREE: &[u8] = b"log";

/// The log store. Cheap to clone (sled handles are reference counted).
#[derive(Clone)]
pub struct LogStore {
    segments: Arc<Segments>,
    meta: sled::Tree,
    /// Group commit: one flush covers every write waiting for it, answered in order.
    flusher: Arc<Flusher>,
    /// The first index not purged (0 before any purge): reads skip entries below it that share a
    /// segment with later ones.
    first_kept: Arc<AtomicU64>,
    /// The cluster's active format level as this member applied it: entries are written in its
    /// log entry format (or the one their command needs, if newer).
    level: ActiveLevel,
}

impl LogStore {
    /// Opens (or creates) the log in `db`.
    pub fn open(db: sled::Db) -> Result<Self, io::Error> {
        Self::open_with_segment_len(db, SEGMENT_LEN)
    }

    /// Writes entries in the formats of `level` (shared with the state machine, which moves it).
    pub fn with_level(mut self, level: ActiveLevel) -> Self {
        self.level = level;
        self
    }

    /// Opens the log with `segment_len` entries per segment. The default is [`SEGMENT_LEN`];
    /// tests use tiny segments to exercise their boundaries.
    pub fn open_with_segment_len(db: sled::Db, segment_len: u64) -> Result<Self, io::Error> {
        let meta = db.open_tree("meta").map_err(io_err)?;
        let segments = Arc::new(Segments::open(db.clone(), segment_len)?);
        // The committed index on disk at open is what start-up re-applies to, and no crash of
        // this process can take it back: it counts as durable without a flush.
        let committed: Option<LogIdOf<TypeConfig>> = get_meta(&meta, COMMITTED)?.flatten();
        let store = Self {
            segments,
            meta,
            flusher: Arc::new(Flusher::start(db.clone(), commit_mark(committed.as_ref()))?),
            first_kept: Arc::new(AtomicU64::new(0)),
            level: ActiveLevel::default(),
        };
        store.move_legacy_log(&db)?;
        // Finish a purge that a crash interrupted.
        let last_purged: Option<LogIdOf<TypeConfig>> = store.get_meta(LAST_PURGED)?;
        if let Some(log_id) = last_purged {
            store
                .first_kept
                .store(log_id.index().saturating_add(1), Ordering::Release);
            store.segments.drop_through(log_id.index())?;
        }
        Ok(store)
    }

    /// Moves the entries of a store written before segments into segments, then drops the old
    /// tree. Crash-safe: the old tree goes only after the copies are flushed, and a repeated move
    /// rewrites the same entries.
    fn move_legacy_log(&self, db: &sled::Db) -> Result<(), io::Error> {
        if !db.tree_names().iter().any(|n| n == LEGACY_LOG_TREE) {
            return Ok(());
        }
        let legacy = db.open_tree(LEGACY_LOG_TREE).map_err(io_err)?;
        let mut chunk = Vec::new();
        for item in legacy.iter() {
            let (k, v) = item.map_err(io_err)?;
            chunk.push((index_of(&k)?, v.to_vec()));
            if chunk.len() >= 1024 {
                self.segments.insert(std::mem::take(&mut chunk))?;
            }
        }
        self.segments.insert(chunk)?;
        db.flush().map_err(io_err)?;
        drop(legacy);
        db.drop_tree(LEGACY_LOG_TREE).map_err(io_err)?;
        Ok(())
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, io::Error> {
        get_meta(&self.meta, key)
    }

    fn put_meta<T: serde::Serialize>(&self, key: &[u8], value: &T) -> Result<(), io::Error> {
        self.meta
            .insert(key, encode(1, Kind::RaftMeta, value)?)
            .map_err(io_err)?;
        Ok(())
    }

    async fn flush(&self) -> Result<(), io::Error> {
        self.flusher.flush().await
    }

    /// What the state machine waits on before it publishes a version: the committed index as far
    /// as it is on disk.
    pub fn durable_commit(&self) -> DurableCommit {
        DurableCommit {
            durable: self.flusher.durable(),
        }
    }
}

fn get_meta<T: serde::de::DeserializeOwned>(
    meta: &sled::Tree,
    key: &[u8],
) -> Result<Option<T>, io::Error> {
    match meta.get(key).map_err(io_err)? {
        Some(bytes) => Ok(Some(decode(Kind::RaftMeta, &bytes)?)),
        None => Ok(None),
    }
}

/// The flusher's mark for a committed log id: its index plus one, so that "nothing committed" (0)
/// is below index 0.
fn commit_mark(committed: Option<&LogIdOf<TypeConfig>>) -> u64 {
    committed.map_or(0, |c| c.index().saturating_add(1))
}

/// How long publishing waits for the committed index to reach the disk before it gives up (an
/// error stops Raft on this node, as a failed append does). A flush takes milliseconds; only a
/// failing disk takes this long.
const DURABLE_COMMIT_WAIT: Duration = Duration::from_secs(30);

/// The committed index as far as it is durable, for the state machine (see
/// [`LogStore::durable_commit`]).
#[derive(Clone)]
pub struct DurableCommit {
    durable: tokio::sync::watch::Receiver<Durable>,
}

impl DurableCommit {
    /// Waits until a committed index at or above `index` is on disk. Immediate when a flush has
    /// already covered it, as it has under write load (appends keep the flush thread busy) and
    /// during start-up replay (which stops at the committed index found on disk).
    pub async fn covers(&self, index: u64) -> Result<(), io::Error> {
        let want = index.saturating_add(1);
        if self.durable.borrow().mark >= want {
            return Ok(());
        }
        // `save_committed` wrote the index and asked for a flush before openraft handed the
        // entries to apply: no need to ask again, only to wait for it.
        let mut durable = self.durable.clone();
        let waited = tokio::time::timeout(
            DURABLE_COMMIT_WAIT,
            durable.wait_for(|d| d.mark >= want || d.failed.is_some()),
        )
        .await;
        let state = match waited {
            Ok(Ok(state)) => state.clone(),
            Ok(Err(_)) => return Err(io::Error::other("the log store is closed")),
            Err(_) => {
                return Err(io::Error::other(format!(
                    "the committed index {index} was not flushed within {DURABLE_COMMIT_WAIT:?}"
                )))
            }
        };
        match state.failed {
            Some(e) if state.mark < want => Err(io::Error::other(format!(
                "flushing the committed index {index}: {e}"
            ))),
            _ => Ok(()),
        }
    }
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
        let trees = self.segments.read()?;
        for tree in trees
            .range(self.segments.segment_of(start)..)
            .map(|(_, t)| t)
        {
            for item in tree.range(key(start)..) {
                let (k, v) = item.map_err(io_err)?;
                let index = index_of(&k)?;
                if !range.contains(&index) {
                    return Ok(out);
                }
                out.push(decode::<EntryOf<TypeConfig>>(Kind::LogEntry, &v)?);
            }
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
        let mut last_entry = None;
        for tree in self.segments.read()?.values().rev() {
            if let Some((_, v)) = tree.last().map_err(io_err)? {
                last_entry = Some(decode::<EntryOf<TypeConfig>>(Kind::LogEntry, &v)?.log_id());
                break;
            }
        }
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
        // Not waited for here: openraft's core task awaits this call before it hands the entries
        // up to `committed` to apply, and a flush here would stall the core once per commit. But a
        // restart re-applies only up to the committed index on disk, so a version published
        // above it could go backwards after a crash (issue #12). Hence: write it, raise the
        // flusher's mark (this index is on disk once a flush that starts after this point
        // completes), and make sure such a flush comes; the state machine waits for it
        // (`DurableCommit::covers`) before publishing. Under write load the appends' own flushes
        // already cover it, and the nudge costs nothing.
        //
        // INVARIANT: the entries up to `committed` were written before it (openraft runs the
        // append of an entry before the commit that covers it), so the flush that makes the index
        // durable makes them durable too, and a restart finds every entry it must re-apply.
        self.put_meta(COMMITTED, &committed)?;
        self.flusher.mark_written(commit_mark(committed.as_ref()));
        self.flusher.nudge();
        Ok(())
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
        let active = self.level.get();
        let entries = entries
            .into_iter()
            .map(|e| {
                Ok((
                    e.index(),
                    encode(entry_level(&e, active), Kind::LogEntry, &e)?,
                ))
            })
            .collect::<Result<Vec<_>, io::Error>>()?;
        // Written (readable) before returning, as openraft requires; durable only when the flush
        // below completes, and only then is the callback told so. Appends are amortised: one flush
        // covers every entry written before it.
        self.segments.insert(entries)?;
        self.flusher
            .request(Box::new(move |res| callback.io_completed(res)));
        Ok(())
    }

    async fn truncate_after(
        &mut self,
        last_log_id: Option<LogIdOf<TypeConfig>>,
    ) -> Result<(), io::Error> {
        let from = last_log_id.map(|l| l.index() + 1).unwrap_or(0);
        let first = self.segments.segment_of(from);
        let tree = self.segments.read()?.get(&first).cloned();
        if let Some(tree) = tree {
            let mut batch = sled::Batch::default();
            for item in tree.range(key(from)..) {
                let (k, _) = item.map_err(io_err)?;
                batch.remove(k);
            }
            tree.apply_batch(batch).map_err(io_err)?;
        }
        self.segments.drop_where(|n| n > first)?;
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
        let segments = self.segments.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = segments.drop_through(index) {
                // The segments stay on disk until the next purge or start-up drops them.
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
        let mut entries = Vec::new();
        for i in indexes {
            let entry = EntryOf::<TypeConfig>::new_blank(log_id::<TypeConfig>(1, 1, i));
            entries.push((i, encode(1, Kind::LogEntry, &entry)?));
        }
        store.segments.insert(entries)?;
        Ok(())
    }

    fn stored(store: &LogStore) -> Result<Vec<u64>, io::Error> {
        let mut out = Vec::new();
        for tree in store.segments.read()?.values() {
            for item in tree.iter() {
                out.push(index_of(&item.map_err(io_err)?.0)?);
            }
        }
        Ok(out)
    }

    /// A store with 16-entry segments holding entries 1..=100.
    fn hundred_entries(
    ) -> Result<(tempfile::TempDir, sled::Db, LogStore), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let db = sled::Config::new().path(dir.path()).open()?;
        let store = LogStore::open_with_segment_len(db.clone(), 16)?;
        put_entries(&store, 1..=100)?;
        Ok((dir, db, store))
    }

    /// Waits (with a deadline) for the background purge.
    async fn settle(store: &LogStore, want_first: u64) -> TestResult {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while stored(store)?.first().copied() != Some(want_first) {
            if std::time::Instant::now() > deadline {
                return Err(format!("purge did not finish: {:?}", stored(store)?.first()).into());
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        Ok(())
    }

    #[tokio::test]
    async fn a_purge_hides_entries_at_once_and_drops_whole_segments() -> TestResult {
        let (_dir, _db, mut store) = hundred_entries()?;

        store.purge(log_id::<TypeConfig>(1, 1, 60)).await?;
        // Hidden before the background drop has necessarily run.
        let read = store.try_get_log_entries(0..=100).await?;
        let indexes: Vec<u64> = read.iter().map(|e| e.index()).collect();
        assert_eq!(indexes, (61..=100).collect::<Vec<_>>());
        // Segments 0-2 (indexes 0-47) lie wholly at or below 60 and go; segment 3 (48-63) stays.
        settle(&store, 48).await?;
        assert_eq!(stored(&store)?, (48..=100).collect::<Vec<_>>());
        let read = store.try_get_log_entries(0..=100).await?;
        assert_eq!(read.first().map(|e| e.index()), Some(61));
        Ok(())
    }

    #[tokio::test]
    async fn opening_drops_the_segments_a_crash_left_behind() -> TestResult {
        let (_dir, db, mut store) = hundred_entries()?;
        store.purge(log_id::<TypeConfig>(1, 1, 60)).await?;
        settle(&store, 48).await?;
        // A crash after the purge point was made durable but before the drop: the entries are
        // back on disk. Opening the store drops them before anything can read them.
        put_entries(&store, 1..=47)?;
        drop(store);
        let mut store = LogStore::open_with_segment_len(db, 16)?;
        assert_eq!(stored(&store)?, (48..=100).collect::<Vec<_>>());
        let state = store.get_log_state().await?;
        assert_eq!(state.last_purged_log_id.map(|l| l.index()), Some(60));
        assert_eq!(state.last_log_id.map(|l| l.index()), Some(100));
        Ok(())
    }

    #[tokio::test]
    async fn truncation_spans_segments() -> TestResult {
        let (_dir, _db, mut store) = hundred_entries()?;
        store
            .truncate_after(Some(log_id::<TypeConfig>(1, 1, 20)))
            .await?;
        assert_eq!(stored(&store)?, (1..=20).collect::<Vec<_>>());
        let state = store.get_log_state().await?;
        assert_eq!(state.last_log_id.map(|l| l.index()), Some(20));
        put_entries(&store, 21..=40)?;
        let read = store.try_get_log_entries(15..=35).await?;
        assert_eq!(
            read.iter().map(|e| e.index()).collect::<Vec<_>>(),
            (15..=35).collect::<Vec<_>>()
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_store_written_before_segments_is_moved_into_them() -> TestResult {
        let dir = tempfile::tempdir()?;
        let db = sled::Config::new().path(dir.path()).open()?;
        let legacy = db.open_tree(LEGACY_LOG_TREE)?;
        for i in 1..=50u64 {
            let entry = EntryOf::<TypeConfig>::new_blank(log_id::<TypeConfig>(1, 1, i));
            legacy.insert(key(i), encode(1, Kind::LogEntry, &entry)?)?;
        }
        drop(legacy);
        let mut store = LogStore::open_with_segment_len(db.clone(), 16)?;
        assert!(!db.tree_names().iter().any(|n| n == LEGACY_LOG_TREE));
        assert_eq!(stored(&store)?, (1..=50).collect::<Vec<_>>());
        let state = store.get_log_state().await?;
        assert_eq!(state.last_log_id.map(|l| l.index()), Some(50));
        Ok(())
    }

    #[tokio::test]
    async fn a_purge_of_everything_reports_the_purge_point_as_the_last_entry() -> TestResult {
        let dir = tempfile::tempdir()?;
        let db = sled::Config::new().path(dir.path()).open()?;
        let mut store = LogStore::open_with_segment_len(db, 16)?;
        put_entries(&store, 1..=10)?;
        store.purge(log_id::<TypeConfig>(1, 1, 10)).await?;
        let state = store.get_log_state().await?;
        assert_eq!(state.last_log_id.map(|l| l.index()), Some(10));
        assert!(store.try_get_log_entries(0..=10).await?.is_empty());
        Ok(())
    }

    /// Nothing newer than the active level is written: at level 1 an ordinary entry is format 1
    /// (the previous release reads it), the entry raising the level is level 2's; at level 2
    /// every entry is.
    #[test]
    fn entries_are_written_at_the_active_level() {
        use verdict_engine::Command;
        use verdict_engine::Write;
        let normal = |command: Command| {
            EntryOf::<TypeConfig>::new_normal(
                log_id::<TypeConfig>(1, 1, 1),
                crate::types::Request(Write {
                    command,
                    if_match: None,
                    idempotency_key: None,
                    stamped_ms: 0,
                }),
            )
        };
        let blank = EntryOf::<TypeConfig>::new_blank(log_id::<TypeConfig>(1, 1, 1));
        let plain = normal(Command::DeleteSchema);
        let raise = normal(Command::RaiseLevel { level: 2 });
        assert_eq!(entry_level(&blank, 1), 1);
        assert_eq!(entry_level(&plain, 1), 1);
        assert_eq!(entry_level(&raise, 1), 2);
        assert_eq!(entry_level(&plain, 2), 2);
        assert_eq!(crate::codec::formats(entry_level(&plain, 1)).log_entry, 1);
        assert_eq!(crate::codec::formats(entry_level(&raise, 1)).log_entry, 2);
    }
}
