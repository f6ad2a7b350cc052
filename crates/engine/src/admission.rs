//! Measures a write must pass before it is proposed, on top of what apply checks: they bound the
//! recursion and the work the node's parsers and validator would spend on the write's texts.
//!
//! They are not part of apply (which re-runs on every replica and on replay of old logs, and must
//! keep accepting what an earlier release accepted), so they can be tightened from one release to
//! the next: a text already in the log is never measured again.

use std::collections::HashMap;

use serde_json::Value;

use crate::command::Command;
use crate::command::Write;
use crate::error::EngineError;
use crate::error::ErrorCode;
use crate::limits::Syntax;
use crate::limits::Token;
use crate::limits::Tokens;
use crate::limits::MAX_HIERARCHY_DEPTH;

/// Refuses `write` if one of its texts exceeds an admission limit: recursion depth (policies and
/// schemas), `like` pattern length (policies) or hierarchy depth (schemas). Linear in the texts'
/// length; nothing is handed to Cedar.
pub fn admit(write: &Write) -> Result<(), EngineError> {
    match &write.command {
        Command::PutPolicy { id, cedar } => admit_policy(cedar, &format!("policy `{id}`")),
        Command::ReplacePoliciesText { cedar } => admit_policy(cedar, "the policy set"),
        Command::ReplacePoliciesMap { policies } => policies
            .iter()
            .try_for_each(|(id, cedar)| admit_policy(cedar, &format!("policy `{id}`"))),
        Command::PutSchema { text, json } => admit_schema(text, *json),
        _ => Ok(()),
    }
}

fn admit_policy(text: &str, what: &str) -> Result<(), EngineError> {
    crate::limits::check_recursion(text, Syntax::Policy, what)?;
    crate::limits::check_like_patterns(text, what)
}

fn admit_schema(text: &str, json: bool) -> Result<(), EngineError> {
    if text.len() > crate::schema::MAX_SCHEMA_TEXT {
        // Refused by the check that follows, before any parsing.
        return Ok(());
    }
    if json {
        crate::limits::check_nesting(text, "the schema")?;
        // A text that does not parse is refused by the check that follows, with its diagnostic.
        match serde_json::from_str::<Value>(text) {
            Ok(fragment) => check_json_hierarchies(&fragment),
            Err(_) => Ok(()),
        }
    } else {
        crate::limits::check_recursion(text, Syntax::Schema, "the schema")?;
        check_action_depth(&cedar_action_hierarchy(text))
    }
}

/// The action hierarchy declared in a Cedar-format schema, read from its tokens (Cedar's own parse
/// of a large schema costs far more than this): every `action` statement's names and the parents
/// after its `in`. Names are keyed by their last path segment,
/// which can only merge names from different namespaces, so it may over-count, never under-count.
fn cedar_action_hierarchy(text: &str) -> Graph {
    let mut actions = Graph::new();
    let mut statement_start = true;
    let mut reading: Option<Declaration> = None;
    let mut qualified = false;
    for (_, token) in Tokens::new(text.as_bytes()) {
        let name = match &token {
            Token::Word(w) | Token::Str(w) => Some(String::from_utf8_lossy(w).into_owned()),
            Token::Byte(_) => None,
        };
        if let Some(decl) = reading.as_mut() {
            match (&token, name) {
                (Token::Word(b"in"), _) if !decl.in_parents => decl.in_parents = true,
                (Token::Byte(b','), _) => {}
                (Token::Byte(b'['), _) if decl.in_parents => {}
                (Token::Byte(b':'), _) => qualified = true,
                (Token::Word(b"appliesTo" | b"attributes" | b"enum" | b"tags"), _) => {}
                (_, Some(name)) if decl.in_parents || !decl.after_names => {
                    let list = if decl.in_parents {
                        &mut decl.parents
                    } else {
                        &mut decl.names
                    };
                    match list.last_mut() {
                        // `A::"x"`: the path's last segment names it.
                        Some(last) if qualified => *last = name,
                        _ => list.push(name),
                    }
                    qualified = false;
                }
                _ => {
                    let done = reading.take();
                    if let Some(done) = done {
                        for n in done.names {
                            actions
                                .entry(n)
                                .or_default()
                                .extend(done.parents.iter().cloned());
                        }
                    }
                }
            }
            if let Some(decl) = reading.as_mut() {
                decl.after_names |= matches!(
                    token,
                    Token::Word(b"appliesTo" | b"attributes" | b"enum" | b"tags")
                );
                if decl.after_names {
                    decl.in_parents = false;
                }
            }
        } else if statement_start && token == Token::Word(b"action") {
            reading = Some(Declaration::default());
        }
        statement_start = matches!(token, Token::Byte(b';' | b'{' | b'}' | b')'));
    }
    actions
}

/// Names to their parents' names.
type Graph = HashMap<String, Vec<String>>;

/// An `action` statement being read.
#[derive(Default)]
struct Declaration {
    names: Vec<String>,
    parents: Vec<String>,
    /// Past `in`: names read are parents.
    in_parents: bool,
    /// Past the names and parents (`appliesTo`, `=`…): nothing more to read.
    after_names: bool,
}

/// Checks the action hierarchy of a JSON-format schema (`{"<namespace>": {"actions": {…}}}`).
/// Entity-type hierarchies are not measured: they may be recursive (`entity Group in [Group]`)
/// and are as small as the number of types.
fn check_json_hierarchies(fragment: &Value) -> Result<(), EngineError> {
    let mut actions: HashMap<String, Vec<String>> = HashMap::new();
    let namespaces = fragment.as_object().into_iter().flatten();
    for (namespace, body) in namespaces {
        let qualify = |name: &str| {
            if name.contains("::") || namespace.is_empty() {
                name.to_string()
            } else {
                format!("{namespace}::{name}")
            }
        };
        let action_type = qualify("Action");
        for (name, decl) in members(body, "actions") {
            let parents = list(decl, "memberOf")
                .map(|p| {
                    let ty = p.get("type").and_then(Value::as_str).map(qualify);
                    let id = p.get("id").and_then(Value::as_str).unwrap_or_default();
                    format!("{}::{id:?}", ty.as_deref().unwrap_or(&action_type))
                })
                .collect();
            actions.insert(format!("{action_type}::{name:?}"), parents);
        }
    }
    check_action_depth(&actions)
}

fn check_action_depth(actions: &Graph) -> Result<(), EngineError> {
    match deeper_than(actions, MAX_HIERARCHY_DEPTH) {
        None => Ok(()),
        Some(action) => Err(EngineError::new(
            ErrorCode::HierarchyTooDeep,
            format!(
                "the schema's action hierarchy is more than {MAX_HIERARCHY_DEPTH} levels deep \
                 (`max_hierarchy_depth`), e.g. above `{}`, or has a cycle; make it flatter",
                crate::ids::truncate(action, 128)
            ),
        )),
    }
}

fn members<'a>(body: &'a Value, key: &str) -> impl Iterator<Item = (&'a String, &'a Value)> {
    body.get(key)
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
}

fn list<'a>(decl: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    decl.get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// A node of `parents_of` with more than `limit` levels of ancestors above it, if there is one (a
/// cycle counts as unbounded). Iterative, `limit + 1` rounds over the edges at most: no recursion
/// on the input's depth, and linear in its size for a fixed limit.
fn deeper_than(parents_of: &HashMap<String, Vec<String>>, limit: usize) -> Option<&str> {
    let mut depth: HashMap<&str, usize> = parents_of.keys().map(|k| (k.as_str(), 0)).collect();
    for _ in 0..=limit {
        let mut changed = false;
        for (node, parents) in parents_of {
            let above = parents
                .iter()
                .filter_map(|p| depth.get(p.as_str()).map(|d| d + 1))
                .max()
                .unwrap_or(0);
            if let Some(d) = depth.get_mut(node.as_str()) {
                if above > *d {
                    *d = above;
                    changed = true;
                }
                if *d > limit {
                    return Some(node);
                }
            }
        }
        if !changed {
            return None;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(text: &str) -> Result<(), EngineError> {
        admit_schema(text, false)
    }

    fn action_chain(n: usize) -> String {
        let mut s = String::from(
            "entity User;\naction a0 appliesTo { principal: User, resource: User };\n",
        );
        for i in 1..n {
            s.push_str(&format!("action a{i} in [a{}];\n", i - 1));
        }
        s
    }

    #[test]
    fn refuses_deep_action_hierarchies_and_cycles() {
        assert!(schema(&action_chain(MAX_HIERARCHY_DEPTH + 1)).is_ok());
        let e = schema(&action_chain(MAX_HIERARCHY_DEPTH + 2)).unwrap_err();
        assert_eq!(e.code.as_str(), "hierarchy_too_deep");
        assert!(e.detail.contains("max_hierarchy_depth"), "{}", e.detail);
        assert!(schema(&action_chain(2000)).is_err());
        // Wide is fine: many actions in one group.
        let wide: String = (0..2000)
            .map(|i| format!("action w{i} in [g];\n"))
            .collect();
        assert!(schema(&format!("action g;\n{wide}")).is_ok());
        let cycle = "action a in [b];\naction b in [a];\n";
        assert!(schema(cycle).is_err());
    }

    #[test]
    fn measures_json_action_hierarchies_and_leaves_entity_types_alone() {
        let mut actions = serde_json::Map::new();
        actions.insert("a0".into(), serde_json::json!({}));
        for i in 1..40 {
            actions.insert(
                format!("a{i}"),
                serde_json::json!({"memberOf": [{"id": format!("a{}", i - 1)}]}),
            );
        }
        let json = serde_json::json!({"": {"entityTypes": {}, "actions": actions}});
        let e = admit_schema(&json.to_string(), true).unwrap_err();
        assert_eq!(e.code.as_str(), "hierarchy_too_deep");
        // Recursive entity types are legal Cedar.
        assert!(schema("entity Group in [Group];\nentity User in [Group];\naction view appliesTo { principal: User, resource: Group };").is_ok());
    }

    #[test]
    fn measures_policies_in_every_policy_command() {
        let deep = format!(
            "permit(principal, action, resource) when {{ {}true }};",
            "!".repeat(100)
        );
        let write = |command| Write {
            command,
            if_match: None,
            idempotency_key: None,
            stamped_ms: 0,
        };
        for command in [
            Command::PutPolicy {
                id: "p".into(),
                cedar: deep.clone(),
            },
            Command::ReplacePoliciesText {
                cedar: deep.clone(),
            },
            Command::ReplacePoliciesMap {
                policies: vec![("p".into(), deep.clone())],
            },
        ] {
            assert_eq!(
                admit(&write(command)).unwrap_err().code.as_str(),
                "nesting_too_deep"
            );
        }
        let ok = Command::PutPolicy {
            id: "p".into(),
            cedar: "permit(principal, action, resource);".into(),
        };
        assert!(admit(&write(ok)).is_ok());
    }
}
