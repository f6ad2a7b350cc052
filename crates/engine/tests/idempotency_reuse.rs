//! An idempotency key remembers the write it was first used with: the same write again is a
//! duplicate, a different one is refused, and the digest survives the persisted form.

use verdict_engine::credential::Scope;
use verdict_engine::error::ErrorCode;
use verdict_engine::Command;
use verdict_engine::Outcome;
use verdict_engine::ParseCache;
use verdict_engine::Snapshot;
use verdict_engine::Write;

fn keyed(command: Command, key: &str) -> Write {
    Write {
        command,
        if_match: None,
        idempotency_key: Some(key.into()),
        stamped_ms: 1_000,
    }
}

fn put(cedar: &str) -> Command {
    Command::PutPolicy {
        id: "p".into(),
        cedar: cedar.into(),
    }
}

const ALL: &str = "permit(principal, action, resource);";
const NONE: &str = "forbid(principal, action, resource);";

fn reused(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Rejected(e) if e.code == ErrorCode::IdempotencyKeyReused)
}

#[test]
fn a_key_reused_for_another_write_is_refused_and_a_retry_is_a_duplicate() {
    let parses = ParseCache::new();
    let mut snap = Snapshot::empty();
    let first = snap.apply_in_place(1, &keyed(put(ALL), "k"), &parses);
    assert_eq!(first.outcome, Outcome::Applied);
    let retry = snap.apply_in_place(2, &keyed(put(ALL), "k"), &parses);
    assert_eq!(retry.outcome, Outcome::Duplicate { version: 1 });
    let other = snap.apply_in_place(3, &keyed(put(NONE), "k"), &parses);
    assert!(reused(&other.outcome), "{:?}", other.outcome);
    let delete = keyed(Command::DeletePolicy { id: "p".into() }, "k");
    assert!(reused(&snap.apply_in_place(4, &delete, &parses).outcome));
    let mut other_if_match = keyed(put(ALL), "k");
    other_if_match.if_match = Some(1);
    assert!(reused(
        &snap.apply_in_place(5, &other_if_match, &parses).outcome
    ));
    assert_eq!(snap.policy("p").map(|p| p.text.as_str()), Some(ALL));

    // The digest is part of the persisted state.
    let mut restored = Snapshot::from_persisted(&snap.to_persisted()).unwrap();
    let again = restored.apply_in_place(6, &keyed(put(NONE), "k"), &parses);
    assert!(reused(&again.outcome), "{:?}", again.outcome);
    let retry = restored.apply_in_place(7, &keyed(put(ALL), "k"), &parses);
    assert_eq!(retry.outcome, Outcome::Duplicate { version: 1 });

    // A key remembered without a digest (an older snapshot format) answers reuse as a retry.
    let mut old = snap.to_persisted();
    old.idempotency_digests.clear();
    let mut legacy = Snapshot::from_persisted(&old).unwrap();
    let reuse = legacy.apply_in_place(8, &keyed(put(NONE), "k"), &parses);
    assert_eq!(reuse.outcome, Outcome::Duplicate { version: 1 });
}

#[test]
fn what_the_node_draws_at_random_is_not_part_of_the_digest() {
    let parses = ParseCache::new();
    let mut snap = Snapshot::empty();
    let create = |id: &str, hash: &str, name: &str| Command::CreateCredential {
        id: id.into(),
        name: name.into(),
        scopes: vec![Scope::Read],
        hash: hash.into(),
    };
    let hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";
    let first = snap.apply_in_place(1, &keyed(create("a1", hash, "ops"), "c"), &parses);
    assert_eq!(first.outcome, Outcome::Applied);
    let retry = snap.apply_in_place(2, &keyed(create("b2", hash, "ops"), "c"), &parses);
    assert_eq!(retry.outcome, Outcome::Duplicate { version: 1 });
    let other = snap.apply_in_place(3, &keyed(create("c3", hash, "dev"), "c"), &parses);
    assert!(reused(&other.outcome), "{:?}", other.outcome);
}
