//! The server half of the peer transport: turns a peer RPC's request bytes into response bytes for
//! the local member. The server crate mounts it on the peer listener behind the cluster secret.
//! Raft's own RPCs go to openraft; the rest (forwarded writes, membership changes, status) to the
//! member's write path, membership and report.

use std::io;
use std::io::Cursor;

use openraft::alias::SnapshotOf;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::TransferLeaderRequest;
use openraft::raft::VoteRequest;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::decode;
use crate::codec::encode_as;
use crate::codec::Kind;
use crate::levels::answer_format;
use crate::network::SnapshotWire;
use crate::node::Node;
use crate::state_machine::Raft;
use crate::types::MembershipOp;
use crate::types::NodeId;
use crate::types::TypeConfig;
use crate::write::propose;

/// Serves peer RPCs for one local Raft node.
#[derive(Clone)]
pub struct PeerService {
    node: Node,
    raft: Raft,
}

impl PeerService {
    /// Wraps the local member.
    pub fn new(node: Node) -> Self {
        let raft = node.raft().clone();
        Self { node, raft }
    }

    /// Refuses Raft traffic from a node that was removed: it must not disturb the cluster with old
    /// data (its elections would raise terms), and it learns why from the answer.
    fn refuse_removed(&self, from: NodeId) -> Result<(), io::Error> {
        if self.node.removed_ids().contains(&from) {
            tracing::warn!(from, "refused a Raft RPC from a removed node");
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("node {from} was removed from this cluster; wipe its data directory and join with a new id"),
            ));
        }
        Ok(())
    }

    /// Handles one RPC: `path` is the last URL segment, `body` the encoded request, `peer_reads`
    /// the newest peer message format the caller reads (its `verdict-peer-reads` header; `None`
    /// from the release before levels); the answer is an encoded `Result<response, String>` in
    /// the newest format both read. `Err` means the request itself was undecodable or refused.
    pub async fn handle(
        &self,
        path: &str,
        body: &[u8],
        peer_reads: Option<u8>,
    ) -> Result<Vec<u8>, io::Error> {
        let format = answer_format(peer_reads);
        let answer = self.serve(path, body, format).await;
        if let Err(e) = &answer {
            // A request this release cannot read (a member of a newer release sent it): refused,
            // and this member says so in its readiness instead of lagging silently.
            if let Some(newer @ crate::codec::FormatError::Newer { .. }) =
                crate::codec::FormatError::of(e)
            {
                self.node
                    .note_unreadable(format!("a `{path}` request from another member: {newer}"));
            }
        }
        answer
    }

    async fn serve(&self, path: &str, body: &[u8], format: u8) -> Result<Vec<u8>, io::Error> {
        match path {
            "append" => {
                let req: AppendEntriesRequest<TypeConfig> = request(body)?;
                self.refuse_removed(req.vote.leader_id().node_id)?;
                let answer = self.raft.append_entries(req).await;
                if answer.is_ok() {
                    self.node.leader_contact();
                }
                reply(format, &answer.map_err(|e| e.to_string()))
            }
            "vote" => {
                let req: VoteRequest<TypeConfig> = request(body)?;
                self.refuse_removed(req.vote.leader_id().node_id)?;
                reply(
                    format,
                    &self.raft.vote(req).await.map_err(|e| e.to_string()),
                )
            }
            "membership" => {
                let op: MembershipOp = request(body)?;
                reply(format, &self.node.membership().change_here(op).await)
            }
            "status" => self.node.report().encode(format),
            "snapshot" => {
                let wire: SnapshotWire = request(body)?;
                let snapshot = SnapshotOf::<TypeConfig, Cursor<Vec<u8>>> {
                    meta: wire.meta,
                    snapshot: Cursor::new(wire.data),
                };
                reply(
                    format,
                    &self
                        .raft
                        .install_full_snapshot(wire.vote, snapshot)
                        .await
                        .map_err(|e| e.to_string()),
                )
            }
            "transfer-leader" => {
                let req: TransferLeaderRequest<TypeConfig> = request(body)?;
                reply(
                    format,
                    &self
                        .raft
                        .handle_transfer_leader(req)
                        .await
                        .map_err(|e| e.to_string()),
                )
            }
            "client-write" => {
                let mut write: verdict_engine::Write = request(body)?;
                // The leader stamps time: the follower's clock never enters the log.
                write.stamped_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                    .unwrap_or(0);
                let answer = propose(&self.raft, write).await;
                reply(format, &answer)
            }
            other => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no peer RPC `{other}`"),
            )),
        }
    }
}

/// Decodes a peer RPC's request body.
fn request<T: DeserializeOwned>(body: &[u8]) -> Result<T, io::Error> {
    decode(Kind::PeerMessage, body)
}

/// Encodes a peer RPC's answer in peer message `format`, the newest the caller reads (so far every
/// answer but the status report has the same layout in each format).
fn reply<T: Serialize>(format: u8, value: &T) -> Result<Vec<u8>, io::Error> {
    encode_as(format, value)
}
