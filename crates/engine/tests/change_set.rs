//! Every command's change set names exactly what it changed: the kind, and the ids it wrote or
//! removed, and nothing for a write that was refused, a duplicate or a no-op.

use std::str::FromStr;

use cedar_policy::EntityUid;
use verdict_engine::command::KeyMaterial;
use verdict_engine::credential::Scope;
use verdict_engine::keyring::RotationPolicy;
use verdict_engine::revocation::Selector;
use verdict_engine::ChangeSet;
use verdict_engine::Changed;
use verdict_engine::Command;
use verdict_engine::Outcome;
use verdict_engine::ParseCache;
use verdict_engine::Snapshot;
use verdict_engine::Write;

const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";

fn uid(text: &str) -> EntityUid {
    EntityUid::from_str(text).unwrap()
}

fn policies(ids: &[&str]) -> ChangeSet {
    ChangeSet {
        policies: Changed::Ids(ids.iter().map(|s| s.to_string()).collect()),
        ..ChangeSet::default()
    }
}

fn entities(uids: &[&str]) -> ChangeSet {
    ChangeSet {
        entities: Changed::Ids(uids.iter().map(|u| uid(u)).collect()),
        ..ChangeSet::default()
    }
}

fn credentials(ids: &[&str]) -> ChangeSet {
    ChangeSet {
        credentials: ids.iter().map(|s| s.to_string()).collect(),
        ..ChangeSet::default()
    }
}

#[test]
fn each_command_names_exactly_what_it_changed() {
    let parses = ParseCache::new();
    let mut snap = Snapshot::empty();
    let user = |id: &str, parents: &str| {
        format!(r#"{{"uid":{{"type":"User","id":"{id}"}},"attrs":{{}},"parents":[{parents}]}}"#)
    };
    let group = r#"{"type":"Group","id":"g"}"#;
    let cases: Vec<(Command, Option<&str>, ChangeSet)> = vec![
        (
            Command::PutPolicy {
                id: "p1".into(),
                cedar: "permit(principal, action, resource);".into(),
            },
            None,
            policies(&["p1"]),
        ),
        (
            Command::DeletePolicy { id: "p1".into() },
            None,
            policies(&["p1"]),
        ),
        (
            Command::ReplacePoliciesText {
                cedar: r#"@id("a") permit(principal, action, resource);"#.into(),
            },
            None,
            ChangeSet {
                policies: Changed::All,
                ..ChangeSet::default()
            },
        ),
        (
            Command::ReplacePoliciesMap {
                policies: vec![("b".into(), "forbid(principal, action, resource);".into())],
            },
            None,
            ChangeSet {
                policies: Changed::All,
                ..ChangeSet::default()
            },
        ),
        (
            Command::PutSchema {
                text: "entity Group; entity User in [Group]; action view appliesTo { principal: User, resource: User };".into(),
                json: false,
            },
            None,
            ChangeSet {
                schema: true,
                ..ChangeSet::default()
            },
        ),
        (
            Command::DeleteSchema,
            None,
            ChangeSet {
                schema: true,
                ..ChangeSet::default()
            },
        ),
        (
            // `__entity` uids are named too (the watch stream once listed none for them).
            Command::UpsertEntities {
                json: format!(
                    r#"[{}, {}, {{"uid":{{"__entity":{{"type":"User","id":"c"}}}},"attrs":{{}},"parents":[]}}]"#,
                    user("a", group),
                    user("b", "")
                ),
            },
            None,
            entities(&[r#"User::"a""#, r#"User::"b""#, r#"User::"c""#]),
        ),
        (
            // Only entities that were there are removed.
            Command::DeleteEntities {
                uids: vec![
                    ("User".into(), "a".into()),
                    ("User".into(), "never-stored".into()),
                ],
            },
            None,
            entities(&[r#"User::"a""#]),
        ),
        (
            Command::ReplaceEntities {
                json: format!("[{}]", user("z", "")),
            },
            None,
            ChangeSet {
                entities: Changed::All,
                ..ChangeSet::default()
            },
        ),
        (
            Command::RotateKeys {
                material: KeyMaterial([1; 32]),
                first_primary: Some(KeyMaterial([2; 32])),
                policy: RotationPolicy::default(),
            },
            None,
            ChangeSet {
                keys: true,
                ..ChangeSet::default()
            },
        ),
        (
            Command::Revoke {
                events: vec![(Selector::Subject { sub: "alice".into() }, None)],
            },
            None,
            ChangeSet {
                revocations: true,
                ..ChangeSet::default()
            },
        ),
        (
            Command::CreateCredential {
                id: "ops".into(),
                name: "ops".into(),
                scopes: vec![Scope::Admin],
                hash: HASH.into(),
            },
            None,
            credentials(&["ops"]),
        ),
        (
            Command::BootstrapAdmin { hash: HASH.into() },
            None,
            credentials(&["admin"]),
        ),
        (
            // A second bootstrap is a no-op: applied, nothing changed.
            Command::BootstrapAdmin { hash: HASH.into() },
            None,
            ChangeSet::default(),
        ),
        (
            Command::RevokeCredential { id: "ops".into() },
            None,
            credentials(&["ops"]),
        ),
        (
            // A retried write with a key seen before is a duplicate and changes nothing.
            Command::PutPolicy {
                id: "k".into(),
                cedar: "permit(principal, action, resource);".into(),
            },
            Some("key-1"),
            policies(&["k"]),
        ),
        (
            Command::PutPolicy {
                id: "k".into(),
                cedar: "permit(principal, action, resource);".into(),
            },
            Some("key-1"),
            ChangeSet::default(),
        ),
        (
            // A refused write changes nothing.
            Command::DeletePolicy {
                id: "absent".into(),
            },
            None,
            ChangeSet::default(),
        ),
    ];
    let mut seen_kinds = std::collections::BTreeSet::new();
    for (i, (command, key, want)) in cases.into_iter().enumerate() {
        seen_kinds.insert(command.kind());
        let write = Write {
            command: command.clone(),
            if_match: None,
            idempotency_key: key.map(str::to_string),
            stamped_ms: 1_000 + i as u64,
        };
        let effect = snap.apply_in_place(i as u64 + 1, &write, &parses);
        assert_eq!(effect.changes, want, "{command:?} -> {:?}", effect.outcome);
        if !matches!(effect.outcome, Outcome::Applied) {
            assert!(effect.changes.is_empty(), "{command:?}");
        }
    }
    // Every kind of command was exercised.
    assert_eq!(seen_kinds.len(), 13, "{seen_kinds:?}");
}

#[test]
fn a_check_names_what_apply_will_change_and_changes_nothing() {
    let snap = Snapshot::empty();
    let parses = ParseCache::new();
    let write = Write {
        command: Command::PutPolicy {
            id: "p".into(),
            cedar: "permit(principal, action, resource);".into(),
        },
        if_match: None,
        idempotency_key: None,
        stamped_ms: 0,
    };
    assert_eq!(snap.check(&write, &parses).unwrap(), None);
    assert_eq!(snap.policy_count(), 0);
    // The check's parse waits in the cache for the apply, which takes it.
    assert_eq!(parses.len(), 1);
    let (next, effect) = snap.apply(1, &write, &parses);
    assert!(parses.is_empty());
    assert_eq!(effect.changes, policies(&["p"]));
    assert_eq!(next.policy("p").map(|p| p.version), Some(1));
}
