//! The state machine: applies committed entries to the engine's immutable snapshot and publishes each
//! batch's result atomically (arc-swap). It keeps no state on disk between snapshots: a restart loads
//! the latest snapshot file and openraft replays the committed log tail after it.
//!
//! A batch is published only once the committed index covering it is on disk
//! ([`DurableCommit`]): a restart re-applies up to that index, so no published version is ever
//! taken back by a crash. Snapshot files are durable before anything they hold is published.
//!
//! Snapshot files are `snap-<index>.bin` in the snapshot directory: written to a temporary file,
//! fsynced, renamed, and the directory fsynced, so a crash leaves either the old or the new file.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::io::Cursor;
use std::io::Write as _;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;

use arc_swap::ArcSwap;
use futures::Stream;
use futures::TryStreamExt;
use openraft::alias::LogIdOf;
use openraft::alias::SnapshotMetaOf;
use openraft::alias::SnapshotOf;
use openraft::alias::StoredMembershipOf;
use openraft::entry::RaftEntry;
use openraft::storage::EntryResponder;
use openraft::storage::RaftStateMachine;
use openraft::EntryPayload;
use openraft::OptionalSend;
use openraft::RaftSnapshotBuilder;
use tokio::sync::watch;
use verdict_engine::Outcome;
use verdict_engine::ParseCache;
use verdict_engine::Snapshot;

use crate::history::ChangeEvent;
use crate::history::History;
use crate::history::Since;
use crate::levels::ActiveLevel;
use crate::log_store::DurableCommit;
use crate::snapshot_file::decode_file;
use crate::snapshot_file::decode_to_written_format;
use crate::snapshot_file::encode_file;
use crate::snapshot_file::SnapshotFile;
use crate::types::NodeId;
use crate::types::Response;
use crate::types::TypeConfig;

/// How many recent versions the watch stream can resume from (besides the log, which openraft
/// purges on its own schedule).
pub const HISTORY_CAPACITY: usize = 20_000;

/// What the rest of the node reads: the published snapshot, a signal when its version moves, the
/// recent change events and every node id the cluster has ever had.
pub struct Published {
    current: ArcSwap<Snapshot>,
    version_tx: watch::Sender<u64>,
    history: Mutex<History>,
    members_seen: ArcSwap<BTreeSet<NodeId>>,
}

impl Published {
    fn new(initial: Snapshot, members_seen: BTreeSet<NodeId>) -> Self {
        let version = initial.version();
        Self {
            current: ArcSwap::from_pointee(initial),
            version_tx: watch::channel(version).0,
            history: Mutex::new(History::new(version, HISTORY_CAPACITY)),
            members_seen: ArcSwap::from_pointee(members_seen),
        }
    }

    /// Bounds the window of recent change events in bytes.
    pub fn set_history_max_bytes(&self, max_bytes: usize) {
        if let Ok(mut h) = self.history.lock() {
            h.set_max_bytes(max_bytes);
        }
    }

    /// Up to `max` change events after version `after` (or a gap: the reader must reload).
    /// Not on the decision path: the lock is shared only with apply's short push.
    pub fn changes_since(&self, after: u64, max: usize) -> Since {
        match self.history.lock() {
            Ok(h) => h.since(after, max),
            Err(poisoned) => poisoned.into_inner().since(after, max),
        }
    }

    /// Every node id that has ever been a member (voter or learner) of this cluster.
    pub fn members_seen(&self) -> Arc<BTreeSet<NodeId>> {
        self.members_seen.load_full()
    }

    fn record(&self, events: Vec<ChangeEvent>, reset_to: Option<u64>) {
        let mut h = match self.history.lock() {
            Ok(h) => h,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(v) = reset_to {
            h.reset(v);
        }
        for e in events {
            h.push(e);
        }
    }

    fn see_members(&self, ids: impl IntoIterator<Item = NodeId>) {
        let mut seen = (*self.members_seen.load_full()).clone();
        let before = seen.len();
        seen.extend(ids);
        if seen.len() != before {
            self.members_seen.store(Arc::new(seen));
        }
    }

    /// The current snapshot. Never blocks, never waits for a writer.
    pub fn load(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// The current snapshot as an owned `Arc`.
    pub fn load_full(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// A receiver that observes every version change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version_tx.subscribe()
    }

    fn publish(&self, next: Arc<Snapshot>) {
        let version = next.version();
        // INVARIANT: versions never go backwards; apply only ever moves forward.
        if version < self.current.load().version() {
            return;
        }
        self.current.store(next);
        self.version_tx.send_replace(version);
    }
}

/// The Raft handle over this state machine.
pub type Raft = openraft::Raft<TypeConfig, StateMachine>;

/// The openraft state machine over the engine.
pub struct StateMachine {
    published: Arc<Published>,
    last_applied: Option<LogIdOf<TypeConfig>>,
    last_membership: StoredMembershipOf<TypeConfig>,
    dir: PathBuf,
    /// What a batch waits for before it is published; `None` publishes at once (openraft's
    /// storage suite drives apply without committing first).
    durable_commit: Option<DurableCommit>,
    /// Policies parsed when this node checked a write before proposing it, for apply to reuse.
    /// Owned here and lent to the node's write path ([`StateMachine::parse_cache`]).
    parses: Arc<ParseCache>,
    /// The active format level of the published state, for the writers that hold no snapshot.
    level: ActiveLevel,
}

impl StateMachine {
    /// Opens the state machine, loading the newest snapshot file in `dir` if there is one.
    pub fn open(dir: &Path) -> Result<Self, io::Error> {
        fs::create_dir_all(dir)?;
        let mut sm = Self {
            published: Arc::new(Published::new(Snapshot::empty(), BTreeSet::new())),
            last_applied: None,
            last_membership: StoredMembershipOf::<TypeConfig>::default(),
            dir: dir.to_path_buf(),
            durable_commit: None,
            parses: Arc::new(ParseCache::new()),
            level: ActiveLevel::default(),
        };
        if let Some(path) = newest_snapshot(dir)? {
            let bytes = fs::read(&path)?;
            let file = decode_file(&bytes).map_err(|e| in_file(&path, e))?;
            let snapshot = Snapshot::from_persisted(&file.state)
                .map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("snapshot {}: {e}", path.display()),
                    )
                })?
                .with_format_level(file.level);
            sm.level.observe(snapshot.format_level());
            tracing::info!(version = snapshot.version(), level = snapshot.format_level(), file = %path.display(), "loaded snapshot");
            sm.published = Arc::new(Published::new(snapshot, file.members_seen));
            sm.last_applied = file.meta.last_log_id;
            sm.last_membership = file.meta.last_membership;
        }
        Ok(sm)
    }

    /// Publishes each applied batch only once `commit` shows its last index committed on disk.
    pub fn publishing_when_durable(mut self, commit: DurableCommit) -> Self {
        self.durable_commit = Some(commit);
        self
    }

    /// The cluster's active format level as applied here (shared with the log store).
    pub fn active_level(&self) -> ActiveLevel {
        self.level.clone()
    }

    /// The published state, shared with the server.
    pub fn published(&self) -> Arc<Published> {
        self.published.clone()
    }

    /// The parse cache apply reads: whoever checks a write on this node before proposing it
    /// passes this cache to `Snapshot::check`.
    pub fn parse_cache(&self) -> Arc<ParseCache> {
        self.parses.clone()
    }
}

/// `e` with the path of the snapshot file it came from, for the operator; a format error stays
/// findable inside it ([`crate::codec::FormatError::of`]).
fn in_file(path: &Path, e: io::Error) -> io::Error {
    #[derive(Debug, thiserror::Error)]
    #[error("snapshot file {path}: {source}")]
    struct InFile {
        path: String,
        source: io::Error,
    }
    let kind = e.kind();
    io::Error::new(
        kind,
        InFile {
            path: path.display().to_string(),
            source: e,
        },
    )
}

fn snapshot_name(index: u64) -> String {
    format!("snap-{index:020}.bin")
}

fn newest_snapshot(dir: &Path) -> Result<Option<PathBuf>, io::Error> {
    let mut best: Option<PathBuf> = None;
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("snap-")
            && name.ends_with(".bin")
            && best.as_ref().is_none_or(|b| path > *b)
        {
            best = Some(path);
        }
    }
    Ok(best)
}

/// Writes `bytes` to `dir/name` atomically and durably, then removes older snapshot files.
fn write_snapshot_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), io::Error> {
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    let path = dir.join(name);
    fs::rename(&tmp, &path)?;
    fs::File::open(dir)?.sync_all()?;
    for entry in fs::read_dir(dir)? {
        let p = entry?.path();
        let n = p
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_string();
        if n.starts_with("snap-") && p != path && (n.as_str() < name || n.ends_with(".tmp")) {
            let _ = fs::remove_file(&p);
        }
    }
    Ok(())
}

/// Builds snapshot files from a fixed, consistent view: the published snapshot and the log position
/// and membership it reflects, captured together.
pub struct Builder {
    snapshot: Arc<Snapshot>,
    members_seen: Arc<BTreeSet<NodeId>>,
    last_applied: Option<LogIdOf<TypeConfig>>,
    last_membership: StoredMembershipOf<TypeConfig>,
    dir: PathBuf,
}

impl RaftSnapshotBuilder<TypeConfig> for Builder {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn build_snapshot(
        &mut self,
    ) -> Result<SnapshotOf<TypeConfig, Self::SnapshotData>, io::Error> {
        let meta = SnapshotMetaOf::<TypeConfig> {
            last_log_id: self.last_applied,
            last_membership: self.last_membership.clone(),
        };
        let snapshot = self.snapshot.clone();
        let members_seen = self.members_seen.clone();
        let dir = self.dir.clone();
        let file_meta = meta.clone();
        let bytes = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, io::Error> {
            let file = SnapshotFile {
                meta: file_meta.clone(),
                state: snapshot.to_persisted(),
                members_seen: (*members_seen).clone(),
                level: snapshot.format_level(),
            };
            let bytes = encode_file(&file)?;
            let index = file_meta.last_log_id.map(|l| l.index()).unwrap_or(0);
            write_snapshot_file(&dir, &snapshot_name(index), &bytes)?;
            Ok(bytes)
        })
        .await
        .map_err(|e| io::Error::other(format!("snapshot task: {e}")))??;
        tracing::info!(index = ?meta.last_log_id.map(|l| l.index()), bytes = bytes.len(), "built snapshot");
        Ok(SnapshotOf::<TypeConfig, Self::SnapshotData> {
            meta,
            snapshot: Cursor::new(bytes),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = Cursor<Vec<u8>>;
    type SnapshotBuilder = Builder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<TypeConfig>>, StoredMembershipOf<TypeConfig>), io::Error> {
        Ok((self.last_applied, self.last_membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        // One private copy of the published state takes the whole batch in place; readers keep
        // the published one until the batch's final state replaces it.
        let mut next: Option<Snapshot> = None;
        let mut responders = Vec::new();
        let mut events = Vec::new();
        while let Some((entry, responder)) = entries.try_next().await? {
            let log_id = entry.log_id();
            let index = log_id.index();
            let state = next.get_or_insert_with(|| (*self.published.load_full()).clone());
            let outcome = match &entry.payload {
                EntryPayload::Normal(req) => {
                    let effect = state.apply_in_place(index, &req.0, &self.parses);
                    events.push(ChangeEvent::of_write(index, &req.0.command, &effect));
                    effect.outcome
                }
                EntryPayload::Membership(m) => {
                    self.published.see_members(m.nodes().map(|(id, _)| *id));
                    self.last_membership =
                        StoredMembershipOf::<TypeConfig>::new(Some(log_id), m.clone());
                    events.push(ChangeEvent::internal(index, "membership"));
                    state.advance_to(index);
                    Outcome::Applied
                }
                EntryPayload::Blank => {
                    events.push(ChangeEvent::internal(index, "leader_elected"));
                    state.advance_to(index);
                    Outcome::Applied
                }
            };
            if let Outcome::Rejected(e) = &outcome {
                tracing::debug!(index, code = e.code.as_str(), "write rejected in apply");
            }
            self.last_applied = Some(log_id);
            if let Some(r) = responder {
                responders.push((r, Response(outcome)));
            }
        }
        if let (Some(commit), Some(last)) = (&self.durable_commit, &self.last_applied) {
            // Not before the commit is durable: a crash now would restart this node at the
            // committed index on disk, below a version it had already shown (issue #12). Readers
            // keep the previous snapshot meanwhile; clients wait for their answer.
            commit.covers(last.index()).await?;
        }
        if let Some(next) = next {
            // Publish before answering: a client that is told "version N" can read N here at once.
            // Events first, so a watcher woken by the new version finds its event.
            self.published.record(events, None);
            self.level.observe(next.format_level());
            self.published.publish(Arc::new(next));
        }
        for (r, resp) in responders {
            r.send(resp);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        Builder {
            snapshot: self.published.load_full(),
            members_seen: self.published.members_seen(),
            last_applied: self.last_applied,
            last_membership: self.last_membership.clone(),
            dir: self.dir.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<TypeConfig>,
        snapshot: Self::SnapshotData,
    ) -> Result<(), io::Error> {
        let bytes = snapshot.into_inner();
        let dir = self.dir.clone();
        let index = meta.last_log_id.map(|l| l.index()).unwrap_or(0);
        let (restored, seen) = tokio::task::spawn_blocking(move || -> Result<_, io::Error> {
            let (file, bytes) = decode_to_written_format(bytes)?;
            let snap = Snapshot::from_persisted(&file.state)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("snapshot: {e}")))?
                .with_format_level(file.level);
            write_snapshot_file(&dir, &snapshot_name(index), &bytes)?;
            Ok((snap, file.members_seen))
        })
        .await
        .map_err(|e| io::Error::other(format!("install task: {e}")))??;
        self.last_applied = meta.last_log_id;
        self.last_membership = meta.last_membership.clone();
        self.published.see_members(seen);
        self.published
            .see_members(meta.last_membership.membership().nodes().map(|(id, _)| *id));
        // The versions the snapshot skipped are not in the window: watchers behind it resync.
        self.published.record(Vec::new(), Some(index));
        self.level.observe(restored.format_level());
        self.published.publish(Arc::new(restored.at_version(index)));
        tracing::debug!(version = index, "installed a snapshot from the leader");
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<TypeConfig, Self::SnapshotData>>, io::Error> {
        let Some(path) = newest_snapshot(&self.dir)? else {
            return Ok(None);
        };
        let (file, bytes) =
            decode_to_written_format(fs::read(&path)?).map_err(|e| in_file(&path, e))?;
        Ok(Some(SnapshotOf::<TypeConfig, Self::SnapshotData> {
            meta: file.meta,
            snapshot: Cursor::new(bytes),
        }))
    }
}
