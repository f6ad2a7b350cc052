//! The immutable, versioned state every decision reads, and the pure function that derives the next
//! one from a log entry.
//!
//! Every collection is a persistent map (`imbl`), so the next snapshot shares all unchanged parts with
//! the previous one: one policy or entity write costs in proportion to the change, not to the store.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::collections::VecDeque;
use std::sync::Arc;

use cedar_policy::EntityUid;
use cedar_policy::PolicySet;
use cedar_policy::ValidationMode;
use imbl::HashMap;
use imbl::OrdMap;

use crate::command::Command;
use crate::command::KeyMaterial;
use crate::command::Outcome;
use crate::command::Write;
use crate::credential::Credential;
use crate::credential::Credentials;
use crate::credential::Scope;
use crate::credential::BOOTSTRAP_ID;
use crate::entity::parse_entities;
use crate::entity::uid_from_parts;
use crate::entity::ParsedEntity;
use crate::entity::StoredEntity;
use crate::error::EngineError;
use crate::error::ErrorCode;
use crate::ids::check_policy_id;
use crate::index::keys_of;
use crate::index::Bucket;
use crate::index::FastMap;
use crate::index::IndexKey;
use crate::index::ScopeIndex;
use crate::keyring::KeyId;
use crate::keyring::KeyRing;
use crate::keyring::KeyRingError;
use crate::keyring::RotationPolicy;
use crate::policy::parse_map;
use crate::policy::parse_one;
use crate::policy::parse_set;
use crate::policy::remembering_parses;
use crate::policy::StoredPolicy;
use crate::revocation::Revocations;
use crate::revocation::Selector;
use crate::schema::parse_schema;
use crate::schema::StoredSchema;
use crate::token::validate as validate_token;
use crate::token::Claims;
use crate::token::TokenError;

/// The children of one parent: a persistent hash set whose keys clone with one reference count, so
/// adding a member to a large group copies little.
pub(crate) type ChildSet = FastMap<Arc<EntityUid>, ()>;

/// How long an idempotency key is remembered, by the leader's stamped time.
pub const IDEMPOTENCY_WINDOW_MS: u64 = 24 * 60 * 60 * 1000;
/// Most idempotency keys remembered; the oldest are forgotten first.
pub const MAX_IDEMPOTENCY_KEYS: usize = 100_000;

/// One immutable state. Cloning is cheap (reference counts); publish it behind an `Arc`.
#[derive(Clone, Default)]
pub struct Snapshot {
    pub(crate) version: u64,
    pub(crate) policies: OrdMap<String, Arc<StoredPolicy>>,
    pub(crate) policies_version: u64,
    pub(crate) index: ScopeIndex,
    pub(crate) schema: Option<Arc<StoredSchema>>,
    pub(crate) schema_version: u64,
    /// Keys are shared (`Arc`) so path copies in this large map clone one reference count per key.
    pub(crate) entities: FastMap<Arc<EntityUid>, Arc<StoredEntity>>,
    /// Direct children of each uid that some entity names as a parent: drives closure updates.
    pub(crate) children: FastMap<Arc<EntityUid>, ChildSet>,
    pub(crate) entities_version: u64,
    pub(crate) idempotency: HashMap<String, u64>,
    pub(crate) idempotency_by_time: OrdMap<(u64, String), ()>,
    /// The token key ring (shared: it changes only on rotation).
    pub(crate) keys: Arc<KeyRing>,
    /// The rotation policy of the latest rotation (token lifetime, clock skew, key limit).
    pub(crate) token_policy: RotationPolicy,
    /// The longest token lifetime any rotation has allowed: revocations are kept at least that long.
    pub(crate) max_token_lifetime_ms: u64,
    /// Revocation watermarks.
    pub(crate) revocations: Revocations,
    /// API credentials (shared: they change rarely).
    pub(crate) credentials: Arc<Credentials>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("version", &self.version)
            .field("policies", &self.policies.len())
            .field("entities", &self.entities.len())
            .field("schema", &self.schema.is_some())
            .finish()
    }
}

/// Whether every step of `execute` for this command that can fail runs before its first change to
/// the state, so a rejected write leaves the state untouched and can be applied in place. Entity
/// upserts and replacements change the state entity by entity and can fail on a later entity.
fn changes_only_after_validation(command: &Command) -> bool {
    !matches!(
        command,
        Command::UpsertEntities { .. } | Command::ReplaceEntities { .. }
    )
}

/// Whether a write is applied for real or only checked before it is proposed. A check may skip
/// steps that cannot fail, since its resulting state is discarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Check,
    Apply,
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
        next.version = version.max(self.version);
        next
    }

    /// Relabels this state with a later version, in place (see [`Snapshot::at_version`]).
    pub fn advance_to(&mut self, version: u64) {
        self.version = self.version.max(version);
    }

    /// Number of stored policies.
    pub fn policy_count(&self) -> usize {
        self.policies.len()
    }

    /// Number of stored entities.
    pub fn entity_count(&self) -> usize {
        self.entities.len()
    }

    /// One policy by id.
    pub fn policy(&self, id: &str) -> Option<&Arc<StoredPolicy>> {
        self.policies.get(id)
    }

    /// All policies, sorted by id.
    pub fn policies(&self) -> impl Iterator<Item = &Arc<StoredPolicy>> {
        self.policies.values()
    }

    /// The version that last changed the policy set.
    pub fn policies_version(&self) -> u64 {
        self.policies_version
    }

    /// The schema, if one is set.
    pub fn schema(&self) -> Option<&Arc<StoredSchema>> {
        self.schema.as_ref()
    }

    /// One entity by uid.
    pub fn entity(&self, uid: &EntityUid) -> Option<&Arc<StoredEntity>> {
        self.entities.get(uid)
    }

    /// All entities (unordered).
    pub fn entities(&self) -> impl Iterator<Item = &Arc<StoredEntity>> {
        self.entities.values()
    }

    /// The version that last changed any entity.
    pub fn entities_version(&self) -> u64 {
        self.entities_version
    }

    /// The version an idempotency key was first applied at, if it is still remembered.
    pub fn idempotency(&self, key: &str) -> Option<u64> {
        self.idempotency.get(key).copied()
    }

    /// Checks a write against this state without changing it: the same code as apply, so whatever
    /// passes here applies cleanly unless another write lands first (apply re-checks).
    pub fn check(&self, write: &Write) -> Result<Option<u64>, EngineError> {
        // Policies parsed here are remembered, so applying the committed entry does not parse
        // them again (see `policy::parse_one`).
        match remembering_parses(|| self.apply_as(self.version + 1, write, Mode::Check)).1 {
            Outcome::Applied => Ok(None),
            Outcome::Duplicate { version } => Ok(Some(version)),
            Outcome::Rejected(e) => Err(e),
        }
    }

    /// Derives the state after the log entry at `version`. Deterministic and infallible: a write that
    /// is invalid against this state is rejected in the outcome and leaves the state unchanged (only
    /// the version advances).
    pub fn apply(&self, version: u64, write: &Write) -> (Snapshot, Outcome) {
        self.apply_as(version, write, Mode::Apply)
    }

    /// Applies the log entry at `version` to this state itself: the same outcome and resulting
    /// state as [`Snapshot::apply`], without keeping the state before it. A state machine applying
    /// a batch of entries works on one private copy of the published state: the first change
    /// copies the paths it touches, later ones mostly change those copies in place instead of
    /// copying again, and only the batch's final state is published.
    pub fn apply_in_place(&mut self, version: u64, write: &Write) -> Outcome {
        let version = version.max(self.version);
        if !changes_only_after_validation(&write.command) {
            let (next, outcome) = self.apply(version, write);
            *self = next;
            return outcome;
        }
        self.version = version;
        if let Some(key) = &write.idempotency_key {
            if let Some(first) = self.idempotency.get(key) {
                return Outcome::Duplicate { version: *first };
            }
        }
        if let Err(e) = self.check_if_match(write) {
            return Outcome::Rejected(e);
        }
        match self.execute(version, write, Mode::Apply) {
            Ok(()) => {
                self.remember_key(write, version);
                Outcome::Applied
            }
            Err(e) => Outcome::Rejected(e),
        }
    }

    fn apply_as(&self, version: u64, write: &Write, mode: Mode) -> (Snapshot, Outcome) {
        let version = version.max(self.version);
        if let Some(key) = &write.idempotency_key {
            if let Some(first) = self.idempotency.get(key) {
                return (
                    self.at_version(version),
                    Outcome::Duplicate { version: *first },
                );
            }
        }
        let mut next = self.at_version(version);
        if let Err(e) = next.check_if_match(write) {
            return (self.at_version(version), Outcome::Rejected(e));
        }
        match next.execute(version, write, mode) {
            Ok(()) => {
                next.remember_key(write, version);
                (next, Outcome::Applied)
            }
            Err(e) => (self.at_version(version), Outcome::Rejected(e)),
        }
    }

    fn check_if_match(&self, write: &Write) -> Result<(), EngineError> {
        let Some(expected) = write.if_match else {
            return Ok(());
        };
        let (what, current) = match &write.command {
            Command::PutPolicy { id, .. } | Command::DeletePolicy { id } => (
                format!("policy `{id}`"),
                self.policies.get(id).map(|p| p.version).unwrap_or(0),
            ),
            Command::ReplacePoliciesText { .. } | Command::ReplacePoliciesMap { .. } => {
                ("the policy set".to_string(), self.policies_version)
            }
            Command::PutSchema { .. } | Command::DeleteSchema => (
                "the schema".to_string(),
                self.schema.as_ref().map(|s| s.version).unwrap_or(0),
            ),
            Command::UpsertEntities { json } => {
                let uids = serde_json::from_str::<serde_json::Value>(json)
                    .ok()
                    .map(|v| uids_in_array(&v))
                    .unwrap_or_default();
                (
                    "the named entities".to_string(),
                    self.max_entity_version(&uids),
                )
            }
            Command::DeleteEntities { uids } => {
                let uids: Vec<EntityUid> = uids
                    .iter()
                    .filter_map(|(t, i)| uid_from_parts(t, i).ok())
                    .collect();
                (
                    "the named entities".to_string(),
                    self.max_entity_version(&uids),
                )
            }
            Command::ReplaceEntities { .. } => {
                ("the entity set".to_string(), self.entities_version)
            }
            Command::RotateKeys { .. } => (
                "the key ring".to_string(),
                self.keys.staged().map(|k| k.id.0).unwrap_or(0),
            ),
            Command::Revoke { .. } => {
                return Err(EngineError::new(
                    ErrorCode::InvalidRequest,
                    "`If-Match` does not apply to revocations (they only add); send the request without it",
                ))
            }
            Command::CreateCredential { .. }
            | Command::RevokeCredential { .. }
            | Command::BootstrapAdmin { .. } => {
                return Err(EngineError::new(
                    ErrorCode::InvalidRequest,
                    "`If-Match` does not apply to credentials; send the request without it",
                ))
            }
        };
        if current == expected {
            return Ok(());
        }
        Err(EngineError::new(
            ErrorCode::PreconditionFailed,
            format!(
                "If-Match: {expected} does not match: {what} is at version {current}; \
                 GET it again, re-apply your change and retry with the new version"
            ),
        ))
    }

    fn max_entity_version(&self, uids: &[EntityUid]) -> u64 {
        uids.iter()
            .filter_map(|u| self.entities.get(u).map(|e| e.version))
            .max()
            .unwrap_or(0)
    }

    fn remember_key(&mut self, write: &Write, version: u64) {
        let Some(key) = &write.idempotency_key else {
            return;
        };
        // Forget keys older than the window (by the leader's stamp, never a local clock), then the
        // oldest ones beyond the cap.
        let horizon = write.stamped_ms.saturating_sub(IDEMPOTENCY_WINDOW_MS);
        while let Some(((t, k), _)) = self.idempotency_by_time.get_min().cloned() {
            if t >= horizon && self.idempotency.len() < MAX_IDEMPOTENCY_KEYS {
                break;
            }
            self.idempotency_by_time.remove(&(t, k.clone()));
            self.idempotency.remove(&k);
        }
        self.idempotency.insert(key.clone(), version);
        self.idempotency_by_time
            .insert((write.stamped_ms, key.clone()), ());
    }

    fn execute(&mut self, version: u64, write: &Write, mode: Mode) -> Result<(), EngineError> {
        match &write.command {
            Command::PutPolicy { id, cedar } => {
                let policy = parse_one(id, cedar, version)?;
                self.validate_policies(std::slice::from_ref(&policy))?;
                if mode == Mode::Check {
                    // Filing the policy cannot fail, and a check's state is thrown away.
                    return Ok(());
                }
                self.insert_policy(policy);
                self.policies_version = version;
            }
            Command::DeletePolicy { id } => {
                check_policy_id(id)?;
                let Some(old) = self.policies.remove(id) else {
                    return Err(EngineError::new(
                        ErrorCode::NotFound,
                        format!("no policy `{id}`; `GET /v1/policies` lists the ids"),
                    ));
                };
                self.unindex_policy(&old);
                self.policies_version = version;
            }
            Command::ReplacePoliciesText { cedar } => {
                let set = parse_set(cedar, version)?;
                self.validate_policies(&set)?;
                self.replace_policies(set, version);
            }
            Command::ReplacePoliciesMap { policies } => {
                let set = parse_map(policies, version)?;
                self.validate_policies(&set)?;
                self.replace_policies(set, version);
            }
            Command::PutSchema { text, json } => {
                let schema = parse_schema(text, *json, version)?;
                self.check_schema_fits(&schema)?;
                self.schema = Some(Arc::new(schema));
                self.schema_version = version;
            }
            Command::DeleteSchema => {
                if self.schema.take().is_none() {
                    return Err(EngineError::new(ErrorCode::NotFound, "no schema is set"));
                }
                self.schema_version = version;
            }
            Command::UpsertEntities { json } => {
                let value = parse_json(json)?;
                let parsed = parse_entities(&value, self.schema.as_ref().map(|s| &s.schema))?;
                for p in parsed {
                    self.upsert_entity(p, version)?;
                }
                self.entities_version = version;
            }
            Command::DeleteEntities { uids } => {
                let uids = uids
                    .iter()
                    .map(|(t, i)| uid_from_parts(t, i))
                    .collect::<Result<Vec<_>, _>>()?;
                for uid in uids {
                    self.delete_entity(&uid);
                }
                self.entities_version = version;
            }
            Command::ReplaceEntities { json } => {
                let value = parse_json(json)?;
                let parsed = parse_entities(&value, self.schema.as_ref().map(|s| &s.schema))?;
                self.entities = FastMap::default();
                self.children = FastMap::default();
                for p in parsed {
                    self.upsert_entity(p, version)?;
                }
                self.entities_version = version;
            }
            Command::RotateKeys {
                material,
                first_primary,
                policy,
            } => self.rotate_keys(
                version,
                write.stamped_ms,
                material,
                first_primary.as_ref(),
                policy,
            )?,
            Command::Revoke { events } => self.revoke(write.stamped_ms, events)?,
            Command::CreateCredential {
                id,
                name,
                scopes,
                hash,
            } => {
                let credential = Credential {
                    id: id.clone(),
                    name: name.clone(),
                    scopes: scopes.clone(),
                    hash: hash.clone(),
                    created_ms: write.stamped_ms,
                    version,
                };
                self.credentials.check_new(&credential)?;
                Arc::make_mut(&mut self.credentials).insert(credential);
            }
            Command::RevokeCredential { id } => {
                // Checked on a copy first, so a refusal leaves the shared table untouched.
                let mut next = (*self.credentials).clone();
                next.revoke(id)?;
                self.credentials = Arc::new(next);
            }
            Command::BootstrapAdmin { hash } => {
                if self.credentials.bootstrapped() {
                    return Ok(());
                }
                let credential = Credential {
                    id: BOOTSTRAP_ID.to_string(),
                    name: "bootstrap admin".to_string(),
                    scopes: vec![Scope::Admin],
                    hash: hash.clone(),
                    created_ms: write.stamped_ms,
                    version,
                };
                if self.credentials.get(BOOTSTRAP_ID).is_some() {
                    // Someone created an `admin` credential by hand before any bootstrap.
                    Arc::make_mut(&mut self.credentials).mark_bootstrapped();
                    return Ok(());
                }
                self.credentials.check_new(&credential)?;
                Arc::make_mut(&mut self.credentials).insert(credential);
            }
        }
        Ok(())
    }

    /// The API credentials.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    // ---- tokens ----

    fn rotate_keys(
        &mut self,
        version: u64,
        stamped_ms: u64,
        material: &KeyMaterial,
        first_primary: Option<&KeyMaterial>,
        policy: &RotationPolicy,
    ) -> Result<(), EngineError> {
        let ring = self
            .keys
            .rotate(
                KeyId(version),
                material.0,
                first_primary.map(|m| m.0),
                stamped_ms,
                policy,
            )
            .map_err(key_error)?;
        self.keys = Arc::new(ring);
        self.token_policy = *policy;
        self.max_token_lifetime_ms = self.max_token_lifetime_ms.max(policy.token_lifetime_ms);
        Ok(())
    }

    fn revoke(
        &mut self,
        stamped_ms: u64,
        events: &[(Selector, Option<u64>)],
    ) -> Result<(), EngineError> {
        if events.is_empty() || events.len() > MAX_REVOCATIONS_PER_WRITE {
            return Err(EngineError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "a revocation write holds {} events; send 1 to {MAX_REVOCATIONS_PER_WRITE}",
                    events.len()
                ),
            ));
        }
        // Every event is checked before the first is recorded: all or none.
        let latest = stamped_ms.saturating_add(self.token_policy.clock_skew_ms);
        for (i, (selector, issued_before_ms)) in events.iter().enumerate() {
            let at = |mut e: EngineError| {
                if events.len() > 1 {
                    e.detail = format!("event {i}: {}", e.detail);
                }
                e
            };
            selector.validate().map_err(at)?;
            let before = issued_before_ms.unwrap_or(stamped_ms);
            if before > latest {
                return Err(at(EngineError::new(
                    ErrorCode::InvalidRequest,
                    format!(
                        "`issued_before` {before} is in the future (now {stamped_ms} ms since the \
                         epoch, plus {} ms skew allowed); omit it to revoke everything issued \
                         until now",
                        self.token_policy.clock_skew_ms
                    ),
                )));
            }
        }
        for (selector, issued_before_ms) in events {
            self.revocations
                .add(selector, issued_before_ms.unwrap_or(stamped_ms));
        }
        // Keep pruning cheap and bounded: a few shards per revocation write, by the stamped time.
        let horizon = self
            .max_token_lifetime_ms
            .max(self.token_policy.token_lifetime_ms)
            .saturating_add(self.token_policy.clock_skew_ms);
        self.revocations.prune(stamped_ms, horizon, PRUNE_BUDGET);
        Ok(())
    }

    /// Validates `token` at `now_ms` against this state: a key of the ring, the MAC, expiry and
    /// `iat` within the ring policy's clock skew, then the revocations. What introspection and
    /// decisions with tokens both ask.
    pub fn check_token(&self, token: &str, now_ms: u64) -> Result<Claims, TokenRefused> {
        let claims = validate_token(&self.keys, token, now_ms, self.token_policy.clock_skew_ms)
            .map_err(TokenRefused::Invalid)?;
        match self.revocations.revoked_by(&claims.facts()) {
            Some((by, issued_before_ms)) => Err(TokenRefused::Revoked {
                by,
                issued_before_ms,
            }),
            None => Ok(claims),
        }
    }

    /// The token key ring.
    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// The rotation policy of the latest rotation (defaults before any).
    pub fn token_policy(&self) -> &RotationPolicy {
        &self.token_policy
    }

    /// The revocation watermarks.
    pub fn revocations(&self) -> &Revocations {
        &self.revocations
    }

    // ---- policies ----

    fn validate_policies(&self, policies: &[Arc<StoredPolicy>]) -> Result<(), EngineError> {
        let Some(schema) = &self.schema else {
            return Ok(());
        };
        validate_against(&schema.validator, policies)
    }

    fn insert_policy(&mut self, policy: Arc<StoredPolicy>) {
        let keys = keys_of(&policy);
        if let Some(old) = self.policies.insert(policy.id.clone(), policy.clone()) {
            // A replaced policy usually keeps its keys: each of those buckets is rebuilt once
            // (old out, new in) rather than emptied and refilled.
            for key in keys_of(&old) {
                if !keys.contains(&key) {
                    self.refile(key, &old.id, None);
                }
            }
        }
        for key in keys {
            self.refile(key, &policy.id, Some(&policy));
        }
    }

    fn unindex_policy(&mut self, old: &StoredPolicy) {
        for key in keys_of(old) {
            self.refile(key, &old.id, None);
        }
    }

    /// Rebuilds the bucket under `key` without the policy `id`, and with `add` (kept sorted by id)
    /// if given; an empty bucket is removed.
    fn refile(&mut self, key: IndexKey, id: &str, add: Option<&Arc<StoredPolicy>>) {
        let mut list: Vec<Arc<StoredPolicy>> = self
            .index
            .get(&key)
            .map(|b| b.policies.iter().filter(|p| p.id != id).cloned().collect())
            .unwrap_or_default();
        if let Some(p) = add {
            let pos = list.partition_point(|q| q.id < p.id);
            list.insert(pos, p.clone());
        }
        let bucket = (!list.is_empty()).then(|| Arc::new(Bucket::new(list)));
        self.index.set(key, bucket);
    }

    pub(crate) fn replace_policies(&mut self, set: Vec<Arc<StoredPolicy>>, version: u64) {
        let mut groups: BTreeMap<IndexKey, Vec<Arc<StoredPolicy>>> = BTreeMap::new();
        let mut policies = OrdMap::new();
        for p in set {
            for key in keys_of(&p) {
                groups.entry(key).or_default().push(p.clone());
            }
            policies.insert(p.id.clone(), p);
        }
        self.index = ScopeIndex::default();
        for (k, v) in groups {
            self.index.set(k, Some(Arc::new(Bucket::new(v))));
        }
        self.policies = policies;
        self.policies_version = version;
    }

    // ---- schema ----

    fn check_schema_fits(&self, schema: &StoredSchema) -> Result<(), EngineError> {
        let all: Vec<Arc<StoredPolicy>> = self.policies.values().cloned().collect();
        validate_against(&schema.validator, &all).map_err(|e| {
            EngineError::new(
                ErrorCode::SchemaConflict,
                format!(
                    "the new schema would invalidate stored policies; change or delete them first: {}",
                    e.detail
                ),
            )
        })?;
        for stored in self.entities.values() {
            if let Err(e) = parse_entities(
                &serde_json::Value::Array(vec![stored.json.clone()]),
                Some(&schema.schema),
            ) {
                return Err(EngineError::new(
                    ErrorCode::SchemaConflict,
                    format!(
                        "the new schema would invalidate stored entity `{}`; change or delete it first: {}",
                        stored.uid(),
                        e.detail
                    ),
                ));
            }
        }
        Ok(())
    }

    // ---- entities ----

    pub(crate) fn upsert_entity(
        &mut self,
        parsed: ParsedEntity,
        version: u64,
    ) -> Result<(), EngineError> {
        let uid = parsed.entity.uid();
        let ancestors = self.closure_of(&parsed.parents);
        if ancestors.binary_search(&uid).is_ok() {
            return Err(EngineError::new(
                ErrorCode::EntityInvalid,
                format!("entity `{uid}` would be its own ancestor; the parent hierarchy must not have cycles"),
            ));
        }
        let old = self.entities.get(&uid).cloned();
        let old_parents: &[EntityUid] = old.as_ref().map(|o| &o.parents[..]).unwrap_or(&[]);
        for p in old_parents {
            if parsed.parents.binary_search(p).is_err() {
                self.remove_child(p, &uid);
            }
        }
        // Only parents that are new to this entity change the reverse index.
        let child = Arc::new(uid.clone());
        for p in parsed.parents.iter() {
            if old_parents.binary_search(p).is_err() {
                let mut set = self.children.get(p).cloned().unwrap_or_default();
                set.insert(child.clone(), ());
                self.children.insert(Arc::new(p.clone()), set);
            }
        }
        let closure_changed = old
            .as_ref()
            .map(|o| o.ancestors != ancestors)
            .unwrap_or(true);
        self.entities.insert(
            child,
            Arc::new(StoredEntity::new(
                parsed.entity,
                parsed.json,
                parsed.parents,
                ancestors,
                version,
            )),
        );
        if closure_changed {
            self.propagate_from(&uid);
        }
        Ok(())
    }

    fn delete_entity(&mut self, uid: &EntityUid) {
        let Some(old) = self.entities.remove(uid) else {
            return;
        };
        for p in old.parents.iter() {
            self.remove_child(p, uid);
        }
        // Descendants keep naming `uid` as a parent, but lose what came through it.
        self.propagate_from(uid);
    }

    fn remove_child(&mut self, parent: &EntityUid, child: &EntityUid) {
        if let Some(set) = self.children.get(parent) {
            let mut set = set.clone();
            set.remove(child);
            if set.is_empty() {
                self.children.remove(parent);
            } else {
                self.children.insert(Arc::new(parent.clone()), set);
            }
        }
    }

    /// The ancestor closure implied by a set of direct parents, sorted.
    fn closure_of(&self, parents: &[EntityUid]) -> Arc<[EntityUid]> {
        let mut all: BTreeSet<EntityUid> = BTreeSet::new();
        for p in parents {
            all.insert(p.clone());
            if let Some(e) = self.entities.get(p) {
                all.extend(e.ancestors.iter().cloned());
            }
        }
        all.into_iter().collect::<Vec<_>>().into()
    }

    /// Recomputes the closure of every descendant of `root` whose closure changes: a worklist that
    /// revisits a node whenever one of its parents changed. Terminates because the hierarchy is
    /// acyclic (checked on upsert).
    fn propagate_from(&mut self, root: &EntityUid) {
        let mut work: VecDeque<EntityUid> = self
            .children
            .get(root)
            .map(|s| s.keys().map(|k| (**k).clone()).collect())
            .unwrap_or_default();
        while let Some(uid) = work.pop_front() {
            let Some(stored) = self.entities.get(&uid).cloned() else {
                continue;
            };
            let ancestors = self.closure_of(&stored.parents);
            if ancestors == stored.ancestors {
                continue;
            }
            self.entities.insert(
                Arc::new(uid.clone()),
                Arc::new(stored.with_ancestors(ancestors)),
            );
            if let Some(kids) = self.children.get(&uid) {
                work.extend(kids.keys().map(|k| (**k).clone()));
            }
        }
    }
}

/// Why [`Snapshot::check_token`] refused a token.
#[derive(Debug)]
pub enum TokenRefused {
    /// It is not a valid token here (malformed, unknown key, bad MAC, expired, issued in future).
    Invalid(TokenError),
    /// It is valid but revoked.
    Revoked {
        /// The selector of the revocation that matched.
        by: Selector,
        /// That revocation's watermark: tokens issued before it are revoked.
        issued_before_ms: u64,
    },
}

impl TokenRefused {
    /// The stable reason code: the token error's code, or `revoked`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid(e) => e.code(),
            Self::Revoked { .. } => "revoked",
        }
    }
}

impl std::fmt::Display for TokenRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Invalid(e) => write!(f, "{}: {e}", e.code()),
            Self::Revoked {
                by,
                issued_before_ms,
            } => write!(
                f,
                "revoked: the token was issued before a revocation of {by} (issued before {issued_before_ms} ms)"
            ),
        }
    }
}

/// Watermarks examined per revocation write by the incremental prune.
const PRUNE_BUDGET: usize = 512;
/// Most revocation events in one write.
pub const MAX_REVOCATIONS_PER_WRITE: usize = 10_000;

fn key_error(e: KeyRingError) -> EngineError {
    let code = match e {
        KeyRingError::RotationTooFast { .. } => ErrorCode::RotationTooFast,
        _ => ErrorCode::InvalidRequest,
    };
    EngineError::new(code, e.to_string())
}

fn parse_json(text: &str) -> Result<serde_json::Value, EngineError> {
    crate::limits::check_nesting(text, "the entity JSON")?;
    serde_json::from_str(text).map_err(|e| {
        EngineError::new(
            ErrorCode::EntityInvalid,
            format!("entities are not valid JSON: {e}"),
        )
    })
}

fn uids_in_array(v: &serde_json::Value) -> Vec<EntityUid> {
    v.as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i.get("uid").cloned())
                .filter_map(|u| EntityUid::from_json(u).ok())
                .collect()
        })
        .unwrap_or_default()
}

fn validate_against(
    validator: &cedar_policy::Validator,
    policies: &[Arc<StoredPolicy>],
) -> Result<(), EngineError> {
    let mut set = PolicySet::new();
    for p in policies {
        let _ = set.add(p.policy.clone());
    }
    let result = validator.validate(&set, ValidationMode::Strict);
    if result.validation_passed() {
        return Ok(());
    }
    let mut errors = result.validation_errors();
    let Some(first) = errors.next() else {
        return Ok(());
    };
    let id = first.policy_id().to_string();
    let text = policies
        .iter()
        .find(|p| p.id == id)
        .map(|p| p.text.as_str())
        .unwrap_or("");
    let mut e = EngineError::from_diagnostic(
        ErrorCode::SchemaValidation,
        &format!("policy `{id}` fails schema validation"),
        text,
        first,
    );
    let more = errors.count();
    if more > 0 {
        e.detail
            .push_str(&format!(" (and {more} more validation errors)"));
    }
    Err(e)
}
