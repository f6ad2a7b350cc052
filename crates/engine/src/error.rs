//! The one error type of the engine: a stable machine-readable code, a human detail that says what to
//! fix, and, for Cedar syntax errors, where in the source the problem is.

use serde::Deserialize;
use serde::Serialize;

/// Stable error codes. The server maps each to an HTTP status; clients match on the string form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// A policy does not parse.
    CedarSyntax,
    /// A template, a text with the wrong number of policies, or a repeated id.
    UnsupportedPolicy,
    /// The schema does not parse.
    SchemaSyntax,
    /// A policy fails validation against the schema that is set.
    SchemaValidation,
    /// A new schema would invalidate stored policies or entities.
    SchemaConflict,
    /// An entity is malformed or does not conform to the schema.
    EntityInvalid,
    /// A policy id or entity uid does not meet the id syntax.
    InvalidId,
    /// The named resource does not exist.
    NotFound,
    /// `If-Match` did not match the resource's current version.
    PreconditionFailed,
    /// A request field is missing or empty.
    MissingField,
    /// A request field has the wrong shape.
    InvalidRequest,
    /// A key rotation would drop a key that may still validate live tokens.
    RotationTooFast,
    /// An entity would have more ancestors than the per-entity limit.
    TooManyAncestors,
    /// A write would compute more ancestor-closure entries than the per-write limit.
    ClosureTooLarge,
    /// An `Idempotency-Key` was used before for a different write. Last: variants are encoded by
    /// position in answers between nodes, so new ones go at the end.
    IdempotencyKeyReused,
    /// Subject and resource are the same entity and their `properties` disagree on a value.
    ConflictingProperties,
    /// A policy or schema text nests deeper than `max_nesting` (brackets, `if`, unary chains, `<…>`).
    NestingTooDeep,
    /// A policy's `like` pattern is longer than `max_like_pattern`.
    LikePatternTooLong,
    /// A schema's action hierarchy is deeper than `max_hierarchy_depth`.
    HierarchyTooDeep,
    /// The write needs a format level the cluster has not reached (some member is still on an
    /// older release, or the operator has not finalised the upgrade).
    FeatureNotActive,
}

impl ErrorCode {
    /// The stable string form, as sent in problem+json `code`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CedarSyntax => "cedar_syntax",
            Self::UnsupportedPolicy => "unsupported_policy",
            Self::SchemaSyntax => "schema_syntax",
            Self::SchemaValidation => "schema_validation",
            Self::SchemaConflict => "schema_conflict",
            Self::EntityInvalid => "entity_invalid",
            Self::InvalidId => "invalid_id",
            Self::NotFound => "not_found",
            Self::PreconditionFailed => "precondition_failed",
            Self::MissingField => "missing_field",
            Self::InvalidRequest => "invalid_json",
            Self::RotationTooFast => "rotation_too_fast",
            Self::TooManyAncestors => "too_many_ancestors",
            Self::ClosureTooLarge => "closure_too_large",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::ConflictingProperties => "conflicting_properties",
            Self::NestingTooDeep => "nesting_too_deep",
            Self::LikePatternTooLong => "like_pattern_too_long",
            Self::HierarchyTooDeep => "hierarchy_too_deep",
            Self::FeatureNotActive => "feature_not_active",
        }
    }
}

/// Where in a Cedar source text an error is: 1-based line and column, 0-based byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    /// 1-based line.
    pub line: u32,
    /// 1-based column, in characters.
    pub column: u32,
    /// 0-based byte offset.
    pub offset: u32,
}

impl Location {
    /// Computes line and column of a byte offset in `src`.
    pub fn from_offset(src: &str, offset: usize) -> Self {
        let offset = offset.min(src.len());
        let before = src.get(..offset).unwrap_or(src);
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
        let column = before
            .get(line_start..)
            .map(|s| s.chars().count())
            .unwrap_or(0)
            + 1;
        Self {
            line: u32::try_from(line).unwrap_or(u32::MAX),
            column: u32::try_from(column).unwrap_or(u32::MAX),
            offset: u32::try_from(offset).unwrap_or(u32::MAX),
        }
    }
}

/// A user-caused error: what was wrong and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{}: {detail}", code.as_str())]
pub struct EngineError {
    /// The stable code.
    pub code: ErrorCode,
    /// What was wrong and how to fix it.
    pub detail: String,
    /// For Cedar syntax errors, where the first error is.
    pub location: Option<Location>,
}

impl EngineError {
    /// An error without a source location.
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
            location: None,
        }
    }

    /// Turns a Cedar diagnostic (parse error, schema error) into an error with the first labelled
    /// location in `src`, and every message joined into the detail.
    pub fn from_diagnostic(
        code: ErrorCode,
        prefix: &str,
        src: &str,
        diag: &dyn miette::Diagnostic,
    ) -> Self {
        let location = first_label_offset(diag).map(|o| Location::from_offset(src, o));
        let mut detail = format!("{prefix}: {diag}");
        if let Some(related) = diag.related() {
            for r in related.take(4) {
                detail.push_str("; ");
                detail.push_str(&r.to_string());
            }
        }
        if let Some(help) = diag.help() {
            detail.push_str(" (");
            detail.push_str(&help.to_string());
            detail.push(')');
        }
        if let Some(loc) = location {
            detail.push_str(&format!(" at line {}, column {}", loc.line, loc.column));
        }
        Self {
            code,
            detail,
            location,
        }
    }
}

fn first_label_offset(diag: &dyn miette::Diagnostic) -> Option<usize> {
    if let Some(mut labels) = diag.labels() {
        if let Some(l) = labels.next() {
            return Some(l.offset());
        }
    }
    if let Some(mut related) = diag.related() {
        if let Some(r) = related.next() {
            return first_label_offset(r);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_counts_lines_and_columns_from_one() {
        let src = "ab\ncdé\nf";
        assert_eq!(Location::from_offset(src, 0).line, 1);
        let l = Location::from_offset(src, 3);
        assert_eq!((l.line, l.column), (2, 1));
        let l = Location::from_offset(src, src.len());
        assert_eq!((l.line, l.column), (3, 2));
    }
}
