//! The command line, as clap derive structs. Behaviour lives in the modules named per command.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use clap::Parser;
use clap::Subcommand;
use clap::ValueEnum;

const AFTER_HELP: &str = "\
Exit codes:
  0   success (for `check`: allow)
  1   the server rejected the request, or local input is invalid (bad file, bad JSON)
  2   `check` in table output: the decision is deny; `cluster drain --check`: not enough headroom
  3   the server could not be reached
  64  invalid command line";

/// Verdict: a Raft-replicated Cedar authorization decision store.
#[derive(Debug, Parser)]
#[command(name = "verdict", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// Node to talk to (client commands and bench).
    #[arg(
        long,
        global = true,
        env = "VERDICT_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub url: String,
    /// The API credential (`<id>.<secret>`) sent as `Authorization: Bearer` (client commands and
    /// `bench`).
    #[arg(
        long,
        global = true,
        env = "VERDICT_TOKEN",
        hide_env_values = true,
        value_name = "CREDENTIAL"
    )]
    pub token: Option<String>,
    /// A file holding the API credential (when --token / VERDICT_TOKEN is not given).
    #[arg(long, global = true, env = "VERDICT_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Extra CA certificate(s) (PEM) to trust for an `https://` --url, e.g. the CA of a cluster
    /// with its own certificates (docs/operations.md, TLS).
    #[arg(long, global = true, env = "VERDICT_CA_FILE", value_name = "FILE.pem")]
    pub ca_file: Option<PathBuf>,
    /// Output format: `table` is for people, `json` prints the server's answers as JSON.
    #[arg(long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Human-readable.
    Table,
    /// Machine-readable JSON on stdout.
    Json,
}

/// The top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node (defaults: one-member cluster, data in ./verdict-data, API on 127.0.0.1:8080).
    Serve(Box<ServeArgs>),
    /// Manage Cedar policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Manage the Cedar schema.
    #[command(subcommand)]
    Schema(SchemaCommand),
    /// Manage entities (Cedar entity JSON format).
    #[command(subcommand)]
    Entity(EntityCommand),
    /// Ask for one decision (AuthZEN evaluation). Table output exits 0 on allow, 2 on deny.
    Check(CheckArgs),
    /// Load-test a node's decision endpoint.
    #[command(after_help = crate::bench::MIX_HELP)]
    Bench(crate::bench::BenchArgs),
    /// Cluster membership and status (any node answers; changes run on the leader).
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Follow the change stream (`GET /v1/watch`): one JSON line per applied version.
    Watch(WatchArgs),
    /// The token key ring (replicated): rotate it, list its keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Issue and introspect tokens (PASETO v4.local).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Revoke tokens: by token id, audit chain, subject, or subject within a scope.
    Revoke(RevokeArgs),
    /// API credentials (replicated): create one (its secret is shown once), list, revoke.
    #[command(subcommand)]
    Credential(CredentialCommand),
}

/// `verdict credential …`. Needs a credential with the `admin` scope (VERDICT_TOKEN).
#[derive(Debug, Subcommand)]
pub enum CredentialCommand {
    /// Create a credential; prints its secret (`<id>.<secret>`) once.
    Create {
        /// Who or what holds it.
        #[arg(long)]
        name: String,
        /// A scope, repeatable: admin, policy:write[:<id prefix>], entity:write[:<type>], revoke,
        /// token:issue, read, decide.
        #[arg(long = "scope", required = true, value_name = "SCOPE")]
        scopes: Vec<String>,
    },
    /// List credentials (ids, names, scopes; never secrets).
    List,
    /// Revoke a credential on every node.
    Revoke {
        /// Its id.
        id: String,
    },
}

/// `verdict keys …`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Rotate: staged → primary, primary → secondary, a new staged key (one log entry).
    Rotate,
    /// List key ids, states and ages (never key material).
    List,
}

/// `verdict token …`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Issue a token; prints it (table output) or the token and its claims (JSON).
    Issue {
        /// The subject (`sub`).
        sub: String,
        /// Restrict the token to a scope (project, tenant).
        #[arg(long)]
        scope: Option<String>,
        /// Lifetime in milliseconds (capped by the cluster's `token_lifetime_ms`).
        #[arg(long)]
        lifetime_ms: Option<u64>,
        /// The audit chain of the token this one re-scopes.
        #[arg(long)]
        aud_chain: Option<String>,
        /// Extra claims as a JSON object.
        #[arg(long)]
        claims: Option<String>,
    },
    /// Introspect a token (RFC 7662 shape). Table output exits 0 if active, 2 if not.
    Introspect {
        /// The token.
        token: String,
        /// Answer from a state at least this fresh (`Verdict-Min-Version`).
        #[arg(long)]
        min_version: Option<u64>,
    },
}

/// `verdict revoke`: exactly one selector.
#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// One token, by id (`jti`).
    #[arg(long, conflicts_with_all = ["chain", "sub"])]
    pub jti: Option<String>,
    /// Every token of an audit chain.
    #[arg(long, conflicts_with_all = ["jti", "sub"])]
    pub chain: Option<String>,
    /// Every token of a subject (with `--scope`: only within that scope).
    #[arg(long, conflicts_with_all = ["jti", "chain"])]
    pub sub: Option<String>,
    /// With `--sub`: only that subject's tokens in this scope.
    #[arg(long, requires = "sub")]
    pub scope: Option<String>,
    /// Revoke tokens issued before this time (ms since the Unix epoch); default: now.
    #[arg(long)]
    pub issued_before: Option<u64>,
    /// Idempotency key: a retried revocation with the same key is applied once.
    #[arg(long)]
    pub idempotency_key: Option<String>,
}

/// `verdict serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML config file; the flags below override its values.
    #[arg(long, value_name = "FILE.toml")]
    pub config: Option<PathBuf>,
    /// Where the Raft log and snapshots live.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Public API listener.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Raft peer listener.
    #[arg(long, value_name = "ADDR")]
    pub peer_listen: Option<SocketAddr>,
    /// An extra plain-HTTP listener for /livez, /readyz and /metrics only.
    #[arg(long, value_name = "ADDR")]
    pub health_listen: Option<SocketAddr>,
    /// This node's Raft id.
    #[arg(long, value_name = "N")]
    pub node_id: Option<u64>,
    /// Address other nodes use for this node's API (default: --listen).
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise_api: Option<String>,
    /// Address other nodes use for this node's peer listener (default: --peer-listen).
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise_peer: Option<String>,
    /// Static bootstrap of a multi-node cluster: `1=API/PEER,2=API/PEER,3=API/PEER`.
    #[arg(long, value_name = "ID=API/PEER,…")]
    pub initial_cluster: Option<String>,
    /// Shared secret authenticating Raft RPCs between nodes (required with more than one member).
    #[arg(
        long,
        env = "VERDICT_CLUSTER_SECRET",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    pub cluster_secret: Option<String>,
    /// File holding the bootstrap admin secret (≥ 16 characters): at first start the cluster
    /// creates the credential `admin` from it. Without it, VERDICT_ADMIN_SECRET is read.
    #[arg(long, value_name = "FILE")]
    pub admin_secret_file: Option<PathBuf>,
    /// Require credentials on admin endpoints even on a loopback-only node with none created yet.
    #[arg(long)]
    pub require_credentials: bool,
    /// Require a `decide` credential for decisions (default: only when listening beyond loopback).
    #[arg(long, value_name = "BOOL")]
    pub decisions_require_credential: Option<bool>,
    /// Start empty and wait to be added to a running cluster (`verdict cluster add-learner`).
    #[arg(long, conflicts_with = "initial_cluster")]
    pub join: bool,
    /// Not ready when more than this many committed entries are not yet applied here.
    #[arg(long, value_name = "ENTRIES")]
    pub max_lag: Option<u64>,
    /// Refuse decisions (503 `stale`) while this node may be stale, instead of answering.
    #[arg(long)]
    pub fail_closed: bool,
    /// Raise the cluster's format level as soon as every member supports it (default true);
    /// `false` holds it until `verdict cluster upgrade finalize`, keeping rollback possible.
    #[arg(long, value_name = "BOOL")]
    pub auto_finalize: Option<bool>,
    /// Take a snapshot (and allow log purging) after this many applied entries.
    #[arg(long, value_name = "ENTRIES")]
    pub snapshot_every: Option<u64>,
    /// Log entries kept behind a snapshot for lagging followers.
    #[arg(long, value_name = "ENTRIES")]
    pub keep_log_behind_snapshot: Option<u64>,
    /// Log format: `text` for people, `json` (one object a line) for machines. The filter comes
    /// from RUST_LOG (default `warn,verdict=info`: Verdict's events, others' warnings).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// TLS on the listeners and between members (the config file's `[tls]` table).
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// `verdict serve` TLS flags; each overrides the `[tls]` field of the same name. Certificate, key
/// and CA files are re-read on SIGHUP.
#[derive(Debug, Args)]
#[command(next_help_heading = "TLS")]
pub struct TlsArgs {
    /// PEM certificate chain of the API listener (with --tls-key-file: HTTPS only).
    #[arg(long, value_name = "FILE.pem")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of --tls-cert-file.
    #[arg(long, value_name = "FILE.pem")]
    pub tls_key_file: Option<PathBuf>,
    /// PEM certificate chain of the peer listener, also this node's client certificate towards
    /// other members (with --tls-peer-key-file and --tls-peer-ca-file: peer traffic is HTTPS).
    #[arg(long, value_name = "FILE.pem")]
    pub tls_peer_cert_file: Option<PathBuf>,
    /// PEM private key of --tls-peer-cert-file.
    #[arg(long, value_name = "FILE.pem")]
    pub tls_peer_key_file: Option<PathBuf>,
    /// PEM certificate of the CA that signs every member's peer certificate.
    #[arg(long, value_name = "FILE.pem")]
    pub tls_peer_ca_file: Option<PathBuf>,
    /// Require a client certificate signed by --tls-peer-ca-file on the peer listener (mutual
    /// TLS, on top of the cluster secret).
    #[arg(long)]
    pub tls_peer_client_auth: bool,
}

/// `verdict cluster …`.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Members, roles, leader, and each node's applied version and readiness.
    Status,
    /// Add a node started with `--join` as a learner (it receives the log and serves decisions).
    AddLearner {
        /// A node id never used before in this cluster.
        id: u64,
        /// The node's API address (host:port).
        #[arg(long, value_name = "HOST:PORT")]
        api: String,
        /// The node's peer address (host:port).
        #[arg(long, value_name = "HOST:PORT")]
        peer: String,
    },
    /// Make a caught-up learner a voter (the current voters stay).
    Promote {
        /// The learner's id.
        id: u64,
    },
    /// Remove a voter or learner for good (its id is never accepted again).
    Remove {
        /// The member's id.
        id: u64,
    },
    /// Hand leadership to another voter.
    TransferLeader {
        /// The voter to lead.
        to: u64,
    },
    /// Drain a node: not ready from now on (load balancers stop sending to it), leadership handed
    /// to a ready voter that is not draining if it leads; it keeps answering what still reaches
    /// it. Without ID, the node at --url. With --check, only the capacity pre-flight.
    Drain {
        /// The member to drain (through the node at --url); default: the node at --url.
        #[arg(conflicts_with = "check")]
        id: Option<u64>,
        /// Do not drain; say whether the members left without these ids (e.g. `1,2`) carry the
        /// cluster's current decision rate. Exits 0 with enough headroom, 2 below it, 1 when it
        /// cannot tell.
        #[arg(long, value_name = "IDS", value_delimiter = ',', num_args = 1)]
        check: Option<Vec<u64>>,
        /// The headroom --check asks for, in percent of the remaining nodes' capacity.
        #[arg(
            long,
            value_name = "PERCENT",
            default_value_t = 30.0,
            requires = "check"
        )]
        min_headroom: f64,
    },
    /// Undo a drain: the node takes traffic again once it is ready. Without ID, the node at --url.
    Undrain {
        /// The member to undrain (through the node at --url); default: the node at --url.
        id: Option<u64>,
    },
    /// Format levels across a rolling upgrade: status, and finalising it.
    #[command(subcommand)]
    Upgrade(UpgradeCommand),
}

/// `verdict cluster upgrade …`.
#[derive(Debug, Subcommand)]
pub enum UpgradeCommand {
    /// The active format level, each member's release and highest level, what holds the next
    /// level back.
    Status,
    /// Raise the active format level once every member supports it. After this, a member of the
    /// previous release can no longer read the cluster's data: no rollback.
    Finalize {
        /// The level to raise to (default: the highest the answering node supports).
        #[arg(long)]
        level: Option<u8>,
    },
}

/// `verdict watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Start after this version (default: the node's current version, i.e. only new changes).
    #[arg(long, value_name = "VERSION")]
    pub from: Option<u64>,
    /// Stop after this many events (default: follow until interrupted).
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Options every write takes.
#[derive(Debug, Clone, Default, Args)]
pub struct WriteArgs {
    /// Apply only if the resource is still at this version (0: only if it does not exist).
    #[arg(long, value_name = "VERSION")]
    pub if_match: Option<u64>,
    /// Apply a retried write once: repeat the same key on retries (1–128 printable ASCII).
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
}

/// `verdict policy …`.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Create or replace one policy from a Cedar file (`-` reads stdin).
    Put {
        /// Policy id.
        id: String,
        /// File with exactly one static Cedar policy, or `-`.
        file: PathBuf,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Print one policy.
    Get {
        /// Policy id.
        id: String,
    },
    /// List all policies.
    List,
    /// Delete one policy.
    Delete {
        /// Policy id.
        id: String,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Replace the whole policy set with the policies of a Cedar file (`-` reads stdin); ids come
    /// from `@id("…")` annotations, else policy0, policy1, … by position.
    Load {
        /// Cedar file, or `-`.
        file: PathBuf,
        #[command(flatten)]
        write: WriteArgs,
    },
}

/// `verdict schema …`.
#[derive(Debug, Subcommand)]
pub enum SchemaCommand {
    /// Set the schema from a file: `*.json` is Cedar's JSON schema format, anything else Cedar text.
    Put {
        /// Schema file, or `-` for stdin.
        file: PathBuf,
        /// Force the format instead of guessing from the file name.
        #[arg(long, value_enum)]
        format: Option<SchemaFormatArg>,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Print the schema.
    Get,
    /// Remove the schema.
    Delete {
        #[command(flatten)]
        write: WriteArgs,
    },
}

/// Schema file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SchemaFormatArg {
    /// Human-readable Cedar schema.
    Cedar,
    /// Cedar JSON schema.
    Json,
}

/// `verdict entity …`.
#[derive(Debug, Subcommand)]
pub enum EntityCommand {
    /// Upsert the entities of a JSON file (an array in Cedar's entity format; `-` reads stdin).
    Put {
        /// JSON file, or `-`.
        file: PathBuf,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Print one entity.
    Get {
        /// Entity type, e.g. `User` or `Ns::User`.
        r#type: String,
        /// Entity id.
        id: String,
    },
    /// Delete one entity.
    Delete {
        /// Entity type.
        r#type: String,
        /// Entity id.
        id: String,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Add and remove direct parents of one stored entity in one write (format level 2).
    Parents {
        /// Entity type.
        r#type: String,
        /// Entity id.
        id: String,
        /// A parent to add, `Type::"id"` (repeatable).
        #[arg(long, value_name = "UID")]
        add: Vec<String>,
        /// A parent to remove, `Type::"id"` (repeatable).
        #[arg(long, value_name = "UID")]
        remove: Vec<String>,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Replace all entities with those of a JSON file (`-` reads stdin).
    Load {
        /// JSON file, or `-`.
        file: PathBuf,
        #[command(flatten)]
        write: WriteArgs,
    },
}

/// `verdict check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Who asks: `TYPE:ID` (e.g. `User:alice`, `Ns::User:alice`) or Cedar `TYPE::"ID"`.
    #[arg(long, value_name = "TYPE:ID")]
    pub subject: String,
    /// Action name, e.g. `view`, or a full Cedar action uid.
    #[arg(long, value_name = "NAME")]
    pub action: String,
    /// What is accessed: `TYPE:ID` or Cedar `TYPE::"ID"`.
    #[arg(long, value_name = "TYPE:ID")]
    pub resource: String,
    /// Cedar context as a JSON object, or `@FILE` to read it from a file.
    #[arg(long, value_name = "JSON")]
    pub context: Option<String>,
    /// Answer from a snapshot at least this new (read-your-writes after a write that returned it).
    #[arg(long, value_name = "N")]
    pub min_version: Option<u64>,
}

/// Parses `10s`, `500ms`, `2m`, `1.5s` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration; write e.g. `10s`, `500ms` or `2m`"))?;
    let seconds = match unit.trim() {
        "" | "s" => number,
        "ms" => number / 1000.0,
        "m" | "min" => number * 60.0,
        "h" => number * 3600.0,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}`; use ms, s, m or h"
            ))
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("`{text}`: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
