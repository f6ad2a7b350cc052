//! Node configuration: one serde struct, every field documented, defaults from named functions.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use serde::Serialize;

/// Everything a node needs to start. `verdict serve` with no flags uses `Config::default()`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// This node's Raft id. Never reuse an id for a different data directory.
    pub node_id: u64,
    /// Where the Raft log, vote, committed index and state-machine snapshots live.
    pub data_dir: PathBuf,
    /// Public API listener (AuthZEN decisions, admin, health).
    pub listen: SocketAddr,
    /// Internal listener for Raft RPCs between nodes.
    pub peer_listen: SocketAddr,
    /// An extra plain-HTTP listener for `/livez`, `/readyz` and `/metrics` only (e.g. on a
    /// management network, for probes and scrapers, while the API uses TLS and credentials). The
    /// API listener keeps serving them too. Unset: none.
    pub health_listen: Option<SocketAddr>,
    /// Address other nodes and forwarded writes use to reach this node's API; defaults to `listen`.
    pub advertise_api: Option<String>,
    /// Address other nodes use to reach this node's peer listener; defaults to `peer_listen`.
    pub advertise_peer: Option<String>,
    /// Maximum body size of a decision request, in bytes.
    pub max_decision_body: usize,
    /// Maximum body size of an admin write, in bytes.
    pub max_admin_body: usize,
    /// Maximum number of items in one batch evaluation.
    pub max_batch: usize,
    /// Most policies in one write (a whole-set replacement); more → `413 too_many_items`.
    pub max_policies_per_write: usize,
    /// Most entities in one write (upsert, replace or delete); more → `413 too_many_items`.
    pub max_entities_per_write: usize,
    /// How long a request with `Verdict-Min-Version` waits for this node to catch up, in milliseconds.
    pub min_version_wait_ms: u64,
    /// Take a state-machine snapshot (and allow log purging) after this many applied entries.
    pub snapshot_every: u64,
    /// Shared secret authenticating peer (Raft) RPCs; random when unset (single node).
    pub cluster_secret: Option<String>,
    /// Most decision and admin requests handled at once; beyond it requests are refused at once with
    /// `503 overloaded` and `Retry-After` instead of queueing without bound. Health and metrics are
    /// never limited.
    pub max_in_flight: usize,
    /// Static bootstrap of a multi-node cluster: `1=API1/PEER1,2=API2/PEER2,…` (every member's id,
    /// API address and peer address). Exactly one node, the lowest id, initialises the cluster on
    /// first start; the others wait to be contacted. Unset: a one-member cluster of this node.
    pub initial_cluster: Option<String>,
    /// Start without initialising anything and wait to be added to an existing cluster (as a
    /// learner, `POST /v1/cluster/learners` on any member). Needs `cluster_secret`.
    pub join: bool,
    /// Readiness: more than this many committed log entries not yet applied here → not ready.
    pub max_lag: u64,
    /// Readiness: a follower that has not heard from the leader (or a leader that has not heard from
    /// a quorum) for this many milliseconds is not ready.
    pub max_leader_silence_ms: u64,
    /// Refuse decisions with `503 stale` while not ready for a freshness reason (lag, no leader,
    /// leader silent) instead of answering from possibly stale state. Draining never refuses.
    pub fail_closed: bool,
    /// Raise the cluster's format level as soon as every member (voters and learners) supports
    /// the next one (docs/operations.md, "Format levels"). Off: the level stays until an operator
    /// runs `verdict cluster upgrade finalize`, so a rollback to the previous release stays
    /// possible until then. Set it alike on every member of this release or newer (the release
    /// before levels does not know it and refuses to start with it).
    pub auto_finalize: bool,
    /// Log entries kept behind a snapshot for lagging followers; further behind, a follower is sent
    /// the snapshot.
    pub keep_log_behind_snapshot: u64,
    /// Longest a decision or admin request may take, reading its body included, in milliseconds;
    /// beyond it the request is answered `408` and its slot freed, so slow or stalled clients
    /// cannot hold `max_in_flight` slots. Watch streams are not limited by it.
    pub request_timeout_ms: u64,
    /// On SIGTERM or SIGINT, how long requests already being handled may take to finish, in
    /// milliseconds, once the listeners have stopped accepting (docs/operations.md, "Shutdown").
    /// Connections still busy after it are closed; the node then flushes the decision log and
    /// stops Raft either way. Keep it above the slowest request a client may send (a large batch,
    /// a write waiting for its commit) and below the process manager's kill timeout (systemd's
    /// `TimeoutStopSec`, 90 s; Kubernetes' `terminationGracePeriodSeconds`, 30 s).
    pub shutdown_grace_ms: u64,
    /// Most open watch streams (`GET /v1/watch`) at once; beyond it new ones get `503 overloaded`.
    pub max_watchers: usize,
    /// Most open connections on the API listener. At the cap a new connection is answered
    /// `503 too_many_connections` (plain HTTP; a TLS listener closes it) and closed at once,
    /// logged and counted in `verdict_connections_refused_total`. Lowered at start when the
    /// process's open-file limit cannot hold it (see docs/operations.md, "Connections").
    pub max_connections: usize,
    /// Most open connections on the peer listener (members, their forwarded writes and status
    /// calls); same behaviour at the cap as `max_connections`.
    pub max_peer_connections: usize,
    /// Most open connections on the health listener (`health_listen`). Never lowered: probes
    /// must find a free slot when the API listener is full.
    pub max_health_connections: usize,
    /// How long a connection has to deliver a complete request head (request line and headers),
    /// in milliseconds, counted from when it opens and again from the end of each response; a
    /// slower one is closed without an answer. This one timer is also the keep-alive idle
    /// timeout: an idle connection is closed when it runs out. On every listener.
    pub header_read_timeout_ms: u64,
    /// Largest body of a Raft `append` on the peer listener, in bytes: openraft sends up to 300
    /// entries at once and cannot split a batch a member refuses, so it must hold several
    /// maximum-size writes. Read only after the cluster secret was checked.
    pub max_peer_append_bytes: usize,
    /// Largest snapshot a member accepts in one transfer, in bytes (the whole state machine
    /// travels in one request and is held in memory). Raise it when the state's snapshot file
    /// (`DATA_DIR/snapshots`) grows near it, or a lagging member can never catch up. Read only
    /// after the cluster secret was checked.
    pub max_peer_snapshot_bytes: usize,
    /// Most bytes the window of recent changes that watch streams resume from may hold (64 MiB);
    /// older events are dropped first and a reader behind them is told to reload.
    pub watch_history_max_bytes: usize,
    /// The threads that parse and validate admin writes, the `[parse]` table (see `parse_pool`).
    pub parse: crate::parse_pool::ParsePoolConfig,
    /// Decision logging, the `[decision_log]` table (with one `[[decision_log.sinks]]` table per
    /// sink). Off by default, and then it costs the decision path one `Option` check. Every field
    /// and the guarantee are in docs/decision-logs.md; the queue lives in `DATA_DIR/decision-log`
    /// unless `dir` says otherwise.
    #[serde(default)]
    pub decision_log: verdict_decision_log::Config,
    /// Tokens, the `[tokens]` table: `token_lifetime_ms` (longest token lifetime, default one
    /// hour), `clock_skew_ms` (how far node clocks may disagree, default 60 s) and
    /// `max_active_keys` (default 5). A rotation carries these into the log, so the ring's policy
    /// is the one of its latest rotation, the same on every node.
    #[serde(default)]
    pub tokens: verdict_engine::keyring::RotationPolicy,
    /// Decisions take the subject's token from `Authorization: Bearer …` as well as from
    /// `subject.properties.token` (the header wins). Off by default: a gateway that forwards its
    /// own credentials in that header would otherwise have them read as the subject's.
    pub decision_bearer_tokens: bool,
    /// A file holding the bootstrap admin secret (at least 16 characters). At first start the
    /// cluster creates the credential `admin` (scope `admin`) from it, presented as
    /// `admin.<secret>`; later starts ignore it. The `VERDICT_ADMIN_SECRET` environment variable
    /// is read when this is unset. There is no default secret. With a secret configured, admin
    /// endpoints require credentials from the first request.
    pub admin_secret_file: Option<PathBuf>,
    /// Require credentials on admin endpoints even before any exists (they are required anyway
    /// once one exists, or when the API listens beyond loopback). Until the bootstrap admin
    /// exists, admin requests then get `401`.
    pub require_credentials: bool,
    /// Require a credential with the `decide` scope for decisions and token introspection.
    /// Unset: required when the API listens beyond loopback, open on a loopback-only node.
    pub decisions_require_credential: Option<bool>,
    /// TLS, the `[tls]` table: `cert_file` and `key_file` put the API listener on HTTPS;
    /// `peer_cert_file`, `peer_key_file` and `peer_ca_file` put all traffic between members on
    /// HTTPS, and `peer_client_auth` makes the peer listener require client certificates signed
    /// by `peer_ca_file` (mutual TLS, on top of the cluster secret). Unset: plain HTTP. Files are
    /// re-read on SIGHUP. Every field is in crate::tls::TlsConfig and docs/operations.md.
    #[serde(default)]
    pub tls: crate::tls::TlsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            node_id: 1,
            data_dir: PathBuf::from("./verdict-data"),
            listen: default_listen(),
            peer_listen: default_peer_listen(),
            health_listen: None,
            advertise_api: None,
            advertise_peer: None,
            max_decision_body: 1024 * 1024,
            max_admin_body: 16 * 1024 * 1024,
            max_batch: 1000,
            max_policies_per_write: 10_000,
            max_entities_per_write: 100_000,
            min_version_wait_ms: 2000,
            snapshot_every: 10_000,
            cluster_secret: None,
            max_in_flight: 4096,
            initial_cluster: None,
            join: false,
            max_lag: 1000,
            max_leader_silence_ms: 3000,
            fail_closed: false,
            auto_finalize: true,
            keep_log_behind_snapshot: 1000,
            request_timeout_ms: 60_000,
            shutdown_grace_ms: 20_000,
            max_watchers: 1024,
            max_connections: 10_000,
            max_peer_connections: 256,
            max_health_connections: 64,
            header_read_timeout_ms: 30_000,
            max_peer_append_bytes: 512 * 1024 * 1024,
            max_peer_snapshot_bytes: 512 * 1024 * 1024,
            watch_history_max_bytes: verdict_cluster::history::DEFAULT_HISTORY_MAX_BYTES,
            parse: crate::parse_pool::ParsePoolConfig::default(),
            decision_log: verdict_decision_log::Config::default(),
            tokens: verdict_engine::keyring::RotationPolicy::default(),
            decision_bearer_tokens: false,
            admin_secret_file: None,
            require_credentials: false,
            decisions_require_credential: None,
            tls: crate::tls::TlsConfig::default(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn default_peer_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8081))
}

impl Config {
    /// Reads a TOML file; fields not named keep their defaults.
    pub fn from_toml_file(path: &std::path::Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config file `{}`: {e}", path.display()))?;
        Self::from_toml_str(&text)
            .map_err(|e| anyhow::anyhow!("config file `{}`: {e}", path.display()))
    }

    /// Parses TOML text; fields not named keep their defaults.
    pub fn from_toml_str(text: &str) -> anyhow::Result<Self> {
        Ok(toml::from_str(text)?)
    }

    /// Checks the settings against each other, without touching files or the network: a node
    /// whose configuration cannot work stops here, before anything binds or starts, with the
    /// setting to fix. (Files named by the configuration are read, and checked, by the steps that
    /// use them.)
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.decision_bearer_tokens && self.decisions_need_credential() {
            anyhow::bail!(
                "decision_bearer_tokens takes the subject's token from `Authorization`, where this \
                 node also needs the caller's `decide` credential; pass tokens in \
                 `subject.properties.token` instead, or set decisions_require_credential = false"
            );
        }
        crate::bootstrap::choose(self)?;
        self.tls.validate()?;
        self.validate_edge()?;
        if self.decision_log.enabled {
            self.decision_log.validate().map_err(|e| {
                anyhow::anyhow!("decision logging: {e}; fix the `[decision_log]` table of the config file (docs/decision-logs.md)")
            })?;
        }
        Ok(())
    }

    /// The connection and peer-body limits: none may be zero, and a forwarded write must fit.
    fn validate_edge(&self) -> anyhow::Result<()> {
        let positive = [
            ("max_connections", self.max_connections as u64),
            ("max_peer_connections", self.max_peer_connections as u64),
            ("max_health_connections", self.max_health_connections as u64),
            ("header_read_timeout_ms", self.header_read_timeout_ms),
            ("shutdown_grace_ms", self.shutdown_grace_ms),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            anyhow::bail!("{name} must be at least 1 (docs/operations.md lists the defaults)");
        }
        let forwarded = crate::routes::peer::forwarded_write_limit(self.max_admin_body);
        if self.max_peer_append_bytes < forwarded {
            anyhow::bail!(
                "max_peer_append_bytes ({}) must hold a maximum-size write (`max_admin_body` {} \
                 encodes to at most {forwarded} bytes); raise it",
                self.max_peer_append_bytes,
                self.max_admin_body
            );
        }
        Ok(())
    }

    /// Whether decisions need a `decide` credential: as configured, else only when the API
    /// listens beyond loopback.
    pub fn decisions_need_credential(&self) -> bool {
        self.decisions_require_credential
            .unwrap_or(!self.listen.ip().is_loopback())
    }
}

/// Parses `1=API/PEER,2=API/PEER,…` into `(id, api, peer)` triples, sorted by id.
pub fn parse_initial_cluster(spec: &str) -> anyhow::Result<Vec<(u64, String, String)>> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addrs) = part.split_once('=').ok_or_else(|| {
            anyhow::anyhow!("`{part}` in --initial-cluster: expected ID=API_ADDR/PEER_ADDR")
        })?;
        let id: u64 = id.trim().parse().map_err(|_| {
            anyhow::anyhow!("`{part}` in --initial-cluster: the node id must be a positive integer")
        })?;
        let (api, peer) = addrs.split_once('/').ok_or_else(|| {
            anyhow::anyhow!("`{part}` in --initial-cluster: expected ID=API_ADDR/PEER_ADDR")
        })?;
        if out.iter().any(|(i, _, _)| *i == id) {
            anyhow::bail!("node id {id} appears twice in --initial-cluster");
        }
        out.push((id, api.trim().to_string(), peer.trim().to_string()));
    }
    if out.is_empty() {
        anyhow::bail!("--initial-cluster names no members");
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_partial_toml_file_and_keeps_defaults() {
        let c = Config::from_toml_str("node_id = 3\nlisten = \"127.0.0.1:9000\"\n").unwrap();
        assert_eq!(c.node_id, 3);
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.peer_listen.port(), 8081);
        assert!(Config::from_toml_str("no_such_field = 1").is_err());
    }

    #[test]
    fn parses_a_decision_log_table_and_keeps_it_off_by_default() {
        assert!(!Config::default().decision_log.enabled);
        let c = Config::from_toml_str(
            r#"
            node_id = 2

            [decision_log]
            enabled = true
            fsync = "always"
            when_full = "drop_newest"
            mask = ["context.password"]

            [[decision_log.sinks]]
            type = "file"
            path = "/var/log/verdict/decisions.ndjson"

            [[decision_log.sinks]]
            type = "unix"
            path = "/run/verdict/decisions.sock"
            "#,
        )
        .unwrap();
        assert_eq!(c.node_id, 2);
        let d = &c.decision_log;
        assert!(d.enabled);
        assert_eq!(d.fsync, verdict_decision_log::FsyncMode::Always);
        assert_eq!(d.when_full, verdict_decision_log::WhenFull::DropNewest);
        assert_eq!(d.sinks.len(), 2);
        assert_eq!(d.validate(), Ok(()));
        assert!(Config::from_toml_str("[decision_log]\nenabeld = true").is_err());
    }

    #[test]
    fn parses_a_tls_table_and_keeps_it_off_by_default() {
        assert!(!Config::default().tls.api_enabled());
        assert!(!Config::default().tls.peer_enabled());
        let c = Config::from_toml_str(
            r#"
            [tls]
            cert_file = "/etc/verdict/api.pem"
            key_file = "/etc/verdict/api-key.pem"
            peer_cert_file = "/etc/verdict/peer.pem"
            peer_key_file = "/etc/verdict/peer-key.pem"
            peer_ca_file = "/etc/verdict/ca.pem"
            peer_client_auth = true
            "#,
        )
        .unwrap();
        assert!(c.tls.api_enabled() && c.tls.peer_enabled() && c.tls.peer_client_auth);
        assert_eq!(c.tls.handshake_timeout_ms, 10_000);
        assert!(c.tls.validate().is_ok());
        assert!(Config::from_toml_str("[tls]\ncert_fiel = \"x\"").is_err());
        let half = Config::from_toml_str("[tls]\ncert_file = \"x\"").unwrap();
        let e = half.tls.validate().unwrap_err().to_string();
        assert!(e.contains("tls.key_file"), "{e}");
        let peer =
            Config::from_toml_str("[tls]\npeer_cert_file = \"x\"\npeer_key_file = \"y\"").unwrap();
        let e = peer.tls.validate().unwrap_err().to_string();
        assert!(e.contains("missing: tls.peer_ca_file"), "{e}");
        let auth = Config::from_toml_str("[tls]\npeer_client_auth = true").unwrap();
        assert!(auth.tls.validate().is_err());
    }

    #[test]
    fn parses_an_initial_cluster() {
        let m = parse_initial_cluster("2=h2:80/h2:81, 1=h1:80/h1:81").unwrap();
        assert_eq!(m[0], (1, "h1:80".into(), "h1:81".into()));
        assert_eq!(m.len(), 2);
        assert!(parse_initial_cluster("1=a/b,1=c/d").is_err());
        assert!(parse_initial_cluster("x=a/b").is_err());
        assert!(parse_initial_cluster("1=a").is_err());
    }
}
