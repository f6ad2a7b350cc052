//! `decide()` on the SURFconext set (400 and 10,000 policies) and the zero-trust fleet (100k hosts).
//! Each iteration decides the next of 1,000 pre-parsed random requests. Data sets are built once, on
//! first use inside the benchmark closure (criterion calls it per sample), so a filtered run builds
//! only its own.

mod common;

use std::cell::OnceCell;
use std::hint::black_box;

use criterion::criterion_group;
use criterion::criterion_main;
use criterion::Criterion;
use verdict_engine::DecisionInput;
use verdict_engine::Snapshot;

type Setup = fn() -> (Snapshot, Vec<DecisionInput>);

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("decide");
    let cases: [(&str, Setup); 3] = [
        ("surfconext_400", || common::surfconext(400)),
        ("surfconext_10000", || common::surfconext(10_000)),
        ("zero_trust_100k_hosts", || common::zero_trust(100_000)),
    ];
    for (name, setup) in cases {
        let data: OnceCell<(Snapshot, Vec<DecisionInput>)> = OnceCell::new();
        let mut i = 0usize;
        group.bench_function(name, |b| {
            let (snap, inputs) = data.get_or_init(setup);
            b.iter(|| {
                i = (i + 1) % inputs.len();
                black_box(snap.decide(black_box(&inputs[i])).unwrap())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
