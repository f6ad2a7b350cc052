//! One log line per node event an operator reads first — leadership won or lost, membership
//! changed, a snapshot installed from the leader, the log purged — each with the node id, the term
//! and the version (the last applied log index). openraft's own logging of these is state dumps
//! of several kilobytes, so the binary keeps openraft at `warn` and this module says what happened,
//! from openraft's metrics: [`spawn`] watches them and compares each report with the previous one.

use std::collections::BTreeSet;

use openraft::async_runtime::WatchReceiver;

use crate::state_machine::Raft;
use crate::types::NodeId;

/// What this module compares between two metrics reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Seen {
    term: u64,
    /// Whether this node is the leader (its server state, not the leader it last heard of: a
    /// restarted node reports the leader of its persisted vote, itself perhaps, until it learns
    /// better).
    leading: bool,
    leader: Option<NodeId>,
    /// Log index of the membership configuration in effect.
    membership_at: Option<u64>,
    voters: BTreeSet<NodeId>,
    learners: BTreeSet<NodeId>,
    /// Last log index the node's snapshot covers.
    snapshot: Option<u64>,
    /// Last log index purged from storage.
    purged: Option<u64>,
    applied: u64,
}

/// A node event worth a line.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    BecameLeader,
    LostLeadership { to: Option<NodeId> },
    NewLeader { leader: NodeId },
    MembershipChanged { at: u64 },
    SnapshotInstalled { upto: u64 },
    LogPurged { upto: u64 },
}

/// The events between two reports of node `id`. A snapshot that covers more than the node had
/// applied came from the leader (one it built itself covers what it had applied).
fn events(id: NodeId, before: &Seen, now: &Seen) -> Vec<Event> {
    let mut out = Vec::new();
    match (before.leading, now.leading) {
        (false, true) => out.push(Event::BecameLeader),
        (true, false) => out.push(Event::LostLeadership { to: now.leader }),
        _ if before.leader != now.leader => {
            if let Some(leader) = now.leader.filter(|l| *l != id) {
                out.push(Event::NewLeader { leader });
            }
        }
        _ => {}
    }
    if let (true, Some(at)) = (before.membership_at != now.membership_at, now.membership_at) {
        out.push(Event::MembershipChanged { at });
    }
    if let (true, Some(upto)) = (before.snapshot < now.snapshot, now.snapshot) {
        if upto > before.applied {
            out.push(Event::SnapshotInstalled { upto });
        }
    }
    if let (true, Some(upto)) = (before.purged < now.purged, now.purged) {
        out.push(Event::LogPurged { upto });
    }
    out
}

fn seen(m: &openraft::RaftMetrics<crate::types::TypeConfig>) -> Seen {
    let membership = m.membership_config.membership();
    Seen {
        term: m.current_term,
        leading: m.state == openraft::ServerState::Leader,
        leader: m.current_leader,
        membership_at: m.membership_config.log_id().as_ref().map(|l| l.index),
        voters: membership.voter_ids().collect(),
        learners: membership.learner_ids().collect(),
        snapshot: m.snapshot.map(|l| l.index),
        purged: m.purged.map(|l| l.index),
        applied: m.last_applied.map(|l| l.index).unwrap_or(0),
    }
}

fn log(id: NodeId, event: &Event, s: &Seen) {
    let (term, version) = (s.term, s.applied);
    match event {
        Event::BecameLeader => {
            tracing::info!(node_id = id, term, version, "became the leader")
        }
        Event::LostLeadership { to: Some(leader) } => {
            tracing::info!(node_id = id, term, version, leader, "lost leadership")
        }
        Event::LostLeadership { to: None } => {
            tracing::info!(node_id = id, term, version, "lost leadership")
        }
        Event::NewLeader { leader } => {
            tracing::info!(
                node_id = id,
                term,
                version,
                leader,
                "following a new leader"
            )
        }
        Event::MembershipChanged { at } => tracing::info!(
            node_id = id,
            term,
            version,
            at,
            voters = ?s.voters,
            learners = ?s.learners,
            "membership changed"
        ),
        Event::SnapshotInstalled { upto } => {
            tracing::info!(
                node_id = id,
                term,
                version,
                upto,
                "snapshot installed from the leader"
            )
        }
        Event::LogPurged { upto } => {
            tracing::info!(node_id = id, term, version, upto, "log purged")
        }
    }
}

/// Logs node `id`'s events until its Raft stops. The first report only sets the baseline (the
/// start-up line says where the node starts).
pub fn spawn(id: NodeId, raft: &Raft) -> tokio::task::JoinHandle<()> {
    let mut metrics = raft.metrics();
    tokio::spawn(async move {
        let mut before = seen(&metrics.borrow_watched());
        while metrics.changed().await.is_ok() {
            let now = seen(&metrics.borrow_watched());
            for event in events(id, &before, &now) {
                log(id, &event, &now);
            }
            before = now;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(leader: Option<NodeId>, applied: u64) -> Seen {
        Seen {
            term: 3,
            leading: leader == Some(1),
            leader,
            applied,
            ..Seen::default()
        }
    }

    #[test]
    fn leadership_changes_are_events_once() {
        let (none, me, other) = (at(None, 5), at(Some(1), 5), at(Some(2), 5));
        assert_eq!(events(1, &none, &me), vec![Event::BecameLeader]);
        assert_eq!(events(1, &me, &me), vec![]);
        assert_eq!(
            events(1, &me, &other),
            vec![Event::LostLeadership { to: Some(2) }]
        );
        assert_eq!(
            events(1, &none, &other),
            vec![Event::NewLeader { leader: 2 }]
        );
        assert_eq!(events(1, &other, &none), vec![]);
        // Restarted: its persisted vote names itself, but it does not lead.
        let restarted = Seen {
            leading: false,
            ..me.clone()
        };
        assert_eq!(
            events(1, &restarted, &other),
            vec![Event::NewLeader { leader: 2 }]
        );
    }

    #[test]
    fn installed_snapshots_and_purges_are_events_but_built_snapshots_are_not() {
        let before = at(Some(2), 100);
        let built = Seen {
            snapshot: Some(100),
            ..before.clone()
        };
        assert_eq!(events(1, &before, &built), vec![]);
        let installed = Seen {
            snapshot: Some(500),
            applied: 500,
            ..before.clone()
        };
        assert_eq!(
            events(1, &before, &installed),
            vec![Event::SnapshotInstalled { upto: 500 }]
        );
        let purged = Seen {
            purged: Some(90),
            ..before.clone()
        };
        assert_eq!(
            events(1, &before, &purged),
            vec![Event::LogPurged { upto: 90 }]
        );
        let membership = Seen {
            membership_at: Some(7),
            ..before.clone()
        };
        assert_eq!(
            events(1, &before, &membership),
            vec![Event::MembershipChanged { at: 7 }]
        );
    }
}
