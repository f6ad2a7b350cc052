//! The openraft type configuration: what travels in the log and what a member knows of another.

use std::fmt;

use serde::Deserialize;
use serde::Serialize;
use verdict_engine::Outcome;
use verdict_engine::Write;

/// A log entry's application data: one engine write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request(pub Write);

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the content: policy text and entity data stay out of logs.
        write!(f, "{}", self.0.command.kind())
    }
}

/// What applying an entry answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response(pub Outcome);

/// How to reach a member: its public API address (for forwarded writes) and its peer address (Raft).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// `host:port` of the public API listener.
    pub api_addr: String,
    /// `host:port` of the peer (Raft) listener.
    pub peer_addr: String,
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "api={} peer={}", self.api_addr, self.peer_addr)
    }
}

openraft::declare_raft_types!(
    /// Verdict's Raft types.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = u64,
        Node = NodeInfo,
);

/// Node id type.
pub type NodeId = u64;

/// A membership change, run on the leader (a follower forwards it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipOp {
    /// Add a new node as a learner: it receives the log and serves decisions, but does not vote.
    AddLearner {
        /// A node id never used before in this cluster.
        id: NodeId,
        /// Its addresses.
        info: NodeInfo,
    },
    /// Make exactly these nodes the voters; current voters left out are removed from the cluster.
    SetVoters {
        /// The new voter ids; each must already be a member (usually a caught-up learner).
        ids: Vec<NodeId>,
    },
    /// Remove a voter or learner from the cluster for good; its id is never accepted again.
    Remove {
        /// The member to remove.
        id: NodeId,
    },
    /// Hand leadership to another voter (a drain, or moving load).
    TransferLeader {
        /// The voter to lead.
        to: NodeId,
    },
}

/// Why a membership change or leader transfer was refused. Travels back to a member that
/// forwarded the change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum MembershipError {
    /// The request cannot work as asked (unknown or reused id, empty voter set, …); the text says
    /// what to change.
    #[error("{0}")]
    Invalid(String),
    /// Another membership change is still in progress; retry when it finishes.
    #[error("{0}")]
    Conflict(String),
    /// No leader could take it now; retry shortly.
    #[error("{0}")]
    Unavailable(String),
}

/// What one member reports about itself to the others (for cluster status).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeReport {
    /// Its id.
    pub id: NodeId,
    /// The version of its published snapshot.
    pub applied: u64,
    /// Its current term.
    pub term: u64,
    /// The leader it knows.
    pub leader: Option<NodeId>,
    /// Whether it is draining or otherwise not ready, and why.
    pub not_ready: Option<String>,
}
