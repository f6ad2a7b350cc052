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

/// Parses the Cedar text of exactly one static policy under the given id.
///
/// A leader parses each policy write twice: when it checks the write before proposing it and when
/// it applies the committed entry. Parses made inside [`remembering_parses`] (the check) are
/// remembered (see [`ParseMemo`]), so the second is a lookup; the result is the same policy,
/// stamped with this `version`. Followers never check, so they only pay for a miss.
pub fn parse_one(id: &str, text: &str, version: u64) -> Result<Arc<StoredPolicy>, EngineError> {
    check_policy_id(id)?;
    check_size(id, text)?;
    crate::limits::check_nesting(text, "the policy text")?;
    if let Some(hit) = ParseMemo::take(id, text) {
        let mut policy = Arc::try_unwrap(hit).unwrap_or_else(|shared| (*shared).clone());
        policy.version = version;
        return Ok(Arc::new(policy));
    }
    let parsed = parse_one_uncached(id, text, version)?;
    if REMEMBER.with(std::cell::Cell::get) {
        ParseMemo::put(&parsed);
    }
    Ok(parsed)
}

thread_local! {
    static REMEMBER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with the policies it parses remembered for a later `parse_one` of the same text.
pub(crate) fn remembering_parses<T>(f: impl FnOnce() -> T) -> T {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            REMEMBER.with(|r| r.set(self.0));
        }
    }
    let _reset = Reset(REMEMBER.with(|r| r.replace(true)));
    f()
}

fn parse_one_uncached(
    id: &str,
    text: &str,
    version: u64,
) -> Result<Arc<StoredPolicy>, EngineError> {
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

/// Parses the JSON map form `{"id": "cedar", …}` of a whole set.
pub fn parse_map(
    map: &[(String, String)],
    version: u64,
) -> Result<Vec<Arc<StoredPolicy>>, EngineError> {
    let mut out = map
        .iter()
        .map(|(id, text)| parse_one(id, text, version))
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

/// Recent single-policy parses, keyed by text, bounded by count and bytes, evicted oldest first.
/// Parsing is a pure function of `(id, text)`, so a hit gives exactly what a parse would; only
/// the version is re-stamped. The lock is taken on write paths only, never by decisions.
#[derive(Default)]
struct ParseMemo {
    by_text: std::collections::HashMap<String, Arc<StoredPolicy>>,
    order: std::collections::VecDeque<String>,
    bytes: usize,
}

/// At most this many parses are remembered (a leader needs only those between check and apply).
const MEMO_ENTRIES: usize = 4096;
/// And at most this many bytes of policy text.
const MEMO_BYTES: usize = 8 * 1024 * 1024;

static MEMO: std::sync::LazyLock<std::sync::Mutex<ParseMemo>> =
    std::sync::LazyLock::new(Default::default);

impl ParseMemo {
    /// Removes and returns the parse of `text` if it was made under `id`: each check's parse
    /// serves one apply, which keeps the memo small.
    fn take(id: &str, text: &str) -> Option<Arc<StoredPolicy>> {
        let mut memo = MEMO.lock().ok()?;
        if memo.by_text.get(text)?.id != id {
            return None;
        }
        let hit = memo.by_text.remove(text)?;
        memo.bytes = memo.bytes.saturating_sub(text.len());
        Some(hit)
    }

    fn put(policy: &Arc<StoredPolicy>) {
        let Ok(mut memo) = MEMO.lock() else {
            return;
        };
        let size = policy.text.len();
        if size > MEMO_BYTES / 16 {
            return;
        }
        if let Some(slot) = memo.by_text.get_mut(&policy.text) {
            *slot = policy.clone();
            return;
        }
        // `order` may still name texts already taken; evicting one of those (or a newer parse of
        // the same text) costs at most a second parse.
        while memo.order.len() >= MEMO_ENTRIES || memo.bytes + size > MEMO_BYTES {
            let Some(old) = memo.order.pop_front() else {
                break;
            };
            if memo.by_text.remove(&old).is_some() {
                memo.bytes = memo.bytes.saturating_sub(old.len());
            }
        }
        memo.by_text.insert(policy.text.clone(), policy.clone());
        memo.order.push_back(policy.text.clone());
        memo.bytes += size;
    }
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

    #[test]
    fn a_remembered_parse_is_the_same_policy_with_its_own_version_and_id() {
        let text = r#"@obligation("log") permit(principal == User::"memo", action, resource);"#;
        let first = remembering_parses(|| parse_one("memo-a", text, 5)).unwrap();
        let again = parse_one("memo-a", text, 9).unwrap();
        // Taken by its first use: the next parse of the text parses again, to the same result.
        assert!(ParseMemo::take("memo-a", text).is_none());
        assert_eq!((first.version, again.version), (5, 9));
        assert_eq!(again.obligations, vec!["log".to_string()]);
        assert_eq!(again.policy.to_string(), first.policy.to_string());
        // The same text under another id is that id's policy, not the remembered one.
        let other = parse_one("memo-b", text, 10).unwrap();
        assert_eq!(other.id, "memo-b");
        assert_eq!(other.policy.id().to_string(), "memo-b");
        // A parse that fails is never remembered as a success.
        assert!(parse_one("memo-c", "permit(", 11).is_err());
        assert!(parse_one("memo-c", "permit(", 12).is_err());
    }
}
