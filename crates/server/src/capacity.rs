//! This node's capacity figures: its recent decision rate and the CPU time it spends per decision,
//! on `/metrics` and for the cluster's pre-flight before a drain (`routes::capacity`), so that
//! "can the other half carry the load?" is a number before a blue/red release halves capacity
//! (SURFconext's missing graph, issue 14).
//!
//! Nothing is added to the decision path: it already counts its decisions in relaxed atomics
//! ([`crate::state::Metrics`]). A background task reads those counters and the process's CPU
//! clock once a second, keeps the samples of the last [`WINDOW_SECS`] seconds, and publishes the
//! differences across them as `f64` bits in atomics. A moving window rather than an EWMA: right
//! after a start it reports the rate over the seconds it has (an EWMA starting at zero would
//! understate the load for tens of seconds, the wrong way round for a pre-flight check), and it
//! forgets a past burst completely after the window.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use serde::Deserialize;
use serde::Serialize;

use crate::state::Metrics;
use crate::state::Shared;

/// The seconds the figures cover once the node has run that long.
pub const WINDOW_SECS: u64 = 10;

/// What a node reports about its own load (`GET /node/capacity` on the peer listener, in JSON:
/// fields may be added, never renamed, so every release reads every other's answer).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    /// Decisions answered per second over the window (batch items count one each; refused
    /// decision requests count too, as the node answers them).
    pub decision_rate: f64,
    /// CPU seconds the whole process used per decision answered over the window: everything the
    /// node does (replication, writes, logging) charged to its decisions, so an upper bound of
    /// the cost of one. `None` when no decision was answered in the window.
    pub cpu_seconds_per_decision: Option<f64>,
    /// CPUs this process may run on (`available_parallelism`: affinity and cgroup quota).
    pub cpus: u64,
    /// Seconds the figures cover: [`WINDOW_SECS`], or less shortly after start.
    pub window_seconds: f64,
}

/// One reading of the counters.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// When it was taken.
    pub at: Instant,
    /// Decisions answered since start.
    pub decisions: u64,
    /// CPU time the process used since start.
    pub cpu: Duration,
}

/// The figures between two samples (`first` older than `last`).
pub fn figures_between(first: &Sample, last: &Sample, cpus: u64) -> Figures {
    let secs = last.at.saturating_duration_since(first.at).as_secs_f64();
    let decisions = last.decisions.saturating_sub(first.decisions);
    let cpu = last.cpu.saturating_sub(first.cpu).as_secs_f64();
    Figures {
        decision_rate: if secs > 0.0 {
            decisions as f64 / secs
        } else {
            0.0
        },
        cpu_seconds_per_decision: (decisions > 0).then(|| cpu / decisions as f64),
        cpus,
        window_seconds: secs,
    }
}

/// The latest figures, as the sampler published them; read without a lock.
#[derive(Debug)]
pub struct Capacity {
    rate: AtomicU64,
    /// `f64` bits; NaN for "no decision in the window".
    cpu_per_decision: AtomicU64,
    window: AtomicU64,
    cpus: u64,
}

impl Default for Capacity {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
        Self {
            rate: AtomicU64::new(0f64.to_bits()),
            cpu_per_decision: AtomicU64::new(f64::NAN.to_bits()),
            window: AtomicU64::new(0f64.to_bits()),
            cpus,
        }
    }
}

impl Capacity {
    /// The figures last published (the fields may come from two consecutive samples; harmless).
    pub fn figures(&self) -> Figures {
        let load = |a: &AtomicU64| f64::from_bits(a.load(Ordering::Relaxed));
        let per = load(&self.cpu_per_decision);
        Figures {
            decision_rate: load(&self.rate),
            cpu_seconds_per_decision: (!per.is_nan()).then_some(per),
            cpus: self.cpus,
            window_seconds: load(&self.window),
        }
    }

    fn publish(&self, f: &Figures) {
        let store = |a: &AtomicU64, v: f64| a.store(v.to_bits(), Ordering::Relaxed);
        store(&self.rate, f.decision_rate);
        store(
            &self.cpu_per_decision,
            f.cpu_seconds_per_decision.unwrap_or(f64::NAN),
        );
        store(&self.window, f.window_seconds);
    }

    /// Appends `verdict_decision_rate`, `verdict_cpu_seconds_per_decision` (no sample without a
    /// decision in the window) and `verdict_cpus` in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let f = self.figures();
        let mut gauge = |name: &str, help: &str, value: Option<f64>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            if let Some(v) = value {
                let _ = writeln!(out, "{name} {v}");
            }
        };
        gauge(
            "verdict_decision_rate",
            "Decisions answered per second over the last 10 s (batch items count one each).",
            Some(f.decision_rate),
        );
        gauge(
            "verdict_cpu_seconds_per_decision",
            "Process CPU seconds per decision over the last 10 s, all the node's work included (absent without decisions).",
            f.cpu_seconds_per_decision,
        );
        gauge(
            "verdict_cpus",
            "CPUs this process may run on (affinity and cgroup quota).",
            Some(f.cpus as f64),
        );
    }
}

/// Decisions answered since start: the decision path's own counters.
fn decisions_answered(m: &Metrics) -> u64 {
    m.decisions_allow.load(Ordering::Relaxed)
        + m.decisions_deny.load(Ordering::Relaxed)
        + m.decisions_error.load(Ordering::Relaxed)
}

/// CPU time this process has used (all threads).
fn process_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

fn sample(state: &Shared) -> Sample {
    Sample {
        at: Instant::now(),
        decisions: decisions_answered(&state.metrics),
        cpu: process_cpu(),
    }
}

/// Samples once a second until the task is aborted (at shutdown) and publishes the figures over
/// the last [`WINDOW_SECS`] seconds.
pub async fn sample_every_second(state: Shared) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut window: VecDeque<Sample> = VecDeque::with_capacity(WINDOW_SECS as usize + 2);
    loop {
        tick.tick().await;
        let now = sample(&state);
        // Samples from a late tick are kept by time, not by count.
        while window
            .front()
            .is_some_and(|s| now.at.duration_since(s.at) > Duration::from_secs(WINDOW_SECS))
        {
            window.pop_front();
        }
        if let Some(first) = window.front() {
            state
                .capacity
                .publish(&figures_between(first, &now, state.capacity.cpus));
        }
        window.push_back(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_differences_over_the_window() {
        let at = Instant::now();
        let first = Sample {
            at,
            decisions: 1_000,
            cpu: Duration::from_millis(500),
        };
        let last = Sample {
            at: at + Duration::from_secs(10),
            decisions: 3_000,
            cpu: Duration::from_millis(1_500),
        };
        let f = figures_between(&first, &last, 4);
        assert!((f.decision_rate - 200.0).abs() < 1e-9, "{f:?}");
        let per = f.cpu_seconds_per_decision.unwrap();
        assert!((per - 0.000_5).abs() < 1e-12, "{f:?}");
        assert_eq!(f.cpus, 4);
        assert!((f.window_seconds - 10.0).abs() < 1e-9);
        let idle = figures_between(&last, &last, 4);
        assert_eq!(idle.decision_rate, 0.0);
        assert_eq!(idle.cpu_seconds_per_decision, None);
    }

    #[test]
    fn published_figures_read_back_and_render() {
        let c = Capacity::default();
        let mut out = String::new();
        c.render(&mut out);
        assert!(out.contains("verdict_decision_rate 0\n"), "{out}");
        assert!(
            !out.contains("\nverdict_cpu_seconds_per_decision "),
            "{out}"
        );
        let f = Figures {
            decision_rate: 250.5,
            cpu_seconds_per_decision: Some(0.002),
            cpus: c.cpus,
            window_seconds: 10.0,
        };
        c.publish(&f);
        assert_eq!(c.figures(), f);
        let mut out = String::new();
        c.render(&mut out);
        assert!(out.contains("verdict_decision_rate 250.5\n"), "{out}");
        assert!(
            out.contains("verdict_cpu_seconds_per_decision 0.002\n"),
            "{out}"
        );
    }

    #[test]
    fn the_process_cpu_clock_moves() {
        let before = process_cpu();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(process_cpu() > before);
    }
}
