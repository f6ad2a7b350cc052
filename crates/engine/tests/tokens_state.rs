//! Keys and revocations as replicated state: rotations and revocations applied as log entries,
//! tokens issued and validated against the resulting snapshot, and the snapshot's persisted form.

use verdict_engine::command::KeyMaterial;
use verdict_engine::keyring::KeyState;
use verdict_engine::keyring::RotationPolicy;
use verdict_engine::revocation::Selector;
use verdict_engine::revocation::TokenFacts;
use verdict_engine::token;
use verdict_engine::token::IssueRequest;
use verdict_engine::Command;
use verdict_engine::ErrorCode;
use verdict_engine::Outcome;
use verdict_engine::ParseCache;
use verdict_engine::Snapshot;
use verdict_engine::Write;

const HOUR: u64 = 3_600_000;

fn write(command: Command, stamped_ms: u64) -> Write {
    Write {
        command,
        if_match: None,
        idempotency_key: None,
        stamped_ms,
    }
}

fn rotate(n: u8, first: bool) -> Command {
    Command::RotateKeys {
        material: KeyMaterial([n; 32]),
        first_primary: first.then_some(KeyMaterial([n.wrapping_add(100); 32])),
        policy: RotationPolicy::default(),
    }
}

fn apply(snap: &mut Snapshot, version: u64, command: Command, at: u64) -> Outcome {
    snap.apply_in_place(version, &write(command, at), &ParseCache::new())
        .outcome
}

fn facts(c: &token::Claims) -> TokenFacts<'_> {
    TokenFacts {
        jti: &c.jti,
        aud_chain: &c.aud_chain,
        sub: &c.sub,
        scope: c.scope.as_deref(),
        iat_ms: c.iat_ms,
    }
}

fn issue(snap: &Snapshot, sub: &str, at: u64, jti: &str) -> (String, token::Claims) {
    let request = IssueRequest {
        sub: sub.to_string(),
        scope: Some("proj".into()),
        lifetime_ms: None,
        aud_chain: None,
        extra: Default::default(),
    };
    token::issue(
        snap.keys(),
        snap.token_policy(),
        request,
        at,
        jti.to_string(),
    )
    .unwrap()
}

#[test]
fn rotations_and_revocations_apply_as_log_entries() {
    let mut snap = Snapshot::empty();
    assert_eq!(apply(&mut snap, 1, rotate(1, true), HOUR), Outcome::Applied);
    let (t1, _) = issue(&snap, "alice", HOUR, "j1");
    assert_eq!(
        apply(&mut snap, 2, rotate(2, false), 2 * HOUR),
        Outcome::Applied
    );
    // The first primary is now a secondary and still validates its token.
    let states: Vec<KeyState> = snap.keys().list().iter().map(|k| k.state).collect();
    assert_eq!(states.len(), 3);
    let claims = token::validate(snap.keys(), &t1, HOUR + 1_000, 60_000).unwrap();
    assert!(!snap.revocations().is_revoked(&facts(&claims)));

    // Revoking alice (issued before the stamped time) makes her token revoked, not bob's.
    let (t2, _) = issue(&snap, "bob", 2 * HOUR, "j2");
    let revoke = Command::Revoke {
        events: vec![(
            Selector::Subject {
                sub: "alice".into(),
            },
            None,
        )],
    };
    assert_eq!(apply(&mut snap, 3, revoke, 2 * HOUR + 5), Outcome::Applied);
    assert!(snap.revocations().is_revoked(&facts(&claims)));
    let bob = token::validate(snap.keys(), &t2, 2 * HOUR + 10, 60_000).unwrap();
    assert!(!snap.revocations().is_revoked(&facts(&bob)));

    // Everything survives the persisted form.
    let back = Snapshot::from_persisted(&snap.to_persisted()).unwrap();
    assert_eq!(back.to_persisted(), snap.to_persisted());
    assert!(back.revocations().is_revoked(&facts(&claims)));
    assert!(token::validate(back.keys(), &t2, 2 * HOUR + 10, 60_000).is_ok());
}

#[test]
fn refused_token_writes_leave_the_state_unchanged() {
    let mut snap = Snapshot::empty();
    apply(&mut snap, 1, rotate(1, true), 0);
    apply(&mut snap, 2, rotate(2, false), 1);
    apply(&mut snap, 3, rotate(3, false), 2);
    apply(&mut snap, 4, rotate(4, false), 3);
    let before = snap.to_persisted();
    // Default policy: at most 5 keys, secondaries kept an hour and a minute: a fifth rotation
    // within the hour would drop a key that may still validate tokens.
    match apply(&mut snap, 5, rotate(5, false), 4) {
        Outcome::Rejected(e) => {
            assert_eq!(e.code, ErrorCode::RotationTooFast);
            assert!(e.detail.contains("max_active_keys"), "{}", e.detail);
        }
        other => panic!("{other:?}"),
    }
    let future = Command::Revoke {
        events: vec![(Selector::Token { jti: "x".into() }, Some(HOUR))],
    };
    match apply(&mut snap, 6, future, 10) {
        Outcome::Rejected(e) => assert_eq!(e.code, ErrorCode::InvalidRequest),
        other => panic!("{other:?}"),
    }
    let empty = Command::Revoke {
        events: vec![(Selector::Subject { sub: String::new() }, None)],
    };
    assert!(matches!(
        apply(&mut snap, 7, empty, 10),
        Outcome::Rejected(_)
    ));
    // All or none: one bad event refuses the whole write.
    let mixed = Command::Revoke {
        events: vec![
            (Selector::Subject { sub: "ok".into() }, None),
            (Selector::Token { jti: String::new() }, None),
        ],
    };
    match apply(&mut snap, 8, mixed, 10) {
        Outcome::Rejected(e) => assert!(e.detail.starts_with("event 1:"), "{}", e.detail),
        other => panic!("{other:?}"),
    }
    let mut after = snap.to_persisted();
    after.version = before.version;
    assert_eq!(after, before);
}
