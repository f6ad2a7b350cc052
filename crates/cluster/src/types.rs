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

/// What one member reports about itself to the others (for cluster status). Peer message format
/// 2; format 1 carries the fields up to `not_ready` ([`NodeReportV1`]).
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
    /// Its release (crate version + git commit); `None` from a member of the release before
    /// format levels, which does not report it.
    pub release: Option<String>,
    /// The highest format level it supports (1 for the release before levels).
    pub supported_level: u8,
}

/// A status report as peer message format 1 lays it out (the release before levels).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeReportV1 {
    id: NodeId,
    applied: u64,
    term: u64,
    leader: Option<NodeId>,
    not_ready: Option<String>,
}

impl NodeReport {
    /// Encodes this report as the answer to a status call, in peer message format `format`.
    pub fn encode(&self, format: u8) -> Result<Vec<u8>, std::io::Error> {
        if format <= 1 {
            let v1 = NodeReportV1 {
                id: self.id,
                applied: self.applied,
                term: self.term,
                leader: self.leader,
                not_ready: self.not_ready.clone(),
            };
            return crate::codec::encode_as(1, &v1);
        }
        crate::codec::encode_as(format, self)
    }

    /// Decodes a status answer of any peer message format this release reads.
    pub fn decode(bytes: &[u8]) -> Result<Self, std::io::Error> {
        match crate::codec::open(crate::codec::Kind::PeerMessage, bytes)? {
            (1, body) => {
                let v1: NodeReportV1 = crate::codec::body_of(body)?;
                Ok(Self {
                    id: v1.id,
                    applied: v1.applied,
                    term: v1.term,
                    leader: v1.leader,
                    not_ready: v1.not_ready,
                    release: None,
                    supported_level: 1,
                })
            }
            (_, body) => crate::codec::body_of(body),
        }
    }
}
