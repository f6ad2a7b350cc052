//! Applying one change to a large state: a policy change with 10,000 policies stored, and an entity
//! upsert with 1,000,000 entities stored. Both must cost in proportion to the change.

mod common;

use std::hint::black_box;

use criterion::criterion_group;
use criterion::criterion_main;
use criterion::Criterion;
use serde_json::json;
use verdict_engine::Command;
use verdict_engine::ParseCache;
use verdict_engine::Snapshot;

fn million_entities() -> Snapshot {
    // 1,000 groups and 999,000 users, each user in one group, with a few attributes.
    let mut all = Vec::with_capacity(1_000_000);
    for g in 0..1000 {
        all.push(
            json!({"uid": {"type": "Group", "id": format!("g-{g}")}, "attrs": {}, "parents": []}),
        );
    }
    for u in 0..999_000 {
        all.push(json!({"uid": {"type": "User", "id": format!("u-{u}")},
            "attrs": {"email": format!("u-{u}@example.org"), "level": u % 5},
            "parents": [{"type": "Group", "id": format!("g-{}", u % 1000)}]}));
    }
    common::load_entities(&Snapshot::empty(), serde_json::Value::Array(all))
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("apply");
    group.sample_size(30);

    let (snap, _) = common::surfconext(10_000);
    assert_eq!(snap.policy_count(), 10_000);
    let id = snap.policies().nth(5000).unwrap().id.clone();
    let texts = [
        format!("@id(\"{id}\") permit(principal, action == Action::\"login\", resource == ServiceProvider::\"sp-1\") when {{ context.idp == \"idp-1\" }};"),
        format!("@id(\"{id}\") permit(principal, action == Action::\"login\", resource == ServiceProvider::\"sp-2\") when {{ context.idp == \"idp-2\" }};"),
    ];
    let writes: Vec<_> = texts
        .iter()
        .map(|t| {
            common::write(Command::PutPolicy {
                id: id.clone(),
                cedar: t.clone(),
            })
        })
        .collect();
    let parses = ParseCache::new();
    let mut n = 0u64;
    group.bench_function("policy_change_with_10000_policies", |b| {
        b.iter(|| {
            n += 1;
            black_box(snap.apply(
                snap.version() + n,
                black_box(&writes[(n % 2) as usize]),
                &parses,
            ))
        })
    });

    let snap = million_entities();
    assert_eq!(snap.entity_count(), 1_000_000);
    // Two kinds of upsert: new attributes for an existing user (the common case: a host's facts or a
    // user's attributes change), and the same user moving to another group (the reverse child index
    // of two 1,000-member groups changes too).
    let upsert = |i: usize, group: usize| {
        let e = json!([{"uid": {"type": "User", "id": format!("u-{}", i * 7919)},
            "attrs": {"email": format!("new-{i}@example.org"), "level": i % 5},
            "parents": [{"type": "Group", "id": format!("g-{group}")}]}]);
        common::write(Command::UpsertEntities {
            json: e.to_string(),
        })
    };
    let same_group: Vec<_> = (0..64).map(|i| upsert(i, (i * 7919) % 1000)).collect();
    let new_group: Vec<_> = (0..64)
        .map(|i| upsert(i, ((i * 7919) + 1) % 1000))
        .collect();
    for (name, upserts) in [
        ("entity_upsert_with_1m_entities", &same_group),
        ("entity_upsert_moving_group_with_1m_entities", &new_group),
    ] {
        let mut n = 0usize;
        group.bench_function(name, |b| {
            b.iter(|| {
                n += 1;
                black_box(snap.apply(
                    snap.version() + 1,
                    black_box(&upserts[n % upserts.len()]),
                    &parses,
                ))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
