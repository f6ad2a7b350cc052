//! The policy store: policies by id, the scope index over them, and the schema they are validated
//! against. Policies and schema live together because each write to one is checked against the
//! other.

use std::collections::BTreeMap;
use std::sync::Arc;

use cedar_policy::PolicySet;
use cedar_policy::ValidationMode;
use imbl::OrdMap;

use crate::change::ChangeSet;
use crate::change::Changed;
use crate::entity::parse_entities;
use crate::error::EngineError;
use crate::error::ErrorCode;
use crate::ids::check_policy_id;
use crate::index::keys_of;
use crate::index::Bucket;
use crate::index::IndexKey;
use crate::index::ScopeIndex;
use crate::persist::PersistedState;
use crate::policy::parse_map;
use crate::policy::parse_one;
use crate::policy::parse_set;
use crate::policy::StoredPolicy;
use crate::schema::parse_schema;
use crate::schema::StoredSchema;
use crate::store::context::WriteContext;
use crate::store::entities::EntityStore;

/// Policies, their scope index and the schema. Cloning is cheap (persistent maps and `Arc`s).
#[derive(Clone, Default)]
pub struct PolicyStore {
    policies: OrdMap<String, Arc<StoredPolicy>>,
    /// The version that last changed the policy set.
    policies_version: u64,
    index: ScopeIndex,
    schema: Option<Arc<StoredSchema>>,
    /// The version that last set or removed the schema.
    schema_version: u64,
}

impl PolicyStore {
    /// One policy by id.
    pub fn get(&self, id: &str) -> Option<&Arc<StoredPolicy>> {
        self.policies.get(id)
    }

    /// All policies, sorted by id.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<StoredPolicy>> {
        self.policies.values()
    }

    /// Number of stored policies.
    pub fn len(&self) -> usize {
        self.policies.len()
    }

    /// Whether no policy is stored.
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// The version that last changed the policy set.
    pub fn version(&self) -> u64 {
        self.policies_version
    }

    /// The schema, if one is set.
    #[inline]
    pub fn schema(&self) -> Option<&Arc<StoredSchema>> {
        self.schema.as_ref()
    }

    /// The scope index decisions select candidate policies with.
    #[inline]
    pub fn index(&self) -> &ScopeIndex {
        &self.index
    }

    /// `PutPolicy`: creates or replaces one policy.
    pub(crate) fn put(
        &mut self,
        id: &str,
        cedar: &str,
        at: &WriteContext<'_>,
    ) -> Result<ChangeSet, EngineError> {
        self.check_policy_if_match(id, at)?;
        let policy = at.mode.parse_policy(id, cedar, at.version)?;
        self.validate(std::slice::from_ref(&policy))?;
        let changes = policies_changed(vec![id.to_string()]);
        if at.is_check() {
            // Filing the policy cannot fail, and a check's state is thrown away.
            return Ok(changes);
        }
        self.insert(policy);
        self.policies_version = at.version;
        Ok(changes)
    }

    /// `DeletePolicy`: removes one policy.
    pub(crate) fn delete(
        &mut self,
        id: &str,
        at: &WriteContext<'_>,
    ) -> Result<ChangeSet, EngineError> {
        self.check_policy_if_match(id, at)?;
        check_policy_id(id)?;
        let Some(old) = self.policies.remove(id) else {
            return Err(EngineError::new(
                ErrorCode::NotFound,
                format!("no policy `{id}`; `GET /v1/policies` lists the ids"),
            ));
        };
        for key in keys_of(&old) {
            self.refile(key, &old.id, None);
        }
        self.policies_version = at.version;
        Ok(policies_changed(vec![id.to_string()]))
    }

    /// `ReplacePoliciesText`: replaces the whole set with the policies of one Cedar text.
    pub(crate) fn replace_text(
        &mut self,
        cedar: &str,
        at: &WriteContext<'_>,
    ) -> Result<ChangeSet, EngineError> {
        at.check_if_match("the policy set", self.policies_version)?;
        let set = parse_set(cedar, at.version)?;
        self.replace_checked(set, at.version)
    }

    /// `ReplacePoliciesMap`: replaces the whole set with an id → text map.
    pub(crate) fn replace_map(
        &mut self,
        map: &[(String, String)],
        at: &WriteContext<'_>,
    ) -> Result<ChangeSet, EngineError> {
        at.check_if_match("the policy set", self.policies_version)?;
        let set = parse_map(map, |id, text| at.mode.parse_policy(id, text, at.version))?;
        self.replace_checked(set, at.version)
    }

    /// `PutSchema`: sets the schema, if every stored policy and entity still fits it.
    pub(crate) fn put_schema(
        &mut self,
        text: &str,
        json: bool,
        entities: &EntityStore,
        at: &WriteContext<'_>,
    ) -> Result<ChangeSet, EngineError> {
        at.check_if_match("the schema", self.current_schema_version())?;
        let schema = parse_schema(text, json, at.version)?;
        self.check_schema_fits(&schema, entities)?;
        self.schema = Some(Arc::new(schema));
        self.schema_version = at.version;
        Ok(schema_changed())
    }

    /// `DeleteSchema`: removes the schema.
    pub(crate) fn delete_schema(
        &mut self,
        at: &WriteContext<'_>,
    ) -> Result<ChangeSet, EngineError> {
        at.check_if_match("the schema", self.current_schema_version())?;
        if self.schema.take().is_none() {
            return Err(EngineError::new(ErrorCode::NotFound, "no schema is set"));
        }
        self.schema_version = at.version;
        Ok(schema_changed())
    }

    /// Writes this store's part of the persisted state.
    pub(crate) fn save(&self, into: &mut PersistedState) {
        into.policies = self
            .policies
            .values()
            .map(|p| (p.id.clone(), p.text.clone(), p.version))
            .collect();
        into.policies_version = self.policies_version;
        into.schema = self
            .schema
            .as_ref()
            .map(|s| (s.text.clone(), s.json, s.version));
        into.schema_version = self.schema_version;
    }

    /// Rebuilds this store from the persisted state. Each policy keeps the version it was written
    /// at; the set's and the schema's versions are restored as saved.
    pub(crate) fn load(from: &PersistedState) -> Result<Self, EngineError> {
        let policies = from
            .policies
            .iter()
            .map(|(id, text, v)| parse_one(id, text, *v))
            .collect::<Result<Vec<_>, _>>()?;
        let schema = from
            .schema
            .as_ref()
            .map(|(text, json, v)| parse_schema(text, *json, *v))
            .transpose()?;
        let mut store = Self {
            schema: schema.map(Arc::new),
            schema_version: from.schema_version,
            ..Self::default()
        };
        store.replace_all(policies, from.policies_version);
        Ok(store)
    }

    /// `If-Match` against one policy's version; the message is built only when it is asked for.
    fn check_policy_if_match(&self, id: &str, at: &WriteContext<'_>) -> Result<(), EngineError> {
        if at.if_match.is_none() {
            return Ok(());
        }
        let current = self.policies.get(id).map(|p| p.version).unwrap_or(0);
        at.check_if_match(&format!("policy `{id}`"), current)
    }

    fn current_schema_version(&self) -> u64 {
        self.schema.as_ref().map(|s| s.version).unwrap_or(0)
    }

    fn validate(&self, policies: &[Arc<StoredPolicy>]) -> Result<(), EngineError> {
        let Some(schema) = &self.schema else {
            return Ok(());
        };
        validate_against(&schema.validator, policies)
    }

    fn replace_checked(
        &mut self,
        set: Vec<Arc<StoredPolicy>>,
        version: u64,
    ) -> Result<ChangeSet, EngineError> {
        self.validate(&set)?;
        self.replace_all(set, version);
        Ok(ChangeSet {
            policies: Changed::All,
            ..ChangeSet::default()
        })
    }

    fn insert(&mut self, policy: Arc<StoredPolicy>) {
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

    fn replace_all(&mut self, set: Vec<Arc<StoredPolicy>>, version: u64) {
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

    fn check_schema_fits(
        &self,
        schema: &StoredSchema,
        entities: &EntityStore,
    ) -> Result<(), EngineError> {
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
        for stored in entities.iter() {
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
}

fn policies_changed(ids: Vec<String>) -> ChangeSet {
    ChangeSet {
        policies: Changed::Ids(ids),
        ..ChangeSet::default()
    }
}

fn schema_changed() -> ChangeSet {
    ChangeSet {
        schema: true,
        ..ChangeSet::default()
    }
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
