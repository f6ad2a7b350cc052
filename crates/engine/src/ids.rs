//! Id syntax shared by policies and entities, checked before anything is proposed.

use crate::error::EngineError;
use crate::error::ErrorCode;

/// Longest policy id accepted.
pub const MAX_POLICY_ID_LEN: usize = 128;
/// Longest entity id accepted (ids are opaque strings in Cedar, but unbounded keys are a memory hazard).
pub const MAX_ENTITY_ID_LEN: usize = 1024;

/// Checks a policy id: 1–128 characters of `A-Z a-z 0-9 _ - . : /`, starting with a letter or digit.
pub fn check_policy_id(id: &str) -> Result<(), EngineError> {
    let ok_first = id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    let ok_rest = id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '/'));
    if ok_first && ok_rest && id.len() <= MAX_POLICY_ID_LEN {
        return Ok(());
    }
    Err(EngineError::new(
        ErrorCode::InvalidId,
        format!(
            "invalid policy id `{}`: use 1 to {MAX_POLICY_ID_LEN} characters from A-Z, a-z, 0-9, \
             `_`, `-`, `.`, `:` and `/`, starting with a letter or digit",
            truncate(id, 64)
        ),
    ))
}

/// Checks an entity id: non-empty, at most 1024 bytes, no control characters.
pub fn check_entity_id(id: &str) -> Result<(), EngineError> {
    if !id.is_empty() && id.len() <= MAX_ENTITY_ID_LEN && !id.chars().any(char::is_control) {
        return Ok(());
    }
    Err(EngineError::new(
        ErrorCode::InvalidId,
        format!(
            "invalid entity id `{}`: use 1 to {MAX_ENTITY_ID_LEN} bytes without control characters",
            truncate(id, 64)
        ),
    ))
}

/// Shortens user input quoted in an error message.
pub fn truncate(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max_chars).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_ids() {
        assert!(check_policy_id("login-sp-17").is_ok());
        assert!(check_policy_id("tenant/a:b.c_d").is_ok());
        for bad in ["", "-x", "a b", "a\"b", &"x".repeat(129)] {
            assert_eq!(check_policy_id(bad).unwrap_err().code, ErrorCode::InvalidId);
        }
    }

    #[test]
    fn entity_ids() {
        assert!(check_entity_id("alice@example.org").is_ok());
        assert!(check_entity_id("").is_err());
        assert!(check_entity_id("a\nb").is_err());
    }
}
