//! Token revocation events, indexed as watermarks so that a check costs the same with none or a
//! million of them stored.
//!
//! An event says "every token issued before `issued_before` that matches this selector is
//! revoked". For one selector only the latest such time matters: a token issued before an earlier
//! time was also issued before the latest. So the index keeps one watermark per selector (the
//! largest `issued_before` seen), and checking a token is at most four ordered-map look-ups: its
//! id, its audit chain, its subject, and its subject with its scope. Keystone scanned every event
//! on every validation; its validation time grew with their number.
//!
//! Pruning: a watermark can only revoke tokens issued before it, and those have all expired once
//! `issued_before + longest token lifetime + clock skew` has passed. Pruning runs inside apply, so
//! it uses the log entry's stamped time, never a clock, and it is incremental: each call examines
//! a bounded number of watermarks from a cursor that is part of the state, so every node prunes the
//! same ones at the same version.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde::Deserialize;
use serde::Serialize;

use crate::error::EngineError;
use crate::error::ErrorCode;

/// Longest selector value accepted, in bytes.
pub const MAX_SELECTOR_LEN: usize = 512;

/// What an event revokes. Serialised externally tagged (the default), as bincode requires: the
/// log and snapshot files carry it. The HTTP API's `{"by": …}` shape is the server's own type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Selector {
    /// One token, by its id (`jti`).
    Token {
        /// The token id.
        jti: String,
    },
    /// Every token of one audit chain (a token and the tokens re-scoped from it).
    AuditChain {
        /// The chain id (`aud_chain`).
        chain: String,
    },
    /// Every token of one subject (`sub`), whatever its scope.
    Subject {
        /// The subject.
        sub: String,
    },
    /// Every token of one subject within one scope (project, tenant).
    SubjectScope {
        /// The subject.
        sub: String,
        /// The scope.
        scope: String,
    },
}

impl Selector {
    /// Checks the selector's values: non-empty (`missing_field`), at most [`MAX_SELECTOR_LEN`]
    /// bytes and no control characters (`invalid_json`). The message names the field and says how
    /// to fix it.
    pub fn validate(&self) -> Result<(), EngineError> {
        let fields: Vec<(&str, &str)> = match self {
            Self::Token { jti } => vec![("jti", jti)],
            Self::AuditChain { chain } => vec![("chain", chain)],
            Self::Subject { sub } => vec![("sub", sub)],
            Self::SubjectScope { sub, scope } => vec![("sub", sub), ("scope", scope)],
        };
        for (name, value) in fields {
            if value.is_empty() {
                return Err(EngineError::new(
                    ErrorCode::MissingField,
                    format!("`{name}` is empty; a revocation needs a value to match tokens by"),
                ));
            }
            if value.len() > MAX_SELECTOR_LEN {
                return Err(EngineError::new(
                    ErrorCode::InvalidRequest,
                    format!(
                        "`{name}` is {} bytes; at most {MAX_SELECTOR_LEN} are accepted",
                        value.len()
                    ),
                ));
            }
            if value.chars().any(char::is_control) {
                return Err(EngineError::new(
                    ErrorCode::InvalidRequest,
                    format!("`{name}` contains a control character; token claims never do"),
                ));
            }
        }
        Ok(())
    }

    fn key(&self) -> Vec<u8> {
        match self {
            Self::Token { jti } => key_of(TOKEN, jti, None),
            Self::AuditChain { chain } => key_of(CHAIN, chain, None),
            Self::Subject { sub } => key_of(SUBJECT, sub, None),
            Self::SubjectScope { sub, scope } => key_of(SUBJECT_SCOPE, sub, Some(scope)),
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Token { jti } => write!(f, "token `{jti}`"),
            Self::AuditChain { chain } => write!(f, "audit chain `{chain}`"),
            Self::Subject { sub } => write!(f, "subject `{sub}`"),
            Self::SubjectScope { sub, scope } => write!(f, "subject `{sub}` in scope `{scope}`"),
        }
    }
}

/// The claims a revocation check reads from a validated token.
#[derive(Debug, Clone, Copy)]
pub struct TokenFacts<'a> {
    /// Token id.
    pub jti: &'a str,
    /// Audit chain id.
    pub aud_chain: &'a str,
    /// Subject.
    pub sub: &'a str,
    /// Scope, if the token has one.
    pub scope: Option<&'a str>,
    /// Issued at, milliseconds since the Unix epoch.
    pub iat_ms: u64,
}

/// The kind byte that starts a key.
const TOKEN: u8 = b't';
const CHAIN: u8 = b'c';
const SUBJECT: u8 = b's';
const SUBJECT_SCOPE: u8 = b'p';
/// Between subject and scope; validated values hold no control characters, so keys are unique.
const SEPARATOR: u8 = 0x1f;

/// A selector as an index key: a kind byte, then the value (for subject + scope: the subject, a
/// separator, the scope).
type Key = Box<[u8]>;

fn key_of(kind: u8, value: &str, scope: Option<&str>) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + value.len() + scope.map_or(0, |s| s.len() + 1));
    k.push(kind);
    k.extend_from_slice(value.as_bytes());
    if let Some(scope) = scope {
        k.push(SEPARATOR);
        k.extend_from_slice(scope.as_bytes());
    }
    k
}

fn selector_of(key: &[u8]) -> Option<Selector> {
    let (kind, rest) = key.split_first()?;
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).ok();
    Some(match *kind {
        TOKEN => Selector::Token { jti: text(rest)? },
        CHAIN => Selector::AuditChain { chain: text(rest)? },
        SUBJECT => Selector::Subject { sub: text(rest)? },
        SUBJECT_SCOPE => {
            let at = rest.iter().position(|b| *b == SEPARATOR)?;
            Selector::SubjectScope {
                sub: text(&rest[..at])?,
                scope: text(&rest[at + 1..])?,
            }
        }
        _ => return None,
    })
}

/// Number of shards. At a million watermarks a shard holds about 250.
pub const SHARDS: u16 = 4096;

/// FNV-1a: stable across builds and versions, so every node (old or new binary) puts a key in the
/// same shard and prunes the same shards at the same version.
fn shard_of(key: &[u8]) -> u16 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % u64::from(SHARDS)) as u16
}

type Shard = HashMap<Key, u64, foldhash::fast::RandomState>;

/// The revocation watermarks of one state. Cheap to clone (shards are shared until changed).
#[derive(Clone, Default)]
pub struct Revocations {
    /// Shard number → selector key → the latest `issued_before` (ms) of any event with it. Empty
    /// until the first event, then [`SHARDS`] slots: a look-up is an index, not a tree walk. A
    /// change copies this table of pointers (32 KiB) once per batch, and the one shard it touches.
    shards: Arc<Vec<Option<Arc<Shard>>>>,
    /// Watermarks stored, across shards.
    len: usize,
    /// The shard the next incremental prune starts at.
    sweep_from: u16,
}

impl fmt::Debug for Revocations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Revocations")
            .field("watermarks", &self.len)
            .finish()
    }
}

/// Longest key a look-up builds: a kind byte, a subject, a separator and a scope.
const MAX_KEY_LEN: usize = 2 * MAX_SELECTOR_LEN + 2;

impl Revocations {
    /// Records an event: tokens matching `selector` issued before `issued_before_ms` are revoked.
    /// An earlier event with the same selector and a later time already covers this one.
    pub fn add(&mut self, selector: &Selector, issued_before_ms: u64) {
        let key = selector.key();
        let number = usize::from(shard_of(&key));
        let shards = Arc::make_mut(&mut self.shards);
        if shards.is_empty() {
            shards.resize(usize::from(SHARDS), None);
        }
        let Some(slot) = shards.get_mut(number) else {
            return;
        };
        let shard = Arc::make_mut(slot.get_or_insert_with(Default::default));
        match shard.get_mut(&key[..]) {
            Some(mark) => *mark = (*mark).max(issued_before_ms),
            None => {
                shard.insert(key.into_boxed_slice(), issued_before_ms);
                self.len += 1;
            }
        }
    }

    /// The watermark of the key `kind` + `value` (+ separator + `scope`), built on the stack.
    /// Values longer than a selector may be cannot be stored, so they have none.
    fn mark(&self, kind: u8, value: &str, scope: Option<&str>) -> Option<u64> {
        let mut buf = [0u8; MAX_KEY_LEN];
        let extra = scope.map_or(0, |s| s.len() + 1);
        if value.len() > MAX_SELECTOR_LEN || extra > MAX_SELECTOR_LEN + 1 {
            return None;
        }
        let n = 1 + value.len() + extra;
        buf[0] = kind;
        buf[1..1 + value.len()].copy_from_slice(value.as_bytes());
        if let Some(scope) = scope {
            buf[1 + value.len()] = SEPARATOR;
            buf[2 + value.len()..n].copy_from_slice(scope.as_bytes());
        }
        let key = &buf[..n];
        self.shards
            .get(usize::from(shard_of(key)))?
            .as_ref()?
            .get(key)
            .copied()
    }

    /// The selector and watermark that revoke this token, if any.
    pub fn revoked_by(&self, token: &TokenFacts<'_>) -> Option<(Selector, u64)> {
        if self.len == 0 {
            return None;
        }
        let candidates = [
            (TOKEN, token.jti, None),
            (CHAIN, token.aud_chain, None),
            (SUBJECT, token.sub, None),
            (SUBJECT_SCOPE, token.sub, token.scope),
        ];
        candidates.into_iter().find_map(|(kind, value, scope)| {
            if kind == SUBJECT_SCOPE && scope.is_none() {
                return None;
            }
            match self.mark(kind, value, scope) {
                Some(mark) if token.iat_ms < mark => {
                    Some((selector_of(&key_of(kind, value, scope))?, mark))
                }
                _ => None,
            }
        })
    }

    /// Whether this token is revoked.
    pub fn is_revoked(&self, token: &TokenFacts<'_>) -> bool {
        self.revoked_by(token).is_some()
    }

    /// Examines whole shards, starting where the last call stopped (wrapping after the last), until
    /// at least `budget` watermarks have been examined or every shard has, and removes those that
    /// can no longer revoke a valid token: `mark + horizon_ms <= now_ms`, where `horizon_ms` is the
    /// longest token lifetime plus the clock-skew allowance. Returns how many were removed.
    /// Deterministic: the same state and arguments prune the same watermarks.
    pub fn prune(&mut self, now_ms: u64, horizon_ms: u64, budget: usize) -> usize {
        let live = |mark: &u64| mark.saturating_add(horizon_ms) > now_ms;
        let mut examined = 0;
        let mut removed = 0;
        let mut number = self.sweep_from;
        for _ in 0..SHARDS {
            if examined >= budget || self.len == 0 {
                break;
            }
            let i = usize::from(number);
            let stale = match self.shards.get(i) {
                Some(Some(shard)) => {
                    examined += shard.len();
                    shard.values().any(|m| !live(m))
                }
                _ => false,
            };
            if stale {
                let shards = Arc::make_mut(&mut self.shards);
                if let Some(slot) = shards.get_mut(i) {
                    if let Some(shard) = slot.as_mut() {
                        let shard = Arc::make_mut(shard);
                        let before = shard.len();
                        shard.retain(|_, m| live(m));
                        removed += before - shard.len();
                        if shard.is_empty() {
                            *slot = None;
                        }
                    }
                }
            }
            number = (number + 1) % SHARDS;
        }
        self.sweep_from = number;
        self.len -= removed;
        removed
    }

    /// Number of watermarks stored.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether none are stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The shards in order from `first`, each with its entries sorted by key.
    fn ordered(&self, first: u16) -> impl Iterator<Item = (u16, Vec<(&Key, u64)>)> + '_ {
        self.shards
            .iter()
            .enumerate()
            .skip(usize::from(first))
            .filter_map(|(number, shard)| {
                let shard = shard.as_ref()?;
                let mut entries: Vec<(&Key, u64)> = shard.iter().map(|(k, m)| (k, *m)).collect();
                entries.sort();
                Some((u16::try_from(number).ok()?, entries))
            })
    }

    /// Up to `limit` watermarks in a stable order, after `after` if given (a page cursor: the last
    /// selector of the previous page).
    pub fn page(&self, after: Option<&Selector>, limit: usize) -> Vec<(Selector, u64)> {
        let cursor = after.map(|s| {
            let key = s.key();
            (shard_of(&key), key)
        });
        let first = cursor.as_ref().map_or(0, |(number, _)| *number);
        let mut out = Vec::new();
        for (number, entries) in self.ordered(first) {
            for (key, mark) in entries {
                if let Some((at, last)) = &cursor {
                    if number == *at && key[..] <= last[..] {
                        continue;
                    }
                }
                if out.len() == limit {
                    return out;
                }
                if let Some(selector) = selector_of(key) {
                    out.push((selector, mark));
                }
            }
        }
        out
    }

    /// Every watermark in a stable order, for snapshot files.
    pub fn to_persisted(&self) -> PersistedRevocations {
        PersistedRevocations {
            marks: self
                .ordered(0)
                .flat_map(|(_, entries)| entries)
                .filter_map(|(k, m)| Some((selector_of(k)?, m)))
                .collect(),
            sweep_from: self.sweep_from,
        }
    }

    /// Rebuilds the watermarks from a snapshot file.
    pub fn from_persisted(p: &PersistedRevocations) -> Self {
        let mut r = Self::default();
        for (selector, mark) in &p.marks {
            r.add(selector, *mark);
        }
        r.sweep_from = p.sweep_from % SHARDS;
        r
    }
}

/// The persisted form of [`Revocations`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedRevocations {
    /// `(selector, issued_before_ms)` in selector order.
    pub marks: Vec<(Selector, u64)>,
    /// The shard the next incremental prune starts at.
    pub sweep_from: u16,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(
        jti: &'a str,
        sub: &'a str,
        scope: Option<&'a str>,
        iat_ms: u64,
    ) -> TokenFacts<'a> {
        TokenFacts {
            jti,
            aud_chain: jti,
            sub,
            scope,
            iat_ms,
        }
    }

    #[test]
    fn a_watermark_revokes_tokens_issued_before_it_only() {
        let mut r = Revocations::default();
        r.add(
            &Selector::Subject {
                sub: "alice".into(),
            },
            1_000,
        );
        assert!(r.is_revoked(&facts("t1", "alice", None, 999)));
        assert!(!r.is_revoked(&facts("t2", "alice", None, 1_000)));
        assert!(!r.is_revoked(&facts("t3", "bob", None, 1)));
        // An older event for the same selector does not lower the watermark.
        r.add(
            &Selector::Subject {
                sub: "alice".into(),
            },
            500,
        );
        assert!(r.is_revoked(&facts("t1", "alice", None, 999)));
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn subject_scope_matches_only_that_scope() {
        let mut r = Revocations::default();
        r.add(
            &Selector::SubjectScope {
                sub: "alice".into(),
                scope: "proj-a".into(),
            },
            1_000,
        );
        assert!(r.is_revoked(&facts("t1", "alice", Some("proj-a"), 10)));
        assert!(!r.is_revoked(&facts("t2", "alice", Some("proj-b"), 10)));
        assert!(!r.is_revoked(&facts("t3", "alice", None, 10)));
        let (by, mark) = r
            .revoked_by(&facts("t1", "alice", Some("proj-a"), 10))
            .unwrap();
        assert_eq!(mark, 1_000);
        assert_eq!(
            by,
            Selector::SubjectScope {
                sub: "alice".into(),
                scope: "proj-a".into()
            }
        );
    }

    #[test]
    fn pruning_is_incremental_and_wraps() {
        let mut r = Revocations::default();
        for i in 0..10 {
            r.add(
                &Selector::Token {
                    jti: format!("t{i}"),
                },
                100,
            );
        }
        r.add(&Selector::Token { jti: "keep".into() }, 10_000);
        // Horizon 50: marks at 100 go once now >= 150; three examined per call.
        assert_eq!(r.prune(149, 50, 3), 0);
        let mut removed = 0;
        for _ in 0..10 {
            removed += r.prune(150, 50, 3);
        }
        assert_eq!(removed, 10);
        assert_eq!(r.len(), 1);
        assert!(r.is_revoked(&facts("keep", "x", None, 1)));
    }

    #[test]
    fn pages_cover_every_watermark_once_in_a_stable_order() {
        let mut r = Revocations::default();
        for i in 0..50 {
            r.add(
                &Selector::Token {
                    jti: format!("t{i}"),
                },
                i,
            );
        }
        let mut seen = Vec::new();
        let mut after: Option<Selector> = None;
        loop {
            let page = r.page(after.as_ref(), 7);
            if page.is_empty() {
                break;
            }
            assert!(page.len() <= 7);
            after = page.last().map(|(s, _)| s.clone());
            seen.extend(page);
        }
        assert_eq!(seen.len(), 50);
        assert_eq!(seen, r.page(None, 100));
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 50);
    }

    #[test]
    fn selectors_are_validated() {
        assert!(Selector::Token { jti: String::new() }.validate().is_err());
        assert!(Selector::Subject {
            sub: "a\u{1f}b".into()
        }
        .validate()
        .is_err());
        assert!(Selector::Subject {
            sub: "x".repeat(MAX_SELECTOR_LEN + 1)
        }
        .validate()
        .is_err());
        assert!(Selector::SubjectScope {
            sub: "alice".into(),
            scope: "p".into()
        }
        .validate()
        .is_ok());
    }

    #[test]
    fn the_persisted_form_round_trips() {
        let mut r = Revocations::default();
        r.add(&Selector::AuditChain { chain: "c".into() }, 7);
        r.add(
            &Selector::SubjectScope {
                sub: "s".into(),
                scope: "p".into(),
            },
            9,
        );
        r.prune(0, 0, 1);
        let back = Revocations::from_persisted(&r.to_persisted());
        assert_eq!(back.to_persisted(), r.to_persisted());
    }
}
