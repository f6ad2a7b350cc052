//! AuthZEN bodies (`/access/v1/evaluation` and `/access/v1/evaluations`) through the decide
//! routes' checks into the engine's decision input, decided against the fixed state on a worker.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let (state, body) = (verdict_fuzz::fixed_state(), body.to_vec());
    verdict_fuzz::on_node(async move { verdict_fuzz::route::evaluations(&state, &body) });
});
