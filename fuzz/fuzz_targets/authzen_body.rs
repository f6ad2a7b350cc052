//! AuthZEN bodies (`/access/v1/evaluation` and `/access/v1/evaluations`) parsed as the server
//! parses them into the engine's decision input, then decided against the fixed state.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| verdict_fuzz::on_node_stack(|| {
    verdict_fuzz::evaluate_body(verdict_fuzz::fixed_state(), body);
}));
