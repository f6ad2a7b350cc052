//! Membership changes: adding learners, setting the voters, removing members for good and handing
//! leadership over. They run on the leader (a follower forwards them) and are checked first against
//! the rules openraft does not know: ids are never reused, the last voter cannot leave, only voters
//! lead.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::error::ClientWriteError;
use openraft::error::RaftError;
use openraft::ChangeMembers;
use openraft::RaftMetrics;

use crate::state_machine::Published;
use crate::state_machine::Raft;
use crate::types::MembershipError;
use crate::types::MembershipOp;
use crate::types::NodeId;
use crate::types::NodeInfo;
use crate::types::TypeConfig;
use crate::write::known_leader;
use crate::write::while_leading;
use crate::write::Forwarder;
use crate::write::FORWARD_ATTEMPTS;

/// Every member in `metrics`' effective membership: id, addresses, whether it votes.
pub(crate) fn members(metrics: &RaftMetrics<TypeConfig>) -> Vec<(NodeId, NodeInfo, bool)> {
    let membership = metrics.membership_config.membership();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    membership
        .nodes()
        .map(|(id, info)| (*id, info.clone(), voters.contains(id)))
        .collect()
}

/// Whether openraft has loaded this member's membership from storage. Until `Raft`'s core has
/// run its start-up, its metrics hold an empty placeholder membership with no log id; every
/// membership a member has ever been in came from a log entry or a snapshot and carries one (the
/// first, from `initialize`, is entry 0). Judging membership from the placeholder would call a
/// restarting member "removed" (issue 14).
pub(crate) fn membership_loaded(metrics: &RaftMetrics<TypeConfig>) -> bool {
    metrics.membership_config.log_id().is_some()
}

/// The membership part of readiness: why member `id` should not take traffic as far as its
/// membership goes, or `None` when it is a member. `seen` is every id that was ever a member
/// (from the replicated state). "Removed" is said only of a loaded membership that names `id`
/// no longer, never of the placeholder openraft reports while it starts.
pub(crate) fn membership_reason(
    id: NodeId,
    metrics: &RaftMetrics<TypeConfig>,
    seen: &BTreeSet<NodeId>,
) -> Option<String> {
    let membership = metrics.membership_config.membership();
    if membership.nodes().any(|(node, _)| *node == id) {
        return None;
    }
    if !membership_loaded(metrics) && !seen.is_empty() {
        // INVARIANT: a member with replicated state (`seen` not empty) has a membership entry in
        // its log or snapshot, so an unloaded membership here is openraft still starting.
        return Some("starting: Raft has not loaded its membership yet".into());
    }
    if seen.contains(&id) {
        return Some(format!(
            "node {id} was removed from the cluster; wipe its data directory and join with a new id"
        ));
    }
    Some("not a member of a cluster yet: add it as a learner through the leader".into())
}

/// Runs membership changes for one member.
#[derive(Clone)]
pub(crate) struct Membership {
    raft: Raft,
    published: Arc<Published>,
    forwarder: Forwarder,
}

impl Membership {
    /// Membership changes through `raft`, forwarded with `forwarder` when it does not lead.
    pub(crate) fn new(raft: Raft, published: Arc<Published>, forwarder: Forwarder) -> Self {
        Self {
            raft,
            published,
            forwarder,
        }
    }

    fn metrics(&self) -> RaftMetrics<TypeConfig> {
        self.raft.metrics().borrow_watched().clone()
    }

    /// Node ids that were members once and are members neither of the effective nor of the
    /// committed membership: never accepted again. Until the change that removes a node commits,
    /// that node may still be the leader replicating it (a leader removing itself), and refusing
    /// its traffic then would leave the change uncommitted until an election.
    /// Empty until openraft has loaded the membership: judged from its start-up placeholder,
    /// every member would look removed, and their Raft traffic would be refused.
    pub(crate) fn removed_ids(&self) -> BTreeSet<NodeId> {
        let metrics = self.metrics();
        if !membership_loaded(&metrics) {
            return BTreeSet::new();
        }
        let mut current: BTreeSet<NodeId> =
            members(&metrics).iter().map(|(id, _, _)| *id).collect();
        let server = self.raft.server_metrics();
        current.extend(
            server
                .borrow_watched()
                .committed_membership_config
                .membership()
                .nodes()
                .map(|(id, _)| *id),
        );
        self.published
            .members_seen()
            .iter()
            .filter(|id| !current.contains(id))
            .copied()
            .collect()
    }

    /// See [`crate::Node::change_membership`].
    pub(crate) async fn change(&self, op: MembershipOp) -> Result<u64, MembershipError> {
        let me = self.metrics().id;
        let mut last = String::from("no leader is known");
        for attempt in 0..FORWARD_ATTEMPTS {
            let Some((leader, info)) = known_leader(&self.raft) else {
                tokio::time::sleep(Duration::from_millis(200 * (attempt as u64 + 1))).await;
                continue;
            };
            if leader == me {
                match self.change_here(op.clone()).await {
                    Err(MembershipError::Unavailable(m)) => last = m,
                    other => return other,
                }
            } else {
                match self.forwarder.membership(&info.peer_addr, &op).await {
                    Err(MembershipError::Unavailable(m)) => last = m,
                    other => return other,
                }
            }
            tokio::time::sleep(Duration::from_millis(200 * (attempt as u64 + 1))).await;
        }
        Err(MembershipError::Unavailable(last))
    }

    /// Runs `change` (a membership change), giving up (outcome unknown) if this member stops
    /// leading first; openraft would keep it pending on a deposed leader.
    async fn leading<F: std::future::Future>(
        &self,
        change: F,
    ) -> Result<F::Output, MembershipError> {
        while_leading(&self.raft, change)
            .await
            .map_err(MembershipError::Unavailable)
    }

    /// Runs a membership change on this member, which must be the leader.
    pub(crate) async fn change_here(&self, op: MembershipOp) -> Result<u64, MembershipError> {
        let metrics = self.metrics();
        let me = metrics.id;
        if metrics.current_leader != Some(me) {
            return Err(MembershipError::Unavailable(
                "this node is no longer the leader".into(),
            ));
        }
        let last_log_index = metrics.last_log_index.unwrap_or(0);
        let all = members(&metrics);
        let voters: BTreeSet<NodeId> = all
            .iter()
            .filter(|(_, _, v)| *v)
            .map(|(id, _, _)| *id)
            .collect();
        let members: BTreeSet<NodeId> = all.iter().map(|(id, _, _)| *id).collect();
        let seen = self.published.members_seen();
        let result = match op {
            MembershipOp::AddLearner { id, info } => {
                if members.contains(&id) {
                    return Err(MembershipError::Invalid(format!(
                        "node {id} is already a member; use a new id for a new node"
                    )));
                }
                if seen.contains(&id) {
                    return Err(MembershipError::Invalid(format!(
                        "node id {id} belonged to a node that was removed; ids are never reused: give the new node a new id and an empty data directory"
                    )));
                }
                if info.api_addr.is_empty() || info.peer_addr.is_empty() {
                    return Err(MembershipError::Invalid(
                        "`api_addr` and `peer_addr` are required (host:port)".into(),
                    ));
                }
                self.leading(self.raft.add_learner(id, info, false)).await?
            }
            MembershipOp::SetVoters { ids } => {
                let wanted: BTreeSet<NodeId> = ids.into_iter().collect();
                if wanted.is_empty() {
                    return Err(MembershipError::Invalid(
                        "`ids` must name at least one voter".into(),
                    ));
                }
                if let Some(unknown) = wanted.iter().find(|id| !members.contains(id)) {
                    return Err(MembershipError::Invalid(format!(
                        "node {unknown} is not a member; add it as a learner first (POST /v1/cluster/learners)"
                    )));
                }
                if wanted == voters {
                    return Ok(last_log_index);
                }
                self.leading(self.raft.change_membership(wanted, false))
                    .await?
            }
            MembershipOp::Remove { id } => {
                if !members.contains(&id) {
                    return Err(MembershipError::Invalid(format!(
                        "node {id} is not a member of this cluster"
                    )));
                }
                if voters.contains(&id) {
                    if voters.len() == 1 {
                        return Err(MembershipError::Invalid(format!(
                            "node {id} is the only voter; promote another node first"
                        )));
                    }
                    let rest: BTreeSet<NodeId> =
                        voters.iter().filter(|v| **v != id).copied().collect();
                    self.leading(self.raft.change_membership(rest, false))
                        .await?
                } else {
                    self.leading(
                        self.raft.change_membership(
                            ChangeMembers::RemoveNodes(BTreeSet::from([id])),
                            false,
                        ),
                    )
                    .await?
                }
            }
            MembershipOp::TransferLeader { to } => {
                if !voters.contains(&to) {
                    return Err(MembershipError::Invalid(format!(
                        "node {to} is not a voter; only voters can lead"
                    )));
                }
                if to == me {
                    return Ok(last_log_index);
                }
                return self.transfer_leader(to).await;
            }
        };
        match result {
            Ok(resp) => {
                tracing::debug!(index = resp.log_id.index, "membership change committed");
                Ok(resp.log_id.index)
            }
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                Err(MembershipError::Conflict(e.to_string()))
            }
            Err(RaftError::APIError(e)) => Err(MembershipError::Unavailable(e.to_string())),
            Err(RaftError::Fatal(e)) => Err(MembershipError::Unavailable(e.to_string())),
        }
    }

    /// Hands leadership to voter `to` and answers once `to` leads (as this member sees it), so a
    /// caller that reads the leader next sees the new one; openraft only starts the hand-over.
    async fn transfer_leader(&self, to: NodeId) -> Result<u64, MembershipError> {
        if let Err(e) = self.raft.trigger().transfer_leader(to).await {
            return Err(MembershipError::Unavailable(e.to_string()));
        }
        let mut server = self.raft.server_metrics();
        let moved = tokio::time::timeout(
            Duration::from_secs(5),
            server.wait_until(|m| m.current_leader == Some(to)),
        )
        .await;
        match moved {
            Ok(Ok(_)) => Ok(self.metrics().last_log_index.unwrap_or(0)),
            _ => Err(MembershipError::Unavailable(format!(
                "node {to} did not take over within 5 s (it may be behind the leader's \
                 log); check `verdict cluster status` and retry"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use openraft::testing::log_id;
    use openraft::StoredMembership;

    use super::*;

    fn loaded(voters: &[NodeId]) -> RaftMetrics<TypeConfig> {
        let mut m = RaftMetrics::<TypeConfig>::new_initial(3);
        let membership = openraft::Membership::new_with_defaults(
            vec![voters.iter().copied().collect()],
            voters.iter().copied(),
        );
        m.membership_config = Arc::new(StoredMembership::new(
            Some(log_id::<TypeConfig>(1, 1, 7)),
            membership,
        ));
        m
    }

    /// Issue 14: before openraft's core has run its start-up, its metrics hold an empty
    /// membership. A restarting member with state must say "starting", never "removed" (the old
    /// rule, `!member && seen.contains(id)`, said "removed" here).
    #[test]
    fn a_member_whose_membership_is_not_loaded_yet_is_starting_not_removed() {
        let placeholder = RaftMetrics::<TypeConfig>::new_initial(3);
        let seen: BTreeSet<NodeId> = [1, 2, 3].into();
        let reason = membership_reason(3, &placeholder, &seen).expect("not ready");
        assert!(reason.starts_with("starting"), "{reason}");
        assert!(!reason.contains("removed"), "{reason}");
    }

    #[test]
    fn removed_is_said_only_of_a_loaded_membership_without_the_member() {
        let seen: BTreeSet<NodeId> = [1, 2, 3].into();
        assert_eq!(membership_reason(3, &loaded(&[1, 2, 3]), &seen), None);
        let reason = membership_reason(3, &loaded(&[1, 2]), &seen).expect("not ready");
        assert!(reason.contains("node 3 was removed"), "{reason}");
    }

    #[test]
    fn a_new_node_is_not_a_member_yet_loaded_or_not() {
        let none = BTreeSet::new();
        let placeholder = RaftMetrics::<TypeConfig>::new_initial(4);
        for m in [placeholder, loaded(&[1, 2, 3])] {
            let reason = membership_reason(4, &m, &none).expect("not ready");
            assert!(reason.starts_with("not a member"), "{reason}");
        }
    }
}
