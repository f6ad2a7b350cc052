//! The cluster's format levels across its members: which level each member supports (from its
//! status report), raising the active level once every member supports the next one, and naming
//! the members that hold a feature back.
//!
//! The active level lives in the replicated state and moves by one `RaiseLevel` log entry, so
//! every member switches formats at the same log position. It is raised only when every member,
//! voters and learners alike, reports that it supports the new level: a member that does not
//! answer, or a member of the release before levels (which reports none), holds it back.
//! Until then a rollback to the previous release stays possible (docs/operations.md).

use std::time::Duration;

use verdict_engine::Command;
use verdict_engine::Outcome;
use verdict_engine::Write;

use crate::codec::TOP_LEVEL;
use crate::node::Node;
use crate::types::NodeId;
use crate::write::WriteError;

/// What one member says about its release and levels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberLevel {
    /// Its id.
    pub id: NodeId,
    /// Whether it votes.
    pub voter: bool,
    /// Whether it answered the status call.
    pub reachable: bool,
    /// Its release; `None` for a member of the release before levels (or one that did not
    /// answer).
    pub release: Option<String>,
    /// The highest level it supports; `None` if it did not answer.
    pub supported_level: Option<u8>,
}

impl MemberLevel {
    /// Whether it is known to support `level`.
    pub fn supports(&self, level: u8) -> bool {
        self.supported_level.is_some_and(|l| l >= level)
    }

    /// Why it holds `level` back, for an operator.
    pub fn holds_back(&self, level: u8) -> String {
        match (&self.release, self.supported_level) {
            (_, None) => format!("node {} did not answer (its release is unknown)", self.id),
            (None, Some(l)) => format!(
                "node {} runs the release before format levels (supports level {l}, needs {level})",
                self.id
            ),
            (Some(r), Some(l)) => format!(
                "node {} runs release {r}, which supports level {l} (needs {level})",
                self.id
            ),
        }
    }
}

/// The cluster's levels as this member sees them.
#[derive(Debug, Clone)]
pub struct UpgradeStatus {
    /// The active level.
    pub active_level: u8,
    /// The highest level every member supports (the lowest of their highest levels).
    pub cluster_supports: u8,
    /// The highest level this member's release supports.
    pub this_release_supports: u8,
    /// Every member.
    pub members: Vec<MemberLevel>,
}

impl UpgradeStatus {
    /// The members that do not (knowingly) support `level`.
    pub fn holding_back(&self, level: u8) -> Vec<&MemberLevel> {
        self.members.iter().filter(|m| !m.supports(level)).collect()
    }

    /// The level an upgrade would raise to next, if any: one above the active level, up to what
    /// this release supports.
    pub fn next_level(&self) -> Option<u8> {
        (self.active_level < self.this_release_supports).then_some(self.active_level + 1)
    }
}

/// Asks every member for its report (1 s each, at once).
pub async fn status(node: &Node) -> UpgradeStatus {
    let members: Vec<MemberLevel> = node
        .cluster()
        .await
        .into_iter()
        .map(|(id, _, voter, report)| MemberLevel {
            id,
            voter,
            reachable: report.is_some(),
            release: report.as_ref().and_then(|r| r.release.clone()),
            supported_level: report.map(|r| r.supported_level),
        })
        .collect();
    let cluster_supports = members
        .iter()
        .map(|m| m.supported_level.unwrap_or(1))
        .min()
        .unwrap_or(1);
    UpgradeStatus {
        active_level: node.active_level(),
        cluster_supports,
        this_release_supports: TOP_LEVEL,
        members,
    }
}

/// Why the level was not raised.
#[derive(Debug, thiserror::Error)]
pub enum FinalizeError {
    /// The cluster is already at the level asked for (or the highest this release supports).
    #[error(
        "the cluster is already at format level {active} (asked: {asked}); nothing to finalise"
    )]
    AlreadyFinal {
        /// The active level.
        active: u8,
        /// The level asked for.
        asked: u8,
    },
    /// Not a level this release knows.
    #[error("format level {0} does not exist: this release supports levels 1 to {TOP_LEVEL}")]
    InvalidLevel(u8),
    /// Some members do not support the level yet.
    #[error("format level {level} cannot be finalised yet: {}; upgrade them to this release first", holding.join("; "))]
    Incomplete {
        /// The level asked for.
        level: u8,
        /// Why each member that holds it back does.
        holding: Vec<String>,
        /// Their ids.
        nodes: Vec<NodeId>,
    },
    /// The raise could not be committed.
    #[error("{0}")]
    Write(#[from] WriteError),
    /// Apply refused it (another raise got there first).
    #[error("{0}")]
    Refused(String),
}

/// Raises the active level to `level` (default: the highest this release supports), once every
/// member supports it. Answers the version of the raising entry.
pub async fn finalize(node: &Node, level: Option<u8>) -> Result<u64, FinalizeError> {
    let level = level.unwrap_or(TOP_LEVEL);
    if level == 0 || level > TOP_LEVEL {
        return Err(FinalizeError::InvalidLevel(level));
    }
    let active = node.active_level();
    if level <= active {
        return Err(FinalizeError::AlreadyFinal {
            active,
            asked: level,
        });
    }
    let status = status(node).await;
    let holding = status.holding_back(level);
    if !holding.is_empty() {
        return Err(FinalizeError::Incomplete {
            level,
            holding: holding.iter().map(|m| m.holds_back(level)).collect(),
            nodes: holding.iter().map(|m| m.id).collect(),
        });
    }
    raise(node, level).await
}

async fn raise(node: &Node, level: u8) -> Result<u64, FinalizeError> {
    let write = Write {
        command: Command::RaiseLevel { level },
        if_match: None,
        idempotency_key: None,
        // Not read by apply; stamped like every write.
        stamped_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0),
    };
    match node.write(write).await? {
        (version, Outcome::Applied) => {
            tracing::info!(level, version, "raised the cluster's format level");
            Ok(version)
        }
        (version, Outcome::Duplicate { .. }) => Ok(version),
        (_, Outcome::Rejected(e)) => Err(FinalizeError::Refused(e.detail)),
    }
}

/// The members that keep a feature of `level` from being used, described for an operator; empty
/// when the cluster is at `level` or every member supports it (then only finalising is missing).
pub async fn holding_back(node: &Node, level: u8) -> Vec<String> {
    status(node)
        .await
        .holding_back(level)
        .iter()
        .map(|m| m.holds_back(level))
        .collect()
}

/// How often the leader looks whether the level can be raised: often in the first seconds, so a
/// fresh cluster reaches the top level before it takes much traffic, then at a calmer pace.
const AUTO_FINALIZE_FIRST: Duration = Duration::from_millis(100);
const AUTO_FINALIZE_EVERY: Duration = Duration::from_millis(500);
const AUTO_FINALIZE_FIRST_FOR: Duration = Duration::from_secs(10);

/// With `auto_finalize`, on the start that initialised a one-member cluster: raises the level to
/// the top before the node serves anything (waiting up to `within` for its first election), so a
/// fresh single node never changes format level, and version, under its first clients. A fresh
/// multi-member cluster is raised by [`spawn_auto_finalize`] once its members answer.
pub async fn finalize_fresh(node: &Node, within: Duration) {
    if !node.bootstrapped_now() || node.active_level() >= TOP_LEVEL {
        return;
    }
    let deadline = std::time::Instant::now() + within;
    while !node.is_leader() {
        if std::time::Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if node.status().members.len() != 1 {
        return;
    }
    if let Err(e) = raise(node, TOP_LEVEL).await {
        tracing::warn!(error = %e, "could not raise a fresh node's format level; auto finalize retries");
    }
}

/// With `auto_finalize` (the default): while this member leads, raises the active level one step
/// as soon as every member supports the next one. A fresh cluster of this release reaches the top
/// level right after its first election.
pub fn spawn_auto_finalize(node: Node) {
    tokio::spawn(async move {
        let started = std::time::Instant::now();
        loop {
            let pause = if started.elapsed() < AUTO_FINALIZE_FIRST_FOR {
                AUTO_FINALIZE_FIRST
            } else {
                AUTO_FINALIZE_EVERY
            };
            tokio::time::sleep(pause).await;
            if !node.is_leader() || node.active_level() >= TOP_LEVEL {
                continue;
            }
            let status = status(&node).await;
            let Some(next) = status.next_level() else {
                continue;
            };
            if !status.holding_back(next).is_empty() {
                continue;
            }
            match raise(&node, next).await {
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, level = next, "auto finalize: not yet"),
            }
        }
    });
}
