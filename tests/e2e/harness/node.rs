//! A real `verdict serve` process on free loopback ports, killed on drop.

use std::fs::File;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::Api;

/// How long a node may take to answer `GET /readyz` with 200 after it is spawned.
const READY_DEADLINE: Duration = Duration::from_secs(30);
/// How often `/readyz` is polled while waiting.
const READY_POLL: Duration = Duration::from_millis(20);

/// One single-member cluster: its process, data directory and ports. The data directory outlives
/// restarts; the process is SIGKILLed on drop, and when the test is failing the tail of the node's
/// log is printed.
pub struct Node {
    child: Option<Child>,
    data: TempDir,
    logs: TempDir,
    runs: usize,
    api_addr: SocketAddr,
    peer_addr: SocketAddr,
    api: Api,
    /// A TOML config file passed with `--config` on every start (the flags still override it).
    config: Option<PathBuf>,
    /// `SOFT:HARD` open-file limits the process starts with (`prlimit --nofile`); `None`: the
    /// test's own.
    nofile: Option<String>,
}

impl Node {
    /// Spawns a node on a fresh data directory and waits until it is ready.
    pub async fn start() -> Node {
        let mut node = Node::new();
        node.spawn();
        node.wait_ready().await;
        node
    }

    /// [`Node::start`] with a TOML config file (written next to the node's logs and passed with
    /// `--config` on every start, restarts included); the harness's flags override its data
    /// directory and listeners.
    pub async fn start_with_config(toml: &str) -> Node {
        let mut node = Node::new();
        let path = node.logs.path().join("config.toml");
        std::fs::write(&path, toml).expect("write the node's config file");
        node.config = Some(path);
        node.spawn();
        node.wait_ready().await;
        node
    }

    /// [`Node::start_with_config`], the process started under `prlimit --nofile=<nofile>`
    /// (`SOFT:HARD`, or `SOFT:` to lower only the soft limit).
    pub async fn start_with_config_and_nofile(toml: &str, nofile: &str) -> Node {
        let mut node = Node::new();
        let path = node.logs.path().join("config.toml");
        std::fs::write(&path, toml).expect("write the node's config file");
        node.config = Some(path);
        node.nofile = Some(nofile.to_string());
        node.spawn();
        node.wait_ready().await;
        node
    }

    fn new() -> Node {
        let (api_addr, peer_addr) = free_ports();
        Node {
            child: None,
            data: TempDir::with_prefix("verdict-e2e-data-").expect("create data dir"),
            logs: TempDir::with_prefix("verdict-e2e-logs-").expect("create log dir"),
            runs: 0,
            api_addr,
            peer_addr,
            api: Api::new(&format!("http://{api_addr}")),
            config: None,
            nofile: None,
        }
    }

    /// The process id of the running node.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the node is running").id()
    }

    /// The API listener's address.
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// The peer listener's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    /// The HTTP API of the current process (a new connection pool after every restart).
    pub fn api(&self) -> &Api {
        &self.api
    }

    /// The resident memory of the current process in bytes (`VmRSS` from `/proc`).
    pub fn resident_bytes(&self) -> u64 {
        let pid = self
            .child
            .as_ref()
            .map(Child::id)
            .expect("the node is running");
        let status =
            std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc status");
        kib * 1024
    }

    /// `http://127.0.0.1:P`, what `VERDICT_URL` should be for the CLI.
    pub fn url(&self) -> String {
        format!("http://{}", self.api_addr)
    }

    /// SIGKILLs the process (no chance to flush or shut down) and reaps it.
    pub fn sigkill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // `Child::kill` is SIGKILL on Unix. An error means it already exited.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM: the node's graceful stop. Does not wait; see [`Node::wait_exit`].
    pub fn sigterm(&self) {
        let pid = self.pid().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {pid}");
    }

    /// Waits up to `within` for the process to exit and reaps it; panics with the log tail if it
    /// does not. [`Node::restart`] starts it again afterwards.
    pub async fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take();
        let status = super::wait_exit(&mut child, within, || self.log_tail(40)).await;
        self.child = child;
        status
    }

    /// SIGKILLs the node if it runs, starts it again on the same data directory and ports, and
    /// waits until it is ready.
    pub async fn restart(&mut self) {
        self.sigkill();
        self.spawn();
        self.wait_ready().await;
    }

    fn spawn(&mut self) {
        self.runs += 1;
        let log_path = self.log_path();
        let log = File::create(&log_path).expect("create node log");
        let err = log.try_clone().expect("clone log handle");
        let binary = binary_under_test();
        let mut command = match &self.nofile {
            // prlimit sets the limits on itself and execs the node: same process id.
            Some(limits) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={limits}")).arg(&binary);
                c
            }
            None => Command::new(&binary),
        };
        command.arg("serve");
        if let Some(config) = &self.config {
            command.arg("--config").arg(config);
        }
        let child = command
            .arg("--data-dir")
            .arg(self.data.path())
            .arg("--listen")
            .arg(self.api_addr.to_string())
            .arg("--peer-listen")
            .arg(self.peer_addr.to_string())
            .env("RUST_LOG", super::node_log_filter())
            // The log is read back into failure messages: no colour codes.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("spawn `verdict serve`");
        self.child = Some(child);
        self.api = Api::new(&self.url());
    }

    /// Polls `GET /readyz` until 200; panics with the node's log if the deadline passes or the
    /// process exits.
    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "`verdict serve` exited with {status} before it was ready\n{}",
                        self.log_tail(40)
                    );
                }
            }
            let last = match self.api.try_get("/readyz").await {
                Ok(resp) if resp.status == 200 => return,
                Ok(resp) => format!("{} {}", resp.status, resp.text),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                panic!(
                    "node on {} not ready within {READY_DEADLINE:?}; last /readyz: {last}\n{}",
                    self.api_addr,
                    self.log_tail(40)
                );
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }

    fn log_path(&self) -> PathBuf {
        self.logs.path().join(format!("run-{}.log", self.runs))
    }

    /// The whole log of the current run.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The last `lines` lines of the current run's log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        let tail = all[all.len().saturating_sub(lines)..].join("\n");
        format!(
            "--- last {lines} lines of node log (run {}) ---\n{tail}",
            self.runs
        )
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.sigkill();
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail(60));
        }
    }
}

/// The `verdict` binary the nodes run: `VERDICT_E2E_BIN` when set (e.g. an older build, to show
/// that a new test fails on the code before a change), else the one this test run built.
fn binary_under_test() -> PathBuf {
    std::env::var_os("VERDICT_E2E_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_verdict")))
}

/// Two loopback ports for the API and peer listeners (see [`super::unique_port`]).
fn free_ports() -> (SocketAddr, SocketAddr) {
    (
        SocketAddr::from(([127, 0, 0, 1], super::unique_port())),
        SocketAddr::from(([127, 0, 0, 1], super::unique_port())),
    )
}
