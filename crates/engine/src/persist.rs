//! The persisted form of a snapshot: plain texts and versions, re-parsed on load. The cluster crate
//! encodes it (with a format-version prefix) into snapshot files and snapshot transfers.

use serde::Deserialize;
use serde::Serialize;

use crate::credential::Credentials;
use crate::credential::PersistedCredentials;
use crate::entity::parse_entities;
use crate::error::EngineError;
use crate::keyring::KeyRing;
use crate::keyring::RotationPolicy;
use crate::policy::parse_one;
use crate::revocation::PersistedRevocations;
use crate::revocation::Revocations;
use crate::schema::parse_schema;
use crate::snapshot::Snapshot;

/// Everything needed to rebuild a [`Snapshot`]. Texts only, so the format does not depend on Cedar's
/// internal types; no `serde(flatten)`, so bincode can carry it. Its field order is part of the
/// snapshot format (the cluster crate's `snapshot_file`): adding, removing or moving a field is a
/// new snapshot format number there, with a reader for the old one.
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
    /// API credentials (argon2 hashes, never secrets). Last.
    pub credentials: PersistedCredentials,
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
        }
    }
}

impl Snapshot {
    /// The persisted form of this snapshot.
    pub fn to_persisted(&self) -> PersistedState {
        let mut entities: Vec<(String, u64)> = self
            .entities
            .values()
            .map(|e| (e.json.to_string(), e.version))
            .collect();
        entities.sort();
        PersistedState {
            version: self.version,
            policies: self
                .policies
                .values()
                .map(|p| (p.id.clone(), p.text.clone(), p.version))
                .collect(),
            policies_version: self.policies_version,
            schema: self
                .schema
                .as_ref()
                .map(|s| (s.text.clone(), s.json, s.version)),
            schema_version: self.schema_version,
            entities,
            entities_version: self.entities_version,
            idempotency: self
                .idempotency_by_time
                .keys()
                .filter_map(|(t, k)| self.idempotency.get(k).map(|v| (k.clone(), *v, *t)))
                .collect(),
            tokens: PersistedTokens {
                keys: (*self.keys).clone(),
                policy: self.token_policy,
                max_token_lifetime_ms: self.max_token_lifetime_ms,
                revocations: self.revocations.to_persisted(),
            },
            credentials: self.credentials.to_persisted(),
        }
    }

    /// Rebuilds a snapshot from its persisted form.
    pub fn from_persisted(p: &PersistedState) -> Result<Snapshot, EngineError> {
        let policies = p
            .policies
            .iter()
            .map(|(id, text, v)| parse_one(id, text, *v))
            .collect::<Result<Vec<_>, _>>()?;
        let schema = p
            .schema
            .as_ref()
            .map(|(text, json, v)| parse_schema(text, *json, *v))
            .transpose()?;
        let mut entities = Vec::with_capacity(p.entities.len());
        for (json, v) in &p.entities {
            let value: serde_json::Value = serde_json::from_str(json).map_err(|e| {
                EngineError::new(
                    crate::ErrorCode::EntityInvalid,
                    format!("snapshot entity: {e}"),
                )
            })?;
            let parsed = parse_entities(&serde_json::Value::Array(vec![value]), None)?;
            for e in parsed {
                entities.push((e, *v));
            }
        }
        let mut s = Snapshot::empty();
        // Each policy keeps the version it was written at; the set's version is restored here.
        s.replace_policies(policies, p.policies_version);
        s.schema = schema.map(std::sync::Arc::new);
        s.schema_version = p.schema_version;
        // Upserts in any order give the same closures: a parent arriving later propagates down.
        for (e, v) in entities {
            s.upsert_entity(e, v)?;
        }
        s.entities_version = p.entities_version;
        for (key, v, t) in &p.idempotency {
            s.idempotency.insert(key.clone(), *v);
            s.idempotency_by_time.insert((*t, key.clone()), ());
        }
        s.keys = std::sync::Arc::new(p.tokens.keys.clone());
        s.token_policy = p.tokens.policy;
        s.max_token_lifetime_ms = p.tokens.max_token_lifetime_ms;
        s.revocations = Revocations::from_persisted(&p.tokens.revocations);
        s.credentials = std::sync::Arc::new(Credentials::from_persisted(&p.credentials));
        s.version = p.version;
        Ok(s)
    }
}
