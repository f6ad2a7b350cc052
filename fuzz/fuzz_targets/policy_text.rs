//! Cedar policy text through a policy write: `PUT /v1/policies/{id}` and `PUT /v1/policies` (a
//! whole set), limits check and parse in `check`, then apply.
#![no_main]

use libfuzzer_sys::fuzz_target;
use verdict_engine::Command;
use verdict_engine::Snapshot;

fuzz_target!(|text: &str| verdict_fuzz::on_node_stack(|| {
    let empty = Snapshot::empty();
    verdict_fuzz::write(
        &empty,
        Command::PutPolicy {
            id: "p".into(),
            cedar: text.into(),
        },
    );
    verdict_fuzz::write(&empty, Command::ReplacePoliciesText { cedar: text.into() });
}));
