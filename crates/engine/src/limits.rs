//! Limits on input shape that protect the node from its own parsers. Cedar's parser and evaluator,
//! and the conversion of JSON values into Cedar values, recurse once per nesting level: a policy of
//! 200 nested parentheses overflowed a 2 MiB thread stack (what tokio's workers have) in a release
//! build, which aborts the process. Texts are checked before any of them parse.
//!
//! [`check_nesting`] is frozen: apply re-parses texts from the log, so a later release must never
//! refuse in apply what an earlier one accepted. The measures added later ([`check_recursion`],
//! [`check_like_patterns`], [`MAX_HIERARCHY_DEPTH`]) run only when a write is admitted (see
//! [`crate::admission`]), never in apply.

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
    for (i, token) in Tokens::new(bytes) {
        let Token::Byte(b) = token else { continue };
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

/// [`nesting_exceeds`] for a JSON document, on the decision path: the same answer for any valid
/// JSON (which has no comments), skipping strings with a SIMD search. Request bodies are measured
/// on every decision; the Cedar tokenizer [`nesting_exceeds`] uses costs several times as much
/// per byte (issue #12's throughput A/B).
pub fn json_nesting_exceeds(bytes: &[u8]) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = 0usize;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'"' => {
                // Most of a body's bytes are in strings: jump to the closing quote (SIMD search),
                // stepping over escapes. An unterminated string holds no more brackets.
                i += 1;
                loop {
                    let at = i + memchr::memchr2(b'"', b'\\', bytes.get(i..)?)?;
                    if bytes.get(at) == Some(&b'"') {
                        i = at;
                        break;
                    }
                    i = at + 2;
                }
            }
            b'[' | b'{' | b'(' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Some(i);
                }
            }
            b']' | b'}' | b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Deepest recursion admitted in a new policy or schema text, named `max_nesting` in errors: brackets
/// plus every other construct Cedar's parser (and the conversion of its syntax tree) recurses on —
/// in policies each open `if` and each `!`/`-` of a unary chain, in schemas each `<` of a type such
/// as `Set<…>`. The same number as [`MAX_NESTING`], so every bracket-only text accepted before is
/// accepted still; each `if` level costs about the stack of a bracket level.
pub const MAX_RECURSION: usize = MAX_NESTING;

/// Longest `like` pattern admitted in a new policy, in characters (named `max_like_pattern`).
/// Matching costs up to pattern length × string length: 256 characters against the largest
/// string a decision body can carry (1 MiB by default) stays well under a second, where 8,000
/// against 400 KB took 2.5 s. Patterns in real policies are a few dozen characters.
pub const MAX_LIKE_PATTERN: usize = 256;

/// Deepest action hierarchy (`action a in [b]` chains) admitted in a new schema, in levels (named
/// `max_hierarchy_depth`). Cedar computes the
/// hierarchy's transitive closure when it builds a schema, superlinear in the depth: a 2,000-deep
/// action chain took 13 s. Real hierarchies are a handful of levels deep.
pub const MAX_HIERARCHY_DEPTH: usize = 32;

/// The grammar a text is measured against: what nests, besides brackets, differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    /// Cedar policy text.
    Policy,
    /// Cedar schema text.
    Schema,
}

/// Checks that `text` recurses at most [`MAX_RECURSION`] deep when parsed as `syntax`, counted
/// the way Cedar's parser recurses (see [`recursion_exceeds`]). Linear in the length.
pub fn check_recursion(text: &str, syntax: Syntax, what: &str) -> Result<(), EngineError> {
    match recursion_exceeds(text, syntax) {
        None => Ok(()),
        Some(offset) => Err(EngineError {
            code: ErrorCode::NestingTooDeep,
            detail: format!(
                "{what} nests more than {MAX_RECURSION} levels deep (`max_nesting`; brackets, \
                 `if` expressions, `!`/`-` chains and `<…>` types all count) at byte {offset}; \
                 flatten it, e.g. an `if` chain into `||` of conditions"
            ),
            location: Some(crate::error::Location::from_offset(text, offset)),
        }),
    }
}

/// The byte offset where the recursion depth of `text` first exceeds [`MAX_RECURSION`], if it does.
///
/// Depth is the open brackets, plus the open `if`s (policies), plus the length of the current run
/// of `!`/`-` (policies), plus the open `<` (schemas). An `if` stays open until its bracket level
/// closes or a `,` or `;` ends the element it is in: within one element an `if` can only start
/// an expression, so every later `if` there is inside it. That over-counts nothing a parser would
/// not recurse on, and never under-counts.
pub fn recursion_exceeds(text: &str, syntax: Syntax) -> Option<usize> {
    let policy = syntax == Syntax::Policy;
    // Open `if`s per bracket level; the outermost level is first and never popped.
    let mut ifs_per_level: Vec<usize> = vec![0];
    let (mut brackets, mut ifs, mut angles, mut unary) = (0usize, 0usize, 0usize, 0usize);
    for (offset, token) in Tokens::new(text.as_bytes()) {
        let mut in_unary_run = false;
        match token {
            Token::Byte(b'(' | b'[' | b'{') => {
                brackets += 1;
                ifs_per_level.push(0);
            }
            Token::Byte(b')' | b']' | b'}') => {
                brackets = brackets.saturating_sub(1);
                if ifs_per_level.len() > 1 {
                    ifs -= ifs_per_level.pop().unwrap_or(0);
                }
            }
            Token::Byte(b',' | b';') => {
                if let Some(level) = ifs_per_level.last_mut() {
                    ifs -= *level;
                    *level = 0;
                }
            }
            Token::Word(b"if") if policy => {
                ifs += 1;
                if let Some(level) = ifs_per_level.last_mut() {
                    *level += 1;
                }
            }
            Token::Byte(b'!' | b'-') if policy => {
                unary += 1;
                in_unary_run = true;
            }
            Token::Byte(b'<') if !policy => angles += 1,
            Token::Byte(b'>') if !policy => angles = angles.saturating_sub(1),
            _ => {}
        }
        if !in_unary_run {
            unary = 0;
        }
        if brackets + ifs + angles + unary > MAX_RECURSION {
            return Some(offset);
        }
    }
    None
}

/// Checks that every `like` pattern in the policy `text` is at most [`MAX_LIKE_PATTERN`]
/// characters long.
pub fn check_like_patterns(text: &str, what: &str) -> Result<(), EngineError> {
    let mut after_like = false;
    for (offset, token) in Tokens::new(text.as_bytes()) {
        match token {
            Token::Str(raw) if after_like && chars(raw) > MAX_LIKE_PATTERN => {
                return Err(EngineError {
                    code: ErrorCode::LikePatternTooLong,
                    detail: format!(
                        "{what} has a `like` pattern of {} characters; the limit is \
                         {MAX_LIKE_PATTERN} (`max_like_pattern`), as matching costs pattern \
                         length × string length on every decision: match a shorter pattern, \
                         or compare with `==`",
                        chars(raw)
                    ),
                    location: Some(crate::error::Location::from_offset(text, offset)),
                });
            }
            Token::Word(b"like") => after_like = true,
            _ => after_like = false,
        }
    }
    Ok(())
}

/// How many `;`-terminated statements `text` (Cedar) holds outside strings and comments: an upper
/// bound of its number of policies, cheap enough to check before parsing.
pub fn count_statements(text: &str) -> usize {
    Tokens::new(text.as_bytes())
        .filter(|(_, token)| *token == Token::Byte(b';'))
        .count()
}

/// One token of Cedar text, as far as the measures need: a word, a string literal (its bytes
/// between the quotes, escapes as written), or any other byte outside whitespace. Comments are
/// skipped.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Token<'a> {
    Word(&'a [u8]),
    Str(&'a [u8]),
    Byte(u8),
}

/// The number of characters of a string literal's bytes: escapes count as written, so never fewer
/// than the string holds.
fn chars(raw: &[u8]) -> usize {
    raw.iter().filter(|&&c| c & 0xC0 != 0x80).count()
}

/// The tokens of `bytes` with their byte offsets.
pub(crate) struct Tokens<'a> {
    bytes: &'a [u8],
    i: usize,
}

impl<'a> Tokens<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, i: 0 }
    }
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

impl<'a> Iterator for Tokens<'a> {
    type Item = (usize, Token<'a>);

    fn next(&mut self) -> Option<(usize, Token<'a>)> {
        let bytes = self.bytes;
        loop {
            let start = self.i;
            let b = *bytes.get(start)?;
            self.i += 1;
            match b {
                b'"' => {
                    let mut escaped = false;
                    while let Some(&c) = bytes.get(self.i) {
                        self.i += 1;
                        if escaped {
                            escaped = false;
                        } else if c == b'\\' {
                            escaped = true;
                        } else if c == b'"' {
                            let raw = bytes.get(start + 1..self.i - 1).unwrap_or_default();
                            return Some((start, Token::Str(raw)));
                        }
                    }
                    return Some((
                        start,
                        Token::Str(bytes.get(start + 1..).unwrap_or_default()),
                    ));
                }
                b'/' if bytes.get(self.i) == Some(&b'/') => {
                    while bytes.get(self.i).is_some_and(|&c| c != b'\n') {
                        self.i += 1;
                    }
                }
                b if b.is_ascii_whitespace() => {}
                b if is_word_byte(b) => {
                    while bytes.get(self.i).copied().is_some_and(is_word_byte) {
                        self.i += 1;
                    }
                    return Some((start, Token::Word(bytes.get(start..self.i)?)));
                }
                b => return Some((start, Token::Byte(b))),
            }
        }
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
    fn the_json_scan_agrees_with_the_general_one_on_json() {
        let deep = |n: usize| format!("{}{}", "[{".repeat(n / 2), "}]".repeat(n / 2));
        let cases = [
            deep(MAX_NESTING),
            deep(MAX_NESTING + 2),
            format!("{{\"a\":\"{}\"}}", "[".repeat(100)),
            format!("{{\"a\":\"\\\\\",\"b\":{}}}", deep(MAX_NESTING + 2)),
            format!("{{\"a\":\"\\\"{}\"}}", "{".repeat(100)),
            "[1,2,{\"x\":[3]}]".to_owned(),
            String::new(),
        ];
        for case in &cases {
            assert_eq!(
                json_nesting_exceeds(case.as_bytes()),
                nesting_exceeds(case.as_bytes()),
                "{case}"
            );
        }
        assert!(json_nesting_exceeds(deep(MAX_NESTING + 2).as_bytes()).is_some());
    }

    #[test]
    fn counts_statements_outside_strings_and_comments() {
        assert_eq!(count_statements("permit(principal, action, resource);\n// a; b;\nforbid(principal, action, resource) when { context.s == \"x;\\\";\" };"), 2);
        assert_eq!(count_statements(""), 0);
    }

    fn policy(condition: &str) -> String {
        format!("permit(principal, action, resource) when {{ {condition} }};")
    }

    #[test]
    fn counts_if_levels_unary_runs_and_brackets_together() {
        let chain = |n: usize| {
            let ifs: String = (0..n)
                .map(|i| format!("if context.x == {i} then false else "))
                .collect();
            policy(&format!("{ifs}true"))
        };
        // `when {` is one level, so a chain of MAX - 1 `if`s is the deepest admitted.
        assert_eq!(
            recursion_exceeds(&chain(MAX_RECURSION - 1), Syntax::Policy),
            None
        );
        assert!(recursion_exceeds(&chain(MAX_RECURSION), Syntax::Policy).is_some());
        let e = check_recursion(&chain(1300), Syntax::Policy, "policy `p`").unwrap_err();
        assert_eq!(e.code.as_str(), "nesting_too_deep");
        assert!(e.detail.contains("max_nesting"), "{}", e.detail);
        // `if`s in sibling elements (separated by `,`) or closed brackets do not add up.
        let siblings = format!("[{}1]", "if a then b else c, ".repeat(100));
        assert_eq!(recursion_exceeds(&policy(&siblings), Syntax::Policy), None);
        let closed = "(if a then b else c) && ".repeat(100);
        assert_eq!(
            recursion_exceeds(&policy(&format!("{closed}true")), Syntax::Policy),
            None
        );
        // `if` inside brackets adds to them; in strings and comments it is not a word.
        let mixed = format!("{}if a then b else c{}", "(".repeat(31), ")".repeat(31));
        assert!(recursion_exceeds(&policy(&mixed), Syntax::Policy).is_some());
        let quoted = policy(&format!("context.s == \"{}\"", "if ".repeat(100)));
        assert_eq!(recursion_exceeds(&quoted, Syntax::Policy), None);
        assert_eq!(
            recursion_exceeds(&policy("context.iffy && context.gif"), Syntax::Policy),
            None
        );
        // Unary runs count their length; `!=` and binary minus are runs of one.
        assert!(
            recursion_exceeds(&policy(&format!("{}true", "!".repeat(40))), Syntax::Policy)
                .is_some()
        );
        assert!(recursion_exceeds(
            &policy(&format!("{}1 == 1", "- ".repeat(40))),
            Syntax::Policy
        )
        .is_some());
        let flat =
            policy(&"context.a != 1 && context.b - 1 == -2 && ".repeat(200)).replace("&&  }", "}");
        assert_eq!(recursion_exceeds(&flat, Syntax::Policy), None);
    }

    #[test]
    fn counts_angle_brackets_in_schema_types_only() {
        let set = |n: usize| format!("type T = {}Long{};", "Set<".repeat(n), ">".repeat(n));
        assert_eq!(recursion_exceeds(&set(MAX_RECURSION), Syntax::Schema), None);
        assert!(recursion_exceeds(&set(MAX_RECURSION + 1), Syntax::Schema).is_some());
        assert!(check_recursion(&set(1500), Syntax::Schema, "the schema").is_err());
        // Siblings do not add up; `<` in a policy is a comparison.
        assert_eq!(
            recursion_exceeds(&"type A = Set<Long>;\n".repeat(500), Syntax::Schema),
            None
        );
        assert_eq!(
            recursion_exceeds(&policy(&"1 < 2 && ".repeat(100)), Syntax::Policy),
            None
        );
        // In a schema, `if` and `!` are not operators.
        assert_eq!(
            recursion_exceeds(&"entity if_then;\n".repeat(100), Syntax::Schema),
            None
        );
    }

    #[test]
    fn measures_like_patterns_in_characters() {
        let like = |n: usize, c: &str| policy(&format!("context.s like \"*{}*\"", c.repeat(n)));
        assert!(check_like_patterns(&like(MAX_LIKE_PATTERN - 2, "a"), "p").is_ok());
        let e = check_like_patterns(&like(MAX_LIKE_PATTERN - 1, "a"), "p").unwrap_err();
        assert_eq!(e.code.as_str(), "like_pattern_too_long");
        assert!(e.detail.contains("max_like_pattern"), "{}", e.detail);
        // Multi-byte characters count once; long strings that are not patterns are fine.
        assert!(check_like_patterns(&like(MAX_LIKE_PATTERN - 2, "é"), "p").is_ok());
        let eq = policy(&format!("context.s == \"{}\"", "a".repeat(10_000)));
        assert!(check_like_patterns(&eq, "p").is_ok());
    }
}
