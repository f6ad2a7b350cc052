//! Entity JSON through `POST /v1/entities` (an upsert onto the fixed state, whose entities it may
//! extend or re-parent) and `PUT /v1/entities` (a replacement): the route's checks, then
//! admission, check (parse and ancestor closure) and apply.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let (state, body) = (verdict_fuzz::fixed_state(), body.to_vec());
    verdict_fuzz::on_node(async move { verdict_fuzz::route::write_entities(state, &body).await });
});
