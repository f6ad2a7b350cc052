//! Idempotency keys: which retried writes were applied before, by the version they were first
//! applied at and a digest of the write they were first used with, forgotten after a window of the
//! leader's stamped time or beyond a count.
//!
//! A key reused for a *different* write is refused (`422 idempotency_key_reused`, the Stripe
//! convention) instead of answering the first write's version for a write that was never applied.
//! Apply computes the digest from the write itself ([`digest`]), so the log entry carries nothing
//! new and every node derives the same digest.

use blake2::Blake2s256;
use blake2::Digest as _;
use imbl::HashMap;
use imbl::OrdMap;

use crate::command::Command;
use crate::command::KeyMaterial;
use crate::command::Write;
use crate::persist::PersistedState;

/// How long an idempotency key is remembered, by the leader's stamped time.
pub const IDEMPOTENCY_WINDOW_MS: u64 = 24 * 60 * 60 * 1000;
/// Most idempotency keys remembered; the oldest are forgotten first.
pub const MAX_IDEMPOTENCY_KEYS: usize = 100_000;

/// A digest of what a client asked for in a write ([`digest`]).
pub type WriteDigest = [u8; 32];

/// What a key was first used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FirstUse {
    /// The version the write was applied at.
    pub version: u64,
    /// The write's digest; `None` for a key remembered from a snapshot format without digests
    /// (any reuse of it is answered as a retry, as before).
    pub digest: Option<WriteDigest>,
}

impl FirstUse {
    /// Whether a write with `digest` is a retry of the first use (not a different write).
    pub fn is_retry(&self, digest: &WriteDigest) -> bool {
        self.digest.is_none_or(|first| first == *digest)
    }
}

/// The remembered keys. Cloning is cheap (persistent maps).
#[derive(Clone, Default)]
pub struct Idempotency {
    by_key: HashMap<String, FirstUse>,
    /// The same keys by stamped time, oldest first, for forgetting.
    by_time: OrdMap<(u64, String), ()>,
}

/// The digest of what the client asked for in `write`: the command and `If-Match`, without the
/// parts the receiving node draws at random (key material, credential ids and secret hashes), so
/// a retry of the same request, which draws them anew, has the same digest.
pub fn digest(write: &Write) -> WriteDigest {
    const DRAWN: KeyMaterial = KeyMaterial([0; 32]);
    let asked = match &write.command {
        Command::RotateKeys {
            first_primary,
            policy,
            ..
        } => Command::RotateKeys {
            material: DRAWN,
            first_primary: first_primary.map(|_| DRAWN),
            policy: *policy,
        },
        Command::CreateCredential { name, scopes, .. } => Command::CreateCredential {
            id: String::new(),
            name: name.clone(),
            scopes: scopes.clone(),
            hash: String::new(),
        },
        Command::BootstrapAdmin { .. } => Command::BootstrapAdmin {
            hash: String::new(),
        },
        other => other.clone(),
    };
    // Plain data (strings, numbers, lists, enums) always serialises; were it ever to fail, every
    // such write would share one digest, and reuse would be answered as a retry, as before.
    let bytes = serde_json::to_vec(&(asked, write.if_match)).unwrap_or_default();
    Blake2s256::digest(bytes).into()
}

impl Idempotency {
    /// What a key was first used for, if it is still remembered.
    pub fn get(&self, key: &str) -> Option<FirstUse> {
        self.by_key.get(key).copied()
    }

    /// Remembers `key` as first used for a write with `digest`, applied at `version`, by the
    /// write's stamped time.
    pub(crate) fn remember(&mut self, key: &str, first: FirstUse, stamped_ms: u64) {
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
        self.by_key.insert(key.to_string(), first);
        self.by_time.insert((stamped_ms, key.to_string()), ());
    }

    /// Writes the keys into the persisted state, oldest first, and their digests in the same
    /// order.
    pub(crate) fn save(&self, into: &mut PersistedState) {
        let remembered: Vec<(&String, u64, FirstUse)> = self
            .by_time
            .keys()
            .filter_map(|(t, k)| self.by_key.get(k).map(|f| (k, *t, *f)))
            .collect();
        into.idempotency = remembered
            .iter()
            .map(|(k, t, f)| ((*k).clone(), f.version, *t))
            .collect();
        into.idempotency_digests = remembered.iter().map(|(_, _, f)| f.digest).collect();
    }

    /// Rebuilds the keys from the persisted state. A key without a digest (an older snapshot
    /// format) is remembered without one.
    pub(crate) fn load(from: &PersistedState) -> Self {
        let mut keys = Self::default();
        let digests = from
            .idempotency_digests
            .iter()
            .copied()
            .chain(std::iter::repeat(None));
        for ((key, version, t), digest) in from.idempotency.iter().zip(digests) {
            let first = FirstUse {
                version: *version,
                digest,
            };
            keys.by_key.insert(key.clone(), first);
            keys.by_time.insert((*t, key.clone()), ());
        }
        keys
    }
}
