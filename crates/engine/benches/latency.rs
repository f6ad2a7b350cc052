//! Decision latency percentiles (HDR histogram, per call), idle and while another thread applies
//! policy changes continuously and publishes each snapshot through arc-swap, as the state machine
//! does. Shows the decision path does not rebuild state or wait for writers: the ratio of the two
//! p99s comes from one run.
//!
//! Run: `cargo bench -p verdict-engine --bench latency`

mod common;

use std::hint::black_box;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use arc_swap::ArcSwap;
use hdrhistogram::Histogram;
use verdict_engine::Command;
use verdict_engine::DecisionInput;
use verdict_engine::ParseCache;
use verdict_engine::Snapshot;

const CALLS: usize = 400_000;

fn measure(current: &ArcSwap<Snapshot>, inputs: &[DecisionInput]) -> Histogram<u64> {
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
    // Warm-up.
    for i in 0..20_000 {
        black_box(current.load().decide(&inputs[i % inputs.len()]).unwrap());
    }
    for i in 0..CALLS {
        let t = Instant::now();
        let snap = current.load();
        black_box(snap.decide(black_box(&inputs[i % inputs.len()])).unwrap());
        h.saturating_record(t.elapsed().as_nanos() as u64);
    }
    h
}

fn line(name: &str, h: &Histogram<u64>) {
    println!(
        "{name:<44} p50 {:>7.2} µs  p90 {:>7.2} µs  p99 {:>7.2} µs  max {:>9.2} µs",
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.9) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing. Both just run.
    for (name, policies) in [("surfconext_400", 400usize), ("surfconext_10000", 10_000)] {
        let (snap, inputs) = common::surfconext(policies);
        let current = Arc::new(ArcSwap::from_pointee(snap));
        let idle = measure(&current, &inputs);
        line(&format!("{name} idle"), &idle);

        let stop = Arc::new(AtomicBool::new(false));
        let applied = Arc::new(AtomicU64::new(0));
        let writer = {
            let current = current.clone();
            let stop = stop.clone();
            let applied = applied.clone();
            std::thread::spawn(move || {
                let parses = ParseCache::new();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let base = current.load_full();
                    let text = format!(
                        "permit(principal, action == Action::\"login\", resource == ServiceProvider::\"sp-{}\") when {{ context.idp == \"idp-{}\" }};",
                        n % 50,
                        n % 8
                    );
                    let (next, _) = base.apply(
                        base.version() + 1,
                        &common::write(Command::PutPolicy {
                            id: format!("churn-{}", n % 100),
                            cedar: text,
                        }),
                        &parses,
                    );
                    current.store(Arc::new(next));
                    applied.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        std::thread::sleep(Duration::from_millis(200));
        let busy = measure(&current, &inputs);
        stop.store(true, Ordering::Relaxed);
        let _ = writer.join();
        line(&format!("{name} while applying policy changes"), &busy);
        println!(
            "{name}: {} policy changes applied during the busy run; p99 busy/idle = {:.2}; p50 busy/idle = {:.2}",
            applied.load(Ordering::Relaxed),
            busy.value_at_quantile(0.99) as f64 / idle.value_at_quantile(0.99) as f64,
            busy.value_at_quantile(0.5) as f64 / idle.value_at_quantile(0.5) as f64,
        );
    }
}
