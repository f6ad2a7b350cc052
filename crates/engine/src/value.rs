//! Plain JSON → Cedar values, without Cedar's schema-directed JSON parser (which costs more than a
//! whole evaluation). Only unambiguous values are converted: strings, booleans, integers, arrays (sets)
//! and objects (records) without Cedar's `__entity` / `__extn` / `__expr` escapes. Anything else returns `None`
//! and the caller falls back to Cedar's parser, which also produces the right error message.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Mutex;
use std::sync::OnceLock;

use cedar_policy::EntityTypeName;
use cedar_policy::RestrictedExpression;
use serde_json::Value;

/// Converts a plain JSON value, or `None` if it needs Cedar's parser.
pub fn restricted(v: &Value) -> Option<RestrictedExpression> {
    match v {
        Value::Bool(b) => Some(RestrictedExpression::new_bool(*b)),
        Value::Number(n) => n.as_i64().map(RestrictedExpression::new_long),
        Value::String(s) => Some(RestrictedExpression::new_string(s.clone())),
        Value::Array(items) => items
            .iter()
            .map(restricted)
            .collect::<Option<Vec<_>>>()
            .map(RestrictedExpression::new_set),
        // Escapes, and `{"type", "id"}` (which Cedar may read as an entity reference), go to Cedar.
        // So does `__expr`, an escape Cedar no longer supports: Cedar refuses it, and converting it
        // here as a plain record would accept it whenever nothing else in the value needs Cedar.
        Value::Object(m)
            if m.contains_key("__entity")
                || m.contains_key("__extn")
                || m.contains_key("__expr")
                || (m.len() == 2 && m.contains_key("type") && m.contains_key("id")) =>
        {
            None
        }
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| restricted(v).map(|e| (k.clone(), e)))
            .collect::<Option<Vec<_>>>()
            .and_then(|pairs| RestrictedExpression::new_record(pairs).ok()),
        Value::Null => None,
    }
}

/// Most distinct type names remembered; beyond that names are parsed every time.
const TYPE_CACHE_CAP: usize = 4096;

/// Parses an entity type name, remembering the few distinct names a deployment uses: Cedar's parser
/// costs microseconds per call. Used on write paths only (the decision path never takes this lock).
pub fn type_name(s: &str) -> Option<EntityTypeName> {
    static CACHE: OnceLock<Mutex<HashMap<String, EntityTypeName>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Ok(map) = cache.lock() {
        if let Some(t) = map.get(s) {
            return Some(t.clone());
        }
    }
    let parsed = EntityTypeName::from_str(s).ok()?;
    if let Ok(mut map) = cache.lock() {
        if map.len() < TYPE_CACHE_CAP {
            map.insert(s.to_string(), parsed.clone());
        }
    }
    Some(parsed)
}
