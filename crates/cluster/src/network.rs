//! The peer transport: Raft RPCs as HTTP POSTs of version-prefixed bincode to the peer listener.
//!
//! Client side: [`PeerNetwork`] (openraft's network factory), one shared reqwest client; connect
//! failures map to `Unreachable` so openraft backs off instead of treating the peer as broken.
//! Server side: [`PeerService`] turns request bytes into response bytes; the server crate mounts it
//! on the peer listener. Remote errors travel as strings: openraft's error types are not part of the
//! wire format.

use std::future::Future;
use std::io;
use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use openraft::alias::SnapshotOf;
use openraft::alias::VoteOf;
use openraft::error::NetworkError;
use openraft::error::RPCError;
use openraft::error::ReplicationClosed;
use openraft::error::StreamingError;
use openraft::error::Unreachable;
use openraft::network::v2::RaftNetworkV2;
use openraft::network::RPCOption;
use openraft::network::RaftNetworkFactory;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::SnapshotResponse;
use openraft::raft::TransferLeaderRequest;
use openraft::raft::TransferLeaderResponse;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde::Serialize;

use crate::codec::decode;
use crate::codec::encode;
use crate::node::MembershipError;
use crate::node::Node;
use crate::types::MembershipOp;
use crate::types::NodeId;
use crate::types::NodeInfo;
use crate::types::NodeReport;
use crate::types::Raft;
use crate::types::TypeConfig;

/// Header carrying the cluster secret on peer RPCs.
pub const SECRET_HEADER: &str = "verdict-cluster-secret";

type WireResult<T> = Result<T, String>;

#[derive(Serialize, Deserialize)]
struct SnapshotWire {
    vote: VoteOf<TypeConfig>,
    meta: openraft::alias::SnapshotMetaOf<TypeConfig>,
    data: Vec<u8>,
}

/// The answer to a forwarded client write.
#[derive(Debug, Serialize, Deserialize)]
pub enum ForwardedWrite {
    /// Committed and applied on the leader: `(version, outcome)`.
    Done(u64, verdict_engine::Outcome),
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
pub(crate) async fn propose(raft: &Raft, write: verdict_engine::Write) -> ForwardedWrite {
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

/// TLS for the connections this member opens to other members' peer listeners: `None` is plain
/// HTTP. The config trusts the cluster's peer CA and presents this member's peer certificate; its
/// certificate resolver and verifier may be swapped underneath (certificate reload), so clones of
/// it made at start-up see reloaded files.
pub type PeerTls = Option<Arc<rustls::ClientConfig>>;

/// `https` when peer TLS is on, else `http`.
fn scheme(tls: &PeerTls) -> &'static str {
    if tls.is_some() {
        "https"
    } else {
        "http"
    }
}

/// One pooled HTTP client for traffic between members; `timeout` bounds a whole request.
fn peer_http(
    purpose: &str,
    timeout: Option<Duration>,
    tls: &PeerTls,
) -> Result<reqwest::Client, io::Error> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .pool_idle_timeout(Duration::from_secs(60));
    if let Some(t) = timeout {
        builder = builder.timeout(t);
    }
    if let Some(config) = tls {
        // Only the peer CA is trusted (not the web's roots), and the peer certificate goes out as
        // the client certificate for listeners that require one.
        builder = builder.use_preconfigured_tls(rustls::ClientConfig::clone(config));
    }
    builder
        .build()
        .map_err(|e| io::Error::other(format!("{purpose} http client: {e}")))
}

/// Sends client writes a follower received to the leader's peer listener. A separate connection pool
/// from Raft's own traffic, so a burst of forwarded writes does not delay heartbeats.
#[derive(Clone)]
pub struct Forwarder {
    http: reqwest::Client,
    secret: String,
    scheme: &'static str,
}

impl Forwarder {
    /// A forwarder with its own pool.
    pub fn new(secret: String, tls: &PeerTls) -> Result<Self, io::Error> {
        let http = peer_http("forwarding", Some(Duration::from_secs(30)), tls)?;
        Ok(Self {
            http,
            secret,
            scheme: scheme(tls),
        })
    }

    /// Sends one write to `peer_addr`; the receiver proposes it itself and never forwards again
    /// (the hop limit is one by construction).
    pub async fn forward(&self, peer_addr: &str, write: &verdict_engine::Write) -> ForwardedWrite {
        let body = match encode(write) {
            Ok(b) => b,
            Err(e) => return ForwardedWrite::Unavailable(e.to_string()),
        };
        let resp = self
            .http
            .post(format!("{}://{peer_addr}/raft/client-write", self.scheme))
            .header(SECRET_HEADER, &self.secret)
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
        match resp
            .bytes()
            .await
            .map_err(|e| e.to_string())
            .and_then(|b| decode::<ForwardedWrite>(&b).map_err(|e| e.to_string()))
        {
            Ok(answer) => answer,
            Err(e) => ForwardedWrite::Unavailable(e),
        }
    }

    async fn post<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        peer_addr: &str,
        rpc: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, String> {
        let body = encode(req).map_err(|e| e.to_string())?;
        let resp = self
            .http
            .post(format!("{}://{peer_addr}/raft/{rpc}", self.scheme))
            .header(SECRET_HEADER, &self.secret)
            .timeout(timeout)
            .body(body)
            .send()
            .await
            .map_err(|e| format!("{peer_addr} unreachable: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("{peer_addr} answered {}", resp.status()));
        }
        let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
        decode::<Resp>(&bytes).map_err(|e| e.to_string())
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
        self.post::<_, NodeReport>(peer_addr, "status", &(), Duration::from_secs(1))
            .await
            .ok()
    }
}

/// Creates a client per target peer.
#[derive(Clone)]
pub struct PeerNetwork {
    http: reqwest::Client,
    secret: String,
    scheme: &'static str,
}

impl PeerNetwork {
    /// A network with one pooled HTTP client for all peers.
    pub fn new(secret: String, tls: &PeerTls) -> Result<Self, io::Error> {
        // Raft RPCs set their own per-call timeouts from openraft's options.
        let http = peer_http("peer", None, tls)?;
        Ok(Self {
            http,
            secret,
            scheme: scheme(tls),
        })
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> Self::Network {
        PeerClient {
            http: self.http.clone(),
            secret: self.secret.clone(),
            base: format!("{}://{}/raft", self.scheme, node.peer_addr),
            target,
        }
    }
}

/// A client for one peer.
pub struct PeerClient {
    http: reqwest::Client,
    secret: String,
    base: String,
    target: NodeId,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Msg(String);

impl PeerClient {
    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, RPCError<TypeConfig>> {
        let body = encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let resp = self
            .http
            .post(format!("{}/{path}", self.base))
            .header(SECRET_HEADER, &self.secret)
            .timeout(timeout)
            .body(body)
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() {
                    RPCError::Unreachable(Unreachable::new(&e))
                } else {
                    RPCError::Network(NetworkError::new(&e))
                }
            })?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        if !status.is_success() {
            let msg = Msg(format!(
                "peer {} answered {status}: {}",
                self.target,
                String::from_utf8_lossy(&bytes)
            ));
            return Err(RPCError::Network(NetworkError::new(&msg)));
        }
        let result: WireResult<Resp> =
            decode(&bytes).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|m| RPCError::Network(NetworkError::new(&Msg(m))))
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call("append", &rpc, option.hard_ttl()).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call("vote", &rpc, option.hard_ttl()).await
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<TypeConfig>,
        snapshot: SnapshotOf<TypeConfig, Self::SnapshotData>,
        _cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let wire = SnapshotWire {
            vote,
            meta: snapshot.meta,
            data: snapshot.snapshot.into_inner(),
        };
        self.call("snapshot", &wire, Duration::from_secs(120))
            .await
            .map_err(|e| match e {
                RPCError::Unreachable(u) => StreamingError::Unreachable(u),
                other => StreamingError::Network(NetworkError::new(&other)),
            })
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call("transfer-leader", &req, option.hard_ttl()).await
    }
}

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

    /// Handles one RPC: `path` is the last URL segment, `body` the encoded request; the answer is an
    /// encoded `Result<response, String>`. `Err` means the request itself was undecodable or refused.
    pub async fn handle(&self, path: &str, body: &[u8]) -> Result<Vec<u8>, io::Error> {
        match path {
            "append" => {
                let req: AppendEntriesRequest<TypeConfig> = decode(body)?;
                self.refuse_removed(req.vote.leader_id().node_id)?;
                let answer = self.raft.append_entries(req).await;
                if answer.is_ok() {
                    self.node.leader_contact();
                }
                encode(&answer.map_err(|e| e.to_string()))
            }
            "vote" => {
                let req: VoteRequest<TypeConfig> = decode(body)?;
                self.refuse_removed(req.vote.leader_id().node_id)?;
                encode(&self.raft.vote(req).await.map_err(|e| e.to_string()))
            }
            "membership" => {
                let op: MembershipOp = decode(body)?;
                encode(&self.node.change_membership_here(op).await)
            }
            "status" => encode(&self.node.report()),
            "snapshot" => {
                let wire: SnapshotWire = decode(body)?;
                let snapshot = SnapshotOf::<TypeConfig, Cursor<Vec<u8>>> {
                    meta: wire.meta,
                    snapshot: Cursor::new(wire.data),
                };
                encode(
                    &self
                        .raft
                        .install_full_snapshot(wire.vote, snapshot)
                        .await
                        .map_err(|e| e.to_string()),
                )
            }
            "transfer-leader" => {
                let req: TransferLeaderRequest<TypeConfig> = decode(body)?;
                encode(
                    &self
                        .raft
                        .handle_transfer_leader(req)
                        .await
                        .map_err(|e| e.to_string()),
                )
            }
            "client-write" => {
                let mut write: verdict_engine::Write = decode(body)?;
                // The leader stamps time: the follower's clock never enters the log.
                write.stamped_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                    .unwrap_or(0);
                let answer = propose(&self.raft, write).await;
                encode(&answer)
            }
            other => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no peer RPC `{other}`"),
            )),
        }
    }
}
