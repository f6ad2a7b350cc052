//! The peer transport: Raft RPCs as HTTP POSTs of version-prefixed bincode to the peer listener.
//!
//! Client side: [`PeerNetwork`] (openraft's network factory), one shared reqwest client; connect
//! failures map to `Unreachable` so openraft backs off instead of treating the peer as broken.
//! The server side is [`crate::peer_service`]. Remote errors travel as strings: openraft's error
//! types are not part of the wire format.

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
use crate::codec::Kind;
use crate::codec::NEWEST_READ;
use crate::levels::ActiveLevel;
use crate::levels::PEER_READS_HEADER;
use crate::log_store::entry_level;
use crate::types::NodeId;
use crate::types::NodeInfo;
use crate::types::TypeConfig;

/// Header carrying the cluster secret on peer RPCs.
pub const SECRET_HEADER: &str = "verdict-cluster-secret";

type WireResult<T> = Result<T, String>;

/// A snapshot transfer as it travels: the sender's vote, the snapshot's meta and its bytes (a
/// snapshot file, format number first).
#[derive(Serialize, Deserialize)]
pub struct SnapshotWire {
    /// The sending leader's vote.
    pub vote: VoteOf<TypeConfig>,
    /// What the snapshot covers.
    pub meta: openraft::alias::SnapshotMetaOf<TypeConfig>,
    /// The snapshot file's bytes.
    pub data: Vec<u8>,
}

/// TLS for the connections this member opens to other members' peer listeners: `None` is plain
/// HTTP. The config trusts the cluster's peer CA and presents this member's peer certificate; its
/// certificate resolver and verifier may be swapped underneath (certificate reload), so clones of
/// it made at start-up see reloaded files.
pub type PeerTls = Option<Arc<rustls::ClientConfig>>;

/// `https` when peer TLS is on, else `http`.
pub(crate) fn scheme(tls: &PeerTls) -> &'static str {
    if tls.is_some() {
        "https"
    } else {
        "http"
    }
}

/// One pooled HTTP client for traffic between members; `timeout` bounds a whole request.
pub(crate) fn peer_http(
    purpose: &str,
    timeout: Option<Duration>,
    tls: &PeerTls,
) -> Result<reqwest::Client, io::Error> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        // Below the peer listener's idle timeout (`header_read_timeout_ms`, 30 s by default), so
        // a pooled connection is dropped here before the other member closes it under a request.
        .pool_idle_timeout(Duration::from_secs(20));
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

/// Creates a client per target peer.
#[derive(Clone)]
pub struct PeerNetwork {
    http: reqwest::Client,
    secret: String,
    scheme: &'static str,
    level: ActiveLevel,
}

impl PeerNetwork {
    /// A network with one pooled HTTP client for all peers, sending requests in the peer message
    /// format of the active `level`.
    pub fn new(secret: String, tls: &PeerTls, level: ActiveLevel) -> Result<Self, io::Error> {
        // Raft RPCs set their own per-call timeouts from openraft's options.
        let http = peer_http("peer", None, tls)?;
        Ok(Self {
            http,
            secret,
            scheme: scheme(tls),
            level,
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
            level: self.level.clone(),
        }
    }
}

/// A client for one peer.
pub struct PeerClient {
    http: reqwest::Client,
    secret: String,
    base: String,
    target: NodeId,
    level: ActiveLevel,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Msg(String);

impl PeerClient {
    /// Sends `req` in the peer message format of the active level, or of `needs` if higher (an
    /// append that carries a command of a newer level).
    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &str,
        req: &Req,
        needs: u8,
        timeout: Duration,
    ) -> Result<Resp, RPCError<TypeConfig>> {
        let level = self.level.get().max(needs);
        let body = encode(level, Kind::PeerMessage, req)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let resp = self
            .http
            .post(format!("{}/{path}", self.base))
            .header(SECRET_HEADER, &self.secret)
            .header(PEER_READS_HEADER, NEWEST_READ.peer_message.to_string())
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
        let result: WireResult<Resp> = decode(Kind::PeerMessage, &bytes)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
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
        let needs = rpc
            .entries
            .iter()
            .map(|e| entry_level(e, 1))
            .max()
            .unwrap_or(1);
        self.call("append", &rpc, needs, option.hard_ttl()).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call("vote", &rpc, 1, option.hard_ttl()).await
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
        self.call("snapshot", &wire, 1, Duration::from_secs(120))
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
        self.call("transfer-leader", &req, 1, option.hard_ttl())
            .await
    }
}
