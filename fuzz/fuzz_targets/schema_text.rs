//! A schema through `PUT /v1/schema`: the first byte chooses the format (even: Cedar schema text,
//! odd: JSON schema, sent as `application/json`), the rest is the body.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((format, body)) = data.split_first() else {
        return;
    };
    let (json, body) = (format % 2 == 1, body.to_vec());
    verdict_fuzz::on_node(async move { verdict_fuzz::route::put_schema(&body, json).await });
});
