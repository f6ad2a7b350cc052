//! The write path: proposing a client write on the leader, forwarding it from a follower, and the
//! client for the other calls one member makes to another (membership changes, status).
//!
//! A write is proposed here when this member leads, else sent once to the leader's peer listener
//! (which proposes it itself and never forwards again). A leader that is deposed while a proposal
//! is pending gives it up at once ([`while_leading`]) instead of letting the caller wait for an
//! entry that may never commit.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde::Serialize;
use verdict_engine::Outcome;
use verdict_engine::Write;

use crate::codec::decode;
use crate::codec::encode;
use crate::codec::Kind;
use crate::codec::NEWEST_READ;
use crate::levels::ActiveLevel;
use crate::levels::PEER_READS_HEADER;
use crate::network::peer_http;
use crate::network::scheme;
use crate::network::PeerTls;
use crate::network::SECRET_HEADER;
use crate::state_machine::Published;
use crate::state_machine::Raft;
use crate::types::MembershipError;
use crate::types::MembershipOp;
use crate::types::NodeId;
use crate::types::NodeInfo;
use crate::types::NodeReport;

/// How many times a write or membership change follows a changing leader before giving up.
pub(crate) const FORWARD_ATTEMPTS: usize = 3;

/// Why a write did not commit.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// This member is not the leader; the leader, if known, can take the write.
    #[error("not the leader")]
    NotLeader {
        /// The leader's id and addresses, if known.
        leader: Option<(NodeId, NodeInfo)>,
    },
    /// The write could not be committed now (no quorum, shutting down); retry later.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The write was proposed and leadership changed before it committed: it may or may not be
    /// applied. Retrying with the same idempotency key is safe.
    #[error("outcome unknown: {0}")]
    Unknown(String),
}

/// The answer to a forwarded client write.
#[derive(Debug, Serialize, Deserialize)]
pub enum ForwardedWrite {
    /// Committed and applied on the leader: `(version, outcome)`.
    Done(u64, Outcome),
    /// The receiver is not (or no longer) the leader; the leader it knows, if any.
    NotLeader(Option<(NodeId, NodeInfo)>),
    /// The receiver could not commit it now; it was not proposed, so retrying is safe.
    Unavailable(String),
    /// The receiver proposed it and then lost leadership before it committed: it may or may not
    /// commit under the next leader. Only a write with an idempotency key can be retried safely.
    Unknown(String),
}

/// Proposes `write` on this member and waits for it to commit and apply here, giving up as soon as
/// this member stops leading. openraft keeps a deposed leader's pending proposal waiting until its
/// entry is committed or overwritten, which never happens on a leader that was removed or cut off;
/// a forwarded write once hung there for the forwarding client's whole 30 s timeout and held up the
/// writer behind it (the membership e2e test's stall). Watching the server metrics (they change
/// only with the vote, role or membership, not per entry) turns that into an immediate `Unknown`.
pub(crate) async fn propose(raft: &Raft, write: Write) -> ForwardedWrite {
    match while_leading(raft, raft.client_write(crate::types::Request(write))).await {
        Ok(Ok(resp)) => ForwardedWrite::Done(resp.log_id.index, resp.data.0),
        Ok(Err(openraft::error::RaftError::APIError(
            openraft::error::ClientWriteError::ForwardToLeader(f),
        ))) => ForwardedWrite::NotLeader(f.leader_id.zip(f.leader_node)),
        Ok(Err(e)) => ForwardedWrite::Unavailable(e.to_string()),
        Err(lost) => ForwardedWrite::Unknown(lost),
    }
}

/// Runs `proposal` (a client write or membership change on this member) and gives up with the
/// reason if this member was leading when it started and stops leading (role or vote changes)
/// before it finishes. Not leading at the start: openraft answers at once, nothing to watch.
pub(crate) async fn while_leading<F: Future>(
    raft: &Raft,
    proposal: F,
) -> Result<F::Output, String> {
    use openraft::async_runtime::WatchReceiver;
    use openraft::ServerState;
    let mut server = raft.server_metrics();
    let (me, vote, leading) = {
        let m = server.borrow_watched();
        (m.id, m.vote, m.state == ServerState::Leader)
    };
    if !leading {
        return Ok(proposal.await);
    }
    tokio::pin!(proposal);
    loop {
        tokio::select! {
            done = &mut proposal => return Ok(done),
            changed = server.changed() => {
                if changed.is_err() {
                    return Err(format!("node {me} shut down with the change pending"));
                }
                let m = server.borrow_watched();
                if m.state != ServerState::Leader || m.vote != vote {
                    return Err(format!(
                        "node {me} stopped leading while the change was pending; it may or may \
                         not have been committed"
                    ));
                }
            }
        }
    }
}

/// The leader `raft` currently knows, with its addresses.
pub(crate) fn known_leader(raft: &Raft) -> Option<(NodeId, NodeInfo)> {
    use openraft::async_runtime::WatchReceiver;
    let metrics = raft.metrics();
    let m = metrics.borrow_watched();
    let id = m.current_leader?;
    let info = m.membership_config.membership().get_node(&id)?.clone();
    Some((id, info))
}

/// Takes this member's client writes: proposes them when it leads, else forwards them to the
/// leader and waits until the answer's version is applied here too.
#[derive(Clone)]
pub(crate) struct Writer {
    raft: Raft,
    forwarder: Forwarder,
    published: Arc<Published>,
    id: NodeId,
}

impl Writer {
    /// A writer for member `id`.
    pub(crate) fn new(
        raft: Raft,
        forwarder: Forwarder,
        published: Arc<Published>,
        id: NodeId,
    ) -> Self {
        Self {
            raft,
            forwarder,
            published,
            id,
        }
    }

    /// See [`crate::Node::write`].
    pub(crate) async fn write(&self, write: Write) -> Result<(u64, Outcome), WriteError> {
        let mut leader = match propose(&self.raft, write.clone()).await {
            ForwardedWrite::Done(version, outcome) => return Ok((version, outcome)),
            ForwardedWrite::NotLeader(leader) => leader,
            ForwardedWrite::Unavailable(m) => return Err(WriteError::Unavailable(m)),
            ForwardedWrite::Unknown(m) => return Err(WriteError::Unknown(m)),
        };
        for attempt in 0..FORWARD_ATTEMPTS {
            let Some((id, info)) = leader.clone() else {
                return Err(WriteError::NotLeader { leader: None });
            };
            if id == self.id {
                return Err(WriteError::NotLeader { leader: None });
            }
            match self.forwarder.forward(&info.peer_addr, &write).await {
                ForwardedWrite::Done(version, outcome) => {
                    let mut rx = self.published.subscribe();
                    let _ = tokio::time::timeout(
                        Duration::from_secs(5),
                        rx.wait_for(|v| *v >= version),
                    )
                    .await;
                    return Ok((version, outcome));
                }
                ForwardedWrite::NotLeader(next) => leader = next,
                // With an idempotency key a second proposal is applied at most once; without one
                // it could apply the write twice, so the client is told and decides.
                ForwardedWrite::Unknown(m)
                    if write.idempotency_key.is_none() || attempt + 1 == FORWARD_ATTEMPTS =>
                {
                    return Err(WriteError::Unknown(m))
                }
                ForwardedWrite::Unavailable(m) if attempt + 1 == FORWARD_ATTEMPTS => {
                    return Err(WriteError::Unavailable(m))
                }
                ForwardedWrite::Unavailable(_) | ForwardedWrite::Unknown(_) => {
                    tokio::time::sleep(Duration::from_millis(100 * (attempt as u64 + 1))).await;
                    leader = known_leader(&self.raft);
                }
            }
        }
        Err(WriteError::NotLeader { leader })
    }
}

/// Sends client writes a follower received to the leader's peer listener, and asks other members
/// for membership changes and reports. A separate connection pool from Raft's own traffic, so a
/// burst of forwarded writes does not delay heartbeats.
#[derive(Clone)]
pub struct Forwarder {
    http: reqwest::Client,
    secret: String,
    scheme: &'static str,
    level: ActiveLevel,
}

impl Forwarder {
    /// A forwarder with its own pool, sending in the peer message format of the active `level`.
    pub fn new(secret: String, tls: &PeerTls, level: ActiveLevel) -> Result<Self, io::Error> {
        let http = peer_http("forwarding", Some(Duration::from_secs(30)), tls)?;
        Ok(Self {
            http,
            secret,
            scheme: scheme(tls),
            level,
        })
    }

    /// A POST to `rpc` on `peer_addr` with the cluster secret and the formats this member reads.
    fn request(&self, peer_addr: &str, rpc: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}://{peer_addr}/raft/{rpc}", self.scheme))
            .header(SECRET_HEADER, &self.secret)
            .header(PEER_READS_HEADER, NEWEST_READ.peer_message.to_string())
    }

    /// Sends one write to `peer_addr`; the receiver proposes it itself and never forwards again
    /// (the hop limit is one by construction).
    pub async fn forward(&self, peer_addr: &str, write: &Write) -> ForwardedWrite {
        let level = self.level.get().max(write.command.format_level());
        let body = match encode(level, Kind::PeerMessage, write) {
            Ok(b) => b,
            Err(e) => return ForwardedWrite::Unavailable(e.to_string()),
        };
        let resp = self
            .request(peer_addr, "client-write")
            .body(body)
            .send()
            .await;
        let resp = match resp {
            Ok(r) if r.status().is_success() => r,
            Ok(r) => return ForwardedWrite::Unavailable(format!("leader answered {}", r.status())),
            // Not connected: the leader never saw it, a retry is safe.
            Err(e) if e.is_connect() => {
                return ForwardedWrite::Unavailable(format!("leader unreachable: {e}"))
            }
            // Sent, perhaps received and proposed: the outcome is not known.
            Err(e) => return ForwardedWrite::Unknown(format!("the leader did not answer: {e}")),
        };
        match resp.bytes().await.map_err(|e| e.to_string()).and_then(|b| {
            decode::<ForwardedWrite>(Kind::PeerMessage, &b).map_err(|e| e.to_string())
        }) {
            Ok(answer) => answer,
            Err(e) => ForwardedWrite::Unavailable(e),
        }
    }

    async fn post_raw<Req: Serialize>(
        &self,
        peer_addr: &str,
        rpc: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Vec<u8>, String> {
        let body = encode(self.level.get(), Kind::PeerMessage, req).map_err(|e| e.to_string())?;
        let resp = self
            .request(peer_addr, rpc)
            .timeout(timeout)
            .body(body)
            .send()
            .await
            .map_err(|e| format!("{peer_addr} unreachable: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("{peer_addr} answered {}", resp.status()));
        }
        let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
        Ok(bytes.to_vec())
    }

    async fn post<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        peer_addr: &str,
        rpc: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, String> {
        let bytes = self.post_raw(peer_addr, rpc, req, timeout).await?;
        decode::<Resp>(Kind::PeerMessage, &bytes).map_err(|e| e.to_string())
    }

    /// Runs a membership change on the leader at `peer_addr`.
    pub async fn membership(
        &self,
        peer_addr: &str,
        op: &MembershipOp,
    ) -> Result<u64, MembershipError> {
        match self
            .post::<_, Result<u64, MembershipError>>(
                peer_addr,
                "membership",
                op,
                Duration::from_secs(30),
            )
            .await
        {
            Ok(answer) => answer,
            Err(e) => Err(MembershipError::Unavailable(e)),
        }
    }

    /// Asks the member at `peer_addr` for its report; `None` if it does not answer within a second.
    pub async fn report(&self, peer_addr: &str) -> Option<NodeReport> {
        let bytes = self
            .post_raw(peer_addr, "status", &(), Duration::from_secs(1))
            .await
            .ok()?;
        NodeReport::decode(&bytes).ok()
    }
}
