//! Verdict's engine: the pure, synchronous core of the decision store.
//!
//! Layout:
//! - [`snapshot`]: the immutable, versioned [`Snapshot`] and `apply`, which derives the next one from
//!   a log entry in proportion to the change (persistent maps).
//! - [`command`]: the writes that travel through the Raft log ([`Write`], [`Command`], [`Outcome`]).
//! - [`decide`]: AuthZEN input → Cedar request → [`Decision`], evaluating only candidate policies.
//! - [`index`]: the scope index behind that candidate selection.
//! - [`policy`], [`entity`], [`schema`]: parsed, stored forms of the three kinds of data.
//! - [`persist`]: the versioned, self-describing encoding of a snapshot for snapshot files.
//! - [`keyring`]: the replicated token key ring and its deterministic, Keystone-style rotation.
//! - [`token`]: PASETO v4.local tokens, issued with the primary key and validated with any key.
//! - [`revocation`]: token revocation events as watermarks (a check is a few look-ups at any count).
//! - [`error`], [`ids`]: user-facing errors with stable codes; id syntax.
//! - [`value`]: plain JSON → Cedar values without Cedar's slower JSON parser.
//!
//! Nothing here does I/O, takes a lock or reads a clock: the cluster crate calls `apply` for each
//! committed entry and publishes the result; the server calls `decide` on the published snapshot.
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod command;
pub mod credential;
pub mod decide;
pub mod entity;
pub mod error;
pub mod ids;
pub mod index;
pub mod keyring;
pub mod limits;
pub mod persist;
pub mod policy;
pub mod revocation;
pub mod schema;
pub mod snapshot;
pub mod token;
pub mod value;

pub use command::Command;
pub use command::Outcome;
pub use command::Write;
pub use decide::Decision;
pub use decide::DecisionInput;
pub use error::EngineError;
pub use error::ErrorCode;
pub use error::Location;
pub use snapshot::Snapshot;

/// Re-exported so callers name the same Cedar types.
pub use cedar_policy;
