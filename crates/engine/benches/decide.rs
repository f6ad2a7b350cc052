//! `decide()` on the SURFconext set (400 and 10,000 policies) and the zero-trust fleet (100k hosts).
//! Each iteration decides the next of 1,000 pre-parsed random requests.

mod common;

use std::hint::black_box;

use criterion::criterion_group;
use criterion::criterion_main;
use criterion::Criterion;

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("decide");
    for (name, (snap, inputs)) in [
        ("surfconext_400", common::surfconext(400)),
        ("surfconext_10000", common::surfconext(10_000)),
        ("zero_trust_100k_hosts", common::zero_trust(100_000)),
    ] {
        let mut i = 0usize;
        group.bench_function(name, |b| {
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
