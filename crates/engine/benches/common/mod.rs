//! Shared set-up for the engine benches: build snapshots from the fixtures through `apply`, exactly
//! as the state machine does.

#![allow(dead_code)]

/// The same allocator as the `verdict` binary, so the figures are the deployed ones.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use serde_json::Value;
use verdict_engine::Command;
use verdict_engine::DecisionInput;
use verdict_engine::Outcome;
use verdict_engine::ParseCache;
use verdict_engine::Snapshot;
use verdict_engine::Write;
use verdict_fixtures::surfconext;
use verdict_fixtures::zero_trust;

pub fn write(command: Command) -> Write {
    Write {
        command,
        if_match: None,
        idempotency_key: None,
        stamped_ms: 0,
    }
}

pub fn apply(snap: &Snapshot, command: Command) -> Snapshot {
    let (next, effect) = snap.apply(snap.version() + 1, &write(command), &ParseCache::new());
    assert_eq!(effect.outcome, Outcome::Applied);
    next
}

/// Upserts entities in writes of at most 50,000, as a client must (the per-write cap is 100,000).
pub fn load_entities(snap: &Snapshot, entities: Value) -> Snapshot {
    let Value::Array(all) = entities else {
        panic!("entities must be an array")
    };
    let mut snap = snap.clone();
    for chunk in all.chunks(50_000) {
        snap = apply(
            &snap,
            Command::UpsertEntities {
                json: Value::Array(chunk.to_vec()).to_string(),
            },
        );
    }
    snap
}

pub fn input(request: &Value) -> DecisionInput {
    DecisionInput::from_authzen(
        request.get("subject"),
        request.get("action"),
        request.get("resource"),
        request.get("context"),
    )
    .unwrap()
}

/// A snapshot holding `policies` and `entities`, and the decision inputs of `samples`.
fn build(
    policies: String,
    entities: Value,
    samples: &[verdict_fixtures::Sample],
) -> (Snapshot, Vec<DecisionInput>) {
    let snap = apply(
        &Snapshot::empty(),
        Command::ReplacePoliciesText { cedar: policies },
    );
    let snap = load_entities(&snap, entities);
    (snap, samples.iter().map(|s| input(&s.request)).collect())
}

/// A SURFconext data set with `policies` policies, its entities, and 1,000 random login requests.
pub fn surfconext(policies: usize) -> (Snapshot, Vec<DecisionInput>) {
    let ds = surfconext::Dataset::new(
        policies,
        surfconext::DEFAULT_USERS,
        surfconext::DEFAULT_GROUPS,
    );
    build(
        ds.policies_text(),
        ds.entities(),
        &ds.random_requests(1000, 7),
    )
}

/// The zero-trust fleet with `hosts` hosts and 1,000 random login requests.
pub fn zero_trust(hosts: usize) -> (Snapshot, Vec<DecisionInput>) {
    let fleet = zero_trust::Fleet::new(hosts);
    build(
        zero_trust::POLICIES.to_string(),
        fleet.entities(),
        &fleet.random_requests(1000, 7),
    )
}
