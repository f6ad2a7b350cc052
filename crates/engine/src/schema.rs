//! The optional Cedar schema, parsed once with its validator and action entities.

use std::collections::HashMap;
use std::sync::Arc;

use cedar_policy::EntityUid;
use cedar_policy::Schema;
use cedar_policy::Validator;
use cedar_policy_core::ast::Entity as CoreEntity;

use crate::error::EngineError;
use crate::error::ErrorCode;

/// Largest schema text accepted, in bytes.
pub const MAX_SCHEMA_TEXT: usize = 4 * 1024 * 1024;

/// A stored schema.
pub struct StoredSchema {
    /// The text as written (Cedar schema syntax or JSON).
    pub text: String,
    /// Whether `text` is the JSON schema format.
    pub json: bool,
    /// The parsed schema.
    pub schema: Schema,
    /// A validator built once for policy writes.
    pub validator: Validator,
    /// Action entities declared by the schema, with their ancestor closure (action groups).
    pub actions: HashMap<EntityUid, (Arc<CoreEntity>, Arc<[EntityUid]>)>,
    /// The log index that last wrote the schema.
    pub version: u64,
}

impl std::fmt::Debug for StoredSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredSchema")
            .field("json", &self.json)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// Parses a schema in either format.
pub fn parse_schema(text: &str, json: bool, version: u64) -> Result<StoredSchema, EngineError> {
    crate::limits::check_nesting(text, "the schema")?;
    if text.len() > MAX_SCHEMA_TEXT {
        return Err(EngineError::new(
            ErrorCode::SchemaSyntax,
            format!(
                "the schema is {} bytes; the limit is {MAX_SCHEMA_TEXT} bytes",
                text.len()
            ),
        ));
    }
    let schema = if json {
        Schema::from_json_str(text).map_err(|e| {
            EngineError::from_diagnostic(ErrorCode::SchemaSyntax, "schema (JSON format)", text, &e)
        })?
    } else {
        Schema::from_cedarschema_str(text)
            .map(|(s, _warnings)| s)
            .map_err(|e| {
                EngineError::from_diagnostic(
                    ErrorCode::SchemaSyntax,
                    "schema (Cedar format; send JSON-format schemas with Content-Type: application/json)",
                    text,
                    &e,
                )
            })?
    };
    let action_entities = schema
        .action_entities()
        .map_err(|e| EngineError::new(ErrorCode::SchemaSyntax, format!("schema actions: {e}")))?;
    let mut actions = HashMap::new();
    for entity in action_entities.iter() {
        let uid = entity.uid();
        let mut ancestors: Vec<EntityUid> = action_entities
            .ancestors(&uid)
            .map(|it| it.cloned().collect())
            .unwrap_or_default();
        ancestors.sort();
        actions.insert(uid, (Arc::new(entity.as_ref().clone()), ancestors.into()));
    }
    Ok(StoredSchema {
        text: text.to_string(),
        json,
        validator: Validator::new(schema.clone()),
        schema,
        actions,
        version,
    })
}
