//! Limits on input shape that protect the node from its own parsers. Cedar's parser and evaluator,
//! and the conversion of JSON values into Cedar values, recurse once per nesting level: a policy of
//! 200 nested parentheses overflowed a 2 MiB thread stack (what tokio's workers have) in a release
//! build, which aborts the process. Texts are checked before any of them parse.
//!
//! The limit is frozen: apply re-parses texts from the log, so a later release must never refuse
//! in apply what an earlier one accepted.

use crate::error::EngineError;
use crate::error::ErrorCode;

/// Deepest nesting of `(`, `[` and `{` (together) in a policy, schema, entity or request text.
/// Real policies nest a handful of levels; 32 leaves room and stays far from the stack's end.
pub const MAX_NESTING: usize = 32;

/// Checks that `text` (Cedar or JSON) nests brackets at most [`MAX_NESTING`] deep, outside string
/// literals and `//` comments. Linear in the length; does not check balance (the parsers do).
pub fn check_nesting(text: &str, what: &str) -> Result<(), EngineError> {
    match nesting_exceeds(text.as_bytes()) {
        None => Ok(()),
        Some(offset) => Err(EngineError::new(
            ErrorCode::InvalidRequest,
            format!(
                "{what} nests brackets more than {MAX_NESTING} deep (at byte {offset}); \
                 flatten the expression or the value"
            ),
        )),
    }
}

/// The byte offset where nesting first exceeds the limit, if it does.
pub fn nesting_exceeds(bytes: &[u8]) -> Option<usize> {
    let mut depth = 0usize;
    for (i, b) in CodeBytes::new(bytes) {
        match b {
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Some(i);
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// How many `;`-terminated statements `text` (Cedar) holds outside strings and comments: an upper
/// bound of its number of policies, cheap enough to check before parsing.
pub fn count_statements(text: &str) -> usize {
    CodeBytes::new(text.as_bytes())
        .filter(|(_, b)| *b == b';')
        .count()
}

/// The bytes of Cedar or JSON text that are code: outside `"…"` string literals (with `\`
/// escapes) and `//` line comments, with their offsets. String delimiters are not yielded.
struct CodeBytes<'a> {
    bytes: &'a [u8],
    i: usize,
}

impl<'a> CodeBytes<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, i: 0 }
    }
}

impl Iterator for CodeBytes<'_> {
    type Item = (usize, u8);

    fn next(&mut self) -> Option<(usize, u8)> {
        let bytes = self.bytes;
        while self.i < bytes.len() {
            let (i, b) = (self.i, bytes[self.i]);
            self.i += 1;
            match b {
                b'"' => {
                    let mut escaped = false;
                    while self.i < bytes.len() {
                        let c = bytes[self.i];
                        self.i += 1;
                        if escaped {
                            escaped = false;
                        } else if c == b'\\' {
                            escaped = true;
                        } else if c == b'"' {
                            break;
                        }
                    }
                }
                b'/' if bytes.get(self.i) == Some(&b'/') => {
                    while self.i < bytes.len() && bytes[self.i] != b'\n' {
                        self.i += 1;
                    }
                }
                _ => return Some((i, b)),
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_brackets_outside_strings_and_comments() {
        let deep = |n: usize| format!("{}1{}", "(".repeat(n), ")".repeat(n));
        assert!(check_nesting(&deep(MAX_NESTING), "x").is_ok());
        let e = check_nesting(&deep(MAX_NESTING + 1), "policy `p`").unwrap_err();
        assert!(e.detail.contains("more than 32 deep"), "{}", e.detail);
        // Brackets in strings (with escaped quotes) and comments do not count.
        let quoted = format!("\"\\\"{}\"", "(".repeat(100));
        assert!(check_nesting(&quoted, "x").is_ok());
        let commented = format!(
            "// {}\npermit(principal, action, resource);",
            "[".repeat(100)
        );
        assert!(check_nesting(&commented, "x").is_ok());
        // Mixed kinds add up; siblings do not.
        assert!(check_nesting(&format!("{}{}", "[{(".repeat(11), ")}]".repeat(11)), "x").is_err());
        assert!(check_nesting(&"[1],".repeat(10_000), "x").is_ok());
    }

    #[test]
    fn counts_statements_outside_strings_and_comments() {
        assert_eq!(count_statements("permit(principal, action, resource);\n// a; b;\nforbid(principal, action, resource) when { context.s == \"x;\\\";\" };"), 2);
        assert_eq!(count_statements(""), 0);
    }
}
