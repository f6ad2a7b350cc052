//! Entity JSON through `POST /v1/entities` (an upsert onto the fixed state, whose entities it may
//! extend or re-parent) and `PUT /v1/entities` (a replacement): parse, then the ancestor closure.
#![no_main]

use libfuzzer_sys::fuzz_target;
use verdict_engine::Command;

fuzz_target!(|json: &str| verdict_fuzz::on_node_stack(|| {
    let state = verdict_fuzz::fixed_state();
    verdict_fuzz::write(state, Command::UpsertEntities { json: json.into() });
    verdict_fuzz::write(state, Command::ReplaceEntities { json: json.into() });
}));
