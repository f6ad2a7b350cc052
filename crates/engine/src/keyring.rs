//! The token key ring: replicated, deterministic key rotation in Keystone's Fernet style.
//!
//! Every node applies the same Raft log, so every node derives the same ring. A key is
//! - *staged*: validates tokens but issues none; it becomes the next primary. A node that lags one
//!   rotation behind the leader already holds the leader's primary as its staged key, so tokens the
//!   leader issues validate everywhere at once.
//! - *primary*: issues tokens (and validates them).
//! - *secondary*: a demoted primary; validates until every token it issued has expired, then the
//!   next rotation removes it.
//!
//! Applying a rotation reads no clock and draws no randomness: the leader generates the key material
//! and stamps the time into the log entry, and [`KeyRing::rotate`] only applies them.
//!
//! The ring holds secret key material and is serialised into snapshots and log entries: protect
//! those files as you would the keys. `Debug` never prints material.

use serde::Deserialize;
use serde::Serialize;

/// Identifies a key: the log index of the rotation that created it.
///
/// `KeyId(0)` is reserved for the first primary of a ring, created together with a staged key by
/// the first rotation (both come from one log entry, and only one can carry its index). Raft log
/// indices of rotations start at 1, so `0` never collides with one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyId(pub u64);

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// What a key may do; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    /// Validates only; the next rotation makes it primary.
    Staged,
    /// Issues and validates.
    Primary,
    /// Validates only, until the tokens it issued have expired.
    Secondary {
        /// When the rotation that demoted it was stamped (ms since the epoch): no token issued by
        /// this key is newer, so none outlives `since_ms` + token lifetime + clock skew.
        since_ms: u64,
    },
}

/// One key of the ring. Material is readable only inside the crate.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Key {
    /// The key id, carried in every token's footer as `kid`.
    pub id: KeyId,
    /// What the key may do.
    pub state: KeyState,
    /// When the rotation that created the key was stamped (ms since the epoch).
    pub created_ms: u64,
    material: [u8; 32],
}

impl Key {
    /// The secret: the PASETO v4.local symmetric key.
    pub(crate) fn material(&self) -> &[u8; 32] {
        &self.material
    }

    fn info(&self) -> KeyInfo {
        KeyInfo {
            id: self.id,
            state: self.state,
            created_ms: self.created_ms,
        }
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("id", &self.id)
            .field("state", &self.state)
            .field("created_ms", &self.created_ms)
            .finish_non_exhaustive()
    }
}

/// What `GET /v1/keys` may show of a key: never its material.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    /// The key id.
    pub id: KeyId,
    /// What the key may do.
    pub state: KeyState,
    /// When the key was created (ms since the epoch).
    pub created_ms: u64,
}

/// Longest token lifetime a policy may set: 30 days.
pub const MAX_TOKEN_LIFETIME_MS: u64 = 30 * 24 * 3600 * 1000;
/// Largest clock skew a policy may allow: 10 minutes.
pub const MAX_CLOCK_SKEW_MS: u64 = 10 * 60 * 1000;
/// Most keys a policy may keep: a ring is scanned on every validation, so it stays small.
pub const MAX_ACTIVE_KEYS_LIMIT: usize = 64;

/// How long tokens live and how many keys the ring may hold; governs when secondaries are removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationPolicy {
    /// Longest lifetime of a token (ms); requests for longer are capped to it. A secondary is kept
    /// this long (plus the skew) after its demotion.
    #[serde(default = "default_token_lifetime_ms")]
    pub token_lifetime_ms: u64,
    /// How far node clocks may disagree, and how long a node may lag in applying a rotation (ms).
    /// Validation accepts tokens this far past expiry, so secondaries are kept this much longer.
    #[serde(default = "default_clock_skew_ms")]
    pub clock_skew_ms: u64,
    /// Most keys the ring may hold: staged + primary + secondaries. Rotations that would exceed it
    /// are refused rather than drop a key that may still validate live tokens. At least 3.
    #[serde(default = "default_max_active_keys")]
    pub max_active_keys: usize,
}

fn default_token_lifetime_ms() -> u64 {
    3600 * 1000
}

fn default_clock_skew_ms() -> u64 {
    60 * 1000
}

fn default_max_active_keys() -> usize {
    5
}

impl Default for RotationPolicy {
    fn default() -> Self {
        Self {
            token_lifetime_ms: default_token_lifetime_ms(),
            clock_skew_ms: default_clock_skew_ms(),
            max_active_keys: default_max_active_keys(),
        }
    }
}

impl RotationPolicy {
    /// Checks the bounds of every setting.
    pub fn validate(&self) -> Result<(), KeyRingError> {
        let invalid = |reason: String| Err(KeyRingError::InvalidPolicy { reason });
        if self.token_lifetime_ms == 0 || self.token_lifetime_ms > MAX_TOKEN_LIFETIME_MS {
            return invalid(format!(
                "`token_lifetime_ms` is {}; set it between 1 and {MAX_TOKEN_LIFETIME_MS} (30 days)",
                self.token_lifetime_ms
            ));
        }
        if self.clock_skew_ms > MAX_CLOCK_SKEW_MS {
            return invalid(format!(
                "`clock_skew_ms` is {}; set it to at most {MAX_CLOCK_SKEW_MS} (10 minutes)",
                self.clock_skew_ms
            ));
        }
        if !(3..=MAX_ACTIVE_KEYS_LIMIT).contains(&self.max_active_keys) {
            return invalid(format!(
                "`max_active_keys` is {}; set it between 3 (staged, primary and one secondary) and \
                 {MAX_ACTIVE_KEYS_LIMIT}",
                self.max_active_keys
            ));
        }
        Ok(())
    }

    /// When a secondary demoted at `since_ms` has no live token left: every token it issued expired
    /// (`token_lifetime_ms`) and the grace validation allows past expiry (`clock_skew_ms`) is over.
    fn retire_at(&self, since_ms: u64) -> u64 {
        since_ms
            .saturating_add(self.token_lifetime_ms)
            .saturating_add(self.clock_skew_ms)
    }
}

/// Why a rotation (or a stored ring) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyRingError {
    /// The rotation policy is out of bounds.
    #[error("invalid key rotation policy: {reason}")]
    InvalidPolicy {
        /// Which setting and its allowed range.
        reason: String,
    },
    /// Rotating now would keep more keys than `max_active_keys`.
    #[error(
        "key rotation refused: it would leave {would_hold} keys, more than `max_active_keys` = \
         {max_active_keys}, and every secondary may still validate live tokens; a rotation can \
         succeed at {earliest_ms} ms since the epoch ({wait_ms} ms from now), when the oldest \
         secondary's tokens have expired (`token_lifetime_ms` + `clock_skew_ms` after its \
         demotion); rotate then, or raise `max_active_keys`"
    )]
    RotationTooFast {
        /// Keys the ring would hold after this rotation.
        would_hold: usize,
        /// The policy's cap.
        max_active_keys: usize,
        /// Earliest stamped time (ms since the epoch) at which a rotation succeeds.
        earliest_ms: u64,
        /// `earliest_ms` minus the time the rotation was stamped with.
        wait_ms: u64,
    },
    /// The first rotation of an empty ring came without the material for its first primary.
    #[error(
        "the key ring is empty, so its first rotation needs two key materials (a primary to issue \
         tokens at once and a staged key), but only one was given; propose it with \
         `first_primary_material` set"
    )]
    MissingFirstPrimary,
    /// The key id is not a valid log index, or not newer than every key of the ring.
    #[error(
        "key id `{id}` is not newer than key `{newest}` already in the ring; a key id is the log \
         index of the rotation that creates it, so each must be greater than the last (and at least 1)"
    )]
    StaleKeyId {
        /// The id given.
        id: KeyId,
        /// The newest id in the ring (0 for an empty ring).
        newest: KeyId,
    },
    /// A stored ring breaks an invariant (corrupt snapshot or log entry).
    #[error("stored key ring is invalid: {reason}; restore the snapshot from a healthy node")]
    Corrupt {
        /// Which invariant.
        reason: String,
    },
}

impl KeyRingError {
    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidPolicy { .. } => "invalid_rotation_policy",
            Self::RotationTooFast { .. } => "rotation_too_fast",
            Self::MissingFirstPrimary => "missing_first_primary",
            Self::StaleKeyId { .. } => "stale_key_id",
            Self::Corrupt { .. } => "corrupt_key_ring",
        }
    }
}

/// The replicated set of token keys.
///
/// INVARIANT: keys are sorted by id with ids unique; the ring is empty or holds exactly one primary
/// and exactly one staged key, the staged key having the greatest id. Only [`KeyRing::rotate`] and
/// the checked deserialisation build rings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "KeyRingRepr")]
pub struct KeyRing {
    keys: Vec<Key>,
}

/// The unchecked serialised form, checked by `TryFrom` on load.
#[derive(Deserialize)]
struct KeyRingRepr {
    keys: Vec<Key>,
}

impl TryFrom<KeyRingRepr> for KeyRing {
    type Error = KeyRingError;

    fn try_from(repr: KeyRingRepr) -> Result<Self, KeyRingError> {
        let corrupt = |reason: &str| {
            Err(KeyRingError::Corrupt {
                reason: reason.to_string(),
            })
        };
        let keys = repr.keys;
        if keys.windows(2).any(|w| w[0].id >= w[1].id) {
            return corrupt("key ids are not strictly increasing");
        }
        let count = |want: fn(&KeyState) -> bool| keys.iter().filter(|k| want(&k.state)).count();
        let primaries = count(|s| *s == KeyState::Primary);
        let staged = count(|s| *s == KeyState::Staged);
        if !keys.is_empty() && (primaries != 1 || staged != 1) {
            return corrupt("it needs exactly one primary and one staged key");
        }
        if keys.last().is_some_and(|k| k.state != KeyState::Staged) {
            return corrupt("the staged key is not the newest");
        }
        Ok(Self { keys })
    }
}

impl KeyRing {
    /// An empty ring: it issues nothing until its first rotation.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether no rotation has happened yet.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key that issues tokens.
    pub fn primary(&self) -> Option<&Key> {
        self.keys.iter().find(|k| k.state == KeyState::Primary)
    }

    /// The key the next rotation makes primary.
    pub fn staged(&self) -> Option<&Key> {
        self.keys.last()
    }

    /// The key with this id, whatever its state (all states validate tokens).
    pub fn get(&self, id: KeyId) -> Option<&Key> {
        // A linear scan: the ring holds at most `MAX_ACTIVE_KEYS_LIMIT` keys, usually 3 to 5.
        self.keys.iter().find(|k| k.id == id)
    }

    /// Every key's id, state and creation time, oldest first, for `GET /v1/keys`.
    pub fn list(&self) -> Vec<KeyInfo> {
        self.keys.iter().map(Key::info).collect()
    }

    /// Whether a rotation stamped `now_ms` would succeed (with valid materials and id). The leader
    /// calls it before proposing, so a refusal costs no log entry.
    pub fn check_rotation(&self, now_ms: u64, policy: &RotationPolicy) -> Result<(), KeyRingError> {
        policy.validate()?;
        self.check_capacity(self.effective_now(now_ms), now_ms, policy)
    }

    /// Applies a committed rotation and returns the new ring; `self` is unchanged either way.
    ///
    /// `id` is the log index of the rotation, `new_material` becomes the new staged key and
    /// `now_ms` is the time the leader stamped into the entry. The staged key becomes primary, the
    /// primary becomes secondary since `now_ms`, and secondaries with no live token left are
    /// removed. A rotation that would then hold more than `max_active_keys` keys is refused.
    ///
    /// An empty ring needs `first_primary_material` too: it becomes primary (id 0) at once, so the
    /// ring can issue tokens right after its first rotation. Skipping the staged phase is safe only
    /// here: no token exists yet, so no live token can be stranded, and a node that has not applied
    /// the first rotation has no ring and issues nothing. Its one cost: until that node applies it,
    /// it answers `unknown_key` to tokens issued meanwhile (a retryable refusal, never an
    /// acceptance). On a non-empty ring `first_primary_material` is ignored, so two racing first
    /// rotations apply as a first and an ordinary one.
    ///
    /// A stamped time earlier than the last rotation's (a new leader with a slower clock) is raised
    /// to it: the ring's time never moves back, so no secondary is demoted "before" tokens it issued.
    pub fn rotate(
        &self,
        id: KeyId,
        new_material: [u8; 32],
        first_primary_material: Option<[u8; 32]>,
        now_ms: u64,
        policy: &RotationPolicy,
    ) -> Result<KeyRing, KeyRingError> {
        policy.validate()?;
        let newest = self.staged().map_or(KeyId(0), |k| k.id);
        if id.0 == 0 || id <= newest {
            return Err(KeyRingError::StaleKeyId { id, newest });
        }
        let now = self.effective_now(now_ms);
        let staged = Key {
            id,
            state: KeyState::Staged,
            created_ms: now,
            material: new_material,
        };
        if self.keys.is_empty() {
            let first = first_primary_material.ok_or(KeyRingError::MissingFirstPrimary)?;
            let primary = Key {
                id: KeyId(0),
                state: KeyState::Primary,
                created_ms: now,
                material: first,
            };
            return Ok(Self {
                keys: vec![primary, staged],
            });
        }
        self.check_capacity(now, now_ms, policy)?;
        let mut keys = Vec::with_capacity(self.keys.len() + 1);
        for key in &self.keys {
            let state = match key.state {
                KeyState::Secondary { since_ms } if policy.retire_at(since_ms) <= now => continue,
                KeyState::Secondary { since_ms } => KeyState::Secondary { since_ms },
                KeyState::Primary => KeyState::Secondary { since_ms: now },
                KeyState::Staged => KeyState::Primary,
            };
            keys.push(Key {
                state,
                ..key.clone()
            });
        }
        keys.push(staged);
        Ok(Self { keys })
    }

    /// `now_ms`, raised to the time of the last rotation if it is earlier.
    fn effective_now(&self, now_ms: u64) -> u64 {
        self.staged().map_or(now_ms, |k| k.created_ms.max(now_ms))
    }

    /// Refuses a rotation at `now` that would leave more than `max_active_keys` keys.
    fn check_capacity(
        &self,
        now: u64,
        stamped_ms: u64,
        policy: &RotationPolicy,
    ) -> Result<(), KeyRingError> {
        if self.keys.is_empty() {
            return Ok(());
        }
        // After the rotation: the old staged and primary keys (now primary and secondary), the new
        // staged key, and every secondary that may still validate a live token.
        let mut retire_at: Vec<u64> = self
            .keys
            .iter()
            .filter_map(|k| match k.state {
                KeyState::Secondary { since_ms } => Some(policy.retire_at(since_ms)),
                _ => None,
            })
            .filter(|&t| t > now)
            .collect();
        let would_hold = 3 + retire_at.len();
        if would_hold <= policy.max_active_keys {
            return Ok(());
        }
        // The rotation succeeds once the `excess` earliest-retiring secondaries are gone.
        retire_at.sort_unstable();
        // INVARIANT: `max_active_keys` >= 3 (validated), so 1 <= excess <= retire_at.len().
        let excess = would_hold - policy.max_active_keys;
        let earliest_ms = retire_at.get(excess - 1).copied().unwrap_or(now);
        Err(KeyRingError::RotationTooFast {
            would_hold,
            max_active_keys: policy.max_active_keys,
            earliest_ms,
            wait_ms: earliest_ms.saturating_sub(stamped_ms),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RotationPolicy {
        RotationPolicy {
            token_lifetime_ms: 1000,
            clock_skew_ms: 100,
            max_active_keys: 4,
        }
    }

    fn bootstrapped() -> KeyRing {
        KeyRing::new()
            .rotate(KeyId(1), [1; 32], Some([0; 32]), 0, &policy())
            .unwrap()
    }

    #[test]
    fn first_rotation_makes_a_primary_and_a_staged_key() {
        let ring = bootstrapped();
        assert_eq!(ring.primary().unwrap().id, KeyId(0));
        assert_eq!(ring.staged().unwrap().id, KeyId(1));
        let err = KeyRing::new()
            .rotate(KeyId(1), [1; 32], None, 0, &policy())
            .unwrap_err();
        assert_eq!(err.code(), "missing_first_primary");
    }

    #[test]
    fn rotation_promotes_staged_and_demotes_primary() {
        let ring = bootstrapped()
            .rotate(KeyId(5), [5; 32], None, 10, &policy())
            .unwrap();
        let states: Vec<_> = ring.list().into_iter().map(|k| (k.id.0, k.state)).collect();
        assert_eq!(
            states,
            [
                (0, KeyState::Secondary { since_ms: 10 }),
                (1, KeyState::Primary),
                (5, KeyState::Staged)
            ]
        );
    }

    #[test]
    fn ids_must_increase() {
        let ring = bootstrapped();
        for id in [0, 1] {
            let err = ring.rotate(KeyId(id), [9; 32], None, 5, &policy());
            assert_eq!(err.unwrap_err().code(), "stale_key_id");
        }
    }

    #[test]
    fn too_fast_rotation_is_refused_with_the_earliest_time() {
        let p = policy();
        let ring = bootstrapped()
            .rotate(KeyId(2), [2; 32], None, 10, &p)
            .unwrap()
            .rotate(KeyId(3), [3; 32], None, 20, &p)
            .unwrap();
        assert_eq!(ring.list().len(), 4);
        let err = ring.rotate(KeyId(4), [4; 32], None, 30, &p).unwrap_err();
        assert_eq!(err.code(), "rotation_too_fast");
        let KeyRingError::RotationTooFast {
            earliest_ms,
            wait_ms,
            ..
        } = err
        else {
            unreachable!()
        };
        assert_eq!((earliest_ms, wait_ms), (10 + 1000 + 100, 1080));
        assert!(err.to_string().contains("1080 ms from now"));
        assert!(ring.check_rotation(earliest_ms - 1, &p).is_err());
        assert!(ring.check_rotation(earliest_ms, &p).is_ok());
        let next = ring
            .rotate(KeyId(4), [4; 32], None, earliest_ms, &p)
            .unwrap();
        assert!(next.get(KeyId(0)).is_none());
    }

    #[test]
    fn time_never_moves_back() {
        let ring = bootstrapped()
            .rotate(KeyId(2), [2; 32], None, 500, &policy())
            .unwrap()
            .rotate(KeyId(3), [3; 32], None, 100, &policy())
            .unwrap();
        assert_eq!(
            ring.get(KeyId(1)).unwrap().state,
            KeyState::Secondary { since_ms: 500 }
        );
    }

    #[test]
    fn policy_bounds() {
        let bad = [
            RotationPolicy {
                max_active_keys: 2,
                ..policy()
            },
            RotationPolicy {
                token_lifetime_ms: 0,
                ..policy()
            },
            RotationPolicy {
                clock_skew_ms: MAX_CLOCK_SKEW_MS + 1,
                ..policy()
            },
        ];
        for p in bad {
            assert_eq!(p.validate().unwrap_err().code(), "invalid_rotation_policy");
        }
        assert!(RotationPolicy::default().validate().is_ok());
    }

    #[test]
    fn debug_never_prints_material() {
        let ring = KeyRing::new()
            .rotate(KeyId(1), [0xAB; 32], Some([0xCD; 32]), 0, &policy())
            .unwrap();
        let debug = format!("{ring:?}");
        assert!(!debug.contains("171") && !debug.contains("205"), "{debug}");
        assert!(debug.contains("Staged"));
    }

    #[test]
    fn serde_round_trip_checks_invariants() {
        let ring = bootstrapped();
        let json = serde_json::to_string(&ring).unwrap();
        assert_eq!(serde_json::from_str::<KeyRing>(&json).unwrap(), ring);
        let mut broken: serde_json::Value = serde_json::from_str(&json).unwrap();
        broken["keys"][1]["state"] = serde_json::json!("primary");
        let err = serde_json::from_value::<KeyRing>(broken).unwrap_err();
        assert!(err.to_string().contains("one primary"), "{err}");
    }
}
