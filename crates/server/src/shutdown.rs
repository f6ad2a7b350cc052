//! What a node does on SIGTERM or SIGINT, in this order (docs/operations.md, "Shutdown"):
//!
//! 1. It turns not-ready (`draining`) and the API and health listeners close their sockets, so new
//!    connections are refused and load balancers take the node out at their next check; watch
//!    streams end.
//! 2. Requests already being handled finish, for at most `shutdown_grace_ms`. The peer listener
//!    keeps serving meanwhile: a write being answered here may still need the leader's appends
//!    to arrive (a follower answers a write once it has applied it), and the cluster keeps this
//!    member's vote.
//! 3. A leader hands leadership to a ready voter that is not draining ([`hand_off_leadership`]),
//!    so writes resume at once elsewhere instead of after an election timeout.
//! 4. The peer listener closes (its open RPCs get the same grace).
//! 5. [`stop_parts`]: the decision log writes and fsyncs what it buffers, then Raft stops.
//!
//! Nothing acknowledged is only in memory at any step (the Raft log is fsynced before it is
//! acknowledged), so a process manager that kills the node halfway loses nothing acknowledged
//! either; the order only keeps in-flight work and the cluster's write availability intact.

use std::time::Duration;

use crate::routes::drain::hand_off;
use crate::routes::drain::HandOff;
use crate::routes::drain::NoSuccessor;
use crate::state::Shared;

/// Longest a leader spends handing over before it stops anyway: its voters' reports (1 s) and
/// the transfer (5 s), with room.
const HAND_OFF_LIMIT: Duration = Duration::from_secs(8);

/// Longest the decision log may take to write and fsync what it buffers, and Raft to stop.
const PART_LIMIT: Duration = Duration::from_secs(10);

/// Step 3: if this node leads, hands leadership to a ready voter that is not draining.
pub async fn hand_off_leadership(state: &Shared) {
    if !state.node.is_leader() {
        return;
    }
    match tokio::time::timeout(HAND_OFF_LIMIT, hand_off(state)).await {
        Ok(Ok(HandOff::To(to))) => {
            tracing::info!(to, "handed leadership over before stopping")
        }
        Ok(Ok(HandOff::NotLeader)) | Ok(Ok(HandOff::Nobody(NoSuccessor::Alone))) => {}
        Ok(Ok(HandOff::Nobody(NoSuccessor::NoneReady(why)))) => tracing::warn!(
            why = %why.join(", "),
            "stopping as the leader: no voter can take over; the others elect one after the election timeout"
        ),
        Ok(Err(e)) => tracing::warn!(error = %e.detail, "stopping as the leader: hand-off failed"),
        Err(_) => tracing::warn!("stopping as the leader: hand-off did not finish in time"),
    }
}

/// Step 5: flushes the decision log (records a sink has not acknowledged stay queued for the next
/// start), then stops Raft. Each step is bounded; a failure is logged and the next one runs.
pub async fn stop_parts(state: &Shared) {
    if let Some(log) = &state.decision_log {
        match tokio::time::timeout(PART_LIMIT, log.shutdown()).await {
            Ok(Ok(())) => tracing::info!("decision log flushed"),
            Ok(Err(e)) => tracing::error!(error = %e, "decision log shutdown"),
            Err(_) => tracing::error!("decision log did not shut down within 10 s"),
        }
    }
    if tokio::time::timeout(PART_LIMIT, state.node.shutdown())
        .await
        .is_err()
    {
        tracing::error!("raft did not stop within 10 s");
    }
}
