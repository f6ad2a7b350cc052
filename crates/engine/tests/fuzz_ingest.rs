//! Property "fuzzing" of everything the engine ingests from users: Cedar policy and set texts,
//! schemas, entity JSON and AuthZEN decision inputs. Random and mutated inputs must come back as
//! `Ok` or a clean `Err`: never a panic, never a stack overflow (which aborts the test binary, so it
//! fails loudly). Runs in `cargo test` with a bounded number of cases (PROPTEST_CASES overrides).
//!
//! Each run uses a 2 MiB thread stack for the work, the size of a tokio worker's, since that is
//! where the node parses and evaluates.

use proptest::prelude::*;
use serde_json::json;
use serde_json::Value;
use verdict_engine::Command;
use verdict_engine::DecisionInput;
use verdict_engine::ParseCache;
use verdict_engine::Snapshot;
use verdict_engine::Write;

const SEEDS: &[&str] = &[
    r#"permit(principal == User::"alice", action == Action::"view", resource in Folder::"f1");"#,
    r#"@id("deny-ext") forbid(principal, action, resource) when { principal.ext && context.ip like "10.*" } unless { resource.public };"#,
    r#"permit(principal in Group::"admins", action in [Action::"read", Action::"write"], resource) when { if principal.level > 3 then true else resource has owner && resource.owner == principal };"#,
    r#"permit(principal, action, resource) when { [1, 2, 3].contains(context.n) && {a: {b: "c"}}.a.b == "c" };"#,
];

const SCHEMA: &str = r#"entity User in [Group] { level: Long, ext: Bool }; entity Group; entity Folder; entity Doc in [Folder] { owner?: User, public: Bool };
action view, read, write appliesTo { principal: [User], resource: [Doc, Folder], context: { ip?: String, n?: Long } };"#;

fn write(command: Command) -> Write {
    Write {
        command,
        if_match: None,
        idempotency_key: None,
        stamped_ms: 1_700_000_000_000,
    }
}

/// Runs `f` on a thread with a tokio worker's stack, failing the test on a panic.
fn on_worker_stack(f: impl FnOnce() + Send + 'static) {
    let handle = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(f)
        .expect("spawn");
    assert!(handle.join().is_ok(), "the engine panicked on this input");
}

/// Text mutations: replace, insert and delete bytes (from a vocabulary rich in Cedar's own
/// tokens and brackets), truncate, and repeat an opening bracket.
#[derive(Debug, Clone)]
enum Edit {
    Insert(usize, &'static str),
    Delete(usize, usize),
    Truncate(usize),
    Flood(usize, char, usize),
}

const TOKENS: &[&str] = &[
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    "\"",
    "\\",
    "&&",
    "||",
    "!",
    "-",
    "==",
    " in ",
    " has ",
    ".",
    "::",
    ",",
    ";",
    "when",
    "unless",
    "if",
    "then",
    "else",
    "like",
    "*",
    "principal",
    "resource",
    "context",
    "0",
    "9223372036854775807",
    "-9223372036854775808",
    "é",
    "\u{0}",
    "//",
    "\n",
    "@id(",
];

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), prop::sample::select(TOKENS)).prop_map(|(i, t)| Edit::Insert(i, t)),
        (any::<usize>(), 0usize..20).prop_map(|(i, n)| Edit::Delete(i, n)),
        any::<usize>().prop_map(Edit::Truncate),
        (
            any::<usize>(),
            prop::sample::select(vec!['(', '[', '{', '!', '-']),
            1usize..400
        )
            .prop_map(|(i, c, n)| Edit::Flood(i, c, n)),
    ]
}

fn apply_edits(seed: &str, edits: &[Edit]) -> String {
    let mut s: Vec<char> = seed.chars().collect();
    for e in edits {
        let at = |i: usize, len: usize| if len == 0 { 0 } else { i % (len + 1) };
        match e {
            Edit::Insert(i, t) => {
                let i = at(*i, s.len());
                s.splice(i..i, t.chars());
            }
            Edit::Delete(i, n) => {
                let i = at(*i, s.len());
                let end = (i + n).min(s.len());
                s.drain(i..end);
            }
            Edit::Truncate(i) => {
                let i = at(*i, s.len());
                s.truncate(i);
            }
            Edit::Flood(i, c, n) => {
                let i = at(*i, s.len());
                s.splice(i..i, std::iter::repeat_n(*c, *n));
            }
        }
    }
    s.into_iter().collect()
}

/// Arbitrary JSON, nested up to `depth`, with the awkward values (huge numbers, escapes, empty
/// keys, `__entity` / `__extn` escapes) that Cedar's JSON formats give meaning to.
fn json_value(depth: u32) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        Just(json!(u64::MAX)),
        ".{0,12}".prop_map(Value::String),
        Just(json!({"__entity": {"type": "User", "id": "alice"}})),
        Just(json!({"__extn": {"fn": "ip", "arg": "10.0.0.1"}})),
        Just(json!({"__extn": {"fn": "decimal", "arg": "not a number"}})),
    ];
    leaf.prop_recursive(depth, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("uid".to_string()),
                    Just("attrs".to_string()),
                    Just("parents".to_string()),
                    Just("tags".to_string()),
                    Just("type".to_string()),
                    Just("id".to_string()),
                    ".{0,6}"
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// An entity-shaped value with random parts, so the parser gets past the outer shape.
fn entity_like() -> impl Strategy<Value = Value> {
    (
        prop_oneof![Just("User"), Just("Doc"), Just("Ns::Host"), Just(""), Just("9bad")],
        ".{0,8}",
        json_value(3),
        prop::collection::vec(json_value(1), 0..3),
    )
        .prop_map(|(ty, id, attrs, parents)| {
            json!({"uid": {"type": ty, "id": id}, "attrs": attrs, "parents": parents})
        })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(192),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn mutated_policy_texts_never_panic(
        seed in prop::sample::select(SEEDS),
        edits in prop::collection::vec(edit(), 1..6),
        with_schema in any::<bool>(),
    ) {
        let text = apply_edits(seed, &edits);
        on_worker_stack(move || {
            let mut snap = Snapshot::empty();
            if with_schema {
                let (s, _) = snap.apply(1, &write(Command::PutSchema { text: SCHEMA.into(), json: false }), &ParseCache::new());
                snap = s;
            }
            let one = write(Command::PutPolicy { id: "p".into(), cedar: text.clone() });
            let _ = snap.check(&one, &ParseCache::new());
            let (after, _) = snap.apply(2, &one, &ParseCache::new());
            let _ = after.apply(3, &write(Command::ReplacePoliciesText { cedar: text.clone() }), &ParseCache::new());
            let _ = snap.apply(3, &write(Command::PutSchema { text: text.clone(), json: false }), &ParseCache::new());
            let _ = snap.apply(3, &write(Command::PutSchema { text, json: true }), &ParseCache::new());
            // Whatever was accepted must also evaluate.
            if let Ok(input) = DecisionInput::from_authzen(
                Some(&json!({"type": "User", "id": "alice", "properties": {"level": 5, "ext": false}})),
                Some(&json!({"name": "view"})),
                Some(&json!({"type": "Doc", "id": "d", "properties": {"public": true}})),
                Some(&json!({"ip": "10.1.2.3", "n": 2})),
            ) {
                let _ = after.decide(&input);
            }
        });
    }

    #[test]
    fn arbitrary_entity_json_never_panics(
        items in prop::collection::vec(prop_oneof![entity_like(), json_value(4)], 0..5),
        with_schema in any::<bool>(),
    ) {
        let text = Value::Array(items).to_string();
        on_worker_stack(move || {
            let mut snap = Snapshot::empty();
            if with_schema {
                let (s, _) = snap.apply(1, &write(Command::PutSchema { text: SCHEMA.into(), json: false }), &ParseCache::new());
                snap = s;
            }
            let upsert = write(Command::UpsertEntities { json: text.clone() });
            let _ = snap.check(&upsert, &ParseCache::new());
            let (after, _) = snap.apply(2, &upsert, &ParseCache::new());
            let _ = after.apply(3, &write(Command::ReplaceEntities { json: text }), &ParseCache::new());
            let _ = after.to_persisted();
        });
    }

    #[test]
    fn arbitrary_decision_inputs_never_panic(
        subject in prop_oneof![json_value(3), entity_like().prop_map(|e| e["uid"].clone())],
        action in json_value(2),
        resource in json_value(3),
        context in json_value(5),
    ) {
        on_worker_stack(move || {
            let (snap, _) = Snapshot::empty().apply(1, &write(Command::ReplacePoliciesText {
                cedar: SEEDS.join("\n"),
            }), &ParseCache::new());
            for (s, a, r) in [
                (&subject, &action, &resource),
                (&json!({"type": "User", "id": "alice", "properties": context.clone()}),
                 &json!({"name": "view"}),
                 &json!({"type": "Doc", "id": "d", "properties": context.clone()})),
            ] {
                if let Ok(input) = DecisionInput::from_authzen(Some(s), Some(a), Some(r), Some(&context)) {
                    let _ = snap.decide(&input);
                }
            }
        });
    }
}

/// Deep nesting is refused before any parser sees it, at every entry point, and the limit holds
/// on a worker's stack in a debug build.
#[test]
fn deep_nesting_is_refused_everywhere_without_overflowing() {
    on_worker_stack(|| {
        let deep =
            |open: &str, close: &str, n: usize| format!("{}1{}", open.repeat(n), close.repeat(n));
        let snap = Snapshot::empty();
        let parses = ParseCache::new();
        for n in [33, 200, 100_000] {
            for (open, close) in [("(", ")"), ("[", "]"), ("{a:", "}")] {
                let policy = format!(
                    "permit(principal, action, resource) when {{ {} == 1 }};",
                    deep(open, close, n)
                );
                let e = snap
                    .check(
                        &write(Command::PutPolicy {
                            id: "p".into(),
                            cedar: policy.clone(),
                        }),
                        &parses,
                    )
                    .expect_err("refused");
                // The per-policy size limit may speak first for the longest.
                assert!(
                    e.detail.contains("deep") || e.detail.contains("bytes"),
                    "{}",
                    e.detail
                );
                assert!(snap
                    .check(
                        &write(Command::ReplacePoliciesText { cedar: policy }),
                        &parses
                    )
                    .is_err());
            }
            let entity = format!(
                r#"[{{"uid": {{"type": "User", "id": "a"}}, "attrs": {{"x": {}}}, "parents": []}}]"#,
                deep("[", "]", n)
            );
            let e = snap
                .check(&write(Command::UpsertEntities { json: entity }), &parses)
                .expect_err("refused");
            assert!(e.detail.contains("deep"), "{}", e.detail);
            let schema = format!(
                "entity User {{ a: {}Long{} }};",
                "{b: ".repeat(n),
                "}".repeat(n)
            );
            assert!(snap
                .check(
                    &write(Command::PutSchema {
                        text: schema,
                        json: false
                    }),
                    &parses
                )
                .is_err());
        }
        // The deepest accepted policy evaluates on this stack.
        let ok = format!(
            "permit(principal, action, resource) when {{ {}1{} == 1 }};",
            "(".repeat(30),
            ")".repeat(30)
        );
        let (after, effect) = snap.apply(
            1,
            &write(Command::PutPolicy {
                id: "p".into(),
                cedar: ok,
            }),
            &parses,
        );
        assert_eq!(effect.outcome, verdict_engine::Outcome::Applied);
        let input = DecisionInput::from_authzen(
            Some(&json!({"type": "User", "id": "a"})),
            Some(&json!({"name": "view"})),
            Some(&json!({"type": "Doc", "id": "d"})),
            None,
        )
        .expect("input");
        assert!(after.decide(&input).expect("decides").allow);
    });
}
