//! The writes that go through the Raft log. Each is plain data: texts are re-parsed in apply, so the
//! log holds what the user sent and every node derives the same state from it.
//!
//! A command is executed by the one store that owns the data it changes ([`Command::execute`]):
//! adding a command means a variant here, its name in [`Command::kind`], its arm in `execute`, and
//! the store method that does the work.

use serde::Deserialize;
use serde::Serialize;

use crate::change::ChangeSet;
use crate::credential::Scope;
use crate::error::EngineError;
use crate::keyring::RotationPolicy;
use crate::revocation::Selector;
use crate::store::context::WriteContext;
use crate::store::Stores;

/// One state change. Entity JSON travels as text because the log encoding (bincode) cannot carry
/// self-describing JSON values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Create or replace one policy.
    PutPolicy {
        /// Policy id.
        id: String,
        /// Cedar text of exactly one static policy.
        cedar: String,
    },
    /// Delete one policy.
    DeletePolicy {
        /// Policy id.
        id: String,
    },
    /// Replace the whole policy set with the policies of one Cedar text (ids from `@id`).
    ReplacePoliciesText {
        /// Cedar text of the set.
        cedar: String,
    },
    /// Replace the whole policy set with an id → text map.
    ReplacePoliciesMap {
        /// `(id, cedar)` pairs.
        policies: Vec<(String, String)>,
    },
    /// Set the schema.
    PutSchema {
        /// Schema text.
        text: String,
        /// Whether `text` is the JSON schema format.
        json: bool,
    },
    /// Remove the schema.
    DeleteSchema,
    /// Upsert entities (a JSON array in Cedar's entity format).
    UpsertEntities {
        /// JSON array text.
        json: String,
    },
    /// Delete entities by `(type, id)`.
    DeleteEntities {
        /// `(type, id)` pairs.
        uids: Vec<(String, String)>,
    },
    /// Replace all entities (a JSON array in Cedar's entity format).
    ReplaceEntities {
        /// JSON array text.
        json: String,
    },
    /// Rotate the token keys: the staged key becomes primary, the primary secondary, and
    /// `material` the new staged key (its id is this entry's index). The receiving node draws the
    /// material from OS entropy before proposing; apply uses it as given.
    RotateKeys {
        /// The new staged key.
        material: KeyMaterial,
        /// On an empty ring only: the first primary key.
        first_primary: Option<KeyMaterial>,
        /// The token lifetime, clock skew and key limit this rotation is checked against; they
        /// become the ring's policy.
        policy: RotationPolicy,
    },
    /// Revoke, for each event, the tokens that match its selector and were issued before its
    /// time (milliseconds since the Unix epoch; `None`: the write's stamped time). All or none:
    /// one invalid event refuses the write.
    Revoke {
        /// The events.
        events: Vec<(Selector, Option<u64>)>,
    },
    /// Create an API credential. The receiving node drew the id and secret and hashed the secret
    /// (argon2id, random salt); only the hash enters the log.
    CreateCredential {
        /// Its id.
        id: String,
        /// A human name.
        name: String,
        /// What it may do.
        scopes: Vec<Scope>,
        /// argon2id PHC string of the secret.
        hash: String,
    },
    /// Revoke an API credential.
    RevokeCredential {
        /// Its id.
        id: String,
    },
    /// Create the bootstrap admin credential (id `admin`, scope `admin`) from the secret an
    /// operator configured, unless a bootstrap happened before (then a no-op: every node with the
    /// secret configured proposes it at first start, and only the first one counts).
    BootstrapAdmin {
        /// argon2id PHC string of the configured secret.
        hash: String,
    },
    /// Raise the cluster's active format level to `level` (docs/operations.md, "Format levels").
    /// Proposed only once every member supports `level`; below it, nothing newer than the active
    /// level's formats is written. Levels never go down. New at level 2.
    RaiseLevel {
        /// The new active level, above the current one.
        level: u8,
    },
    /// Add and remove direct parents of one stored entity in one write, leaving its attributes
    /// as they are. New at level 2: refused while the active level is below it.
    EditParents {
        /// The entity's type.
        entity_type: String,
        /// The entity's id.
        id: String,
        /// Parents to add, as `(type, id)`.
        add: Vec<(String, String)>,
        /// Parents to remove, as `(type, id)`; ones the entity does not have are ignored.
        remove: Vec<(String, String)>,
    },
}

/// The format level a command first exists at: a log entry or peer message that carries it is
/// written in that level's formats at least, since an older release cannot decode it.
pub const LEVEL_OF_NEW_COMMANDS: u8 = 2;

/// 32 bytes of key material. Its `Debug` never prints them, so a logged command leaks nothing.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyMaterial(pub [u8; 32]);

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyMaterial(..)")
    }
}

impl Command {
    /// A short name for logs and the watch stream (never the content).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::PutPolicy { .. } => "put_policy",
            Self::DeletePolicy { .. } => "delete_policy",
            Self::ReplacePoliciesText { .. } | Self::ReplacePoliciesMap { .. } => {
                "replace_policies"
            }
            Self::PutSchema { .. } => "put_schema",
            Self::DeleteSchema => "delete_schema",
            Self::UpsertEntities { .. } => "upsert_entities",
            Self::DeleteEntities { .. } => "delete_entities",
            Self::ReplaceEntities { .. } => "replace_entities",
            Self::RotateKeys { .. } => "rotate_keys",
            Self::Revoke { .. } => "revoke",
            Self::CreateCredential { .. } => "create_credential",
            Self::RevokeCredential { .. } => "revoke_credential",
            Self::BootstrapAdmin { .. } => "bootstrap_admin",
            Self::RaiseLevel { .. } => "raise_level",
            Self::EditParents { .. } => "edit_parents",
        }
    }

    /// The lowest format level whose log entry format can carry this command (1 for every
    /// command the previous release knows).
    pub fn format_level(&self) -> u8 {
        match self {
            Self::RaiseLevel { .. } | Self::EditParents { .. } => LEVEL_OF_NEW_COMMANDS,
            _ => 1,
        }
    }

    /// Hands this command to the store that owns its data and answers what it changed. All or
    /// nothing: on an error the state is as it was.
    pub(crate) fn execute(
        &self,
        state: &mut Stores,
        at: &WriteContext<'_>,
    ) -> Result<ChangeSet, EngineError> {
        match self {
            Self::PutPolicy { id, cedar } => state.policies.put(id, cedar, at),
            Self::DeletePolicy { id } => state.policies.delete(id, at),
            Self::ReplacePoliciesText { cedar } => state.policies.replace_text(cedar, at),
            Self::ReplacePoliciesMap { policies } => state.policies.replace_map(policies, at),
            Self::PutSchema { text, json } => {
                state.policies.put_schema(text, *json, &state.entities, at)
            }
            Self::DeleteSchema => state.policies.delete_schema(at),
            Self::UpsertEntities { json } => {
                let schema = state.policies.schema().map(|s| &s.schema);
                state.entities.upsert(json, schema, at)
            }
            Self::DeleteEntities { uids } => state.entities.delete(uids, at),
            Self::ReplaceEntities { json } => {
                let schema = state.policies.schema().map(|s| &s.schema);
                state.entities.replace(json, schema, at)
            }
            Self::RotateKeys {
                material,
                first_primary,
                policy,
            } => state
                .tokens
                .rotate(material.0, first_primary.map(|m| m.0), policy, at),
            Self::Revoke { events } => state.tokens.revoke(events, at),
            Self::CreateCredential {
                id,
                name,
                scopes,
                hash,
            } => state.credentials.create(id, name, scopes, hash, at),
            Self::RevokeCredential { id } => state.credentials.revoke(id, at),
            Self::BootstrapAdmin { hash } => state.credentials.bootstrap(hash, at),
            Self::RaiseLevel { level } => state.level.raise(*level, at),
            Self::EditParents {
                entity_type,
                id,
                add,
                remove,
            } => {
                state.level.require(LEVEL_OF_NEW_COMMANDS, "edit_parents")?;
                let schema = state.policies.schema().map(|s| &s.schema);
                state
                    .entities
                    .edit_parents((entity_type, id), add, remove, schema, at)
            }
        }
    }
}

/// A command with the write's conditions and the leader's stamp.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Write {
    /// What to change.
    pub command: Command,
    /// `If-Match`: the version the resource must still have (0 = must not exist).
    pub if_match: Option<u64>,
    /// `Idempotency-Key`: a retried write with the same key is applied once.
    pub idempotency_key: Option<String>,
    /// Milliseconds since the Unix epoch, stamped by the leader; apply never reads a clock.
    pub stamped_ms: u64,
}

/// What applying a write did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The state changed (or a no-op write was accepted) at this entry's version.
    Applied,
    /// The idempotency key was seen before; the first application's version.
    Duplicate {
        /// The version of the first application.
        version: u64,
    },
    /// The write was refused; the state is unchanged.
    Rejected(EngineError),
}

/// What applying one write did: its outcome for the writer and what changed for everyone else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedWrite {
    /// Applied, a duplicate or rejected.
    pub outcome: Outcome,
    /// What changed; empty unless the outcome is [`Outcome::Applied`].
    pub changes: ChangeSet,
}

impl AppliedWrite {
    /// An outcome that changed nothing (a duplicate or a refusal).
    pub fn unchanged(outcome: Outcome) -> Self {
        Self {
            outcome,
            changes: ChangeSet::default(),
        }
    }
}
