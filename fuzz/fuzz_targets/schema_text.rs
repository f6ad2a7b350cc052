//! Cedar schema text through `PUT /v1/schema`: the first byte chooses the format (even: Cedar
//! schema text, odd: JSON schema), the rest is the schema.
#![no_main]

use libfuzzer_sys::fuzz_target;
use verdict_engine::Command;
use verdict_engine::Snapshot;

fuzz_target!(|data: &[u8]| verdict_fuzz::on_node_stack(|| {
    let Some((format, text)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    verdict_fuzz::write(
        &Snapshot::empty(),
        Command::PutSchema {
            text: text.into(),
            json: format % 2 == 1,
        },
    );
}));
