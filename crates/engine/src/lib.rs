//! Verdict's engine: the pure, synchronous core of the decision store.
//!
//! Layout:
//! - [`snapshot`]: the immutable, versioned [`Snapshot`]: a version and one store per concept, with
//!   `check`, `apply` and `apply_in_place` (a write → the next state and its [`AppliedWrite`]).
//! - [`store`]: the stores, each owning its data and executing the commands that change it:
//!   [`store::policies`] (policies, scope index, schema), [`store::entities`] (entities and their
//!   ancestor closure), [`store::tokens`] (key ring and revocations), [`store::credentials`],
//!   [`store::idempotency`].
//! - [`command`]: the writes that travel through the Raft log ([`Write`], [`Command`], [`Outcome`])
//!   and the one `match` that hands each command to its store.
//! - [`change`]: what a write changed ([`ChangeSet`]), as the stores report it.
//! - [`parse_cache`]: parsed policies carried from a write's check to its apply ([`ParseCache`],
//!   owned by the cluster's state machine).
//! - [`decide`]: AuthZEN input → Cedar request → [`Decision`], evaluating only candidate policies.
//! - [`index`]: the scope index behind that candidate selection.
//! - [`policy`], [`entity`], [`schema`]: parsed, stored forms of the three kinds of data.
//! - [`persist`]: the versioned, self-describing encoding of a snapshot for snapshot files.
//! - [`keyring`]: the replicated token key ring and its deterministic, Keystone-style rotation.
//! - [`token`]: PASETO v4.local tokens, issued with the primary key and validated with any key.
//! - [`claims`]: the claims a token carries and their JSON form.
//! - [`revocation`]: token revocation events as watermarks (a check is a few look-ups at any count).
//! - [`credential`]: API credentials, their scopes and secret hashing.
//! - [`admission`]: the measures a write passes before it is proposed (recursion, `like` and
//!   hierarchy bounds), outside apply so they can tighten between releases.
//! - [`error`], [`ids`], [`limits`]: user-facing errors with stable codes; id syntax; size and
//!   nesting limits.
//! - [`value`]: plain JSON → Cedar values without Cedar's slower JSON parser.
//!
//! Nothing here does I/O or reads a clock: the cluster crate calls `apply` for each committed
//! entry and publishes the result; the server calls `decide` on the published snapshot, which takes
//! no lock. Only write paths take a lock: the parse cache's, and the entity type-name cache's.
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod admission;
pub mod change;
pub mod claims;
pub mod command;
pub mod credential;
pub mod decide;
pub mod entity;
pub mod error;
pub mod ids;
pub mod index;
pub mod keyring;
pub mod limits;
pub mod parse_cache;
pub mod persist;
pub mod policy;
pub mod revocation;
pub mod schema;
pub mod snapshot;
pub mod store;
pub mod token;
pub mod value;

pub use change::ChangeSet;
pub use change::Changed;
pub use command::AppliedWrite;
pub use command::Command;
pub use command::Outcome;
pub use command::Write;
pub use decide::Decision;
pub use decide::DecisionInput;
pub use error::EngineError;
pub use error::ErrorCode;
pub use error::Location;
pub use parse_cache::ParseCache;
pub use snapshot::Snapshot;

/// Re-exported so callers name the same Cedar types.
pub use cedar_policy;
