//! The ancestor closure, computed once per write in dependency order, against a naive model: random
//! writes of several entities at once (random parent edges, any order, cycles included) and
//! deletes, compared after every step with a brute-force closure of a `BTreeMap` of direct parents.
//! Also pins the per-entity and per-write limits.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::str::FromStr;

use cedar_policy::EntityUid;
use proptest::prelude::*;
use serde_json::json;
use verdict_engine::Command;
use verdict_engine::ErrorCode;
use verdict_engine::Outcome;
use verdict_engine::ParseCache;
use verdict_engine::Snapshot;
use verdict_engine::Write;

const N: u8 = 12;

type Model = BTreeMap<u8, Vec<u8>>;

fn uid(i: u8) -> EntityUid {
    EntityUid::from_str(&format!("E::\"{i}\"")).unwrap()
}

/// Every parent, and everything above it (if it exists), by brute force; includes `id` on a cycle.
fn naive_closure(model: &Model, id: u8) -> BTreeSet<u8> {
    let mut out = BTreeSet::new();
    let mut stack: Vec<u8> = model.get(&id).cloned().unwrap_or_default();
    while let Some(p) = stack.pop() {
        if out.insert(p) {
            stack.extend(model.get(&p).cloned().unwrap_or_default());
        }
    }
    out
}

fn write(command: Command) -> Write {
    Write {
        command,
        if_match: None,
        idempotency_key: None,
        stamped_ms: 0,
    }
}

fn entities_json(batch: &[(u8, Vec<u8>)]) -> String {
    let items: Vec<_> = batch
        .iter()
        .map(|(id, ps)| {
            json!({
                "uid": {"type": "E", "id": id.to_string()},
                "attrs": {},
                "parents": ps.iter().map(|p| json!({"type": "E", "id": p.to_string()})).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::Value::Array(items).to_string()
}

#[derive(Debug, Clone)]
enum Op {
    /// Several distinct entities, each with random parents, in one write.
    Upsert(Vec<(u8, Vec<u8>)>),
    Delete(Vec<u8>),
}

fn op() -> impl Strategy<Value = Op> {
    let entity = (0..N, prop::collection::vec(0..N, 0..4));
    prop_oneof![
        4 => prop::collection::vec(entity, 1..8).prop_map(|mut b| {
            let mut seen = BTreeSet::new();
            b.retain(|(id, _)| seen.insert(*id));
            Op::Upsert(b)
        }),
        1 => prop::collection::btree_set(0..N, 1..3).prop_map(|s| Op::Delete(s.into_iter().collect())),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn closure_matches_naive_model(ops in prop::collection::vec(op(), 1..30)) {
        let mut snap = Snapshot::empty();
        let parses = ParseCache::new();
        let mut model = Model::new();
        for (i, op) in ops.iter().enumerate() {
            let (cmd, expect_ok, trial) = match op {
                Op::Upsert(batch) => {
                    let mut trial = model.clone();
                    for (id, ps) in batch {
                        let mut ps = ps.clone();
                        ps.sort();
                        ps.dedup();
                        trial.insert(*id, ps);
                    }
                    let cyclic = trial.keys().any(|id| naive_closure(&trial, *id).contains(id));
                    (Command::UpsertEntities { json: entities_json(batch) }, !cyclic, trial)
                }
                Op::Delete(ids) => {
                    let mut trial = model.clone();
                    for id in ids {
                        trial.remove(id);
                    }
                    let uids = ids.iter().map(|i| ("E".to_string(), i.to_string())).collect();
                    (Command::DeleteEntities { uids }, true, trial)
                }
            };
            let (next, effect) = snap.apply(i as u64 + 1, &write(cmd), &parses);
            prop_assert_eq!(matches!(effect.outcome, Outcome::Applied), expect_ok, "{:?} -> {:?}", op, effect.outcome);
            if expect_ok {
                model = trial;
            }
            snap = next;
            for id in model.keys() {
                let stored = snap.entity(&uid(*id)).expect("stored");
                let got: BTreeSet<EntityUid> = stored.ancestors.iter().cloned().collect();
                let want: BTreeSet<EntityUid> = naive_closure(&model, *id).into_iter().map(uid).collect();
                prop_assert_eq!(got, want, "closure of {} after {:?}", id, op);
            }
            prop_assert_eq!(snap.entity_count(), model.len());
        }
    }
}

fn refused(json: String) -> Option<ErrorCode> {
    let snap = Snapshot::empty();
    match snap
        .apply(
            1,
            &write(Command::UpsertEntities { json }),
            &ParseCache::new(),
        )
        .1
        .outcome
    {
        Outcome::Rejected(e) => Some(e.code),
        _ => None,
    }
}

/// A chain, leaf first: every entity names the next as its parent.
fn chain(n: u16) -> String {
    let items: Vec<_> = (0..n)
        .map(|i| {
            let parents: Vec<_> = if i + 1 < n {
                vec![json!({"type": "E", "id": format!("c{}", i + 1)})]
            } else {
                vec![]
            };
            json!({"uid": {"type": "E", "id": format!("c{i}")}, "attrs": {}, "parents": parents})
        })
        .collect();
    serde_json::Value::Array(items).to_string()
}

#[test]
fn a_chain_up_to_the_ancestor_limit_is_accepted_and_one_beyond_is_refused() {
    let limit = verdict_engine::entity::MAX_ANCESTORS_PER_ENTITY as u16;
    assert_eq!(refused(chain(limit + 1)), None);
    assert_eq!(refused(chain(limit + 2)), Some(ErrorCode::TooManyAncestors));
}

#[test]
fn a_hub_with_too_many_parents_is_refused() {
    let limit = verdict_engine::entity::MAX_ANCESTORS_PER_ENTITY;
    let parents: Vec<_> = (0..=limit)
        .map(|i| json!({"type": "E", "id": format!("p{i}")}))
        .collect();
    let json =
        json!([{"uid": {"type": "E", "id": "hub"}, "attrs": {}, "parents": parents}]).to_string();
    assert_eq!(refused(json), Some(ErrorCode::TooManyAncestors));
}

#[test]
fn children_of_one_parent_set_share_one_closure() {
    let mut items = vec![
        json!({"uid": {"type": "E", "id": "hub"}, "attrs": {}, "parents": [{"type": "E", "id": "root"}]}),
    ];
    for i in 0..50 {
        items.push(json!({"uid": {"type": "E", "id": format!("k{i}")}, "attrs": {}, "parents": [{"type": "E", "id": "hub"}]}));
    }
    let (snap, _) = Snapshot::empty().apply(
        1,
        &write(Command::UpsertEntities {
            json: serde_json::Value::Array(items).to_string(),
        }),
        &ParseCache::new(),
    );
    let a = snap
        .entity(&EntityUid::from_str("E::\"k0\"").unwrap())
        .unwrap();
    let b = snap
        .entity(&EntityUid::from_str("E::\"k49\"").unwrap())
        .unwrap();
    assert_eq!(a.ancestors.len(), 2);
    assert!(std::sync::Arc::ptr_eq(&a.ancestors, &b.ancestors));
}
