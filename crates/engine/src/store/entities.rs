//! The entity store: entities by uid and the reverse parent index that keeps every entity's
//! ancestor closure up to date as entities arrive and leave.

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
use crate::store::closure::reclose;
use crate::store::closure::ClosureLimits;
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
        let parsed = parse_entities(&parse_json(json)?, schema)?;
        let uids: Vec<EntityUid> = parsed.iter().map(|p| p.entity.uid()).collect();
        // A write can be refused after some entities went in: all or nothing, on a copy (cheap:
        // the maps are persistent, and only the paths touched are copied).
        let mut next = self.clone();
        next.write_all(parsed, at.version, ClosureLimits::WRITE)?;
        *self = next;
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
        // Descendants keep naming a removed entity as a parent, but lose what came through it.
        // Closures only shrink, so no limit applies, and no cycle can appear.
        let below: Vec<EntityUid> = removed.iter().flat_map(|u| self.children_of(u)).collect();
        reclose(self, below, ClosureLimits::NONE)?;
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
        next.write_all(parsed, at.version, ClosureLimits::WRITE)?;
        next.entities_version = at.version;
        *self = next;
        Ok(entities_changed(Changed::All))
    }

    /// `EditParents`: adds and removes direct parents of the stored entity `uid`, its attributes
    /// unchanged; validated against `schema` and the closure limits like an upsert of the result.
    pub(crate) fn edit_parents(
        &mut self,
        (entity_type, id): (&str, &str),
        add: &[(String, String)],
        remove: &[(String, String)],
        schema: Option<&Schema>,
        at: &WriteContext<'_>,
    ) -> Result<ChangeSet, EngineError> {
        let uid = uid_from_parts(entity_type, id)?;
        let Some(stored) = self.entities.get(&uid) else {
            return Err(EngineError::new(
                ErrorCode::NotFound,
                format!("no entity `{uid}`: create it with `POST /v1/entities` first"),
            ));
        };
        at.check_if_match("the entity", stored.version)?;
        let parse = |pairs: &[(String, String)]| {
            pairs
                .iter()
                .map(|(t, i)| uid_from_parts(t, i))
                .collect::<Result<Vec<_>, _>>()
        };
        let (add, remove) = (parse(add)?, parse(remove)?);
        if add.contains(&uid) {
            return Err(EngineError::new(
                ErrorCode::EntityInvalid,
                format!("`{uid}` cannot be its own parent"),
            ));
        }
        let mut parents: Vec<EntityUid> = stored
            .parents
            .iter()
            .filter(|p| !remove.contains(p))
            .cloned()
            .collect();
        for p in add {
            if !parents.contains(&p) {
                parents.push(p);
            }
        }
        let mut json = stored.json.clone();
        let parents_json: Vec<serde_json::Value> = parents
            .iter()
            .map(|p| serde_json::json!({"type": p.type_name().to_string(), "id": p.id().unescaped()}))
            .collect();
        if let Some(object) = json.as_object_mut() {
            object.insert("parents".into(), serde_json::Value::Array(parents_json));
        }
        let parsed = parse_entities(&serde_json::Value::Array(vec![json]), schema)?;
        let mut next = self.clone();
        next.write_all(parsed, at.version, ClosureLimits::WRITE)?;
        *self = next;
        self.entities_version = at.version;
        Ok(entities_changed(Changed::Ids(vec![uid])))
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
        let mut parsed = Vec::with_capacity(from.entities.len());
        for (json, v) in &from.entities {
            let value: serde_json::Value = serde_json::from_str(json).map_err(|e| {
                EngineError::new(ErrorCode::EntityInvalid, format!("snapshot entity: {e}"))
            })?;
            for e in parse_entities(&serde_json::Value::Array(vec![value]), None)? {
                parsed.push((e, *v));
            }
        }
        // A state accepted once loads whatever limits say today.
        store.place_all(parsed, ClosureLimits::NONE)?;
        store.entities_version = from.entities_version;
        Ok(store)
    }

    fn max_version(&self, uids: &[EntityUid]) -> u64 {
        uids.iter()
            .filter_map(|u| self.entities.get(u).map(|e| e.version))
            .max()
            .unwrap_or(0)
    }

    /// Writes `parsed` at `version`, then closes the ancestors of what moved.
    fn write_all(
        &mut self,
        parsed: Vec<ParsedEntity>,
        version: u64,
        limits: ClosureLimits,
    ) -> Result<(), EngineError> {
        self.place_all(parsed.into_iter().map(|p| (p, version)).collect(), limits)
    }

    /// Places each entity with its parent links, then recomputes, once and parents first, the
    /// closure of every entity that is new or has other parents, and of their descendants.
    fn place_all(
        &mut self,
        parsed: Vec<(ParsedEntity, u64)>,
        limits: ClosureLimits,
    ) -> Result<(), EngineError> {
        let mut moved = Vec::new();
        for (p, version) in parsed {
            if let Some(uid) = self.place(p, version) {
                moved.push(uid);
            }
        }
        reclose(self, moved, limits)
    }

    /// Stores one entity and its parent links, keeping its closure if its parents are unchanged;
    /// the uid if its closure must be recomputed.
    fn place(&mut self, parsed: ParsedEntity, version: u64) -> Option<EntityUid> {
        let uid = parsed.entity.uid();
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
        let kept = old.filter(|o| o.parents == parsed.parents);
        let moved = kept.is_none();
        let ancestors = kept
            .map(|o| o.ancestors.clone())
            .unwrap_or_else(|| Arc::from(Vec::new()));
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
        moved.then_some(uid)
    }

    /// Removes one entity and its parent links; whether it was there. Its descendants' closures
    /// are left for [`reclose`].
    fn delete_entity(&mut self, uid: &EntityUid) -> bool {
        let Some(old) = self.entities.remove(uid) else {
            return false;
        };
        for p in old.parents.iter() {
            self.remove_child(p, uid);
        }
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

    /// The direct children of `uid` (entities naming it as a parent), sorted.
    pub(super) fn children_of(&self, uid: &EntityUid) -> Vec<EntityUid> {
        let mut kids: Vec<EntityUid> = self
            .children
            .get(uid)
            .map(|s| s.keys().map(|k| (**k).clone()).collect())
            .unwrap_or_default();
        kids.sort();
        kids
    }

    /// Replaces a stored entity (its closure recomputed).
    pub(super) fn put(&mut self, entity: Arc<StoredEntity>) {
        self.entities.insert(Arc::new(entity.uid()), entity);
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
