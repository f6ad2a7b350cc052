//! Shared test machinery: a real node process, a raw HTTP client, the CLI, and checks of
//! decisions against the examples' expectations.

mod api;
pub mod cluster;
mod expect;
mod node;

pub use api::{assert_problem, check_problem, Api, Resp};
pub use expect::{assert_decision, Example};
pub use node::Node;

use std::net::TcpListener;
use std::process::Output;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::time::Duration;

/// A loopback port that no other test, in this process or in another test process, has been given.
///
/// Ports come from 20000–31999, below the kernel's ephemeral range (32768–60999 here), so no outgoing
/// connection can take one between this call and the node's bind; the kernel's port-0 allocator
/// once handed the same port to two test processes run side by side, and one process's CLI then
/// drove the other's cluster. Each port is claimed with a file created exclusively under
/// `$TMPDIR/verdict-e2e-ports`, and checked to be bindable. Claims older than two hours are stale
/// and removed on the first call.
pub fn unique_port() -> u16 {
    static NEXT: Mutex<Option<u32>> = Mutex::new(None);
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    let dir = std::env::temp_dir().join("verdict-e2e-ports");
    let mut next = NEXT.lock().unwrap_or_else(PoisonError::into_inner);
    let offset = next.get_or_insert_with(|| {
        let _ = std::fs::create_dir_all(&dir);
        remove_stale_claims(&dir);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        (std::process::id().wrapping_mul(7_919) ^ nanos) % SPAN
    });
    for _ in 0..SPAN {
        let port = (LOW + *offset) as u16;
        *offset = (*offset + 1) % SPAN;
        let claimed = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dir.join(port.to_string()))
            .is_ok();
        if claimed && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!(
        "no free loopback port in 20000-31999 (claims in {})",
        dir.display()
    );
}

fn remove_stale_claims(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(2 * 3600));
        if old {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Waits up to `within` for `child` to exit and reaps it (leaving `None`); if it does not, kills
/// it and panics with `log()`.
pub async fn wait_exit(
    child: &mut Option<std::process::Child>,
    within: Duration,
    log: impl Fn() -> String,
) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + within;
    loop {
        let running = child.as_mut().expect("the process was started");
        if let Some(status) = running.try_wait().expect("poll the process") {
            *child = None;
            return status;
        }
        if std::time::Instant::now() >= deadline {
            let _ = running.kill();
            let _ = running.wait();
            panic!("the process did not exit within {within:?}\n{}", log());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `RUST_LOG` for the nodes: `VERDICT_E2E_LOG` when set, else what `verdict serve` uses without
/// `RUST_LOG`, so that the log tails printed on failure read as an operator's log would.
pub fn node_log_filter() -> String {
    std::env::var("VERDICT_E2E_LOG").unwrap_or_else(|_| "warn,verdict=info".into())
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
