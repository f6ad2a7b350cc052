//! Token validation, which runs on every authenticated request (target: p50 ≤ 5 µs), and issuing.
//! The token is typical: subject, scope, two extra claims, signed by the primary of a ring that also
//! holds a staged key and two secondaries.

use std::hint::black_box;

use criterion::criterion_group;
use criterion::criterion_main;
use criterion::Criterion;
use serde_json::json;
use verdict_engine::keyring::KeyId;
use verdict_engine::keyring::KeyRing;
use verdict_engine::keyring::RotationPolicy;
use verdict_engine::token::issue;
use verdict_engine::token::validate;
use verdict_engine::token::IssueRequest;

const NOW_MS: u64 = 1_760_000_000_000;

fn ring(policy: &RotationPolicy) -> KeyRing {
    let mut ring = KeyRing::new()
        .rotate(KeyId(1), [1; 32], Some([0; 32]), NOW_MS - 5000, policy)
        .unwrap();
    for id in 2..5u8 {
        let at = NOW_MS - 5000 + u64::from(id) * 1000;
        ring = ring
            .rotate(KeyId(id.into()), [id; 32], None, at, policy)
            .unwrap();
    }
    assert_eq!(ring.list().len(), 5);
    ring
}

fn request() -> IssueRequest {
    IssueRequest {
        sub: "user:7f3c9a2e-5b1d-4e8a-9c0f-2d6b8e1a4f70".to_string(),
        scope: Some("project:platform-infra".to_string()),
        extra: json!({"tenant": "acme", "roles": ["deployer", "viewer"]})
            .as_object()
            .unwrap()
            .clone(),
        ..IssueRequest::default()
    }
}

fn bench(c: &mut Criterion) {
    let policy = RotationPolicy::default();
    let ring = ring(&policy);
    let jti = "0199a3c4-7e21-7b3d-9f10-4c2a8e6d1b57".to_string();
    let (token, _) = issue(&ring, &policy, request(), NOW_MS, jti.clone()).unwrap();

    let mut group = c.benchmark_group("token");
    group.bench_function("validate", |b| {
        b.iter(|| validate(black_box(&ring), black_box(&token), NOW_MS + 1, 60_000).unwrap())
    });
    group.bench_function("issue", |b| {
        b.iter(|| issue(&ring, &policy, black_box(request()), NOW_MS, jti.clone()).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
