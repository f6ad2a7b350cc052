//! Stateless PASETO v4.local tokens, issued with the ring's primary key and validated locally on
//! every node with any key of the ring.
//!
//! A token is `v4.local.<nonce ‖ ciphertext ‖ tag>.<footer>`; the footer is `{"kid":"<key id>"}`,
//! authenticated but not encrypted, so a validator finds the key before decrypting. The payload is
//! the JSON of [`Claims`], with times in milliseconds: PASETO's registered `iat`/`exp` are ISO 8601
//! strings, but v4.local payloads are encrypted, so only Verdict ever reads them.
//!
//! Neither function reads a clock or draws an id: the caller passes `now_ms` (and the `jti`), so both
//! are testable. Issuing draws its nonce from the OS, which is fine because issuing is not apply.
//! Revocation is checked elsewhere, from the fields of the returned [`Claims`].
//!
//! Errors never quote the token: it is a credential.

use pasetors::keys::SymmetricKey;
use pasetors::token::UntrustedToken;
use pasetors::version4::LocalToken;
use pasetors::version4::V4;
use pasetors::Local;
use serde::Deserialize;
use serde_json::Map;
use serde_json::Value;

pub use crate::claims::Claims;
pub use crate::claims::RESERVED_CLAIMS;
use crate::keyring::Key;
use crate::keyring::KeyId;
use crate::keyring::KeyRing;
use crate::keyring::RotationPolicy;

/// Longest token [`validate`] reads, in bytes; longer input is refused before any decoding.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Largest claims JSON [`issue`] encrypts, in bytes. Tokens travel in every request's headers, and
/// the largest claims still fit in [`MAX_TOKEN_LEN`] once encoded.
pub const MAX_CLAIMS_LEN: usize = 4 * 1024;

/// What to put in a new token.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IssueRequest {
    /// The subject; must not be empty.
    pub sub: String,
    /// An optional scope restriction.
    pub scope: Option<String>,
    /// Requested lifetime (ms); `None` for the policy's `token_lifetime_ms`, and capped to it.
    pub lifetime_ms: Option<u64>,
    /// The chain of the token this one is re-scoped from; `None` starts a chain at the new `jti`.
    pub aud_chain: Option<String>,
    /// Extra claims, copied into the token as they are.
    pub extra: Map<String, Value>,
}

/// Why a token could not be issued or is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// A required request field is empty.
    #[error("`{field}` is empty; give a non-empty value")]
    MissingField {
        /// The field name.
        field: &'static str,
    },
    /// The requested lifetime is zero or overflows the clock.
    #[error("invalid token lifetime: {reason}")]
    InvalidLifetime {
        /// What was wrong.
        reason: String,
    },
    /// An extra claim uses a reserved name.
    #[error(
        "extra claim `{name}` uses a reserved claim name; rename it (reserved: sub, scope, iat, \
         exp, jti, aud_chain, iss, aud, nbf, kid)"
    )]
    ReservedClaim {
        /// The claim name.
        name: String,
    },
    /// The claims JSON is over [`MAX_CLAIMS_LEN`].
    #[error(
        "token claims are {size} bytes of JSON, more than the {MAX_CLAIMS_LEN} allowed; send fewer \
         or shorter extra claims"
    )]
    ClaimsTooLarge {
        /// Size of the claims JSON.
        size: usize,
    },
    /// The ring has no primary key: no rotation has happened yet.
    #[error(
        "no token key exists yet; rotate the key ring once to create the first keys, then retry"
    )]
    NoPrimaryKey,
    /// Encryption failed (the OS random source failed).
    #[error("token encryption failed (the system random source failed); retry the request")]
    Encrypt,
    /// Not a well-formed Verdict token.
    #[error("malformed token: {reason}; send the token exactly as it was issued")]
    Malformed {
        /// What was wrong.
        reason: String,
    },
    /// The token names a key this node does not hold.
    #[error(
        "token was issued with key `{kid}`, which this node does not hold: the key was retired after \
         its tokens expired, this node has not applied its rotation yet, or the token comes from \
         another cluster; request a new token"
    )]
    UnknownKey {
        /// The key id from the footer.
        kid: KeyId,
    },
    /// Authentication failed: the token was altered or made with another key.
    #[error(
        "token failed authentication with key `{kid}`: it was altered, or made by another cluster \
         with a key of the same id; request a new token"
    )]
    BadMac {
        /// The key id from the footer.
        kid: KeyId,
    },
    /// The token has expired (beyond the allowed clock skew).
    #[error("token expired at {exp_ms} ms since the epoch ({ago_ms} ms ago); request a new token")]
    Expired {
        /// The token's expiry.
        exp_ms: u64,
        /// How long ago, by this node's clock.
        ago_ms: u64,
    },
    /// The token claims to be issued later than this node's clock allows.
    #[error(
        "token was issued at {iat_ms} ms since the epoch, {ahead_ms} ms ahead of this node's clock \
         and beyond the allowed clock skew; synchronise the cluster's clocks (NTP)"
    )]
    IssuedInFuture {
        /// The token's issue time.
        iat_ms: u64,
        /// How far ahead of this node's clock.
        ahead_ms: u64,
    },
}

impl TokenError {
    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingField { .. } => "missing_field",
            Self::InvalidLifetime { .. } => "invalid_lifetime",
            Self::ReservedClaim { .. } => "reserved_claim",
            Self::ClaimsTooLarge { .. } => "claims_too_large",
            Self::NoPrimaryKey => "no_primary_key",
            Self::Encrypt => "token_encryption_failed",
            Self::Malformed { .. } => "malformed_token",
            Self::UnknownKey { .. } => "unknown_key",
            Self::BadMac { .. } => "bad_mac",
            Self::Expired { .. } => "token_expired",
            Self::IssuedInFuture { .. } => "token_issued_in_future",
        }
    }
}

/// Issues a token with the ring's primary key, valid from `now_ms` for the requested lifetime
/// capped to `policy.token_lifetime_ms` (the cap is what lets the ring retire a secondary once
/// that long has passed). `jti` is the token's unique id, drawn by the caller.
pub fn issue(
    ring: &KeyRing,
    policy: &RotationPolicy,
    request: IssueRequest,
    now_ms: u64,
    jti: String,
) -> Result<(String, Claims), TokenError> {
    if request.sub.is_empty() {
        return Err(TokenError::MissingField { field: "sub" });
    }
    if jti.is_empty() {
        return Err(TokenError::MissingField { field: "jti" });
    }
    if request.aud_chain.as_deref() == Some("") {
        return Err(TokenError::MissingField { field: "aud_chain" });
    }
    if let Some(name) = request
        .extra
        .keys()
        .find(|k| RESERVED_CLAIMS.contains(&k.as_str()))
    {
        return Err(TokenError::ReservedClaim { name: name.clone() });
    }
    let lifetime_ms = match request.lifetime_ms {
        Some(0) => {
            return Err(TokenError::InvalidLifetime {
                reason: "`lifetime_ms` is 0; ask for a positive lifetime or omit it".to_string(),
            })
        }
        Some(ms) => ms.min(policy.token_lifetime_ms),
        None => policy.token_lifetime_ms,
    };
    let exp_ms = now_ms
        .checked_add(lifetime_ms)
        .ok_or_else(|| TokenError::InvalidLifetime {
            reason: format!("{now_ms} ms + {lifetime_ms} ms overflows; check the clock"),
        })?;
    let key = ring.primary().ok_or(TokenError::NoPrimaryKey)?;
    let claims = Claims {
        sub: request.sub,
        scope: request.scope,
        iat_ms: now_ms,
        exp_ms,
        aud_chain: request.aud_chain.unwrap_or_else(|| jti.clone()),
        jti,
        extra: request.extra,
    };
    let payload = serde_json::to_vec(&claims).map_err(|_| TokenError::Encrypt)?;
    if payload.len() > MAX_CLAIMS_LEN {
        return Err(TokenError::ClaimsTooLarge {
            size: payload.len(),
        });
    }
    let footer = format!(r#"{{"kid":"{}"}}"#, key.id);
    let secret = symmetric_key(key).map_err(|_| TokenError::Encrypt)?;
    let token = LocalToken::encrypt(&secret, &payload, Some(footer.as_bytes()), None)
        .map_err(|_| TokenError::Encrypt)?;
    Ok((token, claims))
}

/// Validates a token with whichever key of `ring` its footer names (staged, primary or secondary)
/// and returns its claims. Accepts tokens up to `clock_skew_ms` past expiry and issued up to
/// `clock_skew_ms` ahead of `now_ms`. Does not check revocation or scope.
pub fn validate(
    ring: &KeyRing,
    token: &str,
    now_ms: u64,
    clock_skew_ms: u64,
) -> Result<Claims, TokenError> {
    let malformed = |reason: &str| TokenError::Malformed {
        reason: reason.to_string(),
    };
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed {
            reason: format!(
                "it is {} bytes, more than the {MAX_TOKEN_LEN} a Verdict token can be",
                token.len()
            ),
        });
    }
    if !token.starts_with(LocalToken::HEADER) {
        return Err(malformed(if token.starts_with("v4.public.") {
            "it is a `v4.public` token, but Verdict issues `v4.local` tokens"
        } else {
            "it does not start with `v4.local.`"
        }));
    }
    let untrusted = UntrustedToken::<Local, V4>::try_from(token)
        .map_err(|_| malformed("its parts are not valid base64url or are too short"))?;
    let kid = parse_footer(untrusted.untrusted_footer())
        .ok_or_else(|| malformed("its footer is not `{\"kid\":\"<key id>\"}`"))?;
    let key = ring.get(kid).ok_or(TokenError::UnknownKey { kid })?;
    let secret = symmetric_key(key).map_err(|_| TokenError::BadMac { kid })?;
    // The footer is part of the authenticated data, so a kid edited to name another key fails here.
    let trusted = LocalToken::decrypt(&secret, &untrusted, None, None)
        .map_err(|_| TokenError::BadMac { kid })?;
    // Authentic but unreadable claims can only come from another issuer sharing the key.
    let claims: Claims = serde_json::from_str(trusted.payload())
        .map_err(|_| malformed("its claims are not Verdict claims"))?;
    if claims.exp_ms.saturating_add(clock_skew_ms) <= now_ms {
        return Err(TokenError::Expired {
            exp_ms: claims.exp_ms,
            ago_ms: now_ms - claims.exp_ms.min(now_ms),
        });
    }
    if claims.iat_ms > now_ms.saturating_add(clock_skew_ms) {
        return Err(TokenError::IssuedInFuture {
            iat_ms: claims.iat_ms,
            ahead_ms: claims.iat_ms - now_ms,
        });
    }
    Ok(claims)
}

fn symmetric_key(key: &Key) -> Result<SymmetricKey<V4>, pasetors::errors::Error> {
    SymmetricKey::<V4>::from(key.material())
}

/// The key id of a footer `{"kid":"<decimal id>"}`; `None` for anything else.
fn parse_footer(footer: &[u8]) -> Option<KeyId> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Footer<'a> {
        kid: &'a str,
    }
    let footer: Footer<'_> = serde_json::from_slice(footer).ok()?;
    if !footer.kid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    footer.kid.parse().ok().map(KeyId)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const SKEW: u64 = 100;

    fn policy() -> RotationPolicy {
        RotationPolicy {
            token_lifetime_ms: 1000,
            clock_skew_ms: SKEW,
            max_active_keys: 5,
        }
    }

    fn ring() -> KeyRing {
        KeyRing::new()
            .rotate(KeyId(1), [1; 32], Some([0; 32]), 0, &policy())
            .unwrap()
    }

    fn request() -> IssueRequest {
        IssueRequest {
            sub: "alice".to_string(),
            scope: Some("project:7".to_string()),
            extra: json!({"tenant": "acme"}).as_object().unwrap().clone(),
            ..IssueRequest::default()
        }
    }

    fn token_at(ring: &KeyRing, now_ms: u64) -> String {
        issue(ring, &policy(), request(), now_ms, "j-1".to_string())
            .unwrap()
            .0
    }

    fn code(ring: &KeyRing, token: &str, now_ms: u64) -> &'static str {
        validate(ring, token, now_ms, SKEW).unwrap_err().code()
    }

    #[test]
    fn round_trip() {
        let ring = ring();
        let (token, issued) = issue(&ring, &policy(), request(), 50, "j-1".to_string()).unwrap();
        assert!(token.starts_with("v4.local."));
        assert!(token.len() < 400, "{}", token.len());
        let claims = validate(&ring, &token, 60, SKEW).unwrap();
        assert_eq!(claims, issued);
        assert_eq!((claims.iat_ms, claims.exp_ms), (50, 1050));
        assert_eq!(claims.aud_chain, "j-1");
        assert_eq!(claims.extra["tenant"], "acme");
    }

    #[test]
    fn claims_json_uses_the_documented_names() {
        let (_, claims) = issue(&ring(), &policy(), request(), 5, "j".to_string()).unwrap();
        assert_eq!(
            serde_json::to_value(&claims).unwrap(),
            json!({"sub": "alice", "scope": "project:7", "iat": 5, "exp": 1005, "jti": "j",
                   "aud_chain": "j", "tenant": "acme"})
        );
        let dup = r#"{"sub":"a","sub":"b","iat":1,"exp":2,"jti":"j","aud_chain":"j"}"#;
        assert!(serde_json::from_str::<Claims>(dup).is_err());
    }

    #[test]
    fn issue_checks_its_inputs() {
        let (ring, p) = (ring(), policy());
        let mut empty = request();
        empty.sub.clear();
        let err = issue(&ring, &p, empty, 0, "j".into()).unwrap_err();
        assert_eq!(err.code(), "missing_field");
        let err = issue(&ring, &p, request(), 0, String::new()).unwrap_err();
        assert_eq!(err.code(), "missing_field");
        let mut reserved = request();
        reserved.extra.insert("exp".into(), json!(1));
        let err = issue(&ring, &p, reserved, 0, "j".into()).unwrap_err();
        assert_eq!(err.code(), "reserved_claim");
        let mut big = request();
        big.extra
            .insert("blob".into(), json!("x".repeat(MAX_CLAIMS_LEN)));
        let err = issue(&ring, &p, big, 0, "j".into()).unwrap_err();
        assert_eq!(err.code(), "claims_too_large");
        let zero = IssueRequest {
            lifetime_ms: Some(0),
            ..request()
        };
        let err = issue(&ring, &p, zero, 0, "j".into()).unwrap_err();
        assert_eq!(err.code(), "invalid_lifetime");
        let err = issue(&ring, &p, request(), u64::MAX, "j".into()).unwrap_err();
        assert_eq!(err.code(), "invalid_lifetime");
        let err = issue(&KeyRing::new(), &p, request(), 0, "j".into()).unwrap_err();
        assert_eq!(err.code(), "no_primary_key");
    }

    #[test]
    fn lifetime_is_capped_and_chain_is_kept() {
        let long = IssueRequest {
            lifetime_ms: Some(u64::MAX),
            aud_chain: Some("root".to_string()),
            ..request()
        };
        let (_, claims) = issue(&ring(), &policy(), long, 10, "j-2".into()).unwrap();
        assert_eq!(claims.exp_ms, 1010);
        assert_eq!(claims.aud_chain, "root");
    }

    #[test]
    fn largest_claims_fit_in_a_token() {
        let mut big = request();
        let room = MAX_CLAIMS_LEN - serde_json::to_vec(&request().extra).unwrap().len() - 150;
        big.extra.insert("blob".into(), json!("x".repeat(room)));
        let ring = ring();
        let (token, _) = issue(&ring, &policy(), big, 0, "j".into()).unwrap();
        assert!(token.len() <= MAX_TOKEN_LEN);
        assert!(validate(&ring, &token, 0, SKEW).is_ok());
    }

    #[test]
    fn tampered_tokens_fail_authentication() {
        let ring = ring();
        let token = token_at(&ring, 0);
        let (body, footer) = token.rsplit_once('.').unwrap();
        // Flip one character in the middle of the payload.
        let mut bytes = body.as_bytes().to_vec();
        let i = bytes.len() - 40;
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        let tampered = format!("{}.{footer}", String::from_utf8(bytes).unwrap());
        assert_eq!(code(&ring, &tampered, 0), "bad_mac");
        // The footer naming the other key the ring holds: authenticated, so rejected.
        let forged_footer = encode_b64(br#"{"kid":"1"}"#);
        assert_eq!(
            code(&ring, &format!("{body}.{forged_footer}"), 0),
            "bad_mac"
        );
        // Footer removed or garbled.
        assert_eq!(code(&ring, body, 0), "malformed_token");
        let garbled = encode_b64(br#"{"kid":1}"#);
        assert_eq!(
            code(&ring, &format!("{body}.{garbled}"), 0),
            "malformed_token"
        );
    }

    #[test]
    fn key_of_another_ring_fails_authentication() {
        let other = KeyRing::new()
            .rotate(KeyId(1), [7; 32], Some([8; 32]), 0, &policy())
            .unwrap();
        assert_eq!(code(&ring(), &token_at(&other, 0), 0), "bad_mac");
    }

    #[test]
    fn unknown_kid() {
        let ring = ring();
        let token = token_at(&ring, 0);
        let (body, _) = token.rsplit_once('.').unwrap();
        let footer = encode_b64(br#"{"kid":"42"}"#);
        let err = validate(&ring, &format!("{body}.{footer}"), 0, SKEW).unwrap_err();
        assert_eq!(err, TokenError::UnknownKey { kid: KeyId(42) });
    }

    #[test]
    fn expiry_and_future_iat_allow_the_skew() {
        let ring = ring();
        let token = token_at(&ring, 1000);
        assert!(validate(&ring, &token, 2000 + SKEW - 1, SKEW).is_ok());
        assert_eq!(code(&ring, &token, 2000 + SKEW), "token_expired");
        assert!(validate(&ring, &token, 1000 - SKEW, SKEW).is_ok());
        assert_eq!(
            code(&ring, &token, 1000 - SKEW - 1),
            "token_issued_in_future"
        );
    }

    #[test]
    fn every_key_state_validates() {
        let p = policy();
        let ring0 = ring();
        let from_primary0 = token_at(&ring0, 0);
        let ring1 = ring0.rotate(KeyId(2), [2; 32], None, 10, &p).unwrap();
        // Key 0 is now secondary, key 1 primary, key 2 staged.
        let from_primary1 = token_at(&ring1, 10);
        assert!(validate(&ring1, &from_primary0, 10, SKEW).is_ok());
        assert!(validate(&ring0, &from_primary1, 10, SKEW).is_ok(), "staged");
    }

    #[test]
    fn malformed_input_is_refused_without_panicking() {
        let ring = ring();
        let token = token_at(&ring, 0);
        let (_, rest) = token.split_at(LocalToken::HEADER.len());
        let huge = format!("v4.local.{}", "A".repeat(MAX_TOKEN_LEN));
        let cases = [
            String::new(),
            "garbage".to_string(),
            "v4.local.".to_string(),
            "v4.local..".to_string(),
            "v4.local.AAAA".to_string(),
            "v4.local.!!!!.e30".to_string(),
            format!("v2.local.{rest}"),
            format!("v4.public.{rest}"),
            format!("{token}.extra"),
            huge,
        ];
        for case in &cases {
            assert_eq!(code(&ring, case, 0), "malformed_token", "{case:.40}");
        }
        let err = validate(&ring, &cases[7], 0, SKEW).unwrap_err();
        assert!(err.to_string().contains("v4.public"), "{err}");
    }

    #[test]
    fn messages_are_lowercase_and_never_quote_the_token() {
        let ring = ring();
        let token = token_at(&ring, 0);
        let err = validate(&ring, &format!("x{token}"), 0, SKEW).unwrap_err();
        let message = err.to_string();
        assert!(!message.contains(&token[10..30]));
        assert!(message.starts_with(|c: char| c.is_lowercase()));
    }

    fn encode_b64(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            }
        }
        out
    }
}
