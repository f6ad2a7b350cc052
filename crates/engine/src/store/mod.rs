//! The stores a [`crate::Snapshot`] is made of, one per concept. Each owns its data and executes
//! the commands that change it, checking `If-Match` against its own versions, and answers what it
//! changed as a [`crate::change::ChangeSet`].
//!
//! Every store method that executes a command is all or nothing: a refused write leaves the store
//! as it was, so a state machine can apply a batch to one private copy in place.

pub(crate) mod closure;
pub mod context;
pub mod credentials;
pub mod entities;
pub mod idempotency;
pub mod level;
pub mod policies;
pub mod tokens;

use crate::store::credentials::CredentialStore;
use crate::store::entities::EntityStore;
use crate::store::level::ActiveLevel;
use crate::store::policies::PolicyStore;
use crate::store::tokens::TokenState;

/// The stores commands execute against; a [`crate::Snapshot`] is these, its version and its
/// idempotency keys. Cloning is cheap.
#[derive(Clone, Default)]
pub struct Stores {
    /// Policies, their scope index and the schema.
    pub policies: PolicyStore,
    /// Entities and their ancestor closure.
    pub entities: EntityStore,
    /// The token key ring and revocations.
    pub tokens: TokenState,
    /// API credentials.
    pub credentials: CredentialStore,
    /// The cluster's active format level.
    pub level: ActiveLevel,
}
