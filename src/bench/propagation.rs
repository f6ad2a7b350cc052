//! `verdict bench --propagation URL,URL,…`: how long a committed write takes to be applied on every
//! node. Writes go one at a time through `--url` at a fixed rate; each node's watch stream reports
//! the instant it applied each version. Per write, the figure is the last node's instant minus the
//! instant the write was acknowledged (committed, fsynced on a quorum, applied on the node that
//! took it); also reported from the instant the write was sent.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use anyhow::bail;
use hdrhistogram::Histogram;
use serde::Serialize;
use verdict_client::Client;

use super::BenchArgs;
use crate::cli::Output;
use crate::output::print_json;

/// Writes when `--requests` is not given.
const DEFAULT_WRITES: u64 = 500;
/// Writes per second when `--rate` is not given.
const DEFAULT_RATE: u64 = 50;

type Seen = Arc<Mutex<HashMap<u64, Instant>>>;

/// Follows one node's watch stream, recording when each version arrived.
async fn follow(client: Client, from: u64, seen: Seen) -> anyhow::Result<()> {
    let mut resp = client.watch(Some(from)).await?;
    let mut buf = String::new();
    while let Some(chunk) = resp.chunk().await? {
        let now = Instant::now();
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            for line in block.lines() {
                if let Some(id) = line.strip_prefix("id:") {
                    if let Ok(v) = id.trim().parse::<u64>() {
                        if let Ok(mut s) = seen.lock() {
                            s.insert(v, now);
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

#[derive(Debug, Serialize)]
struct Percentiles {
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            p50_ms: ms(h.value_at_quantile(0.5)),
            p90_ms: ms(h.value_at_quantile(0.9)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
        }
    }
}

#[derive(Debug, Serialize)]
struct PropagationReport {
    write_url: String,
    nodes: Vec<String>,
    writes: u64,
    rate_per_s: u64,
    /// Acknowledged write → applied on the last node.
    from_ack: Percentiles,
    /// Write sent → applied on the last node.
    from_send: Percentiles,
    /// Writes whose version some node never reported within 10 s.
    missing: u64,
}

/// Runs the propagation measurement.
pub async fn run(url: &str, args: &BenchArgs, out: Output) -> anyhow::Result<ExitCode> {
    let writes = args.requests.unwrap_or(DEFAULT_WRITES);
    let rate = args.rate.unwrap_or(DEFAULT_RATE);
    if writes == 0 || rate == 0 {
        bail!("--requests and --rate must be at least 1");
    }
    let writer = Client::new(url)?;
    let start = writer.readyz().await?;
    let from = start
        .details
        .get("version")
        .and_then(|v| v.as_u64())
        .unwrap_or(0);
    let mut seen: Vec<Seen> = Vec::new();
    let mut followers = Vec::new();
    for node in &args.propagation {
        let s: Seen = Arc::default();
        seen.push(s.clone());
        let client = Client::new(node)?;
        followers.push(tokio::spawn(follow(client, from, s)));
    }
    // Let the streams open before the first write.
    tokio::time::sleep(Duration::from_millis(300)).await;
    if out == Output::Table {
        eprintln!(
            "writing {writes} policies through {url} at {rate}/s, watching {} nodes",
            args.propagation.len()
        );
    }
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let mut acked: Vec<(u64, Instant, Instant)> = Vec::with_capacity(writes as usize);
    let mut due = Instant::now();
    for i in 0..writes {
        tokio::time::sleep_until(due.into()).await;
        due += interval;
        let sent = Instant::now();
        let cedar = format!("permit(principal == User::\"prop-{i}\", action, resource);");
        let version = writer
            .put_policy(&format!("prop-{}", i % 100), &cedar, None, None)
            .await?;
        acked.push((version, sent, Instant::now()));
    }
    // Wait (bounded) until every node reported the last write.
    let last = acked.last().map(|a| a.0).unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline
        && !seen
            .iter()
            .all(|s| s.lock().map(|m| m.contains_key(&last)).unwrap_or(false))
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for f in followers {
        f.abort();
    }
    let mut from_ack = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    let mut from_send = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    let mut missing = 0;
    for (version, sent, ack) in &acked {
        let mut latest: Option<Instant> = Some(*ack);
        for s in &seen {
            let at = s.lock().ok().and_then(|m| m.get(version).copied());
            latest = match (latest, at) {
                (Some(l), Some(a)) => Some(l.max(a)),
                _ => None,
            };
        }
        match latest {
            Some(l) => {
                let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
                from_ack.saturating_record(us(l.saturating_duration_since(*ack)));
                from_send.saturating_record(us(l.saturating_duration_since(*sent)));
            }
            None => missing += 1,
        }
    }
    let report = PropagationReport {
        write_url: url.to_string(),
        nodes: args.propagation.clone(),
        writes,
        rate_per_s: rate,
        from_ack: Percentiles::of(&from_ack),
        from_send: Percentiles::of(&from_send),
        missing,
    };
    match out {
        Output::Json => print_json(&report)?,
        Output::Table => {
            let line = |name: &str, p: &Percentiles| {
                println!(
                    "{name:<34} p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
                    p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms
                )
            };
            println!("writes       {writes} through {url}, {rate}/s");
            println!("nodes        {}", args.propagation.join(", "));
            line("acknowledged → applied everywhere", &report.from_ack);
            line("sent → applied everywhere", &report.from_send);
            println!("missing      {missing}");
        }
    }
    if missing > 0 {
        eprintln!("error: {missing} writes were not reported by every node within 10 s");
        return Ok(ExitCode::from(crate::exit::FAILURE));
    }
    Ok(ExitCode::SUCCESS)
}
