//! The persisted form of a snapshot: plain texts and versions, re-parsed on load. The cluster crate
//! encodes it (with a format-version prefix) into snapshot files and snapshot transfers.

use serde::Deserialize;
use serde::Serialize;

use crate::credential::PersistedCredentials;
use crate::keyring::KeyRing;
use crate::keyring::RotationPolicy;
use crate::revocation::PersistedRevocations;

/// Everything needed to rebuild a [`crate::Snapshot`] (`Snapshot::to_persisted` and
/// `from_persisted`, where each store writes and reads its own part). Texts only, so the format
/// does not depend on Cedar's internal types; no `serde(flatten)`, so bincode can carry it. Its
/// field order is part of the snapshot format (the cluster crate's `snapshot_file`): adding,
/// removing or moving a field is a new snapshot format number there, with a reader for the old one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedState {
    /// The snapshot version.
    pub version: u64,
    /// `(id, cedar, version)` of every policy.
    pub policies: Vec<(String, String, u64)>,
    /// The version that last changed the policy set.
    pub policies_version: u64,
    /// `(text, is_json, version)` of the schema.
    pub schema: Option<(String, bool, u64)>,
    /// The version that last changed the schema.
    pub schema_version: u64,
    /// `(entity JSON, version)` of every entity.
    pub entities: Vec<(String, u64)>,
    /// The version that last changed any entity.
    pub entities_version: u64,
    /// `(key, version, stamped_ms)` of every remembered idempotency key.
    pub idempotency: Vec<(String, u64, u64)>,
    /// Token keys, their policy and revocations. After the fields of [`PersistedStateV1`].
    pub tokens: PersistedTokens,
    /// API credentials (argon2 hashes, never secrets).
    pub credentials: PersistedCredentials,
    /// The digest of the write each idempotency key was first used with, one per entry of
    /// `idempotency` in its order (`None`: remembered before digests; a shorter list means `None`
    /// for the rest). Last; new in snapshot format 3.
    pub idempotency_digests: Vec<Option<[u8; 32]>>,
}

/// The token part of a persisted state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedTokens {
    /// The key ring, material included: snapshot files hold secrets (docs/operations.md).
    pub keys: KeyRing,
    /// The latest rotation's policy.
    pub policy: RotationPolicy,
    /// The longest token lifetime any rotation has allowed.
    pub max_token_lifetime_ms: u64,
    /// Revocation watermarks.
    pub revocations: PersistedRevocations,
}

/// The fields every persisted state has begun with since the first release, in their order: the
/// state of releases before tokens, and the prefix the cluster crate reads first in a legacy
/// snapshot. Read only: [`PersistedState`] is what is written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedStateV1 {
    /// See [`PersistedState::version`].
    pub version: u64,
    /// See [`PersistedState::policies`].
    pub policies: Vec<(String, String, u64)>,
    /// See [`PersistedState::policies_version`].
    pub policies_version: u64,
    /// See [`PersistedState::schema`].
    pub schema: Option<(String, bool, u64)>,
    /// See [`PersistedState::schema_version`].
    pub schema_version: u64,
    /// See [`PersistedState::entities`].
    pub entities: Vec<(String, u64)>,
    /// See [`PersistedState::entities_version`].
    pub entities_version: u64,
    /// See [`PersistedState::idempotency`].
    pub idempotency: Vec<(String, u64, u64)>,
}

impl From<PersistedStateV1> for PersistedState {
    fn from(v1: PersistedStateV1) -> Self {
        Self {
            version: v1.version,
            policies: v1.policies,
            policies_version: v1.policies_version,
            schema: v1.schema,
            schema_version: v1.schema_version,
            entities: v1.entities,
            entities_version: v1.entities_version,
            idempotency: v1.idempotency,
            tokens: PersistedTokens::default(),
            credentials: PersistedCredentials::default(),
            idempotency_digests: Vec::new(),
        }
    }
}
