//! API credentials: who may write, read and ask. Replicated state, so every node agrees and a revoked
//! credential stops working everywhere at the version that revoked it.
//!
//! A credential is an id, a name, scopes, and the argon2id hash of its secret (PHC string). The
//! secret is shown once, at creation, as `<id>.<secret>`; it is hashed on the node that receives the
//! request (random salt from OS entropy) and only the hash enters the log. Verifying is deliberately
//! slow; the server remembers secrets it has verified (keyed by a digest, never the secret).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use serde::Serialize;

use crate::error::EngineError;
use crate::error::ErrorCode;

/// Most scopes on one credential.
pub const MAX_SCOPES: usize = 32;
/// Longest credential name, in bytes.
pub const MAX_NAME_LEN: usize = 200;
/// Longest policy-id prefix or entity type in a scope, in bytes.
pub const MAX_SCOPE_ARG_LEN: usize = 256;
/// The id of the bootstrap admin credential.
pub const BOOTSTRAP_ID: &str = "admin";

/// What a credential may do. `admin` covers everything; the others are exact.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Scope {
    /// Everything, including credentials, keys and membership.
    Admin,
    /// Write policies; with a prefix, only policies whose id starts with it (delegated
    /// administration per tenant). The schema and whole-set replacement need no prefix.
    PolicyWrite {
        /// Only ids starting with this, if set.
        prefix: Option<String>,
    },
    /// Write entities; with a type, only entities of that type (e.g. an agent pushing host facts).
    /// Replacing all entities needs no type.
    EntityWrite {
        /// Only entities of this Cedar type (e.g. `Host` or `Ns::Host`), if set.
        entity_type: Option<String>,
    },
    /// Submit token revocations.
    Revoke,
    /// Issue tokens.
    TokenIssue,
    /// Read policies, schema, entities, keys (never material), revocations, cluster status, watch.
    Read,
    /// Ask for decisions and introspect tokens (when the node requires it).
    Decide,
}

impl Scope {
    /// Parses the text form: `admin`, `policy:write`, `policy:write:<id prefix>`, `entity:write`,
    /// `entity:write:<Type>`, `revoke`, `token:issue`, `read`, `decide`.
    pub fn parse(text: &str) -> Result<Scope, EngineError> {
        let bad = |why: &str| {
            EngineError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "scope `{text}` {why}; scopes are admin, policy:write[:<policy id prefix>], \
                     entity:write[:<entity type>], revoke, token:issue, read, decide"
                ),
            )
        };
        let arg = |rest: &str| -> Result<Option<String>, EngineError> {
            if rest.is_empty() {
                return Err(bad("has an empty argument after the second `:`"));
            }
            if rest.len() > MAX_SCOPE_ARG_LEN || rest.chars().any(char::is_control) {
                return Err(bad(
                    "has an argument that is too long or holds control characters",
                ));
            }
            Ok(Some(rest.to_string()))
        };
        Ok(match text {
            "admin" => Scope::Admin,
            "policy:write" => Scope::PolicyWrite { prefix: None },
            "entity:write" => Scope::EntityWrite { entity_type: None },
            "revoke" => Scope::Revoke,
            "token:issue" => Scope::TokenIssue,
            "read" => Scope::Read,
            "decide" => Scope::Decide,
            other => {
                if let Some(rest) = other.strip_prefix("policy:write:") {
                    Scope::PolicyWrite { prefix: arg(rest)? }
                } else if let Some(rest) = other.strip_prefix("entity:write:") {
                    Scope::EntityWrite {
                        entity_type: arg(rest)?,
                    }
                } else {
                    return Err(bad("is not a scope"));
                }
            }
        })
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Admin => f.write_str("admin"),
            Scope::PolicyWrite { prefix: None } => f.write_str("policy:write"),
            Scope::PolicyWrite { prefix: Some(p) } => write!(f, "policy:write:{p}"),
            Scope::EntityWrite { entity_type: None } => f.write_str("entity:write"),
            Scope::EntityWrite {
                entity_type: Some(t),
            } => write!(f, "entity:write:{t}"),
            Scope::Revoke => f.write_str("revoke"),
            Scope::TokenIssue => f.write_str("token:issue"),
            Scope::Read => f.write_str("read"),
            Scope::Decide => f.write_str("decide"),
        }
    }
}

/// What a request needs, as the server derives it from the route (and, for writes, the ids and
/// types it touches).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need<'a> {
    /// Only `admin`.
    Admin,
    /// `read`.
    Read,
    /// `decide`.
    Decide,
    /// `revoke`.
    Revoke,
    /// `token:issue`.
    TokenIssue,
    /// Writing these policy ids: each must be covered by some `policy:write` scope.
    Policies(&'a [&'a str]),
    /// Replacing the whole policy set, or the schema: an unlimited `policy:write`.
    AllPolicies,
    /// Writing entities of these types: each must be covered by some `entity:write` scope.
    EntityTypes(&'a [&'a str]),
    /// Replacing all entities: an unlimited `entity:write`.
    AllEntities,
}

impl std::fmt::Display for Need<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Need::Admin => f.write_str("the `admin` scope"),
            Need::Read => f.write_str("the `read` scope"),
            Need::Decide => f.write_str("the `decide` scope"),
            Need::Revoke => f.write_str("the `revoke` scope"),
            Need::TokenIssue => f.write_str("the `token:issue` scope"),
            Need::Policies(ids) => write!(
                f,
                "a `policy:write` scope covering policy id(s) {}",
                quoted(ids)
            ),
            Need::AllPolicies => f.write_str("an unlimited `policy:write` scope"),
            Need::EntityTypes(types) => write!(
                f,
                "an `entity:write` scope covering entity type(s) {}",
                quoted(types)
            ),
            Need::AllEntities => f.write_str("an unlimited `entity:write` scope"),
        }
    }
}

fn quoted(items: &[&str]) -> String {
    let shown: Vec<String> = items.iter().take(5).map(|i| format!("`{i}`")).collect();
    let more = items.len().saturating_sub(5);
    if more > 0 {
        format!("{} and {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

/// One stored credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    /// Its id, the part before the `.` of the presented secret.
    pub id: String,
    /// A human name (who or what holds it).
    pub name: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
    /// argon2id PHC string of the secret.
    pub hash: String,
    /// When it was created (the leader's stamped time, ms since the epoch).
    pub created_ms: u64,
    /// The log index that created it.
    pub version: u64,
}

impl Credential {
    /// Whether its scopes satisfy `need`.
    pub fn allows(&self, need: Need<'_>) -> bool {
        if self.scopes.contains(&Scope::Admin) {
            return true;
        }
        let has = |s: &Scope| self.scopes.contains(s);
        match need {
            Need::Admin => false,
            Need::Read => has(&Scope::Read),
            Need::Decide => has(&Scope::Decide),
            Need::Revoke => has(&Scope::Revoke),
            Need::TokenIssue => has(&Scope::TokenIssue),
            Need::AllPolicies => has(&Scope::PolicyWrite { prefix: None }),
            Need::AllEntities => has(&Scope::EntityWrite { entity_type: None }),
            Need::Policies(ids) => ids.iter().all(|id| {
                self.scopes.iter().any(|s| match s {
                    Scope::PolicyWrite { prefix: None } => true,
                    Scope::PolicyWrite { prefix: Some(p) } => id.starts_with(p.as_str()),
                    _ => false,
                })
            }),
            Need::EntityTypes(types) => types.iter().all(|t| {
                self.scopes.iter().any(|s| match s {
                    Scope::EntityWrite { entity_type: None } => true,
                    Scope::EntityWrite {
                        entity_type: Some(want),
                    } => want == t,
                    _ => false,
                })
            }),
        }
    }
}

/// The credential table of a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    by_id: BTreeMap<String, Arc<Credential>>,
    /// Set by the first credential ever created: from then on the API requires credentials, even
    /// if every credential is later revoked (revoking the last one never opens the node).
    enabled: bool,
    /// Whether the bootstrap admin was ever created (a later bootstrap is a no-op).
    bootstrapped: bool,
}

impl Credentials {
    /// The credential with this id.
    pub fn get(&self, id: &str) -> Option<&Arc<Credential>> {
        self.by_id.get(id)
    }

    /// Every credential, by id.
    pub fn list(&self) -> impl Iterator<Item = &Arc<Credential>> {
        self.by_id.values()
    }

    /// How many exist.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether none exist.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Whether credentials were ever created: the API then requires them.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether the bootstrap admin was ever created.
    pub fn bootstrapped(&self) -> bool {
        self.bootstrapped
    }

    /// Checks a new credential; the same checks run before proposing and in apply.
    pub fn check_new(&self, c: &Credential) -> Result<(), EngineError> {
        check_id(&c.id)?;
        if self.by_id.contains_key(&c.id) {
            return Err(EngineError::new(
                ErrorCode::InvalidRequest,
                format!("a credential `{}` exists already", c.id),
            ));
        }
        if c.name.len() > MAX_NAME_LEN || c.name.chars().any(char::is_control) {
            return Err(EngineError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "a credential name is at most {MAX_NAME_LEN} bytes, without control characters"
                ),
            ));
        }
        if c.scopes.is_empty() || c.scopes.len() > MAX_SCOPES {
            return Err(EngineError::new(
                ErrorCode::MissingField,
                format!("a credential needs 1 to {MAX_SCOPES} scopes, e.g. `read` or `policy:write:tenant-a/`"),
            ));
        }
        if !c.hash.starts_with("$argon2id$") {
            return Err(EngineError::new(
                ErrorCode::InvalidRequest,
                "a credential's secret hash must be an argon2id PHC string",
            ));
        }
        Ok(())
    }

    /// Adds a checked credential.
    pub fn insert(&mut self, c: Credential) {
        self.enabled = true;
        if c.id == BOOTSTRAP_ID {
            self.bootstrapped = true;
        }
        self.by_id.insert(c.id.clone(), Arc::new(c));
    }

    /// Marks the bootstrap as done without creating anything (a bootstrap after credentials were
    /// created some other way).
    pub fn mark_bootstrapped(&mut self) {
        self.bootstrapped = true;
    }

    /// Revokes `id`. Refuses to revoke the last credential with `admin`: nobody could manage
    /// credentials any more.
    pub fn revoke(&mut self, id: &str) -> Result<(), EngineError> {
        let Some(c) = self.by_id.get(id) else {
            return Err(EngineError::new(
                ErrorCode::NotFound,
                format!("no credential `{id}`; `GET /v1/credentials` lists them"),
            ));
        };
        if c.scopes.contains(&Scope::Admin) {
            let admins = self
                .by_id
                .values()
                .filter(|c| c.scopes.contains(&Scope::Admin))
                .count();
            if admins <= 1 {
                return Err(EngineError::new(
                    ErrorCode::InvalidRequest,
                    format!(
                        "`{id}` is the last credential with the `admin` scope; create another \
                         admin credential first, then revoke this one"
                    ),
                ));
            }
        }
        self.by_id.remove(id);
        Ok(())
    }

    /// The persisted form.
    pub fn to_persisted(&self) -> PersistedCredentials {
        PersistedCredentials {
            credentials: self.by_id.values().map(|c| (**c).clone()).collect(),
            enabled: self.enabled,
            bootstrapped: self.bootstrapped,
        }
    }

    /// Rebuilds from the persisted form.
    pub fn from_persisted(p: &PersistedCredentials) -> Self {
        Self {
            by_id: p
                .credentials
                .iter()
                .map(|c| (c.id.clone(), Arc::new(c.clone())))
                .collect(),
            enabled: p.enabled,
            bootstrapped: p.bootstrapped,
        }
    }
}

/// The credential part of a persisted state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedCredentials {
    /// Every credential.
    pub credentials: Vec<Credential>,
    /// See [`Credentials::enabled`].
    pub enabled: bool,
    /// See [`Credentials::bootstrapped`].
    pub bootstrapped: bool,
}

/// A credential id: 1 to 64 of `A-Z a-z 0-9 _ -`.
pub fn check_id(id: &str) -> Result<(), EngineError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(EngineError::new(
            ErrorCode::InvalidId,
            format!(
                "credential id `{id}` must be 1 to 64 characters of A-Z, a-z, 0-9, `_` and `-`"
            ),
        ))
    }
}

/// Splits a presented credential `<id>.<secret>`.
pub fn split_presented(presented: &str) -> Option<(&str, &str)> {
    let (id, secret) = presented.split_once('.')?;
    if check_id(id).is_err() || secret.is_empty() {
        return None;
    }
    Some((id, secret))
}

/// Hashes `secret` with argon2id (the crate's default cost: 19 MiB, 2 passes) and `salt` (16
/// random bytes the caller draws from OS entropy).
pub fn hash_secret(secret: &str, salt: &[u8; 16]) -> Result<String, EngineError> {
    use argon2::password_hash::PasswordHasher;
    use argon2::password_hash::SaltString;
    let salt = SaltString::encode_b64(salt)
        .map_err(|e| EngineError::new(ErrorCode::InvalidRequest, format!("salt: {e}")))?;
    argon2::Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| EngineError::new(ErrorCode::InvalidRequest, format!("hashing: {e}")))
}

/// Whether `secret` matches the argon2 PHC string `hash` (constant time in the secret).
pub fn verify_secret(secret: &str, hash: &str) -> bool {
    use argon2::password_hash::PasswordHash;
    use argon2::password_hash::PasswordVerifier;
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    argon2::Argon2::default()
        .verify_password(secret.as_bytes(), &parsed)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(scopes: &[&str]) -> Credential {
        Credential {
            id: "c1".into(),
            name: "t".into(),
            scopes: scopes.iter().map(|s| Scope::parse(s).unwrap()).collect(),
            hash: "$argon2id$x".into(),
            created_ms: 0,
            version: 1,
        }
    }

    #[test]
    fn scopes_round_trip_and_bad_ones_say_what_exists() {
        for s in [
            "admin",
            "policy:write",
            "policy:write:tenant-a/",
            "entity:write",
            "entity:write:Ns::Host",
            "revoke",
            "token:issue",
            "read",
            "decide",
        ] {
            assert_eq!(Scope::parse(s).unwrap().to_string(), s);
        }
        for bad in ["", "write", "policy:write:", "policy:read", "admin:x"] {
            let e = Scope::parse(bad).unwrap_err();
            assert!(e.detail.contains("scopes are admin"), "{}", e.detail);
        }
    }

    #[test]
    fn prefix_and_type_limits_hold() {
        let tenant = cred(&["policy:write:tenant-a/"]);
        assert!(tenant.allows(Need::Policies(&["tenant-a/p1", "tenant-a/p2"])));
        assert!(!tenant.allows(Need::Policies(&["tenant-a/p1", "tenant-b/p1"])));
        assert!(!tenant.allows(Need::AllPolicies));
        assert!(!tenant.allows(Need::Read));
        let agent = cred(&["entity:write:Host", "read"]);
        assert!(agent.allows(Need::EntityTypes(&["Host"])));
        assert!(!agent.allows(Need::EntityTypes(&["Host", "User"])));
        assert!(!agent.allows(Need::AllEntities));
        assert!(agent.allows(Need::Read));
        assert!(!agent.allows(Need::Decide));
        let admin = cred(&["admin"]);
        assert!(admin.allows(Need::Admin) && admin.allows(Need::AllEntities));
        assert!(!cred(&["policy:write"]).allows(Need::Admin));
    }

    #[test]
    fn the_last_admin_cannot_be_revoked_and_revoking_all_keeps_auth_on() {
        let mut t = Credentials::default();
        let mut a = cred(&["admin"]);
        a.id = "a".into();
        t.insert(a.clone());
        let e = t.revoke("a").unwrap_err();
        assert!(e.detail.contains("last credential"), "{}", e.detail);
        let mut b = cred(&["admin"]);
        b.id = "b".into();
        t.insert(b);
        t.revoke("a").unwrap();
        let mut r = cred(&["read"]);
        r.id = "r".into();
        t.insert(r);
        t.revoke("r").unwrap();
        assert!(t.enabled());
        assert_eq!(t.revoke("nope").unwrap_err().code, ErrorCode::NotFound);
        assert!(t.check_new(&a).is_ok());
        let mut dup = cred(&["read"]);
        dup.id = "b".into();
        assert!(t.check_new(&dup).is_err());
    }

    #[test]
    fn secrets_hash_and_verify() {
        let h = hash_secret("s3cret", &[7u8; 16]).unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_secret("s3cret", &h));
        assert!(!verify_secret("s3cret!", &h));
        assert!(!verify_secret("s3cret", "not a hash"));
        assert_eq!(split_presented("abc.def.g"), Some(("abc", "def.g")));
        assert_eq!(split_presented("abc"), None);
        assert_eq!(split_presented("a b.c"), None);
        assert_eq!(split_presented("abc."), None);
    }
}
