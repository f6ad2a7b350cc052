//! The bench's result: computed once from the merged tally, printed as a table or JSON.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::worker::Tally;
use crate::cli::Output;
use crate::output::print_json;

/// Latency percentiles in microseconds.
#[derive(Debug, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Slowest answer.
    pub max: u64,
    /// Mean.
    pub mean: f64,
}

/// Everything `verdict bench` reports; also the `--output json` shape.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Where requests went.
    pub url: String,
    /// Concurrent connections.
    pub connections: usize,
    /// Unmeasured warmup, in seconds.
    pub warmup_s: f64,
    /// Measured window, in seconds.
    pub elapsed_s: f64,
    /// Measured requests: `ok + non_200 + errors`.
    pub requests: u64,
    /// 200 answers.
    pub ok: u64,
    /// 200 answers with `decision: true`.
    pub allow: u64,
    /// 200 answers with `decision: false`.
    pub deny: u64,
    /// Answers with another status.
    pub non_200: u64,
    /// Requests without an answer.
    pub errors: u64,
    /// Measured requests per second.
    pub throughput_rps: f64,
    /// Latency of answered requests.
    pub latency_us: Latency,
    /// Non-200 answers by status.
    pub statuses: BTreeMap<String, u64>,
    /// First transport error, if any.
    pub first_error: Option<String>,
    /// First non-200 answer (status and start of body), if any.
    pub first_non_200: Option<String>,
}

impl Report {
    /// Builds the report from the merged tally and the measured window.
    pub fn new(
        url: String,
        connections: usize,
        warmup: Duration,
        elapsed: Duration,
        t: Tally,
    ) -> Self {
        let non_200: u64 = t.statuses.values().sum();
        let requests = t.ok + non_200 + t.errors;
        let secs = elapsed.as_secs_f64();
        let h = &t.latency;
        let answered = !h.is_empty();
        let q = |q: f64| if answered { h.value_at_quantile(q) } else { 0 };
        Self {
            url,
            connections,
            warmup_s: warmup.as_secs_f64(),
            elapsed_s: secs,
            requests,
            ok: t.ok,
            allow: t.allow,
            deny: t.deny,
            non_200,
            errors: t.errors,
            throughput_rps: if secs > 0.0 {
                requests as f64 / secs
            } else {
                0.0
            },
            latency_us: Latency {
                p50: q(0.50),
                p90: q(0.90),
                p99: q(0.99),
                max: if answered { h.max() } else { 0 },
                mean: if answered { h.mean() } else { 0.0 },
            },
            statuses: t
                .statuses
                .into_iter()
                .map(|(s, n)| (s.to_string(), n))
                .collect(),
            first_error: t.first_error,
            first_non_200: t.first_non_200,
        }
    }

    /// Prints the report in the chosen format.
    pub fn print(&self, out: Output) -> anyhow::Result<()> {
        if out == Output::Json {
            return print_json(self);
        }
        let ms = |us: u64| us as f64 / 1000.0;
        let l = &self.latency_us;
        println!("target       {}", self.url);
        println!("connections  {}", self.connections);
        println!(
            "measured     {:.2} s (after {:.2} s warmup)",
            self.elapsed_s, self.warmup_s
        );
        let split = if self.allow + self.deny > 0 {
            format!(" (allow {}, deny {})", self.allow, self.deny)
        } else {
            String::new()
        };
        println!(
            "requests     {}: {} ok{split}, {} non-200, {} errors",
            self.requests, self.ok, self.non_200, self.errors
        );
        println!("throughput   {:.0} req/s", self.throughput_rps);
        println!(
            "latency      p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
            ms(l.p50),
            ms(l.p90),
            ms(l.p99),
            ms(l.max)
        );
        if !self.statuses.is_empty() {
            let list: Vec<String> = self
                .statuses
                .iter()
                .map(|(s, n)| format!("{s}: {n}"))
                .collect();
            println!("non-200      {}", list.join(", "));
        }
        if let Some(s) = &self.first_non_200 {
            println!("first non-200  {s}");
        }
        if let Some(e) = &self.first_error {
            println!("first error  {e}");
        }
        Ok(())
    }
}
