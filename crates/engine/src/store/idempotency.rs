//! Idempotency keys: which retried writes were applied before, by the version they were first
//! applied at, forgotten after a window of the leader's stamped time or beyond a count.

use imbl::HashMap;
use imbl::OrdMap;

use crate::persist::PersistedState;

/// How long an idempotency key is remembered, by the leader's stamped time.
pub const IDEMPOTENCY_WINDOW_MS: u64 = 24 * 60 * 60 * 1000;
/// Most idempotency keys remembered; the oldest are forgotten first.
pub const MAX_IDEMPOTENCY_KEYS: usize = 100_000;

/// The remembered keys. Cloning is cheap (persistent maps).
#[derive(Clone, Default)]
pub struct Idempotency {
    by_key: HashMap<String, u64>,
    /// The same keys by stamped time, oldest first, for forgetting.
    by_time: OrdMap<(u64, String), ()>,
}

impl Idempotency {
    /// The version a key was first applied at, if it is still remembered.
    pub fn get(&self, key: &str) -> Option<u64> {
        self.by_key.get(key).copied()
    }

    /// Remembers `key` as applied at `version`, by the write's stamped time.
    pub(crate) fn remember(&mut self, key: &str, version: u64, stamped_ms: u64) {
        // Forget keys older than the window (by the leader's stamp, never a local clock), then the
        // oldest ones beyond the cap.
        let horizon = stamped_ms.saturating_sub(IDEMPOTENCY_WINDOW_MS);
        while let Some(((t, k), _)) = self.by_time.get_min().cloned() {
            if t >= horizon && self.by_key.len() < MAX_IDEMPOTENCY_KEYS {
                break;
            }
            self.by_time.remove(&(t, k.clone()));
            self.by_key.remove(&k);
        }
        self.by_key.insert(key.to_string(), version);
        self.by_time.insert((stamped_ms, key.to_string()), ());
    }

    /// Writes the keys into the persisted state, oldest first.
    pub(crate) fn save(&self, into: &mut PersistedState) {
        into.idempotency = self
            .by_time
            .keys()
            .filter_map(|(t, k)| self.by_key.get(k).map(|v| (k.clone(), *v, *t)))
            .collect();
    }

    /// Rebuilds the keys from the persisted state.
    pub(crate) fn load(from: &PersistedState) -> Self {
        let mut keys = Self::default();
        for (key, v, t) in &from.idempotency {
            keys.by_key.insert(key.clone(), *v);
            keys.by_time.insert((*t, key.clone()), ());
        }
        keys
    }
}
