//! The decision-path cost of logging: one `append` under group commit, with a file sink draining
//! the queue meanwhile (as in the throughput target).

use std::hint::black_box;

use criterion::criterion_group;
use criterion::criterion_main;
use criterion::Criterion;
use serde_json::json;
use verdict_decision_log::Config;
use verdict_decision_log::DecisionLog;
use verdict_decision_log::FileSinkConfig;
use verdict_decision_log::Record;
use verdict_decision_log::SinkConfig;

fn append(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        enabled: true,
        mask: vec!["context.password".into()],
        sinks: vec![SinkConfig::File(FileSinkConfig {
            name: None,
            path: dir.path().join("out.ndjson"),
            rotate_bytes: 64 * 1024 * 1024,
            keep: 1,
            batch_max: 1000,
        })],
        ..Config::default()
    };
    let log = rt
        .block_on(DecisionLog::open(&config, 1, dir.path()))
        .unwrap();
    let request = json!({
        "subject": {"type": "User", "id": "u-148", "properties": {"affiliation": ["employee"]}},
        "action": {"name": "login"},
        "resource": {"type": "ServiceProvider", "id": "sp-0"},
        "context": {"idp": "idp-4", "password": "hunter2"}
    });
    c.bench_function("append_interval_file_sink", |b| {
        b.iter(|| {
            let mut r = Record::new(4, black_box(request.clone()), true);
            r.policies.push("sp-0-permit".into());
            rt.block_on(log.append(r)).unwrap()
        })
    });
    rt.block_on(log.shutdown()).unwrap();
}

criterion_group!(benches, append);
criterion_main!(benches);
