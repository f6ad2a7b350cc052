//! Verdict's replication layer: openraft over sled, publishing the engine's snapshots.
//!
//! Layout:
//! - [`types`]: the openraft type configuration (log payload, response, member addresses).
//! - [`codec`]: format-version-prefixed bincode for everything persisted or sent.
//! - [`log_store`]: the Raft log, vote and committed index on sled, flushed before acknowledging.
//! - [`state_machine`]: applies committed entries to the engine, publishes snapshots (arc-swap),
//!   writes snapshot files.
//! - [`history`]: what changed at each recent version, for the watch stream.
//! - [`network`]: peer RPCs over HTTP, client and server halves.
//! - [`node`]: start-up, bootstrap and the small API the server uses; openraft stays inside.
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod codec;
mod flusher;
pub mod history;
pub mod log_store;
pub mod network;
pub mod node;
pub mod state_machine;
pub mod types;

pub use history::ChangeEvent;
pub use history::Since;
pub use node::Bootstrap;
pub use node::Limits;
pub use node::MembershipError;
pub use node::Node;
pub use node::NodeOptions;
pub use node::Status;
pub use node::WriteError;
pub use state_machine::Published;
pub use types::MembershipOp;
pub use types::NodeInfo;
pub use types::NodeReport;
