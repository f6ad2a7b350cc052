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
/// The Raft handle type.
pub type Raft = openraft::Raft<TypeConfig, crate::state_machine::StateMachine>;
