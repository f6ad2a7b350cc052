//! What every handler shares: the Raft member, the configuration and the counters behind /metrics.

use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use std::time::SystemTime;
use std::time::UNIX_EPOCH;

use verdict_cluster::Limits;
use verdict_cluster::Node;
use verdict_cluster::NodeOptions;
use verdict_decision_log::DecisionLog;
use verdict_engine::Outcome;
use verdict_engine::Write;

use crate::config::Config;
use crate::error::ApiError;
use crate::tls::Tls;

/// Counters exported on /metrics. Relaxed atomics: monotonic counts, no ordering needed.
#[derive(Default)]
pub struct Metrics {
    /// Decisions answered allow.
    pub decisions_allow: AtomicU64,
    /// Decisions answered deny.
    pub decisions_deny: AtomicU64,
    /// Decision requests refused (bad input, stale, overload).
    pub decisions_error: AtomicU64,
    /// Sum of decision latencies in microseconds.
    pub decision_micros: AtomicU64,
    /// Writes committed.
    pub writes_ok: AtomicU64,
    /// Writes refused.
    pub writes_rejected: AtomicU64,
    /// Peer RPCs refused for a missing or wrong cluster secret.
    pub peer_refused: AtomicU64,
    /// Decisions refused because the node may be stale (`fail_closed`).
    pub decisions_stale: AtomicU64,
    /// Decision requests refused because a decision the configuration says must be logged could
    /// not be (queue full under `when_full = "block"`, fsync too slow, log shut down).
    pub decisions_unlogged: AtomicU64,
    /// Requests refused with 401 for a malformed, unknown, revoked or wrong credential (not for a
    /// missing one).
    pub auth_failures: AtomicU64,
    /// Requests refused with 403: a valid credential without the scope the request needs.
    pub auth_forbidden: AtomicU64,
    /// Requests whose handling panicked and were answered `500 internal` (see `panic`). Any
    /// non-zero value is a bug to report.
    pub panics: AtomicU64,
}

impl Metrics {
    /// Adds one to a counter.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Shared handler state.
pub struct AppState {
    /// The local Raft member.
    pub node: Node,
    /// The node's configuration.
    pub config: Config,
    /// Counters.
    pub metrics: Metrics,
    /// Whether this node's state may be stale (see `Node::stale_reason`); refreshed in the
    /// background so decisions read one flag when `fail_closed` is on.
    pub stale: AtomicBool,
    /// Open watch streams.
    pub watchers: Arc<tokio::sync::Semaphore>,
    /// Where writes are measured, parsed and validated before they are proposed: off the async
    /// workers, on threads with a stack deep enough for any admitted text.
    pub parse_pool: crate::parse_pool::ParsePool,
    /// Set to `true` when the node shuts down: the listeners stop taking requests, and
    /// long-lived streams and background tasks end (`subscribe` to wait for it).
    pub stop: tokio::sync::watch::Sender<bool>,
    /// The decision log, when `[decision_log] enabled = true`. `None` keeps the decision path to
    /// one check of this option.
    pub decision_log: Option<DecisionLog>,
    /// Credential checks (see `auth`).
    pub auth: crate::auth::Auth,
    /// The certificates of the listeners and peer clients, when `[tls]` is set.
    pub tls: Option<Arc<Tls>>,
    /// Connection counters of the three listeners (`verdict_connections_*` on /metrics).
    pub connections: crate::connections::ConnectionMetrics,
    /// The secret a peer RPC must carry (see `bootstrap::cluster_secret`).
    pub peer_secret: Arc<String>,
    /// This node's decision rate and CPU per decision (`capacity`), for /metrics and the
    /// pre-flight before a drain.
    pub capacity: crate::capacity::Capacity,
    /// Held while this node hands leadership away (a drain, a draining node that was elected,
    /// shutdown), so two hand-offs never race each other.
    pub handing_off: tokio::sync::Mutex<()>,
}

async fn open_decision_log(config: &Config) -> anyhow::Result<Option<DecisionLog>> {
    if !config.decision_log.enabled {
        return Ok(None);
    }
    let log = DecisionLog::open(&config.decision_log, config.node_id, &config.data_dir)
        .await
        .map_err(|e| {
            anyhow::anyhow!("cannot start decision logging: {e}; fix the `[decision_log]` table of the config file (docs/decision-logs.md)")
        })?;
    let status = log.status();
    tracing::info!(
        last_seq = status.last_seq,
        queued = status.queue.records,
        truncated_bytes = status.queue.truncated_at_open,
        sinks = status.sinks.len(),
        "decision logging on"
    );
    Ok(Some(log))
}

/// Refreshes `AppState::stale` every 100 ms until the node stops.
pub async fn watch_freshness(state: Shared) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was: Option<String> = None;
    loop {
        tick.tick().await;
        let reason = state.node.stale_reason();
        state.stale.store(reason.is_some(), Ordering::Relaxed);
        if reason.is_some() != was.is_some() {
            match &reason {
                Some(r) => tracing::warn!(reason = %r, "node state may be stale"),
                None => tracing::info!("node state fresh again"),
            }
        }
        was = reason;
    }
}

/// The handle handlers receive.
pub type Shared = Arc<AppState>;

/// Milliseconds since the Unix epoch: the stamp the leader puts into each write.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl AppState {
    /// Starts the node's parts in order: reads the bootstrap admin secret, opens the decision log
    /// (a bad `[decision_log]` table stops start-up before Raft runs; the queue cuts a torn tail
    /// here), starts Raft with the bootstrap the configuration chooses, and, with an admin secret,
    /// a task that creates the bootstrap admin once the cluster takes writes. `config` should have
    /// passed [`Config::validate`]; `tls` is `Tls::load` of its `[tls]` table.
    pub async fn new(config: Config, tls: Option<Arc<Tls>>) -> anyhow::Result<Shared> {
        let admin_secret = crate::auth::bootstrap_secret(&config)?;
        let decision_log = open_decision_log(&config).await?;
        let secret = crate::bootstrap::cluster_secret(&config);
        let node = Node::start(NodeOptions {
            node_id: config.node_id,
            data_dir: config.data_dir.clone(),
            info: crate::bootstrap::node_info(&config),
            cluster_secret: secret.clone(),
            bootstrap: crate::bootstrap::choose(&config)?,
            snapshot_every: config.snapshot_every,
            keep_log_behind_snapshot: config.keep_log_behind_snapshot,
            history_max_bytes: config.watch_history_max_bytes,
            limits: Limits {
                max_lag: config.max_lag,
                max_leader_silence: Duration::from_millis(config.max_leader_silence_ms),
            },
            peer_tls: tls.as_ref().and_then(|t| t.peer_client()),
        })
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot start the node with data dir `{}`: {e}",
                config.data_dir.display()
            )
        })?;
        let state = Arc::new(AppState {
            node,
            metrics: Metrics::default(),
            stale: AtomicBool::new(false),
            watchers: Arc::new(tokio::sync::Semaphore::new(config.max_watchers.max(1))),
            parse_pool: crate::parse_pool::ParsePool::start(&config.parse)
                .map_err(|e| anyhow::anyhow!("cannot start the parse threads: {e}"))?,
            stop: tokio::sync::watch::Sender::new(false),
            decision_log,
            auth: crate::auth::Auth::new(&config, admin_secret.is_some()),
            tls,
            connections: crate::connections::ConnectionMetrics::default(),
            peer_secret: Arc::new(secret),
            capacity: crate::capacity::Capacity::default(),
            handing_off: tokio::sync::Mutex::new(()),
            config,
        });
        if state.config.auto_finalize {
            // Before anything is served: a fresh single node starts at the top level.
            verdict_cluster::upgrade::finalize_fresh(&state.node, Duration::from_secs(10)).await;
            verdict_cluster::upgrade::spawn_auto_finalize(state.node.clone());
        }
        if let Some(secret) = admin_secret {
            tokio::spawn(crate::auth::bootstrap(state.clone(), secret));
        }
        Ok(state)
    }

    /// Validates a write against the current snapshot, proposes it, waits for commit + apply, and
    /// answers its version. Invalid writes never reach the log.
    pub async fn propose(&self, mut write: Write) -> Result<u64, ApiError> {
        write.stamped_ms = now_ms();
        // Checked before proposing; apply re-checks against the state at its own position. A
        // follower's state may trail the leader's, so there `If-Match` is left to apply alone
        // (checking it here could refuse a write that holds on the leader).
        let is_leader = self.node.is_leader();
        let mut to_check = write.clone();
        if !is_leader {
            to_check.if_match = None;
        }
        // The check runs the whole write on a scratch copy (parsing, validation, the entity
        // closure), so it runs on the parse pool's big-stack threads, never on the async workers:
        // no input may overflow a worker's stack or hold up `/livez`. Admission (the recursion
        // and work measures) comes first, before Cedar sees the text.
        let snapshot = self.node.published().load_full();
        let parses = self.node.parse_cache().clone();
        let checked = self
            .parse_pool
            .run(move || {
                verdict_engine::admission::admit(&to_check)?;
                snapshot.check(&to_check, &parses)
            })
            .await?;
        match checked {
            Ok(Some(first)) => return Ok(first),
            Ok(None) => {}
            Err(e) => {
                Metrics::inc(&self.metrics.writes_rejected);
                return Err(e.into());
            }
        }
        // From here the write may commit: the request timeout must wait for its outcome.
        crate::proposed::mark();
        let result = tokio::time::timeout(Duration::from_secs(30), self.node.write(write)).await;
        match result {
            Err(_) => Err(ApiError::unavailable(
                "no_leader",
                "the write was not committed within 30 s (no quorum?); it may still commit: retry with the same Idempotency-Key",
            )),
            Ok(Ok((version, Outcome::Applied))) => {
                Metrics::inc(&self.metrics.writes_ok);
                Ok(version)
            }
            Ok(Ok((_, Outcome::Duplicate { version }))) => Ok(version),
            Ok(Ok((_, Outcome::Rejected(e)))) => {
                Metrics::inc(&self.metrics.writes_rejected);
                Err(e.into())
            }
            Ok(Err(e)) => Err(write_error(e)),
        }
    }

    /// Waits (bounded) until this node has applied `version`.
    pub async fn wait_for_version(&self, version: u64) -> Result<(), ApiError> {
        if self.node.published().load().version() >= version {
            return Ok(());
        }
        // Fail fast only where "no write produced it" is certain: on a leader a quorum confirmed
        // within less than an election timeout (a restarted or deposed leader may still think it
        // leads, with a shorter log than the real one).
        if self.node.leads_confirmed(Duration::from_millis(250)) {
            let last = self.node.status().last_log_index;
            if version > last {
                return Err(ApiError::bad_request(
                    "future_version",
                    format!(
                        "Verdict-Min-Version {version} has not been produced by any write; the newest version is {last}: send a version a write answered"
                    ),
                ));
            }
        }
        let mut rx = self.node.published().subscribe();
        let wait = Duration::from_millis(self.config.min_version_wait_ms);
        let reached = tokio::time::timeout(wait, rx.wait_for(|v| *v >= version)).await;
        match reached {
            Ok(Ok(_)) => Ok(()),
            _ => Err(ApiError::unavailable(
                "stale",
                format!(
                    "this node has applied version {} and did not reach {version} within {} ms; retry, or ask another node",
                    self.node.published().load().version(),
                    self.config.min_version_wait_ms
                ),
            )),
        }
    }
}

/// The answer to a write that did not commit.
pub(crate) fn write_error(e: verdict_cluster::WriteError) -> ApiError {
    match e {
        verdict_cluster::WriteError::NotLeader { leader } => ApiError::unavailable(
            "no_leader",
            match leader {
                Some((id, info)) => format!(
                    "this node is not the leader; node {id} at {} is",
                    info.api_addr
                ),
                None => "no leader is known right now; retry shortly".to_string(),
            },
        ),
        verdict_cluster::WriteError::Unavailable(m) => ApiError::unavailable(
            "no_leader",
            format!("the write could not be committed: {m}"),
        ),
        verdict_cluster::WriteError::Unknown(m) => ApiError::unavailable(
            "outcome_unknown",
            format!(
                "leadership changed while the write was pending, so it may or may not have \
                 been applied ({m}); retry it with the same Idempotency-Key header, which \
                 applies it at most once, or read the resource to see"
            ),
        ),
    }
}
