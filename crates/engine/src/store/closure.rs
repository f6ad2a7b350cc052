//! Ancestor closure, recomputed once per write: the entities a write moved (new, or with other
//! parents) and their descendants are ordered parents-first (Kahn's algorithm) and each gets its
//! closure from its parents' final closures exactly once. The old way, re-closing every descendant
//! on each insert, cost a chain of 1,000 sent leaf first 74 s; this is linear in the closure
//! entries the write produces, and those are bounded by [`ClosureLimits`].
//!
//! Entities whose parents share one closure share one allocation of it (the children of a hub all
//! hold the same `Arc`), so a large group costs one set, not one per member.

use std::collections::HashMap;
use std::collections::VecDeque;
use std::sync::Arc;

use cedar_policy::EntityUid;

use crate::entity::MAX_ANCESTORS_PER_ENTITY;
use crate::entity::MAX_CLOSURE_WORK_PER_WRITE;
use crate::error::EngineError;
use crate::error::ErrorCode;
use crate::ids::truncate;
use crate::store::entities::EntityStore;

/// How much closure one write may produce. Constants, not configuration: every member must refuse
/// exactly the writes the others refuse, or their states would diverge.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClosureLimits {
    /// Most ancestors one entity may have (`422 too_many_ancestors`).
    pub max_ancestors: usize,
    /// Most closure entries one write may read and produce (`413 closure_too_large`).
    pub max_work: usize,
}

impl ClosureLimits {
    /// The limits client writes run under.
    pub(crate) const WRITE: Self = Self {
        max_ancestors: MAX_ANCESTORS_PER_ENTITY,
        max_work: MAX_CLOSURE_WORK_PER_WRITE,
    };
    /// No limit: deletes (closures only shrink) and loading a state that was accepted before.
    pub(crate) const NONE: Self = Self {
        max_ancestors: usize::MAX,
        max_work: usize::MAX,
    };
}

/// Recomputes the closure of `seeds` and of all their descendants, parents first. Refuses a
/// cycle or a write beyond `limits`; on a refusal the store is left part-way, so callers work
/// on a copy (see [`EntityStore`]'s all-or-nothing writes).
pub(crate) fn reclose(
    store: &mut EntityStore,
    seeds: Vec<EntityUid>,
    limits: ClosureLimits,
) -> Result<(), EngineError> {
    let affected = descendants(store, seeds, limits)?;
    let position: HashMap<&EntityUid, usize> =
        affected.iter().enumerate().map(|(i, u)| (u, i)).collect();
    // Parents inside the affected set each hold one unfinished dependency of their child.
    let mut waiting = vec![0usize; affected.len()];
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); affected.len()];
    for (i, uid) in affected.iter().enumerate() {
        let Some(stored) = store.get(uid) else {
            continue;
        };
        for p in stored.parents.iter() {
            if let Some(&at) = position.get(p) {
                if let (Some(w), Some(kids)) = (waiting.get_mut(i), children.get_mut(at)) {
                    *w += 1;
                    kids.push(i);
                }
            }
        }
    }
    let mut ready: VecDeque<usize> = (0..affected.len())
        .filter(|&i| waiting.get(i) == Some(&0))
        .collect();
    let mut shared: HashMap<Arc<[EntityUid]>, Arc<[EntityUid]>> = HashMap::new();
    let mut work = 0usize;
    let mut done = 0usize;
    while let Some(i) = ready.pop_front() {
        done += 1;
        let Some(uid) = affected.get(i) else {
            continue;
        };
        if let Some(stored) = store.get(uid).cloned() {
            let ancestors = match shared.get(&stored.parents) {
                Some(same) => same.clone(),
                None => {
                    let closed = closure_of(store, uid, &stored.parents, limits, &mut work)?;
                    shared.insert(stored.parents.clone(), closed.clone());
                    closed
                }
            };
            work = work.saturating_add(1);
            if work > limits.max_work {
                return Err(too_large(limits));
            }
            if ancestors != stored.ancestors {
                store.put(Arc::new(stored.with_ancestors(ancestors)));
            }
        }
        for &k in children.get(i).map(Vec::as_slice).unwrap_or(&[]) {
            if let Some(w) = waiting.get_mut(k) {
                *w -= 1;
                if *w == 0 {
                    ready.push_back(k);
                }
            }
        }
    }
    if done < affected.len() {
        let on_cycle = waiting
            .iter()
            .zip(&affected)
            .find(|(w, _)| **w > 0)
            .map(|(_, u)| truncate(&u.to_string(), 120))
            .unwrap_or_default();
        return Err(EngineError::new(
            ErrorCode::EntityInvalid,
            format!(
                "entity `{on_cycle}` would be its own ancestor; the parent hierarchy must not have cycles"
            ),
        ));
    }
    Ok(())
}

/// The seeds and everything below them, each once, in a deterministic order (sorted), so that
/// which entity an error names does not depend on hashing.
fn descendants(
    store: &EntityStore,
    seeds: Vec<EntityUid>,
    limits: ClosureLimits,
) -> Result<Vec<EntityUid>, EngineError> {
    let mut seen: std::collections::HashSet<EntityUid> = seeds.iter().cloned().collect();
    let mut queue: VecDeque<EntityUid> = seeds.into();
    while let Some(uid) = queue.pop_front() {
        for child in store.children_of(&uid) {
            if !seen.contains(&child) {
                // Every descendant gains at least one closure entry: count it before walking on.
                if seen.len() >= limits.max_work {
                    return Err(too_large(limits));
                }
                seen.insert(child.clone());
                queue.push_back(child);
            }
        }
    }
    let mut all: Vec<EntityUid> = seen.into_iter().collect();
    all.sort();
    Ok(all)
}

/// The closure implied by `parents` (each parent and its final closure), sorted; counts what it
/// reads into `work` and stops as soon as a limit is passed.
fn closure_of(
    store: &EntityStore,
    uid: &EntityUid,
    parents: &[EntityUid],
    limits: ClosureLimits,
    work: &mut usize,
) -> Result<Arc<[EntityUid]>, EngineError> {
    // What is read is bounded by `max_work`, so collecting before de-duplicating is bounded too.
    let mut all: Vec<EntityUid> = Vec::new();
    for p in parents {
        let above = store.get(p).map(|e| e.ancestors.clone());
        let above: &[EntityUid] = above.as_deref().unwrap_or(&[]);
        *work = work.saturating_add(above.len() + 1);
        if *work > limits.max_work {
            return Err(too_large(limits));
        }
        all.push(p.clone());
        all.extend(above.iter().cloned());
    }
    all.sort_unstable();
    all.dedup();
    if all.len() > limits.max_ancestors {
        return Err(EngineError::new(
            ErrorCode::TooManyAncestors,
            format!(
                "entity `{}` would have {} ancestors; the limit per entity is {}: \
                 flatten the group hierarchy or give it fewer parents",
                truncate(&uid.to_string(), 120),
                all.len(),
                limits.max_ancestors
            ),
        ));
    }
    Ok(all.into())
}

fn too_large(limits: ClosureLimits) -> EngineError {
    EngineError::new(
        ErrorCode::ClosureTooLarge,
        format!(
            "this write would compute more than {} ancestor-closure entries (the limit per write); \
             split it into smaller writes, parents before children",
            limits.max_work
        ),
    )
}
