//! The claims a Verdict token carries, and their JSON form (the token's encrypted payload).
//!
//! Times are milliseconds since the epoch; extra claims sit beside the reserved ones. The JSON is
//! read by hand rather than with `#[serde(flatten)]`, because this runs on every validation.

use serde::de::MapAccess;
use serde::de::Visitor;
use serde::ser::SerializeMap;
use serde::Deserialize;
use serde::Deserializer;
use serde::Serialize;
use serde::Serializer;
use serde_json::Map;
use serde_json::Value;

/// Claim names extra claims may not use: Verdict's own, and PASETO's registered ones (a client
/// could expect `nbf` or `aud` to be enforced, and they are not).
pub const RESERVED_CLAIMS: &[&str] = &[
    "sub",
    "scope",
    "iat",
    "exp",
    "jti",
    "aud_chain",
    "iss",
    "aud",
    "nbf",
    "kid",
];

/// The claims a token carries. Serialised as JSON with `iat` and `exp` in ms since the epoch and the
/// extra claims flattened beside the reserved ones.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    /// Who the token speaks for.
    pub sub: String,
    /// What the token is restricted to, if anything (checked by the caller, not here).
    pub scope: Option<String>,
    /// When the token was issued (ms since the epoch); revocation compares it with cut-off times.
    pub iat_ms: u64,
    /// When the token expires (ms since the epoch).
    pub exp_ms: u64,
    /// The token's unique id, for revoking this one token.
    pub jti: String,
    /// The `jti` of the token this one descends from (its own for an original token), for revoking
    /// a token and every token re-scoped from it.
    pub aud_chain: String,
    /// Other claims, none with a name in [`RESERVED_CLAIMS`].
    pub extra: Map<String, Value>,
}

impl Claims {
    /// What a revocation check reads from these claims.
    pub fn facts(&self) -> crate::revocation::TokenFacts<'_> {
        crate::revocation::TokenFacts {
            jti: &self.jti,
            aud_chain: &self.aud_chain,
            sub: &self.sub,
            scope: self.scope.as_deref(),
            iat_ms: self.iat_ms,
        }
    }
}
impl Serialize for Claims {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("sub", &self.sub)?;
        if let Some(scope) = &self.scope {
            map.serialize_entry("scope", scope)?;
        }
        map.serialize_entry("iat", &self.iat_ms)?;
        map.serialize_entry("exp", &self.exp_ms)?;
        map.serialize_entry("jti", &self.jti)?;
        map.serialize_entry("aud_chain", &self.aud_chain)?;
        for (name, value) in &self.extra {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

// By hand rather than `#[serde(flatten)]`: flatten buffers every value before matching names, and
// this runs on every validation.
impl<'de> Deserialize<'de> for Claims {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ClaimsVisitor)
    }
}

struct ClaimsVisitor;

impl<'de> Visitor<'de> for ClaimsVisitor {
    type Value = Claims;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object of token claims")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Claims, A::Error> {
        use serde::de::Error;
        fn once<T, E: Error>(slot: &mut Option<T>, value: T, name: &'static str) -> Result<(), E> {
            match slot.replace(value) {
                Some(_) => Err(E::duplicate_field(name)),
                None => Ok(()),
            }
        }
        let (mut sub, mut scope, mut iat, mut exp, mut jti, mut chain) =
            (None, None, None, None, None, None);
        let mut extra = Map::new();
        while let Some(name) = map.next_key::<String>()? {
            match name.as_str() {
                "sub" => once(&mut sub, map.next_value::<String>()?, "sub")?,
                "scope" => once(&mut scope, map.next_value::<Option<String>>()?, "scope")?,
                "iat" => once(&mut iat, map.next_value::<u64>()?, "iat")?,
                "exp" => once(&mut exp, map.next_value::<u64>()?, "exp")?,
                "jti" => once(&mut jti, map.next_value::<String>()?, "jti")?,
                "aud_chain" => once(&mut chain, map.next_value::<String>()?, "aud_chain")?,
                _ => {
                    let value = map.next_value::<Value>()?;
                    if extra.insert(name, value).is_some() {
                        return Err(A::Error::custom("duplicate extra claim"));
                    }
                }
            }
        }
        Ok(Claims {
            sub: sub.ok_or_else(|| A::Error::missing_field("sub"))?,
            scope: scope.flatten(),
            iat_ms: iat.ok_or_else(|| A::Error::missing_field("iat"))?,
            exp_ms: exp.ok_or_else(|| A::Error::missing_field("exp"))?,
            jti: jti.ok_or_else(|| A::Error::missing_field("jti"))?,
            aud_chain: chain.ok_or_else(|| A::Error::missing_field("aud_chain"))?,
            extra,
        })
    }
}
