//! Shared test machinery: a real node process, a raw HTTP client, the CLI, and checks of
//! decisions against the examples' expectations.

mod api;
pub mod cluster;
mod expect;
mod node;

pub use api::{assert_problem, check_problem, Api, Resp};
pub use expect::{assert_decision, Example};
pub use node::Node;

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::process::Output;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::time::Duration;

/// A loopback port no other caller in this test process has been given: bound to port 0, read,
/// released. The kernel hands released ports out again (two nodes once got the same port for API
/// and peer listener), so ports already given out are remembered and skipped. Another process could
/// still take one before the node binds it; the node then fails to start and the test says so.
pub fn unique_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind a free loopback port")
            .port();
        if GIVEN
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(port)
        {
            return port;
        }
    }
}

/// Runs the `verdict` CLI with `VERDICT_URL` = `url`; panics if it does not finish within a minute.
pub async fn cli_at(url: &str, args: &[&str]) -> Output {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_verdict"))
        .args(args)
        .env("VERDICT_URL", url)
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(Duration::from_secs(60), run).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => panic!("cannot run `verdict {}`: {e}", args.join(" ")),
        Err(_) => panic!("`verdict {}` did not finish within 60 s", args.join(" ")),
    }
}

/// Runs the CLI with `--output json`, asserts success and returns the parsed stdout.
pub async fn cli_json(node: &Node, args: &[&str]) -> serde_json::Value {
    cli_json_at(&node.url(), args).await
}

/// [`cli_json`] against any URL.
pub async fn cli_json_at(url: &str, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--output", "json"];
    all.extend_from_slice(args);
    let out = cli_at(url, &all).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "`verdict {}` failed with {}\nstdout: {stdout}\nstderr: {stderr}",
        all.join(" "),
        out.status
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "`verdict {}` printed non-JSON ({e}): {stdout}",
            all.join(" ")
        )
    })
}
