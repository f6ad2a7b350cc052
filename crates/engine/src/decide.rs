//! Decisions: an AuthZEN-shaped input mapped to Cedar, evaluated against only the candidate policies
//! of the scope index, over a small per-request entity slice.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::OnceLock;

use cedar_policy::Context;
use cedar_policy::Effect;
use cedar_policy::Entities;
use cedar_policy::Entity;
use cedar_policy::EntityId;
use cedar_policy::EntityTypeName;
use cedar_policy::EntityUid;
use cedar_policy::Request;
use cedar_policy::RestrictedExpression;
use cedar_policy_core::ast::Entity as CoreEntity;
use cedar_policy_core::ast::Literal;
use cedar_policy_core::ast::Policy as CorePolicy;
use cedar_policy_core::ast::Request as CoreRequest;
use cedar_policy_core::ast::ValueKind;
use cedar_policy_core::entities::Entities as CoreEntities;
use cedar_policy_core::entities::NoEntitiesSchema;
use cedar_policy_core::entities::TCComputation;
use cedar_policy_core::evaluator::Evaluator;
use cedar_policy_core::extensions::Extensions;
use serde_json::Map;
use serde_json::Value;

use crate::entity::close;
use crate::entity::StoredEntity;
use crate::error::EngineError;
use crate::error::ErrorCode;
use crate::ids::truncate;
use crate::policy::StoredPolicy;
use crate::snapshot::Snapshot;
use crate::value::restricted;

/// One decision request, already mapped to Cedar.
#[derive(Debug, Clone)]
pub struct DecisionInput {
    /// The principal (`subject`).
    pub principal: EntityUid,
    /// The action.
    pub action: EntityUid,
    /// The resource.
    pub resource: EntityUid,
    /// `subject.properties`, merged over the stored attributes for this request only.
    pub principal_properties: Option<Map<String, Value>>,
    /// `resource.properties`, likewise.
    pub resource_properties: Option<Map<String, Value>>,
    /// `context`, the Cedar context record.
    pub context: Option<Map<String, Value>>,
}

impl DecisionInput {
    /// Maps AuthZEN's `subject`, `action`, `resource` and `context` JSON values to Cedar, with the
    /// errors AuthZEN asks for: a missing object or field is `missing_field`, a wrong type
    /// `invalid_json`.
    pub fn from_authzen(
        subject: Option<&Value>,
        action: Option<&Value>,
        resource: Option<&Value>,
        context: Option<&Value>,
    ) -> Result<Self, EngineError> {
        let (principal, mut principal_properties) = typed_entity("subject", subject)?;
        let (resource, mut resource_properties) = typed_entity("resource", resource)?;
        if principal == resource {
            // One entity, one set of attributes: the request's entity slice holds it once.
            principal_properties = same_entity(principal_properties, resource_properties.take())?;
            resource_properties.clone_from(&principal_properties);
        }
        let action = action_uid(action)?;
        let context = match context {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(m.clone()),
            Some(_) => return Err(wrong_type("context", "an object")),
        };
        Ok(Self {
            principal,
            action,
            resource,
            principal_properties,
            resource_properties,
            context,
        })
    }
}

/// The properties of an entity that is both subject and resource: both sets together, refused
/// when they give one property two different values.
fn same_entity(
    subject: Option<Map<String, Value>>,
    resource: Option<Map<String, Value>>,
) -> Result<Option<Map<String, Value>>, EngineError> {
    let (mut merged, other) = match (subject, resource) {
        (Some(s), Some(r)) => (s, r),
        (s, r) => return Ok(s.or(r)),
    };
    for (k, v) in other {
        match merged.get(&k) {
            Some(mine) if *mine != v => {
                return Err(EngineError::new(
                    ErrorCode::ConflictingProperties,
                    format!(
                        "subject and resource are the same entity, and `subject.properties.{k}` \
                         differs from `resource.properties.{k}`: give the property one value"
                    ),
                ))
            }
            Some(_) => {}
            None => {
                merged.insert(k, v);
            }
        }
    }
    Ok(Some(merged))
}

fn missing(what: &str) -> EngineError {
    EngineError::new(
        ErrorCode::MissingField,
        format!("`{what}` is required; see the AuthZEN request shape in docs/api.md"),
    )
}

fn wrong_type(what: &str, expected: &str) -> EngineError {
    EngineError::new(
        ErrorCode::InvalidRequest,
        format!("`{what}` must be {expected}"),
    )
}

fn required_str<'a>(
    obj: &'a Map<String, Value>,
    parent: &str,
    field: &str,
) -> Result<&'a str, EngineError> {
    match obj.get(field) {
        None | Some(Value::Null) => Err(missing(&format!("{parent}.{field}"))),
        Some(Value::String(s)) if s.is_empty() => Err(missing(&format!("{parent}.{field}"))),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(wrong_type(&format!("{parent}.{field}"), "a string")),
    }
}

fn properties(
    obj: &Map<String, Value>,
    parent: &str,
) -> Result<Option<Map<String, Value>>, EngineError> {
    match obj.get("properties") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) if m.is_empty() => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m.clone())),
        Some(_) => Err(wrong_type(&format!("{parent}.properties"), "an object")),
    }
}

fn typed_entity(
    what: &str,
    value: Option<&Value>,
) -> Result<(EntityUid, Option<Map<String, Value>>), EngineError> {
    let obj = match value {
        None | Some(Value::Null) => return Err(missing(what)),
        Some(Value::Object(o)) => o,
        Some(_) => return Err(wrong_type(what, "an object with `type` and `id`")),
    };
    let ty = required_str(obj, what, "type")?;
    let id = required_str(obj, what, "id")?;
    let uid = EntityUid::from_type_name_and_id(type_name(ty, what)?, EntityId::new(id));
    Ok((uid, properties(obj, what)?))
}

fn type_name(ty: &str, what: &str) -> Result<EntityTypeName, EngineError> {
    EntityTypeName::from_str(ty).map_err(|_| {
        EngineError::new(
            ErrorCode::InvalidRequest,
            format!(
                "`{what}.type` `{}` is not a Cedar type name; use names such as `User` or `Ns::User`",
                truncate(ty, 64)
            ),
        )
    })
}

fn action_type() -> Option<&'static EntityTypeName> {
    static ACTION: OnceLock<Option<EntityTypeName>> = OnceLock::new();
    ACTION
        .get_or_init(|| EntityTypeName::from_str("Action").ok())
        .as_ref()
}

fn action_uid(value: Option<&Value>) -> Result<EntityUid, EngineError> {
    let obj = match value {
        None | Some(Value::Null) => return Err(missing("action")),
        Some(Value::Object(o)) => o,
        Some(_) => return Err(wrong_type("action", "an object with `name`")),
    };
    let name = required_str(obj, "action", "name")?;
    if name.contains("::\"") {
        return EntityUid::from_str(name).map_err(|_| {
            EngineError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "`action.name` `{}` looks like a Cedar action uid but does not parse; use `view` or `Ns::Action::\"view\"`",
                    truncate(name, 64)
                ),
            )
        });
    }
    let Some(ty) = action_type() else {
        return Err(EngineError::new(
            ErrorCode::InvalidRequest,
            "internal: action type",
        ));
    };
    Ok(EntityUid::from_type_name_and_id(
        ty.clone(),
        EntityId::new(name),
    ))
}

/// What was decided and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Allow or deny.
    pub allow: bool,
    /// Determining policy ids: satisfied forbids on deny, satisfied permits on allow; sorted.
    pub policies: Vec<String>,
    /// Evaluation errors, `(policy id, message)`; such policies count as not satisfied.
    pub errors: Vec<(String, String)>,
    /// `(language, text)` from the first determining forbid's `@reason_user*` annotations.
    pub reason_user: Vec<(String, String)>,
    /// `@obligation` values of the determining permits, sorted and de-duplicated.
    pub obligations: Vec<String>,
    /// The snapshot version the decision was computed from.
    pub version: u64,
    /// Why the request's token was refused (`token_expired: …`, `revoked: …`); the decision is then
    /// a deny and no policy was evaluated.
    pub token_refused: Option<String>,
}

impl Decision {
    /// The deny for a request whose token did not validate, at `version`.
    pub fn token_refused(version: u64, why: String) -> Self {
        Self {
            allow: false,
            policies: Vec::new(),
            errors: Vec::new(),
            reason_user: Vec::new(),
            obligations: Vec::new(),
            version,
            token_refused: Some(why),
        }
    }
}

impl Snapshot {
    /// Decides one request. Reads only this snapshot: no I/O, no locks, no state rebuilt. Cost grows
    /// with the number of candidate policies and the request's ancestors, not with the store.
    pub fn decide(&self, input: &DecisionInput) -> Result<Decision, EngineError> {
        let principal = self.stores.entities.get(&input.principal);
        let resource = self.stores.entities.get(&input.resource);
        let (action_entity, action_ancestors) = self.action(&input.action);

        let empty: &[EntityUid] = &[];
        let principal_scope = (
            &input.principal,
            principal.map(|p| &p.ancestors[..]).unwrap_or(empty),
        );
        let resource_scope = (
            &input.resource,
            resource.map(|r| &r.ancestors[..]).unwrap_or(empty),
        );
        let action_scope = (&input.action, &action_ancestors[..]);
        let buckets =
            self.stores
                .policies
                .index()
                .candidates(principal_scope, action_scope, resource_scope);
        if buckets.is_empty() {
            return Ok(self.no_match());
        }

        let entities = self.slice(input, principal, resource, action_entity)?;
        let context = match &input.context {
            None => Context::empty(),
            Some(m) => context(m)?,
        };
        let request = Request::new(
            input.principal.clone(),
            input.action.clone(),
            input.resource.clone(),
            context,
            None,
        )
        .map_err(|e| EngineError::new(ErrorCode::InvalidRequest, e.to_string()))?;

        // One evaluator for all candidates, over conditions built once at apply time: what Cedar's
        // `Authorizer` does per policy, without its per-call condition rebuild and set walk.
        let evaluator = Evaluator::new(
            AsRef::<CoreRequest>::as_ref(&request).clone(),
            entities.as_ref(),
            Extensions::all_available(),
        );
        let mut permits: Vec<&Arc<StoredPolicy>> = Vec::new();
        let mut forbids: Vec<&Arc<StoredPolicy>> = Vec::new();
        let mut errors: Vec<(String, String)> = Vec::new();
        for bucket in &buckets {
            for p in &bucket.policies {
                // The scope is Cedar's first conjunct; when it fails the rest is not evaluated.
                if !p
                    .scope
                    .matches(principal_scope, action_scope, resource_scope)
                {
                    continue;
                }
                let core: &CorePolicy = p.policy.as_ref();
                let satisfied = match core.non_scope_constraints() {
                    None => Ok(true),
                    Some(body) => match evaluator.interpret(body, core.env()) {
                        Ok(v) => match v.value_kind() {
                            ValueKind::Lit(Literal::Bool(b)) => Ok(*b),
                            other => Err(format!(
                                "type error: the `when`/`unless` conditions must be a boolean, not {other}"
                            )),
                        },
                        Err(e) => Err(e.to_string()),
                    },
                };
                match satisfied {
                    Ok(true) => match p.effect {
                        Effect::Permit => permits.push(p),
                        Effect::Forbid => forbids.push(p),
                    },
                    Ok(false) => {}
                    Err(e) => errors.push((p.id.clone(), e)),
                }
            }
        }
        errors.sort();
        errors.dedup();
        let (allow, determining) = if !forbids.is_empty() {
            (false, forbids)
        } else if !permits.is_empty() {
            (true, permits)
        } else {
            (false, Vec::new())
        };
        let mut determining = determining;
        determining.sort_by(|a, b| a.id.cmp(&b.id));
        determining.dedup_by(|a, b| a.id == b.id);
        let reason_user = if allow {
            Vec::new()
        } else {
            determining
                .iter()
                .find(|p| !p.reason_user.is_empty())
                .map(|p| p.reason_user.clone())
                .unwrap_or_default()
        };
        let mut obligations: Vec<String> = if allow {
            determining
                .iter()
                .flat_map(|p| p.obligations.iter().cloned())
                .collect()
        } else {
            Vec::new()
        };
        obligations.sort();
        obligations.dedup();
        Ok(Decision {
            allow,
            policies: determining.iter().map(|p| p.id.clone()).collect(),
            errors,
            reason_user,
            obligations,
            version: self.version,
            token_refused: None,
        })
    }

    fn no_match(&self) -> Decision {
        Decision {
            allow: false,
            policies: Vec::new(),
            errors: Vec::new(),
            reason_user: Vec::new(),
            obligations: Vec::new(),
            version: self.version,
            token_refused: None,
        }
    }

    /// The action's entity (closure recorded) and ancestors: from the schema when one is set, else
    /// from stored entities.
    fn action(&self, uid: &EntityUid) -> (Option<Arc<CoreEntity>>, Arc<[EntityUid]>) {
        if let Some(schema) = self.stores.policies.schema() {
            if let Some((e, anc)) = schema.actions.get(uid) {
                return (Some(e.clone()), anc.clone());
            }
        }
        match self.stores.entities.get(uid) {
            Some(e) => (Some(e.closed()), e.ancestors.clone()),
            None => (None, Arc::from(Vec::new())),
        }
    }

    /// The per-request entity slice: principal, resource and action with their ancestor closure
    /// already recorded (so Cedar skips computing it), request properties merged over stored
    /// attributes, and those ancestors that carry attributes or tags (an ancestor without them
    /// adds nothing a policy could read).
    fn slice(
        &self,
        input: &DecisionInput,
        principal: Option<&Arc<StoredEntity>>,
        resource: Option<&Arc<StoredEntity>>,
        action: Option<Arc<CoreEntity>>,
    ) -> Result<Entities, EngineError> {
        let mut out: Vec<Arc<CoreEntity>> = Vec::with_capacity(4);
        let add = |e: Arc<CoreEntity>, out: &mut Vec<Arc<CoreEntity>>| {
            if !out.iter().any(|x| x.uid() == e.uid()) {
                out.push(e);
            }
        };
        for (uid, stored, props, what) in [
            (
                &input.principal,
                principal,
                input.principal_properties.as_ref(),
                "subject",
            ),
            (
                &input.resource,
                resource,
                input.resource_properties.as_ref(),
                "resource",
            ),
        ] {
            if let Some(e) = merged(uid, stored, props, what)? {
                add(e, &mut out);
            }
        }
        if let Some(e) = action {
            add(e, &mut out);
        }
        for stored in [principal, resource].into_iter().flatten() {
            for a in stored.ancestors.iter() {
                if let Some(anc) = self.stores.entities.get(a) {
                    let raw: &CoreEntity = anc.entity.as_ref();
                    if raw.attrs_len() > 0 || raw.tags_len() > 0 {
                        add(anc.closed(), &mut out);
                    }
                }
            }
        }
        // Shared, not cloned: Cedar keeps entities behind `Arc` and takes ours as they are.
        CoreEntities::new()
            .add_entities(
                out,
                None::<&NoEntitiesSchema>,
                TCComputation::AssumeAlreadyComputed,
                Extensions::all_available(),
            )
            .map(Entities::from)
            .map_err(|e| {
                EngineError::new(ErrorCode::InvalidRequest, format!("request entities: {e}"))
            })
    }
}

/// The stored entity (closure recorded) with request properties merged over its attributes, or a
/// fresh entity made of the properties alone when nothing is stored.
fn merged(
    uid: &EntityUid,
    stored: Option<&Arc<StoredEntity>>,
    props: Option<&Map<String, Value>>,
    what: &str,
) -> Result<Option<Arc<CoreEntity>>, EngineError> {
    let Some(props) = props else {
        return Ok(stored.map(|s| s.closed()));
    };
    let mut json = match stored {
        Some(s) => s.json.clone(),
        None => serde_json::json!({
            "uid": {"type": uid.type_name().to_string(), "id": uid.id().unescaped()},
            "attrs": {},
            "parents": [],
        }),
    };
    if let Some(Value::Object(attrs)) = json.get_mut("attrs") {
        for (k, v) in props {
            attrs.insert(k.clone(), v.clone());
        }
    }
    let entity = Entity::from_json_value(json, None).map_err(|e| {
        EngineError::new(
            ErrorCode::InvalidRequest,
            format!("`{what}.properties`: {e}; values use Cedar's entity-JSON attribute format"),
        )
    })?;
    let ancestors: &[EntityUid] = stored.map(|s| &s.ancestors[..]).unwrap_or(&[]);
    Ok(Some(Arc::new(close(&entity, ancestors))))
}

/// The Cedar context. Plain JSON (strings, booleans, integers, arrays, objects) is converted directly;
/// anything needing Cedar's JSON escapes (`__entity`, `__extn`) goes through Cedar's own parser.
fn context(map: &Map<String, Value>) -> Result<Context, EngineError> {
    let fast: Option<Vec<(String, RestrictedExpression)>> = map
        .iter()
        .map(|(k, v)| restricted(v).map(|e| (k.clone(), e)))
        .collect();
    let result = match fast {
        Some(pairs) => Context::from_pairs(pairs).map_err(|e| e.to_string()),
        None => {
            Context::from_json_value(Value::Object(map.clone()), None).map_err(|e| e.to_string())
        }
    };
    result.map_err(|e| EngineError::new(ErrorCode::InvalidRequest, format!("`context`: {e}")))
}
