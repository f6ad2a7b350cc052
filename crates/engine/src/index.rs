//! The scope index: which policies can possibly apply to a request, found with a handful of hash
//! look-ups instead of evaluating every policy.
//!
//! Each policy is filed under one key taken from its scope, preferring the most selective part:
//! the resource (`==` or `in` an entity, else `is` a type), then the principal, then the action(s).
//! A policy with no scope constraint at all goes in the shared `Unscoped` bucket. A request collects
//! the keys it could match (its resource, the resource's ancestors and type; likewise principal and
//! action) and evaluates only the buckets under them. The filter may let through policies that do
//! not apply (Cedar still checks the whole scope); it never drops one that does.
//!
//! Changing one policy rebuilds only its bucket.

use std::sync::Arc;

use cedar_policy::ActionConstraint;
use cedar_policy::EntityTypeName;
use cedar_policy::EntityUid;
use cedar_policy::PrincipalConstraint;
use cedar_policy::ResourceConstraint;

use crate::policy::StoredPolicy;

/// A bucket key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IndexKey {
    /// `resource == E` or `resource in E` (or `is T in E`).
    Resource(EntityUid),
    /// `resource is T`.
    ResourceType(EntityTypeName),
    /// `principal == E` or `principal in E` (or `is T in E`).
    Principal(EntityUid),
    /// `principal is T`.
    PrincipalType(EntityTypeName),
    /// `action == A` or `action in [A, …]`.
    Action(EntityUid),
    /// No scope constraint.
    Unscoped,
}

/// The policies filed under one key.
#[derive(Debug, Default)]
pub struct Bucket {
    /// The policies, sorted by id.
    pub policies: Vec<Arc<StoredPolicy>>,
}

impl Bucket {
    /// Builds a bucket from policies sorted by id.
    pub fn new(policies: Vec<Arc<StoredPolicy>>) -> Self {
        Self { policies }
    }
}

/// A persistent hash map with a fast, randomly seeded hasher (the keys are user-controlled ids, so
/// the seed is random; SipHash's extra strength is not needed behind that).
pub type FastMap<K, V> =
    imbl::GenericHashMap<K, V, foldhash::fast::RandomState, imbl::shared_ptr::DefaultSharedPtr>;

/// Buckets by key, one map per scope dimension, so look-ups borrow the request's uids instead of
/// building keys.
#[derive(Clone, Default)]
pub struct ScopeIndex {
    resource: FastMap<EntityUid, Arc<Bucket>>,
    resource_type: FastMap<EntityTypeName, Arc<Bucket>>,
    principal: FastMap<EntityUid, Arc<Bucket>>,
    principal_type: FastMap<EntityTypeName, Arc<Bucket>>,
    action: FastMap<EntityUid, Arc<Bucket>>,
    unscoped: Option<Arc<Bucket>>,
}

impl ScopeIndex {
    /// The bucket under a key.
    pub fn get(&self, key: &IndexKey) -> Option<&Arc<Bucket>> {
        match key {
            IndexKey::Resource(u) => self.resource.get(u),
            IndexKey::ResourceType(t) => self.resource_type.get(t),
            IndexKey::Principal(u) => self.principal.get(u),
            IndexKey::PrincipalType(t) => self.principal_type.get(t),
            IndexKey::Action(u) => self.action.get(u),
            IndexKey::Unscoped => self.unscoped.as_ref(),
        }
    }

    /// Sets (or, with `None`, removes) the bucket under a key.
    pub fn set(&mut self, key: IndexKey, bucket: Option<Arc<Bucket>>) {
        fn put<K: std::hash::Hash + Eq + Clone>(
            map: &mut FastMap<K, Arc<Bucket>>,
            k: K,
            b: Option<Arc<Bucket>>,
        ) {
            match b {
                Some(b) => {
                    map.insert(k, b);
                }
                None => {
                    map.remove(&k);
                }
            }
        }
        match key {
            IndexKey::Resource(u) => put(&mut self.resource, u, bucket),
            IndexKey::ResourceType(t) => put(&mut self.resource_type, t, bucket),
            IndexKey::Principal(u) => put(&mut self.principal, u, bucket),
            IndexKey::PrincipalType(t) => put(&mut self.principal_type, t, bucket),
            IndexKey::Action(u) => put(&mut self.action, u, bucket),
            IndexKey::Unscoped => self.unscoped = bucket,
        }
    }

    /// The buckets a request could match, de-duplicated: a handful of hash look-ups on borrowed uids,
    /// skipping dimensions no policy is filed under.
    pub fn candidates<'a>(
        &'a self,
        principal: (&EntityUid, &[EntityUid]),
        action: (&EntityUid, &[EntityUid]),
        resource: (&EntityUid, &[EntityUid]),
    ) -> Vec<&'a Arc<Bucket>> {
        let mut out: Vec<&'a Arc<Bucket>> = Vec::with_capacity(4);
        let mut push = |b: Option<&'a Arc<Bucket>>| {
            if let Some(b) = b {
                if !out.iter().any(|x| Arc::ptr_eq(x, b)) {
                    out.push(b);
                }
            }
        };
        for (map, (uid, ancestors)) in [
            (&self.resource, resource),
            (&self.principal, principal),
            (&self.action, action),
        ] {
            if map.is_empty() {
                continue;
            }
            push(map.get(uid));
            for a in ancestors {
                push(map.get(a));
            }
        }
        if !self.resource_type.is_empty() {
            push(self.resource_type.get(resource.0.type_name()));
        }
        if !self.principal_type.is_empty() {
            push(self.principal_type.get(principal.0.type_name()));
        }
        push(self.unscoped.as_ref());
        out
    }
}

/// The keys a policy is filed under (more than one only for `action in [A, B]`).
pub fn keys_of(policy: &StoredPolicy) -> Vec<IndexKey> {
    match policy.policy.resource_constraint() {
        ResourceConstraint::Eq(e) | ResourceConstraint::In(e) | ResourceConstraint::IsIn(_, e) => {
            return vec![IndexKey::Resource(e)]
        }
        ResourceConstraint::Is(t) => return vec![IndexKey::ResourceType(t)],
        ResourceConstraint::Any => {}
    }
    match policy.policy.principal_constraint() {
        PrincipalConstraint::Eq(e)
        | PrincipalConstraint::In(e)
        | PrincipalConstraint::IsIn(_, e) => return vec![IndexKey::Principal(e)],
        PrincipalConstraint::Is(t) => return vec![IndexKey::PrincipalType(t)],
        PrincipalConstraint::Any => {}
    }
    match policy.policy.action_constraint() {
        ActionConstraint::Eq(a) => vec![IndexKey::Action(a)],
        ActionConstraint::In(list) if !list.is_empty() => {
            let mut keys: Vec<IndexKey> = list.into_iter().map(IndexKey::Action).collect();
            keys.sort();
            keys.dedup();
            keys
        }
        // `action in []` matches nothing; file it anyway so it is stored and listed.
        ActionConstraint::In(_) | ActionConstraint::Any => vec![IndexKey::Unscoped],
    }
}
