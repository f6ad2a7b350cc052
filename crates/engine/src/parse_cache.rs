//! Parsed policies carried from the check before a write is proposed to the apply of the committed
//! entry, so a leader parses each policy once rather than twice.
//!
//! The state machine owns one cache and lends it to whoever checks writes on its node; nothing
//! here is global. Parsing is a pure function of `(id, text)`, so a hit gives exactly what a parse
//! would; only the version is re-stamped. A follower whose clients send writes checks them too, and
//! applies them when they come back committed; a node that never checked a write simply misses.

use std::collections::HashMap;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;

use crate::error::EngineError;
use crate::policy::parse_one;
use crate::policy::StoredPolicy;

/// At most this many parses are remembered (a leader needs only those between check and apply).
const MAX_ENTRIES: usize = 4096;
/// And at most this many bytes of policy text.
const MAX_BYTES: usize = 8 * 1024 * 1024;
/// A text larger than this share of the byte budget is never remembered.
const MAX_SHARE: usize = 16;

/// Recent policy parses, bounded by count and bytes, evicted oldest first.
///
/// The lock is needed because checks run on the server's request tasks (several at once, on any
/// runtime thread) while apply runs on the state machine's task, and both reach this one cache.
/// Only write paths take it, each for a map look-up or insert: a decision never does.
#[derive(Debug, Default)]
pub struct ParseCache {
    memo: Mutex<Memo>,
}

#[derive(Debug, Default)]
struct Memo {
    by_text: HashMap<String, Arc<StoredPolicy>>,
    /// Insertion order, for eviction. May still name texts already taken; evicting one of those
    /// (or a newer parse of the same text) costs at most a second parse.
    order: VecDeque<String>,
    bytes: usize,
}

impl ParseCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many parses are remembered.
    pub fn len(&self) -> usize {
        self.memo.lock().map(|m| m.by_text.len()).unwrap_or(0)
    }

    /// Whether no parse is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Parses one policy for a check and remembers the result for the apply that follows.
    pub(crate) fn parse_and_remember(
        &self,
        id: &str,
        text: &str,
        version: u64,
    ) -> Result<Arc<StoredPolicy>, EngineError> {
        let parsed = parse_one(id, text, version)?;
        self.put(&parsed);
        Ok(parsed)
    }

    /// Parses one policy for apply, reusing (and forgetting) a parse of the same id and text that
    /// a check remembered: each check's parse serves one apply, which keeps the cache small.
    pub(crate) fn take_or_parse(
        &self,
        id: &str,
        text: &str,
        version: u64,
    ) -> Result<Arc<StoredPolicy>, EngineError> {
        let Some(hit) = self.take(id, text) else {
            return parse_one(id, text, version);
        };
        let mut policy = Arc::try_unwrap(hit).unwrap_or_else(|shared| (*shared).clone());
        policy.version = version;
        Ok(Arc::new(policy))
    }

    fn take(&self, id: &str, text: &str) -> Option<Arc<StoredPolicy>> {
        let mut memo = self.memo.lock().ok()?;
        if memo.by_text.get(text)?.id != id {
            return None;
        }
        let hit = memo.by_text.remove(text)?;
        memo.bytes = memo.bytes.saturating_sub(text.len());
        Some(hit)
    }

    fn put(&self, policy: &Arc<StoredPolicy>) {
        let size = policy.text.len();
        if size > MAX_BYTES / MAX_SHARE {
            return;
        }
        let Ok(mut memo) = self.memo.lock() else {
            return;
        };
        if let Some(slot) = memo.by_text.get_mut(&policy.text) {
            *slot = policy.clone();
            return;
        }
        while memo.order.len() >= MAX_ENTRIES || memo.bytes + size > MAX_BYTES {
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
    fn a_remembered_parse_is_the_same_policy_with_its_own_version_and_id() {
        let cache = ParseCache::new();
        let text = r#"@obligation("log") permit(principal == User::"memo", action, resource);"#;
        let first = cache.parse_and_remember("memo-a", text, 5).unwrap();
        assert_eq!(cache.len(), 1);
        let again = cache.take_or_parse("memo-a", text, 9).unwrap();
        // Taken by its first use: the next parse of the text parses again, to the same result.
        assert!(cache.is_empty());
        assert_eq!((first.version, again.version), (5, 9));
        assert_eq!(again.obligations, vec!["log".to_string()]);
        assert_eq!(again.policy.to_string(), first.policy.to_string());
        // The same text under another id is that id's policy, not the remembered one.
        cache.parse_and_remember("memo-a", text, 9).unwrap();
        let other = cache.take_or_parse("memo-b", text, 10).unwrap();
        assert_eq!(other.id, "memo-b");
        assert_eq!(other.policy.id().to_string(), "memo-b");
        assert_eq!(cache.len(), 1);
        // A parse that fails is never remembered as a success.
        assert!(cache.parse_and_remember("memo-c", "permit(", 11).is_err());
        assert!(cache.take_or_parse("memo-c", "permit(", 12).is_err());
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = ParseCache::new();
        for i in 0..MAX_ENTRIES + 10 {
            let text = format!(r#"permit(principal == User::"u{i}", action, resource);"#);
            cache.parse_and_remember("p", &text, 1).unwrap();
        }
        assert_eq!(cache.len(), MAX_ENTRIES);
    }

    #[test]
    fn separate_caches_share_nothing() {
        let (a, b) = (ParseCache::new(), ParseCache::new());
        let text = "permit(principal, action, resource);";
        a.parse_and_remember("p", text, 1).unwrap();
        assert!(b.is_empty());
        b.take_or_parse("p", text, 2).unwrap();
        assert_eq!((a.len(), b.len()), (1, 0));
    }
}
