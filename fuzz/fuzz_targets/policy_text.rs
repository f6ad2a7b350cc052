//! Cedar policy text through `PUT /v1/policies/{id}` and `PUT /v1/policies` (a whole set), as
//! `text/plain`: the route's checks, then admission, check and apply (`verdict_fuzz::propose`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use verdict_fuzz::route;

fuzz_target!(|body: &[u8]| {
    let body = body.to_vec();
    verdict_fuzz::on_node(async move {
        route::put_policy(&body).await;
        route::replace_policies(&body).await;
    });
});
