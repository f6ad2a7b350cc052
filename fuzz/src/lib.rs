//! What the fuzz targets share: a write taken the way the cluster takes it (check on the leader,
//! then apply of the committed entry with the same parse cache), the small fixed state decisions
//! run against, and the server's path from an AuthZEN body to a decision.
//!
//! Each target must never panic, abort or run out of time or memory on any input: a refusal is
//! an ordinary result. libFuzzer reports everything else.

use std::sync::OnceLock;
use std::thread;

use serde_json::Map;
use serde_json::Value;
use verdict_engine::limits;
use verdict_engine::Command;
use verdict_engine::DecisionInput;
use verdict_engine::ParseCache;
use verdict_engine::Snapshot;
use verdict_engine::Write;

/// The stack a request's parsing and evaluation get in a node: a tokio worker's (2 MiB). libFuzzer
/// runs inputs on the main thread (8 MiB), where an input that overflows a worker would pass; if
/// parsing moves to a pool with a larger stack, this follows it.
pub const NODE_STACK_BYTES: usize = 2 * 1024 * 1024;

/// Runs `f` on a thread with [`NODE_STACK_BYTES`] of stack, as a node would run it. A stack
/// overflow there aborts the process, which libFuzzer reports as a crash; a panic is re-raised.
pub fn on_node_stack(f: impl FnOnce() + Send) {
    thread::scope(|s| {
        let handle = thread::Builder::new()
            .stack_size(NODE_STACK_BYTES)
            .spawn_scoped(s, f);
        match handle {
            Ok(h) => {
                if let Err(panic) = h.join() {
                    std::panic::resume_unwind(panic);
                }
            }
            Err(e) => panic!("cannot start a thread for the input: {e}"),
        }
    });
}

/// Policies of the fixed state: a group hierarchy, context and attribute access, and a long
/// `like` pattern (issue #13, case 8) that a fuzzed context string is matched against.
fn fixed_policies() -> String {
    let long_like = "a".repeat(8_000);
    format!(
        r#"@id("admins")
permit(principal in Group::"admins", action, resource);
@id("owner")
permit(principal, action == Action::"read", resource) when {{ resource has owner && resource.owner == principal }};
@id("ctx")
permit(principal, action, resource) when {{ context has level && context.level == 3 }};
@id("like")
forbid(principal, action, resource) when {{ context has s && context.s like "*{long_like}*" }};
"#
    )
}

const FIXED_ENTITIES: &str = r#"[
  {"uid": {"type": "Group", "id": "admins"}, "attrs": {}, "parents": [{"type": "Group", "id": "staff"}]},
  {"uid": {"type": "Group", "id": "staff"}, "attrs": {}, "parents": []},
  {"uid": {"type": "User", "id": "alice"}, "attrs": {"age": 30}, "parents": [{"type": "Group", "id": "admins"}]},
  {"uid": {"type": "User", "id": "bob"}, "attrs": {}, "parents": [{"type": "Group", "id": "staff"}]},
  {"uid": {"type": "Doc", "id": "d1"}, "attrs": {"owner": {"__entity": {"type": "User", "id": "bob"}}}, "parents": []}
]"#;

/// Takes one write as a node does: `check` before proposing, then `apply` at the next version
/// with the same parse cache. Returns the state after it (unchanged when refused).
pub fn write(state: &Snapshot, command: Command) -> Snapshot {
    let write = Write {
        command,
        if_match: None,
        idempotency_key: None,
        stamped_ms: 1,
    };
    let parses = ParseCache::new();
    if state.check(&write, &parses).is_err() {
        return state.clone();
    }
    state.apply(state.version() + 1, &write, &parses).0
}

/// The small state every decision and entity write runs against, built once.
pub fn fixed_state() -> &'static Snapshot {
    static STATE: OnceLock<Snapshot> = OnceLock::new();
    STATE.get_or_init(|| {
        let s = write(
            &Snapshot::empty(),
            Command::ReplacePoliciesText {
                cedar: fixed_policies(),
            },
        );
        write(
            &s,
            Command::UpsertEntities {
                json: FIXED_ENTITIES.into(),
            },
        )
    })
}

/// The server's path from an `/access/v1/evaluation(s)` body to decisions
/// (crates/server/src/body.rs `json`, crates/server/src/routes/decide.rs `evaluate`): the nesting
/// check before parsing, a JSON object, per item the defaults of a batch, a token in
/// `subject.properties.token` checked against the key ring, then [`DecisionInput::from_authzen`]
/// and `decide`. Kept to engine calls so the targets need not build the server's network stack.
pub fn evaluate_body(state: &Snapshot, body: &[u8]) {
    if body.iter().all(u8::is_ascii_whitespace) || limits::nesting_exceeds(body).is_some() {
        return;
    }
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    match obj.get("evaluations") {
        Some(Value::Array(items)) => {
            for item in items {
                if let Value::Object(item) = item {
                    evaluate_item(state, item, Some(&obj));
                }
            }
        }
        _ => evaluate_item(state, &obj, None),
    }
}

fn evaluate_item(
    state: &Snapshot,
    item: &Map<String, Value>,
    defaults: Option<&Map<String, Value>>,
) {
    let get = |k: &str| item.get(k).or_else(|| defaults.and_then(|d| d.get(k)));
    let subject = get("subject");
    if let Some(Value::Object(s)) = subject {
        let token = s
            .get("properties")
            .and_then(|p| p.get("token"))
            .and_then(Value::as_str);
        if let Some(t) = token {
            // The fixed state has no keys: every token is refused, as the server answers it.
            let _ = state.check_token(t, 1);
            return;
        }
    }
    if let Ok(input) =
        DecisionInput::from_authzen(subject, get("action"), get("resource"), get("context"))
    {
        let _ = state.decide(&input);
    }
}
