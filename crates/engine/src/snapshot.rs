//! The immutable, versioned state every decision reads, composed of one store per concept, and the
//! pure function that derives the next state from a log entry.
//!
//! Every store is built of persistent maps (`imbl`) or shared parts, so the next snapshot shares all
//! unchanged parts with the previous one: one policy or entity write costs in proportion to the
//! change, not to the store.

use std::sync::Arc;

use cedar_policy::EntityUid;

use crate::command::AppliedWrite;
use crate::command::Outcome;
use crate::command::Write;
use crate::credential::Credentials;
use crate::entity::StoredEntity;
use crate::error::EngineError;
use crate::error::ErrorCode;
use crate::keyring::KeyRing;
use crate::keyring::RotationPolicy;
use crate::parse_cache::ParseCache;
use crate::persist::PersistedState;
use crate::policy::StoredPolicy;
use crate::revocation::Revocations;
use crate::schema::StoredSchema;
use crate::store::context::Mode;
use crate::store::context::WriteContext;
use crate::store::credentials::CredentialStore;
use crate::store::entities::EntityStore;
use crate::store::idempotency;
use crate::store::idempotency::FirstUse;
use crate::store::idempotency::Idempotency;
use crate::store::policies::PolicyStore;
use crate::store::tokens::TokenState;
use crate::store::Stores;
use crate::token::Claims;

pub use crate::store::idempotency::IDEMPOTENCY_WINDOW_MS;
pub use crate::store::idempotency::MAX_IDEMPOTENCY_KEYS;
pub use crate::store::tokens::TokenRefused;
pub use crate::store::tokens::MAX_REVOCATIONS_PER_WRITE;

/// One immutable state. Cloning is cheap (reference counts); publish it behind an `Arc`.
#[derive(Clone, Default)]
pub struct Snapshot {
    /// The log index this state reflects.
    pub(crate) version: u64,
    /// Policies, entities, tokens and credentials: what commands change.
    pub(crate) stores: Stores,
    /// Idempotency keys of writes applied recently.
    pub(crate) idempotency: Idempotency,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("version", &self.version)
            .field("policies", &self.stores.policies.len())
            .field("entities", &self.stores.entities.len())
            .field("schema", &self.stores.policies.schema().is_some())
            .finish()
    }
}

impl Snapshot {
    /// The empty state at version 0.
    pub fn empty() -> Self {
        Self::default()
    }

    /// The log index this state reflects.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The same state, relabelled with a later version (for log entries that change nothing here,
    /// such as membership changes and blank leader entries).
    pub fn at_version(&self, version: u64) -> Self {
        let mut next = self.clone();
        next.advance_to(version);
        next
    }

    /// Relabels this state with a later version, in place (see [`Snapshot::at_version`]).
    pub fn advance_to(&mut self, version: u64) {
        self.version = self.version.max(version);
    }

    /// Checks a write against this state without changing it: the same code as apply, so whatever
    /// passes here applies cleanly unless another write lands first (apply re-checks). Policies
    /// parsed here are remembered in `parses`, so applying the committed entry with the same cache
    /// does not parse them again.
    pub fn check(&self, write: &Write, parses: &ParseCache) -> Result<Option<u64>, EngineError> {
        let mut scratch = self.at_version(self.version + 1);
        match scratch.run(write, Mode::Check(parses)).outcome {
            Outcome::Applied => Ok(None),
            Outcome::Duplicate { version } => Ok(Some(version)),
            Outcome::Rejected(e) => Err(e),
        }
    }

    /// Derives the state after the log entry at `version`. Deterministic and infallible: a write that
    /// is invalid against this state is rejected in the outcome and leaves the state unchanged (only
    /// the version advances).
    pub fn apply(
        &self,
        version: u64,
        write: &Write,
        parses: &ParseCache,
    ) -> (Snapshot, AppliedWrite) {
        let mut next = self.clone();
        let effect = next.apply_in_place(version, write, parses);
        (next, effect)
    }

    /// Applies the log entry at `version` to this state itself: the same effect and resulting
    /// state as [`Snapshot::apply`], without keeping the state before it. A state machine applying
    /// a batch of entries works on one private copy of the published state: the first change
    /// copies the paths it touches, later ones mostly change those copies in place instead of
    /// copying again, and only the batch's final state is published.
    pub fn apply_in_place(
        &mut self,
        version: u64,
        write: &Write,
        parses: &ParseCache,
    ) -> AppliedWrite {
        self.advance_to(version);
        self.run(write, Mode::Apply(parses))
    }

    /// Runs one write at this state's version. Every store's execution is all or nothing, so a
    /// refused write leaves the state as it was.
    fn run(&mut self, write: &Write, mode: Mode<'_>) -> AppliedWrite {
        let key = write.idempotency_key.as_deref();
        let digest = key.map(|_| idempotency::digest(write));
        if let (Some(k), Some(digest)) = (key, &digest) {
            if let Some(first) = self.idempotency.get(k) {
                if first.is_retry(digest) {
                    return AppliedWrite::unchanged(Outcome::Duplicate {
                        version: first.version,
                    });
                }
                return AppliedWrite::unchanged(Outcome::Rejected(EngineError::new(
                    ErrorCode::IdempotencyKeyReused,
                    format!(
                        "`Idempotency-Key` `{k}` was used for a different write (applied at \
                         version {}); use a new key for a new write",
                        first.version
                    ),
                )));
            }
        }
        let at = WriteContext {
            version: self.version,
            stamped_ms: write.stamped_ms,
            if_match: write.if_match,
            mode,
        };
        match write.command.execute(&mut self.stores, &at) {
            Ok(changes) => {
                if let Some(key) = key {
                    let first = FirstUse {
                        version: self.version,
                        digest,
                    };
                    self.idempotency.remember(key, first, write.stamped_ms);
                }
                AppliedWrite {
                    outcome: Outcome::Applied,
                    changes,
                }
            }
            Err(e) => AppliedWrite::unchanged(Outcome::Rejected(e)),
        }
    }

    /// The persisted form of this snapshot: each store writes its own part.
    pub fn to_persisted(&self) -> PersistedState {
        let mut out = PersistedState {
            version: self.version,
            ..PersistedState::default()
        };
        self.stores.policies.save(&mut out);
        self.stores.entities.save(&mut out);
        self.stores.tokens.save(&mut out);
        self.stores.credentials.save(&mut out);
        self.idempotency.save(&mut out);
        out
    }

    /// Rebuilds a snapshot from its persisted form: each store reads its own part.
    pub fn from_persisted(p: &PersistedState) -> Result<Snapshot, EngineError> {
        Ok(Snapshot {
            version: p.version,
            stores: Stores {
                policies: PolicyStore::load(p)?,
                entities: EntityStore::load(p)?,
                tokens: TokenState::load(p),
                credentials: CredentialStore::load(p),
                level: Default::default(),
            },
            idempotency: Idempotency::load(p),
        })
    }

    /// The cluster's active format level at this version (1 if never raised).
    pub fn format_level(&self) -> u8 {
        self.stores.level.get()
    }

    /// This state with its active format level as a snapshot file recorded it: the level is kept
    /// beside the persisted state, in the snapshot file, not in [`PersistedState`].
    pub fn with_format_level(mut self, level: u8) -> Self {
        self.stores.level = crate::store::level::ActiveLevel::at(level);
        self
    }

    /// Number of stored policies.
    pub fn policy_count(&self) -> usize {
        self.stores.policies.len()
    }

    /// Number of stored entities.
    pub fn entity_count(&self) -> usize {
        self.stores.entities.len()
    }

    /// One policy by id.
    pub fn policy(&self, id: &str) -> Option<&Arc<StoredPolicy>> {
        self.stores.policies.get(id)
    }

    /// All policies, sorted by id.
    pub fn policies(&self) -> impl Iterator<Item = &Arc<StoredPolicy>> {
        self.stores.policies.iter()
    }

    /// The version that last changed the policy set.
    pub fn policies_version(&self) -> u64 {
        self.stores.policies.version()
    }

    /// The schema, if one is set.
    pub fn schema(&self) -> Option<&Arc<StoredSchema>> {
        self.stores.policies.schema()
    }

    /// One entity by uid.
    pub fn entity(&self, uid: &EntityUid) -> Option<&Arc<StoredEntity>> {
        self.stores.entities.get(uid)
    }

    /// All entities (unordered).
    pub fn entities(&self) -> impl Iterator<Item = &Arc<StoredEntity>> {
        self.stores.entities.iter()
    }

    /// The version that last changed any entity.
    pub fn entities_version(&self) -> u64 {
        self.stores.entities.version()
    }

    /// The version an idempotency key was first applied at, if it is still remembered.
    pub fn idempotency(&self, key: &str) -> Option<u64> {
        self.idempotency.get(key).map(|first| first.version)
    }

    /// The API credentials.
    pub fn credentials(&self) -> &Credentials {
        self.stores.credentials.table()
    }

    /// Validates `token` at `now_ms` against this state: a key of the ring, the MAC, expiry and
    /// `iat` within the ring policy's clock skew, then the revocations. What introspection and
    /// decisions with tokens both ask.
    pub fn check_token(&self, token: &str, now_ms: u64) -> Result<Claims, TokenRefused> {
        self.stores.tokens.check(token, now_ms)
    }

    /// The token key ring.
    pub fn keys(&self) -> &KeyRing {
        self.stores.tokens.keys()
    }

    /// The rotation policy of the latest rotation (defaults before any).
    pub fn token_policy(&self) -> &RotationPolicy {
        self.stores.tokens.policy()
    }

    /// The revocation watermarks.
    pub fn revocations(&self) -> &Revocations {
        self.stores.tokens.revocations()
    }
}
