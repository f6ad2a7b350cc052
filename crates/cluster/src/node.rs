//! One Raft member: opens storage, starts openraft, bootstraps a one-member cluster on first start,
//! and offers the server a small API (write, read the published snapshot, status) that hides openraft.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use openraft::SnapshotPolicy;
use verdict_engine::Outcome;
use verdict_engine::ParseCache;
use verdict_engine::Write;

use crate::log_store::LogStore;
use crate::membership::members;
use crate::membership::membership_reason;
use crate::membership::Membership;
use crate::network::PeerNetwork;
use crate::peer_call::PeerCaller;
use crate::state_machine::Published;
use crate::state_machine::Raft;
use crate::state_machine::StateMachine;
use crate::types::MembershipError;
use crate::types::MembershipOp;
use crate::types::NodeId;
use crate::types::NodeInfo;
use crate::types::NodeReport;
use crate::write::Forwarder;
use crate::write::WriteError;
use crate::write::Writer;

/// How to start a member.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// This member's id; never reused for another data directory.
    pub node_id: NodeId,
    /// Where the log (sled) and snapshot files live.
    pub data_dir: PathBuf,
    /// How other members reach this one.
    pub info: NodeInfo,
    /// Shared secret for peer RPCs.
    pub cluster_secret: String,
    /// Who initialises the cluster on first start.
    pub bootstrap: Bootstrap,
    /// Build a snapshot after this many applied entries.
    pub snapshot_every: u64,
    /// Log entries kept behind a snapshot for followers that lag; further behind they get the
    /// snapshot.
    pub keep_log_behind_snapshot: u64,
    /// Readiness limits.
    pub limits: Limits,
    /// Most bytes the watch stream's window of recent changes may hold
    /// ([`crate::history::DEFAULT_HISTORY_MAX_BYTES`] by default).
    pub history_max_bytes: usize,
    /// TLS for connections to other members (Raft, forwarded writes, membership and status
    /// calls); `None`: plain HTTP.
    pub peer_tls: crate::network::PeerTls,
}

/// When a member stops calling itself ready.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// More than this many committed entries not yet applied here → not ready.
    pub max_lag: u64,
    /// No word from a leader (a follower) or from a quorum (the leader) for this long → not ready.
    pub max_leader_silence: Duration,
}

/// How a new cluster comes into being.
#[derive(Debug, Clone)]
pub enum Bootstrap {
    /// A one-member cluster of this node (single-node mode).
    Single,
    /// A fixed member list; only the lowest id initialises it, so `initialize` runs on exactly one node.
    Static(BTreeMap<NodeId, NodeInfo>),
    /// Never initialise (a node that will be added to an existing cluster).
    Join,
}

/// Errors starting a member.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Storage could not be opened.
    #[error("storage: {0}")]
    Storage(#[from] io::Error),
    /// openraft refused to start.
    #[error("raft: {0}")]
    Raft(String),
}

/// A point-in-time view of this member's Raft state.
#[derive(Debug, Clone)]
pub struct Status {
    /// This member's id.
    pub id: NodeId,
    /// Current term.
    pub term: u64,
    /// Known leader.
    pub leader: Option<NodeId>,
    /// Whether this member is the leader.
    pub is_leader: bool,
    /// Last log index this member holds.
    pub last_log_index: u64,
    /// Highest index known committed.
    pub committed: u64,
    /// Highest index applied to the published snapshot.
    pub applied: u64,
    /// Voters and learners with their addresses.
    pub members: Vec<(NodeId, NodeInfo, bool)>,
    /// `Err` with the reason if openraft stopped.
    pub running: Result<(), String>,
}

/// A running member.
#[derive(Clone)]
pub struct Node {
    raft: Raft,
    published: Arc<Published>,
    /// The state machine's parse cache, for checking writes before they are proposed.
    parses: Arc<ParseCache>,
    id: NodeId,
    /// Asks other members for their reports (cluster status).
    forwarder: Forwarder,
    /// The JSON calls between members (remote drain, capacity figures).
    caller: PeerCaller,
    writer: Writer,
    membership: Membership,
    limits: Limits,
    draining: Arc<AtomicBool>,
    started: Instant,
    /// Milliseconds after `started` at which a leader last reached this member (append entries).
    leader_contact_ms: Arc<AtomicU64>,
    /// The committed index found in storage at start: not ready before it is applied again.
    recover_to: u64,
    /// The last request from another member this release could not read (a newer format), and
    /// when: reported in readiness for a while, so a member left behind says why.
    unreadable: Arc<arc_swap::ArcSwapOption<(Instant, String)>>,
    /// Whether this start initialised a new cluster (its first start).
    bootstrapped: bool,
}

/// How long an unreadable request from another member keeps this member not ready.
const UNREADABLE_REPORTED_FOR: Duration = Duration::from_secs(10);

impl Node {
    /// Opens storage and starts Raft. In single-node mode, initialises the cluster on first start.
    pub async fn start(opts: NodeOptions) -> Result<Self, StartError> {
        std::fs::create_dir_all(&opts.data_dir)?;
        let db = sled::Config::new()
            .path(opts.data_dir.join("raft"))
            .open()
            .map_err(|e| {
                io::Error::other(format!("opening sled at {}: {e}", opts.data_dir.display()))
            })?;
        let mut log = LogStore::open(db)?;
        // What this node knew committed before it (re)started: it is not ready until it has
        // applied at least that much again.
        let recover_to = {
            use openraft::storage::RaftLogStorage;
            log.read_committed().await?.map(|l| l.index).unwrap_or(0)
        };
        let sm = StateMachine::open(&opts.data_dir.join("snapshots"))?
            .publishing_when_durable(log.durable_commit());
        // One copy of the active format level, moved by apply, read by every writer.
        let level = sm.active_level();
        let log = log.with_level(level.clone());
        let published = sm.published();
        published.set_history_max_bytes(opts.history_max_bytes);
        let parses = sm.parse_cache();
        let config = openraft::Config {
            cluster_name: "verdict".to_string(),
            heartbeat_interval: 100,
            election_timeout_min: 500,
            election_timeout_max: 1000,
            // Snapshots of large states take seconds to ship; openraft's 200 ms default is too short.
            install_snapshot_timeout: 60_000,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(opts.snapshot_every.max(1)),
            max_in_snapshot_log_to_keep: opts.keep_log_behind_snapshot,
            ..Default::default()
        }
        .validate()
        .map_err(|e| StartError::Raft(e.to_string()))?;
        let network = PeerNetwork::new(opts.cluster_secret.clone(), &opts.peer_tls, level.clone())?;
        let raft = Raft::new(opts.node_id, Arc::new(config), network, log, sm)
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        // A round trip through Raft's core, on every member: the core answers only once it has
        // loaded the log and published its first metrics, so nothing this node reports from here
        // on (readiness above all) is judged from openraft's start-up placeholder (issue 14).
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        let members = match &opts.bootstrap {
            Bootstrap::Single => Some(BTreeMap::from([(opts.node_id, opts.info.clone())])),
            Bootstrap::Static(m) if m.keys().next() == Some(&opts.node_id) => Some(m.clone()),
            Bootstrap::Static(_) | Bootstrap::Join => None,
        };
        let mut bootstrapped = false;
        if let Some(members) = members {
            if !initialized {
                bootstrapped = true;
                let count = members.len();
                raft.initialize(members)
                    .await
                    .map_err(|e| StartError::Raft(e.to_string()))?;
                tracing::info!(
                    node_id = opts.node_id,
                    members = count,
                    "initialised the cluster"
                );
            }
        }
        let forwarder = Forwarder::new(opts.cluster_secret.clone(), &opts.peer_tls, level)?;
        let caller = PeerCaller::new(opts.cluster_secret.clone(), &opts.peer_tls)?;
        crate::events::spawn(opts.node_id, &raft);
        Ok(Self {
            writer: Writer::new(
                raft.clone(),
                forwarder.clone(),
                published.clone(),
                opts.node_id,
            ),
            membership: Membership::new(raft.clone(), published.clone(), forwarder.clone()),
            raft,
            published,
            parses,
            id: opts.node_id,
            forwarder,
            caller,
            limits: opts.limits,
            draining: Arc::new(AtomicBool::new(false)),
            started: Instant::now(),
            leader_contact_ms: Arc::new(AtomicU64::new(0)),
            recover_to,
            unreadable: Arc::new(arc_swap::ArcSwapOption::empty()),
            bootstrapped,
        })
    }

    /// This member's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The cluster's active format level at the published version.
    pub fn active_level(&self) -> u8 {
        self.published.load().format_level()
    }

    /// Whether this start initialised a new cluster: a fresh cluster, whose members are all of
    /// this release.
    pub fn bootstrapped_now(&self) -> bool {
        self.bootstrapped
    }

    /// The published snapshot and its change signal.
    pub fn published(&self) -> &Arc<Published> {
        &self.published
    }

    /// The state machine's parse cache: check a write with it before proposing, so apply reuses
    /// the parse. An `Arc`, so the check can run on another thread.
    pub fn parse_cache(&self) -> &Arc<ParseCache> {
        &self.parses
    }

    /// The local Raft handle (for the peer service).
    pub(crate) fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Membership changes through this member (for the peer service).
    pub(crate) fn membership(&self) -> &Membership {
        &self.membership
    }

    /// Records that a leader reached this member just now.
    pub(crate) fn leader_contact(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.leader_contact_ms.store(ms, Ordering::Relaxed);
    }

    /// Records a request from another member that this release could not read.
    pub(crate) fn note_unreadable(&self, what: String) {
        tracing::error!(%what, "cannot read what another member sent; upgrade this node");
        self.unreadable
            .store(Some(Arc::new((Instant::now(), what))));
    }

    fn since_leader_contact(&self) -> Duration {
        let at = Duration::from_millis(self.leader_contact_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(at)
    }

    /// Node ids that were members once and are no longer: never accepted again (see
    /// [`Membership::removed_ids`]).
    pub fn removed_ids(&self) -> BTreeSet<NodeId> {
        self.membership.removed_ids()
    }

    /// Marks this member as draining: not ready from now on, so load balancers stop sending to it.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Whether drain was called.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Why this member should not take traffic, or `None` when it is ready: it knows a leader and
    /// hears from it (or, as leader, from a quorum), has applied what it knows committed within the
    /// configured lag, is a member, and is not draining.
    pub fn not_ready_reason(&self) -> Option<String> {
        if self.is_draining() {
            return Some("draining".into());
        }
        self.stale_reason()
    }

    /// The freshness part of readiness: why this member's state may be stale (no leader, no
    /// contact with it, too far behind, not a member), or `None`.
    pub fn stale_reason(&self) -> Option<String> {
        let applied = self.published.load().version();
        if applied < self.recover_to {
            return Some(format!(
                "recovering: applied {applied} of the {} committed before start",
                self.recover_to
            ));
        }
        let m = self.metrics();
        if let Err(e) = &m.running_state {
            let e = e.to_string();
            // Something this release cannot read (a newer release wrote it): it stopped applying
            // rather than misread or skip it, and answers from the last version it applied.
            if e.contains(crate::codec::NEWER_RELEASE) {
                return Some(format!(
                    "stopped applying at version {applied}: {e} (decisions answer from version \
                     {applied}; upgrade this node's binary)"
                ));
            }
            return Some(format!("raft stopped: {e}"));
        }
        if let Some(seen) = self.unreadable.load().as_ref() {
            if seen.0.elapsed() < UNREADABLE_REPORTED_FOR {
                return Some(format!(
                    "cannot read {} (decisions answer from version {applied})",
                    seen.1
                ));
            }
        }
        if let Some(reason) = membership_reason(self.id, &m, &self.published.members_seen()) {
            return Some(reason);
        }
        let membership = m.membership_config.membership();
        let Some(leader) = m.current_leader else {
            return Some("no leader is known".into());
        };
        let silence = if leader == self.id {
            // A leader that has not heard from a quorum may have been replaced elsewhere.
            let voters = membership.voter_ids().count();
            match m.last_quorum_acked {
                Some(at) if voters > 1 => Some(openraft::Instant::elapsed(&*at)),
                Some(_) => None,
                None if voters > 1 => Some(self.started.elapsed()),
                None => None,
            }
        } else {
            Some(self.since_leader_contact())
        };
        if let Some(silence) = silence {
            if silence > self.limits.max_leader_silence {
                return Some(format!(
                    "no contact with {} for {} ms (limit {} ms)",
                    if leader == self.id {
                        "a quorum"
                    } else {
                        "the leader"
                    },
                    silence.as_millis(),
                    self.limits.max_leader_silence.as_millis()
                ));
            }
        }
        let committed = m.local_committed.map(|l| l.index).unwrap_or(0);
        let lag = committed.saturating_sub(applied);
        if lag > self.limits.max_lag {
            return Some(format!(
                "applied version {applied} is {lag} entries behind the committed {committed} (limit {})",
                self.limits.max_lag
            ));
        }
        None
    }

    /// This member's own report, as other members see it in cluster status.
    pub fn report(&self) -> NodeReport {
        let m = self.metrics();
        NodeReport {
            id: self.id,
            applied: self.published.load().version(),
            term: m.current_term,
            leader: m.current_leader,
            not_ready: self.not_ready_reason(),
            release: Some(crate::levels::release()),
            supported_level: crate::levels::supported_level(),
        }
    }

    /// Every member with its role and, when it answers within a second, its own report.
    pub async fn cluster(&self) -> Vec<(NodeId, NodeInfo, bool, Option<NodeReport>)> {
        let members = self.status().members;
        let asks = members.into_iter().map(|(id, info, voter)| async move {
            let report = if id == self.id {
                Some(self.report())
            } else {
                self.forwarder.report(&info.peer_addr).await
            };
            (id, info, voter, report)
        });
        futures::future::join_all(asks).await
    }

    /// Makes the JSON calls between members (see [`crate::peer_call`]).
    pub fn peer_caller(&self) -> &PeerCaller {
        &self.caller
    }

    /// Member `id`'s addresses and whether it votes, if it is a member.
    pub fn member(&self, id: NodeId) -> Option<(NodeInfo, bool)> {
        self.status()
            .members
            .into_iter()
            .find(|(m, _, _)| *m == id)
            .map(|(_, info, voter)| (info, voter))
    }

    /// Marks this member as no longer draining: ready again once the freshness checks pass.
    pub fn clear_draining(&self) {
        self.draining.store(false, Ordering::Relaxed);
    }

    /// Runs a membership change on the leader (forwarding from a follower or learner) and answers
    /// the log index of the new configuration.
    pub async fn change_membership(&self, op: MembershipOp) -> Result<u64, MembershipError> {
        self.membership.change(op).await
    }

    fn metrics(&self) -> openraft::RaftMetrics<crate::types::TypeConfig> {
        use openraft::async_runtime::WatchReceiver;
        self.raft.metrics().borrow_watched().clone()
    }

    /// Proposes a write and waits until it is committed (fsynced on a quorum) and applied here.
    /// Returns the entry's log index (its version) and what apply answered.
    /// On a follower or learner the write is forwarded to the leader's peer listener (bounded
    /// attempts while the leader changes); the answer is the leader's version, and this node waits
    /// (bounded) until it has applied that version too, so a client can read its write here at once.
    pub async fn write(&self, write: Write) -> Result<(u64, Outcome), WriteError> {
        self.writer.write(write).await
    }

    /// Waits up to `timeout` for this member to know a leader and to have applied everything it
    /// had committed before (re)starting.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        self.raft.wait_for_recovery(Some(timeout)).await.is_ok()
    }

    /// Whether this member leads right now (cheaper than [`Node::status`]).
    pub fn is_leader(&self) -> bool {
        use openraft::async_runtime::WatchReceiver;
        self.raft.metrics().borrow_watched().current_leader == Some(self.id)
    }

    /// Whether this member leads and a quorum acknowledged it within `within` (always, for a
    /// single voter). A leader that restarted or was cut off may still believe it leads; this is
    /// the check to use before answering for the whole cluster.
    pub fn leads_confirmed(&self, within: Duration) -> bool {
        let m = self.metrics();
        if m.current_leader != Some(self.id) {
            return false;
        }
        if m.membership_config.membership().voter_ids().count() <= 1 {
            return true;
        }
        m.last_quorum_acked
            .is_some_and(|at| openraft::Instant::elapsed(&*at) < within)
    }

    /// The current Raft status.
    pub fn status(&self) -> Status {
        let m = self.metrics();
        let applied = self.published.load().version();
        let members = members(&m);
        Status {
            id: m.id,
            term: m.current_term,
            leader: m.current_leader,
            is_leader: m.current_leader == Some(m.id),
            last_log_index: m.last_log_index.unwrap_or(0),
            committed: m.cluster_committed.map(|l| l.index).unwrap_or(0),
            applied,
            members,
            running: m
                .running_state
                .as_ref()
                .map(|_| ())
                .map_err(|e| e.to_string()),
        }
    }

    /// Stops Raft; storage is flushed by its own operations.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }
}
