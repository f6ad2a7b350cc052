//! What the fuzz targets share: each input takes the path it takes in a node, through the node's
//! own checks, on the node's own kinds of thread, so that the fuzzer finds what a node would hit
//! and nothing the node's defences already stop:
//!
//! - the route's checks ([`route`]: body limits, `verdict_server::body`, item counts) and every
//!   decision run as a task on a tokio runtime built as `verdict serve` builds it (src/main.rs),
//!   so on a worker thread with tokio's default stack, as a request does;
//! - a write's admission and check run on the server's parse pool, started with its default
//!   configuration (`[parse]`, so its threads' stack), in the order `AppState::propose` runs them;
//! - the committed write is applied back on a worker, as the state machine's task applies it:
//!   once with the check's parse cache (the leader) and once with an empty one (a follower
//!   parses the texts again, on a worker's stack).
//!
//! No input may panic, abort, or run out of time or memory: a refusal is an ordinary result.
//! libFuzzer reports everything else (libfuzzer-sys makes any panic, on any thread, an abort).

pub mod route;

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::Runtime;
use verdict_engine::admission;
use verdict_engine::Command;
use verdict_engine::Outcome;
use verdict_engine::ParseCache;
use verdict_engine::Snapshot;
use verdict_engine::Write;
use verdict_server::parse_pool::ParsePool;
use verdict_server::parse_pool::ParsePoolConfig;
use verdict_server::Config;

/// The node's defaults: body limits, item counts, the parse pool.
pub fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(Config::default)
}

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        // As src/main.rs builds the node's runtime: the workers' stack is tokio's default.
        match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => panic!("cannot start the async runtime: {e}"),
        }
    })
}

fn parse_pool() -> &'static ParsePool {
    static POOL: OnceLock<ParsePool> = OnceLock::new();
    POOL.get_or_init(|| match ParsePool::start(&ParsePoolConfig::default()) {
        Ok(pool) => pool,
        Err(e) => panic!("cannot start the parse threads: {e}"),
    })
}

/// Runs `work` as a task on a worker of the node's runtime and waits for it: its stack is a
/// request's. A stack overflow there aborts the process, as it would abort a node.
pub fn on_node(work: impl Future<Output = ()> + Send + 'static) {
    let rt = runtime();
    if let Err(e) = rt.block_on(rt.spawn(work)) {
        match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("the input's task did not finish: {e}"),
        }
    }
}

/// Takes one write as a node does (`AppState::propose`, then the state machine's apply): admission
/// and check on the parse pool, then, if it passed, apply at the next version on this worker.
/// Answers the state after it, or `None` when it was refused before proposing.
///
/// Checks two things a replica relies on: a write that passed its check is applied, not refused
/// after it committed; and apply answers the same whether or not the check's parses are cached
/// (the leader applies from the cache, a follower parses again).
pub async fn propose(state: Snapshot, command: Command) -> Option<Snapshot> {
    let write = Write {
        command,
        if_match: None,
        idempotency_key: None,
        stamped_ms: 1,
    };
    let parses = std::sync::Arc::new(ParseCache::new());
    let checked = {
        let (state, write, parses) = (state.clone(), write.clone(), parses.clone());
        parse_pool()
            .run(move || {
                admission::admit(&write)?;
                state.check(&write, &parses)
            })
            .await
    };
    match checked {
        Ok(Ok(_)) => {}
        Ok(Err(_refused)) => return None,
        Err(e) => panic!(
            "the parse pool answered {} {}: {}",
            e.status, e.code, e.detail
        ),
    }
    let version = state.version() + 1;
    let (next, applied) = state.apply(version, &write, &parses);
    let (_, replayed) = state.apply(version, &write, &ParseCache::new());
    assert_eq!(
        applied.outcome,
        Outcome::Applied,
        "a write that passed its check was refused in apply, after it committed"
    );
    assert_eq!(
        applied, replayed,
        "apply answered differently with the check's parses (leader) and without (follower)"
    );
    Some(next)
}

/// Policies of the fixed state: a group hierarchy, context and attribute access, and the longest
/// `like` pattern a write may carry (issue #13, case 8), against which a fuzzed context string is
/// matched.
fn fixed_policies() -> String {
    let longest_like = "a".repeat(verdict_engine::limits::MAX_LIKE_PATTERN - 2);
    format!(
        r#"@id("admins")
permit(principal in Group::"admins", action, resource);
@id("owner")
permit(principal, action == Action::"read", resource) when {{ resource has owner && resource.owner == principal }};
@id("ctx")
permit(principal, action, resource) when {{ context has level && context.level == 3 }};
@id("like")
forbid(principal, action, resource) when {{ context has s && context.s like "*{longest_like}*" }};
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

/// The small state every decision and entity write runs against, written once through
/// [`propose`]. Call it outside [`on_node`] (it waits on the runtime the first time).
pub fn fixed_state() -> Snapshot {
    static STATE: OnceLock<Snapshot> = OnceLock::new();
    STATE
        .get_or_init(|| {
            let (done, state) = std::sync::mpsc::channel();
            on_node(async move {
                let cedar = fixed_policies();
                let s = propose(Snapshot::empty(), Command::ReplacePoliciesText { cedar }).await;
                let json = FIXED_ENTITIES.to_string();
                let s = propose(
                    s.unwrap_or_else(Snapshot::empty),
                    Command::UpsertEntities { json },
                )
                .await;
                let _ = done.send(s);
            });
            match state.recv() {
                Ok(Some(s)) if s.policies().count() == 4 => s,
                _ => panic!("the fixed state did not pass the node's checks"),
            }
        })
        .clone()
}
