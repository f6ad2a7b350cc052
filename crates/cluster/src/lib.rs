//! Verdict's replication layer: openraft over sled, publishing the engine's snapshots.
//!
//! Layout, in dependency order (each module imports only modules listed before it):
//! - [`codec`]: the format number in front of everything persisted or sent, per kind of value;
//!   what each format level writes is chosen in one place ([`codec::LEVELS`]).
//! - [`types`]: the openraft type configuration (log payload, response, member addresses) and the
//!   other values members send each other.
//! - [`levels`]: this member's copy of the cluster's active format level, its release, and how
//!   members agree on the peer message format.
//! - `log_segments`: the log's sled trees, one per run of indexes, dropped whole by a purge.
//! - [`log_store`]: the Raft log, vote and committed index on sled, flushed before acknowledging;
//!   the committed index as far as it is durable, which publishing waits for.
//! - [`history`]: what changed at each recent version, for the watch stream.
//! - `snapshot_file`: the content of snapshot files and transfers by format, and the one rule that
//!   tells apart the layouts older releases wrote under format 1.
//! - [`state_machine`]: applies committed entries to the engine, publishes snapshots (arc-swap),
//!   writes snapshot files.
//! - [`events`]: one log line per node event (leadership, membership, snapshot, purge), from
//!   openraft's metrics.
//! - [`network`]: the peer transport's client half: Raft RPCs over HTTP, peer TLS.
//! - [`peer_call`]: calls between members beside Raft's (remote drain, capacity figures): JSON on
//!   paths of their own, so an older member answers `404` instead of misreading them.
//! - [`write`]: the write path: proposing on the leader (giving up when deposed), forwarding from
//!   a follower, and the client for the other member-to-member calls.
//! - `membership`: membership changes and leader transfer, checked against Verdict's rules.
//! - [`node`]: start-up, bootstrap, readiness and the small API the server uses; openraft stays
//!   inside.
//! - [`upgrade`]: the cluster's format levels across members: what each supports, raising the
//!   active level (by an operator or automatically), refusing features above it.
//! - [`peer_service`]: the peer transport's server half, which the server crate mounts on the peer
//!   listener.
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod codec;
pub mod events;
mod flusher;
pub mod history;
pub mod levels;
mod log_segments;
pub mod log_store;
mod membership;
pub mod network;
pub mod node;
pub mod peer_call;
pub mod peer_service;
mod snapshot_file;
pub mod state_machine;
pub mod types;
pub mod upgrade;
pub mod write;

pub use history::ChangeEvent;
pub use history::Since;
pub use node::Bootstrap;
pub use node::Limits;
pub use node::Node;
pub use node::NodeOptions;
pub use node::Status;
pub use peer_call::PeerAnswer;
pub use peer_call::PeerCaller;
pub use peer_service::PeerService;
pub use state_machine::Published;
pub use types::MembershipError;
pub use types::MembershipOp;
pub use types::NodeInfo;
pub use types::NodeReport;
pub use write::WriteError;
