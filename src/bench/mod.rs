//! `verdict bench`: closed-loop HTTP load against a node's AuthZEN evaluation endpoint.
//!
//! `connections` workers each keep one connection and one request in flight (so latency includes
//! no client-side queueing, and throughput is what that concurrency sustains). Layout: `mix.rs`
//! (the request file), `worker.rs` (one connection's loop), `report.rs` (percentiles, printing).

mod mix;
mod propagation;
mod report;
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use anyhow::bail;
use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use hyper::header::HeaderValue;
use hyper::Uri;

use crate::cli::parse_duration;
use crate::cli::Output;
use crate::exit;

/// Shown by `verdict bench --help`.
pub const MIX_HELP: &str = "\
Mix file (--mix): a JSON array; each item is either an AuthZEN evaluation request body, sent as is,
or {\"request\": <body>, \"weight\": N} to send that body N times as often (N a positive integer).
Example:
  [{\"subject\": {\"type\": \"User\", \"id\": \"alice\"}, \"action\": {\"name\": \"view\"},
    \"resource\": {\"type\": \"Doc\", \"id\": \"d1\"}},
   {\"request\": {\"subject\": {\"type\": \"User\", \"id\": \"bob\"}, \"action\": {\"name\": \"edit\"},
                \"resource\": {\"type\": \"Doc\", \"id\": \"d1\"}}, \"weight\": 3}]
Requests go to POST <url>/access/v1/evaluation over plain HTTP/1.1 keep-alive, one in flight per
connection. Latency is measured per answer (any status); throughput counts every measured request.
Exits 1 if no request got a 200 answer, 3 if the node cannot be reached.";

/// Distinct policy ids `--writes` cycles through.
const WRITE_IDS: usize = 1000;

/// Default measured window when neither --duration nor --requests is given.
const DEFAULT_DURATION: Duration = Duration::from_secs(10);

/// `verdict bench` flags (`--url` and `--output` are global).
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Concurrent keep-alive connections, one request in flight on each.
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub connections: usize,
    /// How long to measure, after the warmup (e.g. `10s`, `1m`); the default is 10s.
    #[arg(long, value_parser = parse_duration, conflicts_with = "requests", value_name = "DURATION")]
    pub duration: Option<Duration>,
    /// Measure this many requests instead of a fixed time.
    #[arg(long, value_name = "N")]
    pub requests: Option<u64>,
    /// JSON file with the decision requests to send (format below).
    #[arg(long, value_name = "FILE.json", required_unless_present_any = ["writes", "propagation"])]
    pub mix: Option<PathBuf>,
    /// Send writes instead of decisions, each acknowledged only once committed and fsynced on a
    /// quorum: `policies` (the default) puts `PUT /v1/policies/bench-N`, `entities` upserts one
    /// entity per request with `POST /v1/entities` (`User::"bench-N"`); 1,000 ids, overwritten
    /// in turn, every write with different content.
    #[arg(long, conflicts_with = "mix", num_args = 0..=1, default_missing_value = "policies", value_name = "KIND")]
    pub writes: Option<WriteKind>,
    /// Pace the load to this many requests per second in total (default: as fast as the
    /// connections go); latency then counts from each request's due time.
    #[arg(long, value_name = "PER_SECOND")]
    pub rate: Option<u64>,
    /// Measure propagation instead: write through --url one at a time (at --rate, default 50/s,
    /// --requests writes, default 500) and time when each of these nodes (comma-separated API
    /// URLs) reports the write's version on its watch stream.
    #[arg(long, value_delimiter = ',', value_name = "URL,URL,…", conflicts_with_all = ["mix", "writes"])]
    pub propagation: Vec<String>,
    /// Send unmeasured requests for this long first (fills caches, opens connections).
    #[arg(long, value_parser = parse_duration, default_value = "0s", value_name = "DURATION")]
    pub warmup: Duration,
}

/// What `--writes` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WriteKind {
    /// One Cedar policy per request.
    Policies,
    /// One entity per request.
    Entities,
}

/// Runs the load and prints the report.
pub async fn run(
    url: &str,
    credential: Option<&str>,
    args: &BenchArgs,
    out: Output,
) -> anyhow::Result<ExitCode> {
    if args.connections == 0 {
        bail!("--connections must be at least 1");
    }
    if args.requests == Some(0) {
        bail!("--requests must be at least 1");
    }
    if !args.propagation.is_empty() {
        return propagation::run(url, args, out).await;
    }
    if args.rate == Some(0) {
        bail!("--rate must be at least 1");
    }
    let (addr, host, path, target) = resolve(url).await?;
    let (kind, schedule, distinct, target) = match &args.mix {
        Some(file) => {
            let mix = mix::load(file)?;
            let schedule = mix
                .schedule
                .into_iter()
                .map(|b| (path.clone(), b))
                .collect();
            (worker::Kind::Decision, schedule, mix.distinct, target)
        }
        None => {
            let base = path
                .path()
                .trim_end_matches("/access/v1/evaluation")
                .to_string();
            let mut schedule = Vec::with_capacity(WRITE_IDS);
            let kind = args.writes.unwrap_or(WriteKind::Policies);
            for i in 0..WRITE_IDS {
                schedule.push(match kind {
                    WriteKind::Policies => (
                        format!("{base}/v1/policies/bench-{i}").parse()?,
                        Bytes::from(format!(
                            "permit(principal == User::\"bench-{i}\", action == Action::\"view\", resource);"
                        )),
                    ),
                    // The body is made per request (it carries the write's sequence number).
                    WriteKind::Entities => (format!("{base}/v1/entities").parse()?, Bytes::new()),
                });
            }
            let (kind, target) = match kind {
                WriteKind::Policies => (
                    worker::Kind::WritePolicy,
                    target.replace("/access/v1/evaluation", "/v1/policies/bench-N"),
                ),
                WriteKind::Entities => (
                    worker::Kind::WriteEntity,
                    target.replace("/access/v1/evaluation", "/v1/entities"),
                ),
            };
            (kind, schedule, WRITE_IDS, target)
        }
    };
    // Fail fast, with the CLI's usual "is the server running?" hint and exit code.
    if let Err(e @ verdict_client::Error::Transport(_)) =
        verdict_client::Client::new(url)?.livez().await
    {
        return Err(e.into());
    }
    let duration = match (args.duration, args.requests) {
        (Some(d), _) => Some(d),
        (None, Some(_)) => None,
        (None, None) => Some(DEFAULT_DURATION),
    };
    if out == Output::Table {
        let how_long = match (duration, args.requests) {
            (Some(d), _) => format!("{:.1} s", d.as_secs_f64()),
            (None, Some(n)) => format!("{n} requests"),
            (None, None) => String::new(),
        };
        eprintln!(
            "benchmarking {target} with {} connections, {distinct} distinct requests{}, for {how_long} after {:.1} s warmup",
            args.connections,
            args.rate.map(|r| format!(", paced to {r}/s")).unwrap_or_default(),
            args.warmup.as_secs_f64()
        );
    }
    let record_from = Instant::now() + args.warmup;
    let authorization = credential
        .map(|c| HeaderValue::from_str(&format!("Bearer {}", c.trim())))
        .transpose()
        .map_err(|_| {
            anyhow::anyhow!("the credential (VERDICT_TOKEN) holds characters a header cannot")
        })?;
    let plan = Arc::new(worker::Plan {
        addr,
        host,
        authorization,
        kind,
        schedule,
        write_seq: AtomicU64::new(0),
        interval: args
            .rate
            .map(|r| Duration::from_secs_f64(args.connections as f64 / r as f64)),
        record_from,
        end: duration.map(|d| record_from + d),
        budget: args.requests.map(|n| (AtomicU64::new(0), n)),
    });
    let stride = (plan.schedule.len() / args.connections).max(1);
    let mut tasks = Vec::with_capacity(args.connections);
    let start = Instant::now();
    for i in 0..args.connections {
        let tally = worker::Tally::new()?;
        // Paced workers start spread evenly over one interval, so the load arrives at a steady
        // rate instead of as a burst of `connections` requests once per interval.
        let first_due = match plan.interval {
            Some(interval) => start + interval.mul_f64(i as f64 / args.connections as f64),
            None => start,
        };
        tasks.push(tokio::spawn(worker::run(
            plan.clone(),
            i * stride,
            first_due,
            tally,
        )));
    }
    let mut total = worker::Tally::new()?;
    for t in tasks {
        total.merge(t.await.context("a bench worker failed")?)?;
    }
    let elapsed = match duration {
        Some(d) => d,
        None => total
            .last_done
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(record_from)),
    };
    let report = report::Report::new(target, args.connections, args.warmup, elapsed, total);
    report.print(out)?;
    if report.ok == 0 {
        eprintln!(
            "error: none of {} requests got a 200 answer; see `first non-200` / `first error` above",
            report.requests
        );
        return Ok(ExitCode::from(exit::FAILURE));
    }
    Ok(ExitCode::SUCCESS)
}

/// The socket address, `Host` header, request target and display URL for `base`.
async fn resolve(base: &str) -> anyhow::Result<(std::net::SocketAddr, HeaderValue, Uri, String)> {
    let uri: Uri = base
        .parse()
        .with_context(|| format!("`{base}` is not a URL; set --url or VERDICT_URL"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => bail!("bench speaks plain http only, not `{other}`"),
        None => bail!("`{base}` has no scheme; write e.g. http://127.0.0.1:8080"),
    }
    let Some(authority) = uri.authority() else {
        bail!("`{base}` has no host");
    };
    let port = authority.port_u16().unwrap_or(80);
    let addr = tokio::net::lookup_host((authority.host(), port))
        .await
        .with_context(|| format!("cannot resolve `{}`", authority.host()))?
        .next()
        .with_context(|| format!("`{}` resolves to no address", authority.host()))?;
    let host = HeaderValue::from_str(authority.as_str())?;
    let prefix = uri.path().trim_end_matches('/');
    let path_text = format!("{prefix}/access/v1/evaluation");
    let path: Uri = path_text.parse()?;
    let target = format!("http://{}{path_text}", authority.as_str());
    Ok((addr, host, path, target))
}
