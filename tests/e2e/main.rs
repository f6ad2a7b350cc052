//! End-to-end tests of the `verdict` binary: every test starts real `verdict serve` processes on
//! free loopback ports with their own data directories, and talks to them over HTTP and through
//! the CLI, as users do.
//!
//! Run with `cargo test --test e2e`. Set `VERDICT_E2E_LOG=debug` for more node logging (printed
//! when a test fails), and `VERDICT_E2E_DURABILITY_ITERATIONS` / `VERDICT_E2E_DURABILITY_WRITES` to
//! scale the crash test, `VERDICT_E2E_VERSION_ROUNDS` for the kills of the version test, `VERDICT_E2E_RESTARTS` for the
//! restarts of the readiness test.

mod bad_input;
mod batch;
mod capacity;
mod cluster;
mod decision_log;
mod decision_log_batch;
mod drain;
mod durability;
mod examples;
mod harness;
mod hostile_edge;
mod hostile_input;
mod hostile_writes;
mod idempotency;
mod levels;
mod membership;
mod mixed_versions;
mod no_panics;
mod readiness;
mod security;
mod semantics;
mod shutdown;
mod tls;
mod tokens;
mod versions;
mod watch;
