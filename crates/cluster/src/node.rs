//! One Raft member: opens storage, starts openraft, bootstraps a one-member cluster on first start,
//! and offers the server a small API (write, read the published snapshot, status) that hides openraft.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::ClientWriteError;
use openraft::error::RaftError;
use openraft::SnapshotPolicy;
use verdict_engine::Outcome;
use verdict_engine::Write;

use crate::log_store::LogStore;
use crate::network::ForwardedWrite;
use crate::network::Forwarder;
use crate::network::PeerNetwork;
use crate::network::PeerService;
use crate::state_machine::Published;
use crate::state_machine::StateMachine;
use crate::types::NodeId;
use crate::types::NodeInfo;
use crate::types::Raft;
use crate::types::Request;

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

/// Why a write did not commit.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// This member is not the leader; the leader, if known, can take the write.
    #[error("not the leader")]
    NotLeader {
        /// The leader's id and addresses, if known.
        leader: Option<(NodeId, NodeInfo)>,
    },
    /// The write could not be committed now (no quorum, shutting down); retry later.
    #[error("unavailable: {0}")]
    Unavailable(String),
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
    id: NodeId,
    forwarder: Forwarder,
}

/// How many times a write follows a changing leader before giving up.
const FORWARD_ATTEMPTS: usize = 3;

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
        let log = LogStore::open(db)?;
        let sm = StateMachine::open(&opts.data_dir.join("snapshots"))?;
        let published = sm.published();
        let config = openraft::Config {
            cluster_name: "verdict".to_string(),
            heartbeat_interval: 100,
            election_timeout_min: 500,
            election_timeout_max: 1000,
            // Snapshots of large states take seconds to ship; openraft's 200 ms default is too short.
            install_snapshot_timeout: 60_000,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(opts.snapshot_every.max(1)),
            max_in_snapshot_log_to_keep: 1000,
            ..Default::default()
        }
        .validate()
        .map_err(|e| StartError::Raft(e.to_string()))?;
        let network = PeerNetwork::new(opts.cluster_secret.clone())?;
        let raft = Raft::new(opts.node_id, Arc::new(config), network, log, sm)
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        let members = match &opts.bootstrap {
            Bootstrap::Single => Some(BTreeMap::from([(opts.node_id, opts.info.clone())])),
            Bootstrap::Static(m) if m.keys().next() == Some(&opts.node_id) => Some(m.clone()),
            Bootstrap::Static(_) | Bootstrap::Join => None,
        };
        if let Some(members) = members {
            let initialized = raft
                .is_initialized()
                .await
                .map_err(|e| StartError::Raft(e.to_string()))?;
            if !initialized {
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
        Ok(Self {
            raft,
            published,
            id: opts.node_id,
            forwarder: Forwarder::new(opts.cluster_secret.clone())?,
        })
    }

    /// This member's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The published snapshot and its change signal.
    pub fn published(&self) -> &Arc<Published> {
        &self.published
    }

    /// The handler for peer RPCs, to mount on the peer listener.
    pub fn peer_service(&self) -> PeerService {
        PeerService::new(self.raft.clone())
    }

    /// Proposes a write and waits until it is committed (fsynced on a quorum) and applied here.
    /// Returns the entry's log index (its version) and what apply answered.
    /// On a follower or learner the write is forwarded to the leader's peer listener (bounded
    /// attempts while the leader changes); the answer is the leader's version, and this node waits
    /// (bounded) until it has applied that version too, so a client can read its write here at once.
    pub async fn write(&self, write: Write) -> Result<(u64, Outcome), WriteError> {
        let mut leader = match self.raft.client_write(Request(write.clone())).await {
            Ok(resp) => return Ok((resp.log_id.index, resp.data.0)),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                f.leader_id.zip(f.leader_node)
            }
            Err(RaftError::APIError(e)) => return Err(WriteError::Unavailable(e.to_string())),
            Err(RaftError::Fatal(e)) => return Err(WriteError::Unavailable(e.to_string())),
        };
        for attempt in 0..FORWARD_ATTEMPTS {
            let Some((id, info)) = leader.clone() else {
                return Err(WriteError::NotLeader { leader: None });
            };
            if id == self.id {
                return Err(WriteError::NotLeader { leader: None });
            }
            match self.forwarder.forward(&info.peer_addr, &write).await {
                ForwardedWrite::Done(version, outcome) => {
                    let mut rx = self.published.subscribe();
                    let _ = tokio::time::timeout(
                        Duration::from_secs(5),
                        rx.wait_for(|v| *v >= version),
                    )
                    .await;
                    return Ok((version, outcome));
                }
                ForwardedWrite::NotLeader(next) => leader = next,
                ForwardedWrite::Unavailable(m) if attempt + 1 == FORWARD_ATTEMPTS => {
                    return Err(WriteError::Unavailable(m))
                }
                ForwardedWrite::Unavailable(_) => {
                    tokio::time::sleep(Duration::from_millis(100 * (attempt as u64 + 1))).await;
                    leader = self.leader();
                }
            }
        }
        Err(WriteError::NotLeader { leader })
    }

    /// The leader this node currently knows, with its addresses.
    fn leader(&self) -> Option<(NodeId, NodeInfo)> {
        let status = self.status();
        let id = status.leader?;
        status
            .members
            .into_iter()
            .find(|(m, _, _)| *m == id)
            .map(|(m, info, _)| (m, info))
    }

    /// Waits up to `timeout` for this member to know a leader and to have applied everything it
    /// had committed before (re)starting.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        self.raft.wait_for_recovery(Some(timeout)).await.is_ok()
    }

    /// The current Raft status.
    pub fn status(&self) -> Status {
        let m = {
            use openraft::async_runtime::WatchReceiver;
            self.raft.metrics().borrow_watched().clone()
        };
        let applied = self.published.load().version();
        let membership = m.membership_config.membership();
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, info)| (*id, info.clone(), voters.contains(id)))
            .collect();
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
