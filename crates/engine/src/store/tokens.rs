//! Token state: the key ring with the rotation policy it was last rotated under, and the revocation
//! watermarks, which are kept at least as long as any token they could refuse.

use std::sync::Arc;

use crate::change::ChangeSet;
use crate::error::EngineError;
use crate::error::ErrorCode;
use crate::keyring::KeyId;
use crate::keyring::KeyRing;
use crate::keyring::KeyRingError;
use crate::keyring::RotationPolicy;
use crate::persist::PersistedState;
use crate::persist::PersistedTokens;
use crate::revocation::Revocations;
use crate::revocation::Selector;
use crate::store::context::WriteContext;
use crate::token::validate as validate_token;
use crate::token::Claims;
use crate::token::TokenError;

/// Watermarks examined per revocation write by the incremental prune.
const PRUNE_BUDGET: usize = 512;
/// Most revocation events in one write.
pub const MAX_REVOCATIONS_PER_WRITE: usize = 10_000;

/// The key ring, its policy and the revocations. Cloning is cheap.
#[derive(Clone, Default)]
pub struct TokenState {
    /// The key ring (shared: it changes only on rotation).
    keys: Arc<KeyRing>,
    /// The rotation policy of the latest rotation (token lifetime, clock skew, key limit).
    policy: RotationPolicy,
    /// The longest token lifetime any rotation has allowed: revocations are kept at least that long.
    max_token_lifetime_ms: u64,
    /// Revocation watermarks.
    revocations: Revocations,
}

impl TokenState {
    /// The token key ring.
    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// The rotation policy of the latest rotation (defaults before any).
    pub fn policy(&self) -> &RotationPolicy {
        &self.policy
    }

    /// The revocation watermarks.
    pub fn revocations(&self) -> &Revocations {
        &self.revocations
    }

    /// Validates `token` at `now_ms`: a key of the ring, the MAC, expiry and `iat` within the ring
    /// policy's clock skew, then the revocations.
    pub fn check(&self, token: &str, now_ms: u64) -> Result<Claims, TokenRefused> {
        let claims = validate_token(&self.keys, token, now_ms, self.policy.clock_skew_ms)
            .map_err(TokenRefused::Invalid)?;
        match self.revocations.revoked_by(&claims.facts()) {
            Some((by, issued_before_ms)) => Err(TokenRefused::Revoked {
                by,
                issued_before_ms,
            }),
            None => Ok(claims),
        }
    }

    /// `RotateKeys`: the staged key becomes primary and `material` the new staged key.
    pub(crate) fn rotate(
        &mut self,
        material: [u8; 32],
        first_primary: Option<[u8; 32]>,
        policy: &RotationPolicy,
        at: &WriteContext<'_>,
    ) -> Result<ChangeSet, EngineError> {
        let staged = self.keys.staged().map(|k| k.id.0).unwrap_or(0);
        at.check_if_match("the key ring", staged)?;
        let ring = self
            .keys
            .rotate(
                KeyId(at.version),
                material,
                first_primary,
                at.stamped_ms,
                policy,
            )
            .map_err(key_error)?;
        self.keys = Arc::new(ring);
        self.policy = *policy;
        self.max_token_lifetime_ms = self.max_token_lifetime_ms.max(policy.token_lifetime_ms);
        Ok(ChangeSet {
            keys: true,
            ..ChangeSet::default()
        })
    }

    /// `Revoke`: records every event, or none if one is invalid.
    pub(crate) fn revoke(
        &mut self,
        events: &[(Selector, Option<u64>)],
        at: &WriteContext<'_>,
    ) -> Result<ChangeSet, EngineError> {
        at.refuse_if_match("revocations (they only add)")?;
        let stamped_ms = at.stamped_ms;
        if events.is_empty() || events.len() > MAX_REVOCATIONS_PER_WRITE {
            return Err(EngineError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "a revocation write holds {} events; send 1 to {MAX_REVOCATIONS_PER_WRITE}",
                    events.len()
                ),
            ));
        }
        // Every event is checked before the first is recorded: all or none.
        let latest = stamped_ms.saturating_add(self.policy.clock_skew_ms);
        for (i, (selector, issued_before_ms)) in events.iter().enumerate() {
            let at = |mut e: EngineError| {
                if events.len() > 1 {
                    e.detail = format!("event {i}: {}", e.detail);
                }
                e
            };
            selector.validate().map_err(at)?;
            let before = issued_before_ms.unwrap_or(stamped_ms);
            if before > latest {
                return Err(at(EngineError::new(
                    ErrorCode::InvalidRequest,
                    format!(
                        "`issued_before` {before} is in the future (now {stamped_ms} ms since the \
                         epoch, plus {} ms skew allowed); omit it to revoke everything issued \
                         until now",
                        self.policy.clock_skew_ms
                    ),
                )));
            }
        }
        for (selector, issued_before_ms) in events {
            self.revocations
                .add(selector, issued_before_ms.unwrap_or(stamped_ms));
        }
        // Keep pruning cheap and bounded: a few shards per revocation write, by the stamped time.
        let horizon = self
            .max_token_lifetime_ms
            .max(self.policy.token_lifetime_ms)
            .saturating_add(self.policy.clock_skew_ms);
        self.revocations.prune(stamped_ms, horizon, PRUNE_BUDGET);
        Ok(ChangeSet {
            revocations: true,
            ..ChangeSet::default()
        })
    }

    /// Writes this state's part of the persisted state.
    pub(crate) fn save(&self, into: &mut PersistedState) {
        into.tokens = PersistedTokens {
            keys: (*self.keys).clone(),
            policy: self.policy,
            max_token_lifetime_ms: self.max_token_lifetime_ms,
            revocations: self.revocations.to_persisted(),
        };
    }

    /// Rebuilds this state from the persisted state.
    pub(crate) fn load(from: &PersistedState) -> Self {
        Self {
            keys: Arc::new(from.tokens.keys.clone()),
            policy: from.tokens.policy,
            max_token_lifetime_ms: from.tokens.max_token_lifetime_ms,
            revocations: Revocations::from_persisted(&from.tokens.revocations),
        }
    }
}

/// Why [`crate::Snapshot::check_token`] refused a token.
#[derive(Debug)]
pub enum TokenRefused {
    /// It is not a valid token here (malformed, unknown key, bad MAC, expired, issued in future).
    Invalid(TokenError),
    /// It is valid but revoked.
    Revoked {
        /// The selector of the revocation that matched.
        by: Selector,
        /// That revocation's watermark: tokens issued before it are revoked.
        issued_before_ms: u64,
    },
}

impl TokenRefused {
    /// The stable reason code: the token error's code, or `revoked`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid(e) => e.code(),
            Self::Revoked { .. } => "revoked",
        }
    }
}

impl std::fmt::Display for TokenRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Invalid(e) => write!(f, "{}: {e}", e.code()),
            Self::Revoked {
                by,
                issued_before_ms,
            } => write!(
                f,
                "revoked: the token was issued before a revocation of {by} (issued before {issued_before_ms} ms)"
            ),
        }
    }
}

fn key_error(e: KeyRingError) -> EngineError {
    let code = match e {
        KeyRingError::RotationTooFast { .. } => ErrorCode::RotationTooFast,
        _ => ErrorCode::InvalidRequest,
    };
    EngineError::new(code, e.to_string())
}
