//! Model-based property tests: the snapshot, driven by random write sequences, is compared after
//! every step with trivial models: a `BTreeMap` of direct parents (closure by brute force) and a full
//! Cedar evaluation of every policy over every entity (what the scope index and slicing must match).

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::str::FromStr;

use cedar_policy::Authorizer;
use cedar_policy::Context;
use cedar_policy::Entities;
use cedar_policy::EntityUid;
use cedar_policy::PolicySet;
use cedar_policy::Request;
use proptest::prelude::*;
use serde_json::json;
use verdict_engine::Command;
use verdict_engine::DecisionInput;
use verdict_engine::Outcome;
use verdict_engine::ParseCache;
use verdict_engine::Snapshot;
use verdict_engine::Write;

const N: u8 = 6;

#[derive(Debug, Clone)]
enum Op {
    Upsert {
        id: u8,
        parents: Vec<u8>,
        level: i64,
    },
    Delete {
        id: u8,
    },
    PutPolicy {
        slot: u8,
        text: String,
    },
    DeletePolicy {
        slot: u8,
    },
}

fn scope_principal() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("principal".to_string()),
        (0..N).prop_map(|i| format!("principal == E::\"{i}\"")),
        (0..N).prop_map(|i| format!("principal in E::\"{i}\"")),
        Just("principal is E".to_string()),
        Just("principal is F".to_string()),
    ]
}

fn scope_resource() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("resource".to_string()),
        (0..N).prop_map(|i| format!("resource == E::\"{i}\"")),
        (0..N).prop_map(|i| format!("resource in E::\"{i}\"")),
        (0..N).prop_map(|i| format!("resource is E in E::\"{i}\"")),
        (0..N).prop_map(|i| format!("resource is F in E::\"{i}\"")),
        Just("resource is E".to_string()),
    ]
}

fn scope_action() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("action".to_string()),
        Just("action == Action::\"a\"".to_string()),
        Just("action in [Action::\"a\", Action::\"b\"]".to_string()),
        Just("action == Action::\"b\"".to_string()),
    ]
}

fn policy_text() -> impl Strategy<Value = String> {
    (
        any::<bool>(),
        scope_principal(),
        scope_action(),
        scope_resource(),
        prop::option::of(0i64..4),
    )
        .prop_map(|(permit, p, a, r, cond)| {
            let effect = if permit { "permit" } else { "forbid" };
            let when = cond
                .map(|c| format!(" when {{ principal.level >= {c} }}"))
                .unwrap_or_default();
            format!("{effect}({p}, {a}, {r}){when};")
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..N, prop::collection::vec(0..N, 0..3), 0i64..4)
            .prop_map(|(id, parents, level)| Op::Upsert { id, parents, level }),
        1 => (0..N).prop_map(|id| Op::Delete { id }),
        3 => (0..4u8, policy_text()).prop_map(|(slot, text)| Op::PutPolicy { slot, text }),
        1 => (0..4u8).prop_map(|slot| Op::DeletePolicy { slot }),
    ]
}

fn uid(i: u8) -> EntityUid {
    EntityUid::from_str(&format!("E::\"{i}\"")).unwrap()
}

/// Brute-force closure: every parent, and (if it exists) everything above it.
fn model_closure(model: &BTreeMap<u8, (Vec<u8>, i64)>, id: u8) -> BTreeSet<u8> {
    let mut out = BTreeSet::new();
    let mut stack: Vec<u8> = model.get(&id).map(|(p, _)| p.clone()).unwrap_or_default();
    while let Some(p) = stack.pop() {
        if out.insert(p) {
            if let Some((pp, _)) = model.get(&p) {
                stack.extend(pp.iter().copied());
            }
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn snapshot_matches_models(ops in prop::collection::vec(op(), 1..40), in_place in any::<bool>()) {
        let mut snap = Snapshot::empty();
        let parses = ParseCache::new();
        let mut entities: BTreeMap<u8, (Vec<u8>, i64)> = BTreeMap::new();
        let mut policies: BTreeMap<u8, String> = BTreeMap::new();
        for (i, op) in ops.iter().enumerate() {
            let version = i as u64 + 1;
            let (cmd, expect_ok) = match op {
                Op::Upsert { id, parents, level } => {
                    let mut ps = parents.clone();
                    ps.sort();
                    ps.dedup();
                    // A cycle: the entity is among the closure of its would-be parents (or itself).
                    let mut trial = entities.clone();
                    trial.insert(*id, (ps.clone(), *level));
                    let cyclic = model_closure(&trial, *id).contains(id);
                    let json = json!([{
                        "uid": {"type": "E", "id": id.to_string()},
                        "attrs": {"level": level},
                        "parents": ps.iter().map(|p| json!({"type": "E", "id": p.to_string()})).collect::<Vec<_>>(),
                    }]);
                    if !cyclic {
                        entities.insert(*id, (ps, *level));
                    }
                    (Command::UpsertEntities { json: json.to_string() }, !cyclic)
                }
                Op::Delete { id } => {
                    entities.remove(id);
                    (Command::DeleteEntities { uids: vec![("E".into(), id.to_string())] }, true)
                }
                Op::PutPolicy { slot, text } => {
                    policies.insert(*slot, text.clone());
                    (Command::PutPolicy { id: format!("p{slot}"), cedar: text.clone() }, true)
                }
                Op::DeletePolicy { slot } => {
                    let existed = policies.remove(slot).is_some();
                    (Command::DeletePolicy { id: format!("p{slot}") }, existed)
                }
            };
            // Both ways of applying (a new state per write, or one state changed in place) must
            // match the models.
            let (next, outcome) = if in_place {
                let mut next = snap.clone();
                let effect = next.apply_in_place(version, &write(cmd), &parses);
                (next, effect.outcome)
            } else {
                let (next, effect) = snap.apply(version, &write(cmd), &parses);
                (next, effect.outcome)
            };
            prop_assert_eq!(next.version(), version);
            prop_assert_eq!(matches!(outcome, Outcome::Applied), expect_ok, "{:?} -> {:?}", op, outcome);
            snap = next;

            // Closures match the brute-force model.
            for id in entities.keys() {
                let stored = snap.entity(&uid(*id)).expect("stored");
                let got: BTreeSet<EntityUid> = stored.ancestors.iter().cloned().collect();
                let want: BTreeSet<EntityUid> = model_closure(&entities, *id).into_iter().map(uid).collect();
                prop_assert_eq!(got, want, "closure of {}", id);
            }
            prop_assert_eq!(snap.entity_count(), entities.len());
            prop_assert_eq!(snap.policy_count(), policies.len());

            // Decisions match a full evaluation of every policy over every entity.
            let mut all = PolicySet::new();
            for p in snap.policies() {
                all.add(p.policy.clone()).unwrap();
            }
            let all_entities = Entities::from_entities(snap.entities().map(|e| e.entity.clone()), None).unwrap();
            for p in 0..N {
                for r in 0..N {
                    for a in ["a", "b"] {
                        let input = DecisionInput::from_authzen(
                            Some(&json!({"type": "E", "id": p.to_string()})),
                            Some(&json!({"name": a})),
                            Some(&json!({"type": "E", "id": r.to_string()})),
                            None,
                        ).unwrap();
                        let got = snap.decide(&input).unwrap();
                        let req = Request::new(uid(p), EntityUid::from_str(&format!("Action::\"{a}\"")).unwrap(), uid(r), Context::empty(), None).unwrap();
                        let full = Authorizer::new().is_authorized(&req, &all, &all_entities);
                        let want_allow = full.decision() == cedar_policy::Decision::Allow;
                        let mut want_ids: Vec<String> = full.diagnostics().reason().map(|i| i.to_string()).collect();
                        want_ids.sort();
                        prop_assert_eq!(got.allow, want_allow, "p={} a={} r={}", p, a, r);
                        prop_assert_eq!(got.policies, want_ids);
                        // Policies whose condition failed (e.g. `level` of an entity not stored).
                        let mut want_errors: Vec<String> = full.diagnostics().errors().map(|e| {
                            let cedar_policy::AuthorizationError::PolicyEvaluationError(e) = e;
                            e.policy_id().to_string()
                        }).collect();
                        want_errors.sort();
                        want_errors.dedup();
                        let got_errors: Vec<String> = got.errors.iter().map(|(id, _)| id.clone()).collect();
                        prop_assert_eq!(got_errors, want_errors);
                    }
                }
            }
        }
    }

    #[test]
    fn persisted_form_round_trips(ops in prop::collection::vec(op(), 1..25)) {
        let mut snap = Snapshot::empty();
        // The same writes applied to one state in place give the same state.
        let mut in_place = Snapshot::empty();
        for (i, op) in ops.iter().enumerate() {
            let cmd = match op {
                Op::Upsert { id, parents, level } => Command::UpsertEntities { json: json!([{
                    "uid": {"type": "E", "id": id.to_string()}, "attrs": {"level": level},
                    "parents": parents.iter().map(|p| json!({"type": "E", "id": p.to_string()})).collect::<Vec<_>>(),
                }]).to_string() },
                Op::Delete { id } => Command::DeleteEntities { uids: vec![("E".into(), id.to_string())] },
                Op::PutPolicy { slot, text } => Command::PutPolicy { id: format!("p{slot}"), cedar: text.clone() },
                Op::DeletePolicy { slot } => Command::DeletePolicy { id: format!("p{slot}") },
            };
            let w = write(cmd);
            let parses = ParseCache::new();
            let effect = in_place.apply_in_place(i as u64 + 1, &w, &parses);
            let (next, expected) = snap.apply(i as u64 + 1, &w, &parses);
            prop_assert_eq!(effect, expected);
            snap = next;
            prop_assert_eq!(in_place.to_persisted(), snap.to_persisted());
        }
        let back = Snapshot::from_persisted(&snap.to_persisted()).unwrap();
        prop_assert_eq!(back.to_persisted(), snap.to_persisted());
        for e in snap.entities() {
            prop_assert_eq!(&back.entity(&e.uid()).unwrap().ancestors, &e.ancestors);
        }
    }
}
