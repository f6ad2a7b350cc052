//! Entities as stored: the parsed Cedar entity (direct parents only), its JSON form, and the
//! transitive closure of its ancestors, maintained incrementally as entities arrive and leave.

use std::collections::BTreeSet;
use std::collections::HashSet;
use std::sync::Arc;

use cedar_policy::Entity;
use cedar_policy::EntityUid;
use cedar_policy::Schema;
use cedar_policy_core::ast::Entity as CoreEntity;
use serde_json::Value;

use crate::error::EngineError;
use crate::error::ErrorCode;
use crate::ids::check_entity_id;
use crate::ids::truncate;

/// Most entities accepted in one write.
pub const MAX_ENTITIES_PER_WRITE: usize = 100_000;

/// Most ancestors (transitively) one entity may have; a write beyond it is refused with
/// `422 too_many_ancestors`. Bounds the memory and the per-decision cost of one entity.
pub const MAX_ANCESTORS_PER_ENTITY: usize = 1_000;

/// Most ancestor-closure entries one write may read and produce; beyond it the write is refused
/// with `413 closure_too_large`. Bounds the CPU time and memory one write costs (a chain of 1,000
/// entities is ~500,000 entries).
pub const MAX_CLOSURE_WORK_PER_WRITE: usize = 1_000_000;

/// One stored entity.
#[derive(Debug)]
pub struct StoredEntity {
    /// The parsed entity with its direct parents.
    pub entity: Entity,
    /// The same entity with every ancestor of the closure recorded, so a request slice can be built
    /// without Cedar recomputing the transitive closure; kept only for small closures (see
    /// [`StoredEntity::closed`]).
    preclosed: Option<Arc<CoreEntity>>,
    /// The entity in Cedar's entity-JSON format, as returned by GET and written to snapshots.
    pub json: Value,
    /// Direct parents, sorted.
    pub parents: Arc<[EntityUid]>,
    /// Transitive closure of the parents, sorted; kept up to date by [`crate::Snapshot`] apply.
    pub ancestors: Arc<[EntityUid]>,
    /// The log index that last wrote this entity.
    pub version: u64,
}

impl StoredEntity {
    /// The entity's uid.
    pub fn uid(&self) -> EntityUid {
        self.entity.uid()
    }

    /// Builds a stored entity, recording the closure on its Cedar form.
    pub fn new(
        entity: Entity,
        json: Value,
        parents: Arc<[EntityUid]>,
        ancestors: Arc<[EntityUid]>,
        version: u64,
    ) -> Self {
        Self {
            preclosed: preclose(&entity, &parents, &ancestors),
            entity,
            json,
            parents,
            ancestors,
            version,
        }
    }

    /// The Cedar form with the whole closure recorded: kept for small closures, else built here
    /// (bounded by [`MAX_ANCESTORS_PER_ENTITY`]).
    pub fn closed(&self) -> Arc<CoreEntity> {
        match &self.preclosed {
            Some(c) => c.clone(),
            None => Arc::new(close(&self.entity, &self.ancestors)),
        }
    }

    /// The same entity with another ancestor closure.
    pub fn with_ancestors(&self, ancestors: Arc<[EntityUid]>) -> Self {
        Self {
            preclosed: preclose(&self.entity, &self.parents, &ancestors),
            entity: self.entity.clone(),
            json: self.json.clone(),
            parents: self.parents.clone(),
            ancestors,
            version: self.version,
        }
    }
}

/// Most indirect ancestors for which the closed Cedar form is kept with the entity. Cedar's form
/// holds its own copy of the ancestors, so keeping it for every entity stored each large closure
/// twice per entity (2,000 members of a group with 2,000 parents cost 1.6 GB); beyond this the
/// form is built per decision instead, from the shared closure.
pub const PRECLOSED_MAX_INDIRECT: usize = 64;

fn preclose(
    entity: &Entity,
    parents: &[EntityUid],
    ancestors: &[EntityUid],
) -> Option<Arc<CoreEntity>> {
    (ancestors.len().saturating_sub(parents.len()) <= PRECLOSED_MAX_INDIRECT)
        .then(|| Arc::new(close(entity, ancestors)))
}

/// The Cedar entity with every member of `ancestors` recorded (direct parents stay parents).
pub fn close(entity: &Entity, ancestors: &[EntityUid]) -> CoreEntity {
    let mut closed: CoreEntity = entity.as_ref().clone();
    for a in ancestors {
        let a: &cedar_policy_core::ast::EntityUID = a.as_ref();
        if !closed.is_child_of(a) {
            closed.add_indirect_ancestor(a.clone());
        }
    }
    closed
}

/// An entity parsed and validated, not yet placed in the store (ancestors unknown).
#[derive(Debug)]
pub struct ParsedEntity {
    /// The parsed entity.
    pub entity: Entity,
    /// Its JSON form, normalised to `{uid, attrs, parents, tags}`.
    pub json: Value,
    /// Direct parents, sorted and de-duplicated.
    pub parents: Arc<[EntityUid]>,
}

/// Parses a JSON array of entities in Cedar's entity-JSON format, validating each against `schema`.
/// Duplicates within one write are refused, so the outcome never depends on order.
pub fn parse_entities(
    json: &Value,
    schema: Option<&Schema>,
) -> Result<Vec<ParsedEntity>, EngineError> {
    let Value::Array(items) = json else {
        return Err(EngineError::new(
            ErrorCode::EntityInvalid,
            "entities must be a JSON array of Cedar entity objects such as \
             [{\"uid\": {\"type\": \"User\", \"id\": \"alice\"}, \"attrs\": {}, \"parents\": []}]",
        ));
    };
    if items.len() > MAX_ENTITIES_PER_WRITE {
        return Err(EngineError::new(
            ErrorCode::EntityInvalid,
            format!(
                "{} entities in one write; the limit is {MAX_ENTITIES_PER_WRITE}: split the write",
                items.len()
            ),
        ));
    }
    let mut seen = HashSet::with_capacity(items.len());
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let parsed = parse_entity(i, item, schema)?;
        if !seen.insert(parsed.entity.uid()) {
            return Err(EngineError::new(
                ErrorCode::EntityInvalid,
                format!(
                    "entity #{i} `{}` appears more than once in this write; send each entity once",
                    parsed.entity.uid()
                ),
            ));
        }
        out.push(parsed);
    }
    Ok(out)
}

/// The common case without Cedar's JSON parser: no schema, `uid` and parents as `{"type", "id"}`,
/// attributes and tags of plain values. `None` means "use Cedar's parser" (which also reports errors).
fn parse_plain(item: &Value, schema: Option<&Schema>) -> Option<ParsedEntity> {
    if schema.is_some() {
        return None;
    }
    let obj = item.as_object()?;
    if obj
        .keys()
        .any(|k| !matches!(k.as_str(), "uid" | "attrs" | "parents" | "tags"))
    {
        return None;
    }
    let plain_uid = |v: &Value| -> Option<EntityUid> {
        let o = v.as_object()?;
        if o.len() != 2 {
            return None;
        }
        let t = o.get("type")?.as_str()?;
        let id = o.get("id")?.as_str()?;
        check_entity_id(id).ok()?;
        Some(EntityUid::from_type_name_and_id(
            crate::value::type_name(t)?,
            cedar_policy::EntityId::new(id),
        ))
    };
    let plain_map =
        |v: Option<&Value>| -> Option<Vec<(String, cedar_policy::RestrictedExpression)>> {
            match v {
                None => Some(Vec::new()),
                Some(Value::Object(m)) => m
                    .iter()
                    .map(|(k, v)| crate::value::restricted(v).map(|e| (k.clone(), e)))
                    .collect(),
                Some(_) => None,
            }
        };
    let uid = plain_uid(obj.get("uid")?)?;
    let parents: BTreeSet<EntityUid> = match obj.get("parents") {
        None => BTreeSet::new(),
        Some(Value::Array(ps)) => ps.iter().map(plain_uid).collect::<Option<_>>()?,
        Some(_) => return None,
    };
    let attrs = plain_map(obj.get("attrs"))?;
    let tags = plain_map(obj.get("tags"))?;
    let entity = Entity::new_with_tags(uid, attrs, parents.iter().cloned(), tags).ok()?;
    let mut json = serde_json::Map::new();
    json.insert("uid".into(), obj.get("uid")?.clone());
    json.insert(
        "attrs".into(),
        obj.get("attrs")
            .cloned()
            .unwrap_or_else(|| Value::Object(Default::default())),
    );
    json.insert("parents".into(), parents_json(&parents));
    if let Some(tags) = obj.get("tags") {
        json.insert("tags".into(), tags.clone());
    }
    Some(ParsedEntity {
        entity,
        json: Value::Object(json),
        parents: parents.into_iter().collect::<Vec<_>>().into(),
    })
}

fn parents_json(parents: &BTreeSet<EntityUid>) -> Value {
    Value::Array(
        parents
            .iter()
            .map(|p| serde_json::json!({"type": p.type_name().to_string(), "id": p.id().unescaped()}))
            .collect(),
    )
}

fn parse_entity(
    index: usize,
    item: &Value,
    schema: Option<&Schema>,
) -> Result<ParsedEntity, EngineError> {
    if let Some(parsed) = parse_plain(item, schema) {
        if parsed.entity.uid().type_name().basename() != "Action" || schema.is_none() {
            return Ok(parsed);
        }
    }
    let entity = Entity::from_json_value(item.clone(), schema).map_err(|e| {
        let mut detail = format!("entity #{index}: {e}");
        if let Some(help) = miette::Diagnostic::help(&e) {
            detail.push_str(&format!(" ({help})"));
        }
        EngineError::new(ErrorCode::EntityInvalid, detail)
    })?;
    let uid = entity.uid();
    check_entity_id(uid.id().unescaped()).map_err(|mut e| {
        e.detail = format!("entity #{index}: {}", e.detail);
        e
    })?;
    if uid.type_name().basename() == "Action" && schema.is_some() {
        return Err(EngineError::new(
            ErrorCode::EntityInvalid,
            format!(
                "entity #{index} `{}`: with a schema set, actions come from the schema; declare it there",
                truncate(&uid.to_string(), 80)
            ),
        ));
    }
    let mut json = entity
        .to_json_value()
        .map_err(|e| EngineError::new(ErrorCode::EntityInvalid, format!("entity #{index}: {e}")))?;
    let mut parents = BTreeSet::new();
    if let Some(Value::Array(ps)) = json.get("parents") {
        for p in ps {
            let uid = EntityUid::from_json(p.clone()).map_err(|e| {
                EngineError::new(
                    ErrorCode::EntityInvalid,
                    format!("entity #{index}: parent: {e}"),
                )
            })?;
            parents.insert(uid);
        }
    }
    // Cedar writes parents from a hash set; sort them so the stored form (and snapshot files) does
    // not depend on hashing.
    if let Some(slot) = json.get_mut("parents") {
        *slot = parents_json(&parents);
    }
    Ok(ParsedEntity {
        entity,
        json,
        parents: parents.into_iter().collect::<Vec<_>>().into(),
    })
}

/// Parses `[{"type": T, "id": I}, …]` (the body of `DELETE /v1/entities`).
pub fn parse_uids(json: &Value) -> Result<Vec<EntityUid>, EngineError> {
    let Value::Array(items) = json else {
        return Err(EngineError::new(
            ErrorCode::EntityInvalid,
            "expected a JSON array of {\"type\": \"…\", \"id\": \"…\"} objects",
        ));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let t = item.get("type").and_then(Value::as_str);
            let id = item.get("id").and_then(Value::as_str);
            let (Some(t), Some(id)) = (t, id) else {
                return Err(EngineError::new(
                    ErrorCode::EntityInvalid,
                    format!(
                        "item #{i}: expected {{\"type\": \"…\", \"id\": \"…\"}} with string values"
                    ),
                ));
            };
            uid_from_parts(t, id)
        })
        .collect()
}

/// Builds a uid from a type name and an id, with the error a user can act on.
pub fn uid_from_parts(type_name: &str, id: &str) -> Result<EntityUid, EngineError> {
    check_entity_id(id)?;
    let ty = type_name
        .parse::<cedar_policy::EntityTypeName>()
        .map_err(|_| {
            EngineError::new(
                ErrorCode::InvalidId,
                format!(
                    "invalid entity type `{}`: use a Cedar type name such as `User` or `Ns::User`",
                    truncate(type_name, 64)
                ),
            )
        })?;
    Ok(EntityUid::from_type_name_and_id(
        ty,
        cedar_policy::EntityId::new(id),
    ))
}
