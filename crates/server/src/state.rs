//! What every handler shares: the Raft member, the configuration and the counters behind /metrics.

use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use std::time::SystemTime;
use std::time::UNIX_EPOCH;

use verdict_cluster::Node;
use verdict_engine::Outcome;
use verdict_engine::Write;

use crate::config::Config;
use crate::error::ApiError;

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
    /// Set by drain: /readyz answers 503 so the load balancer stops sending traffic.
    pub draining: AtomicBool,
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
    /// Validates a write against the current snapshot, proposes it, waits for commit + apply, and
    /// answers its version. Invalid writes never reach the log.
    pub async fn propose(&self, mut write: Write) -> Result<u64, ApiError> {
        write.stamped_ms = now_ms();
        // Checked before proposing; apply re-checks against the state at its own position.
        match self.node.published().load().check(&write) {
            Ok(Some(first)) => return Ok(first),
            Ok(None) => {}
            Err(e) => {
                Metrics::inc(&self.metrics.writes_rejected);
                return Err(e.into());
            }
        }
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
            Ok(Err(verdict_cluster::WriteError::NotLeader { leader })) => {
                Err(ApiError::unavailable(
                    "no_leader",
                    match leader {
                        Some((id, info)) => format!(
                            "this node is not the leader; node {id} at {} is",
                            info.api_addr
                        ),
                        None => "no leader is known right now; retry shortly".to_string(),
                    },
                ))
            }
            Ok(Err(verdict_cluster::WriteError::Unavailable(m))) => Err(ApiError::unavailable(
                "no_leader",
                format!("the write could not be committed: {m}"),
            )),
        }
    }

    /// Waits (bounded) until this node has applied `version`.
    pub async fn wait_for_version(&self, version: u64) -> Result<(), ApiError> {
        if self.node.published().load().version() >= version {
            return Ok(());
        }
        let status = self.node.status();
        if status.is_leader && version > status.last_log_index {
            return Err(ApiError::bad_request(
                "future_version",
                format!(
                    "Verdict-Min-Version {version} has not been produced by any write; the newest version is {}: send a version a write answered",
                    status.last_log_index
                ),
            ));
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
