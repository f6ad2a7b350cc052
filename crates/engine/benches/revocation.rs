//! Revocation checks with none, 1,000 and 1,000,000 events stored (the Keystone curve, which should
//! be flat here apart from cache misses), and the memory each stored event costs, counted by a
//! wrapping allocator (requested bytes; the allocator's own rounding is not included).

use std::alloc::GlobalAlloc;
use std::alloc::Layout;
use std::alloc::System;
use std::hint::black_box;
use std::sync::atomic::AtomicIsize;
use std::sync::atomic::Ordering;

use criterion::criterion_group;
use criterion::criterion_main;
use criterion::Criterion;
use verdict_engine::revocation::Revocations;
use verdict_engine::revocation::Selector;
use verdict_engine::revocation::TokenFacts;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const EVENTS: usize = 1_000_000;

/// A UUID-shaped id (36 characters), as token ids usually are.
fn id(i: usize) -> String {
    format!(
        "0190c8a2-7b1e-7{:03x}-8{:03x}-{:012x}",
        i % 4096,
        (i / 4096) % 4096,
        i
    )
}

/// 70 % single tokens, 10 % audit chains, 10 % subjects, 10 % subject + scope.
fn selector(i: usize) -> Selector {
    match i % 10 {
        0 => Selector::AuditChain { chain: id(i) },
        1 => Selector::Subject {
            sub: format!("user-{i}@example.org"),
        },
        2 => Selector::SubjectScope {
            sub: format!("user-{i}@example.org"),
            scope: format!("project-{}", i % 1000),
        },
        _ => Selector::Token { jti: id(i) },
    }
}

fn build(n: usize) -> Revocations {
    let mut r = Revocations::default();
    for i in 0..n {
        r.add(&selector(i), 1_700_000_000_000 + i as u64);
    }
    r
}

fn revocation(c: &mut Criterion) {
    let before = LIVE.load(Ordering::Relaxed);
    let full = build(EVENTS);
    let bytes = LIVE.load(Ordering::Relaxed) - before;
    println!(
        "memory: {EVENTS} events, {} watermarks, {bytes} bytes live, {:.1} bytes per event",
        full.len(),
        bytes as f64 / EVENTS as f64
    );
    let empty = Revocations::default();
    let small = build(1_000);
    let jti = id(EVENTS + 7);
    // Not revoked: all four look-ups miss, the common case.
    let live = TokenFacts {
        jti: &jti,
        aud_chain: &jti,
        sub: "someone-else@example.org",
        scope: Some("project-1"),
        iat_ms: 1_800_000_000_000,
    };
    let revoked_jti = id(5);
    let revoked = TokenFacts {
        jti: &revoked_jti,
        aud_chain: &revoked_jti,
        sub: "x",
        scope: None,
        iat_ms: 1_600_000_000_000,
    };
    let mut g = c.benchmark_group("revocation_check");
    g.bench_function("none_stored", |b| {
        b.iter(|| black_box(&empty).is_revoked(black_box(&live)))
    });
    g.bench_function("1k_stored_not_revoked", |b| {
        b.iter(|| black_box(&small).is_revoked(black_box(&live)))
    });
    g.bench_function("1m_stored_not_revoked", |b| {
        b.iter(|| black_box(&full).is_revoked(black_box(&live)))
    });
    g.bench_function("1m_stored_revoked", |b| {
        b.iter(|| black_box(&full).is_revoked(black_box(&revoked)))
    });
    g.finish();
}

criterion_group!(benches, revocation);
criterion_main!(benches);
