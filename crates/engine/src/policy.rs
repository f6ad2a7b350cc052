//! Policies as stored: parsed once at apply time, with the annotations decisions need pre-extracted.

use std::str::FromStr;
use std::sync::Arc;

use cedar_policy::ActionConstraint;
use cedar_policy::Effect;
use cedar_policy::EntityTypeName;
use cedar_policy::EntityUid;
use cedar_policy::Policy;
use cedar_policy::PolicyId;
use cedar_policy::PolicySet;
use cedar_policy::PrincipalConstraint;
use cedar_policy::ResourceConstraint;

use crate::error::EngineError;
use crate::error::ErrorCode;
use crate::ids::check_policy_id;

/// Largest Cedar text accepted for one policy, in bytes.
pub const MAX_POLICY_TEXT: usize = 64 * 1024;

/// One stored policy.
#[derive(Debug, Clone)]
pub struct StoredPolicy {
    /// The policy id (also the Cedar `PolicyId`).
    pub id: String,
    /// The Cedar text as written by the user (returned by GET).
    pub text: String,
    /// The parsed policy, carrying `id` as its Cedar id.
    pub policy: Policy,
    /// Permit or forbid.
    pub effect: Effect,
    /// `@reason_user("…")` (as `en`) and `@reason_user_<lang>("…")`, sorted by language.
    pub reason_user: Vec<(String, String)>,
    /// `@obligation("…")` values.
    pub obligations: Vec<String>,
    /// The log index that last wrote this policy.
    pub version: u64,
    /// The scope, extracted once so a decision checks it without Cedar's expression tree.
    pub scope: Scope,
}

/// A principal or resource scope constraint.
#[derive(Debug, Clone)]
pub enum EntityScope {
    /// No constraint.
    Any,
    /// `== E`.
    Eq(EntityUid),
    /// `in E`: `E` itself or one of its descendants.
    In(EntityUid),
    /// `is T`.
    Is(EntityTypeName),
    /// `is T in E`.
    IsIn(EntityTypeName, EntityUid),
}

impl EntityScope {
    /// Whether an entity with these (transitively closed) ancestors satisfies the constraint, with
    /// Cedar's meaning of `==`, `in` and `is`.
    pub fn matches(&self, uid: &EntityUid, ancestors: &[EntityUid]) -> bool {
        let within = |e: &EntityUid| uid == e || ancestors.contains(e);
        match self {
            Self::Any => true,
            Self::Eq(e) => uid == e,
            Self::In(e) => within(e),
            Self::Is(t) => uid.type_name() == t,
            Self::IsIn(t, e) => uid.type_name() == t && within(e),
        }
    }
}

/// The scope of one policy: its principal, action and resource constraints.
#[derive(Debug, Clone)]
pub struct Scope {
    /// The principal constraint.
    pub principal: EntityScope,
    /// The action constraint: `None` for any action, else the actions it is `==` or `in`.
    pub actions: Option<Vec<EntityUid>>,
    /// The resource constraint.
    pub resource: EntityScope,
}

impl Scope {
    fn of(policy: &Policy) -> Self {
        let principal = match policy.principal_constraint() {
            PrincipalConstraint::Any => EntityScope::Any,
            PrincipalConstraint::Eq(e) => EntityScope::Eq(e),
            PrincipalConstraint::In(e) => EntityScope::In(e),
            PrincipalConstraint::Is(t) => EntityScope::Is(t),
            PrincipalConstraint::IsIn(t, e) => EntityScope::IsIn(t, e),
        };
        let resource = match policy.resource_constraint() {
            ResourceConstraint::Any => EntityScope::Any,
            ResourceConstraint::Eq(e) => EntityScope::Eq(e),
            ResourceConstraint::In(e) => EntityScope::In(e),
            ResourceConstraint::Is(t) => EntityScope::Is(t),
            ResourceConstraint::IsIn(t, e) => EntityScope::IsIn(t, e),
        };
        let actions = match policy.action_constraint() {
            ActionConstraint::Any => None,
            ActionConstraint::Eq(a) => Some(vec![a]),
            ActionConstraint::In(list) => Some(list),
        };
        Self {
            principal,
            actions,
            resource,
        }
    }

    /// Whether a request with these entities (and their ancestors) is in scope.
    pub fn matches(
        &self,
        principal: (&EntityUid, &[EntityUid]),
        action: (&EntityUid, &[EntityUid]),
        resource: (&EntityUid, &[EntityUid]),
    ) -> bool {
        let action_ok = match &self.actions {
            None => true,
            Some(list) => list.iter().any(|a| a == action.0 || action.1.contains(a)),
        };
        action_ok
            && self.resource.matches(resource.0, resource.1)
            && self.principal.matches(principal.0, principal.1)
    }
}

impl StoredPolicy {
    fn from_policy(id: String, text: String, policy: Policy, version: u64) -> Self {
        let mut reason_user = Vec::new();
        let mut obligations = Vec::new();
        for (key, value) in policy.annotations() {
            if key == "reason_user" {
                reason_user.push(("en".to_string(), value.to_string()));
            } else if let Some(lang) = key.strip_prefix("reason_user_") {
                reason_user.push((lang.to_string(), value.to_string()));
            } else if key == "obligation" || key.starts_with("obligation_") {
                obligations.push(value.to_string());
            }
        }
        reason_user.sort();
        obligations.sort();
        Self {
            effect: policy.effect(),
            scope: Scope::of(&policy),
            id,
            text,
            policy,
            reason_user,
            obligations,
            version,
        }
    }
}

/// Parses the Cedar text of exactly one static policy under the given id. Writes go through
/// the parse cache, which calls this on a miss.
pub fn parse_one(id: &str, text: &str, version: u64) -> Result<Arc<StoredPolicy>, EngineError> {
    check_policy_id(id)?;
    check_size(id, text)?;
    crate::limits::check_nesting(text, "the policy text")?;
    parse_checked(id, text, version)
}

fn parse_checked(id: &str, text: &str, version: u64) -> Result<Arc<StoredPolicy>, EngineError> {
    // The common case, one static policy, parsed straight into a `Policy`: no set is built.
    // Anything else (a syntax error, several policies, a template) takes the set path below,
    // whose errors say precisely what was wrong.
    if let Ok(policy) = Policy::parse(Some(PolicyId::new(id)), text) {
        return Ok(Arc::new(StoredPolicy::from_policy(
            id.to_string(),
            text.to_string(),
            policy,
            version,
        )));
    }
    let set = PolicySet::from_str(text).map_err(|e| {
        EngineError::from_diagnostic(ErrorCode::CedarSyntax, &format!("policy `{id}`"), text, &e)
    })?;
    let mut policies = set.policies();
    let (Some(p), None) = (policies.next(), policies.next()) else {
        return Err(EngineError::new(
            ErrorCode::UnsupportedPolicy,
            format!(
                "policy `{id}`: the text must hold exactly one policy, it holds {}; use `PUT /v1/policies` to replace a whole set",
                set.policies().count()
            ),
        ));
    };
    if set.templates().next().is_some() {
        return Err(template_error(id));
    }
    let policy = p.new_id(PolicyId::new(id));
    Ok(Arc::new(StoredPolicy::from_policy(
        id.to_string(),
        text.to_string(),
        policy,
        version,
    )))
}

/// Parses a whole policy set; ids come from `@id("…")` annotations, else Cedar's `policy0`, `policy1`….
/// Each policy's stored text is its own slice of the source.
pub fn parse_set(text: &str, version: u64) -> Result<Vec<Arc<StoredPolicy>>, EngineError> {
    crate::limits::check_nesting(text, "the policy set text")?;
    let set = PolicySet::from_str(text).map_err(|e| {
        EngineError::from_diagnostic(ErrorCode::CedarSyntax, "policy set", text, &e)
    })?;
    if set.templates().next().is_some() {
        return Err(template_error("in the set"));
    }
    let mut out: Vec<Arc<StoredPolicy>> = Vec::new();
    for p in set.policies() {
        let id = p
            .annotation("id")
            .map(str::to_string)
            .unwrap_or_else(|| p.id().to_string());
        check_policy_id(&id)?;
        let own_text = p.to_cedar().unwrap_or_else(|| p.to_string());
        check_size(&id, &own_text)?;
        let policy = p.new_id(PolicyId::new(&id));
        out.push(Arc::new(StoredPolicy::from_policy(
            id, own_text, policy, version,
        )));
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    if let Some(w) = out.windows(2).find(|w| w[0].id == w[1].id) {
        return Err(EngineError::new(
            ErrorCode::UnsupportedPolicy,
            format!(
                "policy id `{}` appears twice in the set; give each policy a unique `@id(\"…\")`",
                w[0].id
            ),
        ));
    }
    Ok(out)
}

/// Parses the JSON map form `{"id": "cedar", …}` of a whole set, each policy with `parse` (e.g.
/// [`parse_one`], or through a parse cache).
pub fn parse_map(
    map: &[(String, String)],
    mut parse: impl FnMut(&str, &str) -> Result<Arc<StoredPolicy>, EngineError>,
) -> Result<Vec<Arc<StoredPolicy>>, EngineError> {
    let mut out = map
        .iter()
        .map(|(id, text)| parse(id, text))
        .collect::<Result<Vec<_>, _>>()?;
    out.sort_by(|a, b| a.id.cmp(&b.id));
    if let Some(w) = out.windows(2).find(|w| w[0].id == w[1].id) {
        return Err(EngineError::new(
            ErrorCode::UnsupportedPolicy,
            format!("policy id `{}` appears twice", w[0].id),
        ));
    }
    Ok(out)
}

fn check_size(id: &str, text: &str) -> Result<(), EngineError> {
    if text.len() > MAX_POLICY_TEXT {
        return Err(EngineError::new(
            ErrorCode::UnsupportedPolicy,
            format!(
                "policy `{id}` is {} bytes; the limit is {MAX_POLICY_TEXT} bytes per policy: split it",
                text.len()
            ),
        ));
    }
    Ok(())
}

fn template_error(id: &str) -> EngineError {
    EngineError::new(
        ErrorCode::UnsupportedPolicy,
        format!(
            "policy {id} is a template (it uses `?principal` or `?resource`); Verdict stores static policies only"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_are_extracted() {
        let p = parse_one(
            "deny-1",
            r#"@reason_user("No") @reason_user_nl("Nee") forbid(principal, action, resource);"#,
            7,
        )
        .unwrap();
        assert_eq!(p.effect, Effect::Forbid);
        assert_eq!(
            p.reason_user,
            vec![("en".into(), "No".into()), ("nl".into(), "Nee".into())]
        );
        assert_eq!(p.version, 7);
        assert_eq!(p.policy.id().to_string(), "deny-1");
    }

    #[test]
    fn syntax_errors_carry_a_location() {
        let e = parse_one(
            "p",
            "permit(principal, action, resource)\nwhen { principal.x == };",
            1,
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::CedarSyntax);
        let loc = e.location.unwrap();
        assert_eq!(loc.line, 2, "{e:?}");
    }

    #[test]
    fn one_policy_only_and_no_templates() {
        let two = "permit(principal, action, resource); forbid(principal, action, resource);";
        assert_eq!(
            parse_one("p", two, 1).unwrap_err().code,
            ErrorCode::UnsupportedPolicy
        );
        let tpl = "permit(principal == ?principal, action, resource);";
        assert!(parse_one("p", tpl, 1).is_err());
    }

    #[test]
    fn sets_take_ids_from_annotations_or_position() {
        let set = parse_set(
            "@id(\"a\") permit(principal, action, resource); forbid(principal, action, resource);",
            3,
        )
        .unwrap();
        let ids: Vec<_> = set.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, vec!["a", "policy1"]);
        let dup = "@id(\"a\") permit(principal, action, resource); @id(\"a\") forbid(principal, action, resource);";
        assert!(parse_set(dup, 1).is_err());
    }
}
