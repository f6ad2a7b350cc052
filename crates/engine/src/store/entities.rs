//! The entity store: entities by uid and the reverse parent index that keeps every entity's
//! ancestor closure up to date as entities arrive and leave.

use std::collections::BTreeSet;
use std::collections::VecDeque;
use std::sync::Arc;

use cedar_policy::EntityUid;
use cedar_policy::Schema;

use crate::change::ChangeSet;
use crate::change::Changed;
use crate::entity::parse_entities;
use crate::entity::uid_from_parts;
use crate::entity::ParsedEntity;
use crate::entity::StoredEntity;
use crate::error::EngineError;
use crate::error::ErrorCode;
use crate::index::FastMap;
use crate::persist::PersistedState;
use crate::store::context::WriteContext;

/// The children of one parent: a persistent hash set whose keys clone with one reference count, so
/// adding a member to a large group copies little.
type ChildSet = FastMap<Arc<EntityUid>, ()>;

/// Entities and their closure. Cloning is cheap, and one upsert copies only the paths it touches.
#[derive(Clone, Default)]
pub struct EntityStore {
    /// Keys are shared (`Arc`) so path copies in this large map clone one reference count per key.
    entities: FastMap<Arc<EntityUid>, Arc<StoredEntity>>,
    /// Direct children of each uid that some entity names as a parent: drives closure updates.
    children: FastMap<Arc<EntityUid>, ChildSet>,
    /// The version that last changed any entity.
    entities_version: u64,
}

impl EntityStore {
    /// One entity by uid.
    #[inline]
    pub fn get(&self, uid: &EntityUid) -> Option<&Arc<StoredEntity>> {
        self.entities.get(uid)
    }

    /// All entities (unordered).
    pub fn iter(&self) -> impl Iterator<Item = &Arc<StoredEntity>> {
        self.entities.values()
    }

    /// Number of stored entities.
    pub fn len(&self) -> usize {
        self.entities.len()
    }

    /// Whether no entity is stored.
    pub fn is_empty(&self) -> bool {
        self.entities.is_empty()
    }

    /// The version that last changed any entity.
    pub fn version(&self) -> u64 {
        self.entities_version
    }

    /// `UpsertEntities`: writes each entity of a JSON array, validated against `schema`.
    pub(crate) fn upsert(
        &mut self,
        json: &str,
        schema: Option<&Schema>,
        at: &WriteContext<'_>,
    ) -> Result<ChangeSet, EngineError> {
        if at.if_match.is_some() {
            let named = serde_json::from_str::<serde_json::Value>(json)
                .ok()
                .map(|v| uids_in_array(&v))
                .unwrap_or_default();
            at.check_if_match("the named entities", self.max_version(&named))?;
        }
        let mut parsed = parse_entities(&parse_json(json)?, schema)?;
        let uids: Vec<EntityUid> = parsed.iter().map(|p| p.entity.uid()).collect();
        if parsed.len() == 1 {
            // One entity can only be refused (a cycle) before anything changes: write in place.
            if let Some(one) = parsed.pop() {
                self.upsert_entity(one, at.version)?;
            }
        } else {
            // A later entity may be refused after earlier ones went in: all or nothing.
            let mut next = self.clone();
            for p in parsed {
                next.upsert_entity(p, at.version)?;
            }
            *self = next;
        }
        self.entities_version = at.version;
        Ok(entities_changed(Changed::Ids(uids)))
    }

    /// `DeleteEntities`: removes the entities named by `(type, id)`; absent ones are ignored.
    pub(crate) fn delete(
        &mut self,
        uids: &[(String, String)],
        at: &WriteContext<'_>,
    ) -> Result<ChangeSet, EngineError> {
        if at.if_match.is_some() {
            let named: Vec<EntityUid> = uids
                .iter()
                .filter_map(|(t, i)| uid_from_parts(t, i).ok())
                .collect();
            at.check_if_match("the named entities", self.max_version(&named))?;
        }
        let uids = uids
            .iter()
            .map(|(t, i)| uid_from_parts(t, i))
            .collect::<Result<Vec<_>, _>>()?;
        let mut removed = Vec::new();
        for uid in uids {
            if self.delete_entity(&uid) {
                removed.push(uid);
            }
        }
        self.entities_version = at.version;
        Ok(entities_changed(Changed::Ids(removed)))
    }

    /// `ReplaceEntities`: replaces every entity with those of a JSON array.
    pub(crate) fn replace(
        &mut self,
        json: &str,
        schema: Option<&Schema>,
        at: &WriteContext<'_>,
    ) -> Result<ChangeSet, EngineError> {
        at.check_if_match("the entity set", self.entities_version)?;
        let parsed = parse_entities(&parse_json(json)?, schema)?;
        let mut next = Self::default();
        for p in parsed {
            next.upsert_entity(p, at.version)?;
        }
        next.entities_version = at.version;
        *self = next;
        Ok(entities_changed(Changed::All))
    }

    /// Writes this store's part of the persisted state.
    pub(crate) fn save(&self, into: &mut PersistedState) {
        let mut entities: Vec<(String, u64)> = self
            .entities
            .values()
            .map(|e| (e.json.to_string(), e.version))
            .collect();
        entities.sort();
        into.entities = entities;
        into.entities_version = self.entities_version;
    }

    /// Rebuilds this store from the persisted state.
    pub(crate) fn load(from: &PersistedState) -> Result<Self, EngineError> {
        let mut store = Self::default();
        // Upserts in any order give the same closures: a parent arriving later propagates down.
        for (json, v) in &from.entities {
            let value: serde_json::Value = serde_json::from_str(json).map_err(|e| {
                EngineError::new(ErrorCode::EntityInvalid, format!("snapshot entity: {e}"))
            })?;
            for e in parse_entities(&serde_json::Value::Array(vec![value]), None)? {
                store.upsert_entity(e, *v)?;
            }
        }
        store.entities_version = from.entities_version;
        Ok(store)
    }

    fn max_version(&self, uids: &[EntityUid]) -> u64 {
        uids.iter()
            .filter_map(|u| self.entities.get(u).map(|e| e.version))
            .max()
            .unwrap_or(0)
    }

    /// Writes one entity and moves the closure of its descendants. Refused (a cycle) before
    /// anything changes.
    fn upsert_entity(&mut self, parsed: ParsedEntity, version: u64) -> Result<(), EngineError> {
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

    /// Removes one entity; whether it was there.
    fn delete_entity(&mut self, uid: &EntityUid) -> bool {
        let Some(old) = self.entities.remove(uid) else {
            return false;
        };
        for p in old.parents.iter() {
            self.remove_child(p, uid);
        }
        // Descendants keep naming `uid` as a parent, but lose what came through it.
        self.propagate_from(uid);
        true
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

fn entities_changed(entities: Changed<EntityUid>) -> ChangeSet {
    ChangeSet {
        entities,
        ..ChangeSet::default()
    }
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

/// The uids an entity array names, read loosely (for `If-Match`, before the array is validated).
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
