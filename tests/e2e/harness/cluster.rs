//! A multi-node cluster of real `verdict serve` processes on loopback: static bootstrap, nodes that
//! join later, and the signals the failure tests send (SIGKILL, SIGSTOP, SIGCONT).

use std::fs::File;
use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use super::Api;

/// The cluster secret every test member shares.
pub const SECRET: &str = "e2e-secret";

/// One member process; SIGKILLed on drop (SIGCONT first if stopped), log tail printed when the
/// test is failing.
pub struct Member {
    /// Its node id.
    pub id: u64,
    /// `127.0.0.1:P` of its API.
    pub api_addr: String,
    /// `127.0.0.1:P` of its peer listener.
    pub peer_addr: String,
    data: TempDir,
    logs: TempDir,
    runs: usize,
    child: Option<Child>,
    /// The arguments after `serve` that identify its role (bootstrap or join) and options.
    args: Vec<String>,
    api: Api,
    stopped: bool,
    /// With TLS on its API: the CA (PEM) its certificate chains to; the API is then `https://`.
    tls_ca: Option<Vec<u8>>,
    /// The `verdict` binary it runs: this build's unless a test swaps in another release's.
    bin: PathBuf,
}

impl Member {
    fn new(id: u64) -> Member {
        let api_addr = format!("127.0.0.1:{}", super::unique_port());
        let peer_addr = format!("127.0.0.1:{}", super::unique_port());
        Member {
            id,
            api: Api::new(&format!("http://{api_addr}")),
            api_addr,
            peer_addr,
            data: TempDir::with_prefix("verdict-e2e-cluster-").expect("data dir"),
            logs: TempDir::with_prefix("verdict-e2e-cluster-logs-").expect("log dir"),
            runs: 0,
            child: None,
            args: Vec::new(),
            stopped: false,
            tls_ca: None,
            bin: PathBuf::from(env!("CARGO_BIN_EXE_verdict")),
        }
    }

    /// Its HTTP API.
    pub fn api(&self) -> &Api {
        &self.api
    }

    /// `http://…` (`https://…` with TLS on its API) for the CLI.
    pub fn url(&self) -> String {
        let scheme = if self.tls_ca.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.api_addr)
    }

    fn new_api(&self) -> Api {
        match &self.tls_ca {
            Some(ca) => Api::with_ca(&self.url(), ca),
            None => Api::new(&self.url()),
        }
    }

    fn spawn(&mut self) {
        self.runs += 1;
        let log = File::create(self.log_path()).expect("create node log");
        let err = log.try_clone().expect("clone log handle");
        let child = Command::new(&self.bin)
            .args(["serve", "--node-id", &self.id.to_string()])
            .arg("--data-dir")
            .arg(self.data.path())
            .args(["--listen", &self.api_addr, "--peer-listen", &self.peer_addr])
            .args(&self.args)
            .env("VERDICT_CLUSTER_SECRET", SECRET)
            .env("RUST_LOG", super::node_log_filter())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("spawn verdict serve");
        self.child = Some(child);
        self.stopped = false;
        self.api = self.new_api();
    }

    fn signal(&self, sig: &str) {
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .args([sig, &child.id().to_string()])
                .status()
                .expect("run kill");
            assert!(status.success(), "kill {sig} node {}", self.id);
        }
    }

    /// SIGHUP: a node with TLS re-reads its certificates.
    pub fn sighup(&self) {
        self.signal("-HUP");
    }

    /// SIGTERM: the graceful stop. Does not wait; see [`Member::wait_exit`].
    pub fn sigterm(&self) {
        self.signal("-TERM");
    }

    /// Waits up to `within` for the process to exit and reaps it; panics with the log tail if it
    /// does not. [`Member::restart`] starts it again afterwards.
    pub async fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take();
        let status = super::wait_exit(&mut child, within, || self.log_tail(40)).await;
        self.child = child;
        status
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn sigkill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.stopped {
                self.signal("-CONT");
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: the process freezes (as in a long GC pause or a hung VM).
    pub fn sigstop(&mut self) {
        self.signal("-STOP");
        self.stopped = true;
    }

    /// SIGCONT after [`Member::sigstop`].
    pub fn sigcont(&mut self) {
        self.signal("-CONT");
        self.stopped = false;
    }

    /// The next (re)start runs `bin` (`None`: this build's) with `extra` serve flags after its
    /// bootstrap flags, on the same id, data directory and ports: an in-place upgrade or rollback.
    pub fn set_binary(&mut self, bin: Option<PathBuf>, extra: &[&str]) {
        self.bin = bin.unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_verdict")));
        self.args.truncate(2);
        self.args.extend(extra.iter().map(|s| s.to_string()));
    }

    /// SIGKILLs (if running) and starts again on the same data and ports; does not wait.
    pub fn restart(&mut self) {
        self.sigkill();
        self.spawn();
    }

    fn log_path(&self) -> PathBuf {
        self.logs.path().join(format!("run-{}.log", self.runs))
    }

    /// The last lines of the current run's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        let tail = all[all.len().saturating_sub(lines)..].join("\n");
        format!("--- node {} log (run {}) ---\n{tail}", self.id, self.runs)
    }

    /// Whether the current run's log contains `needle`.
    pub fn log_contains(&self, needle: &str) -> bool {
        std::fs::read_to_string(self.log_path())
            .map(|t| t.contains(needle))
            .unwrap_or(false)
    }

    /// Polls `/readyz` until 200.
    pub async fn wait_ready(&self, within: Duration) {
        let last = wait_for(within, || async {
            match self.api.try_get("/readyz").await {
                Ok(r) if r.status == 200 => Ok(()),
                Ok(r) => Err(format!("{} {}", r.status, r.text)),
                Err(e) => Err(e),
            }
        })
        .await;
        if let Err(last) = last {
            panic!(
                "node {} not ready within {within:?}: {last}\n{}",
                self.id,
                self.log_tail(40)
            );
        }
    }

    /// Its applied version, from `/readyz` (ready or not), if it answers.
    pub async fn version(&self) -> Option<u64> {
        let r = self.api.try_get("/readyz").await.ok()?;
        r.json["version"].as_u64()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.sigkill();
        let panicking = std::thread::panicking();
        if panicking {
            eprintln!("{}", self.log_tail(60));
        }
        // `VERDICT_E2E_KEEP_LOGS=1` keeps a failing test's whole logs for a post-mortem, `=always`
        // every test's (a slow pass can be as telling as a failure).
        let keep = std::env::var("VERDICT_E2E_KEEP_LOGS").ok();
        if keep.as_deref() == Some("always") || (panicking && keep.is_some()) {
            let logs = std::mem::replace(
                &mut self.logs,
                TempDir::with_prefix("verdict-e2e-spent-").expect("log dir"),
            );
            eprintln!("node {} logs kept in {}", self.id, logs.keep().display());
        }
    }
}

/// Retries `probe` every 50 ms until it is `Ok` or `within` passes; the last error on timeout.
pub async fn wait_for<T, F, Fut>(within: Duration, mut probe: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + within;
    loop {
        match probe().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A cluster: members in id order (a removed member may stay in the list, stopped or not).
pub struct Cluster {
    /// The members.
    pub members: Vec<Member>,
}

impl Cluster {
    /// Starts `n` members with static bootstrap and `extra` serve flags; waits until all are ready.
    pub async fn start(n: u64, extra: &[&str]) -> Cluster {
        let mut members: Vec<Member> = (1..=n).map(Member::new).collect();
        let spec = members
            .iter()
            .map(|m| format!("{}={}/{}", m.id, m.api_addr, m.peer_addr))
            .collect::<Vec<_>>()
            .join(",");
        for m in &mut members {
            m.args = vec!["--initial-cluster".into(), spec.clone()];
            m.args.extend(extra.iter().map(|s| s.to_string()));
            m.spawn();
        }
        for m in &members {
            m.wait_ready(Duration::from_secs(30)).await;
        }
        Cluster { members }
    }

    /// Starts `n` members with static bootstrap, member `id` running `setup(id)`: a binary
    /// (`None`: this build's) and its serve flags. Waits until all are ready.
    pub async fn start_each(
        n: u64,
        setup: impl Fn(u64) -> (Option<PathBuf>, Vec<String>),
    ) -> Cluster {
        let mut members: Vec<Member> = (1..=n).map(Member::new).collect();
        let spec = members
            .iter()
            .map(|m| format!("{}={}/{}", m.id, m.api_addr, m.peer_addr))
            .collect::<Vec<_>>()
            .join(",");
        for m in &mut members {
            let (bin, extra) = setup(m.id);
            m.args = vec!["--initial-cluster".into(), spec.clone()];
            let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
            m.set_binary(bin, &extra);
            m.spawn();
        }
        for m in &members {
            m.wait_ready(Duration::from_secs(30)).await;
        }
        Cluster { members }
    }

    /// [`Cluster::start`] with TLS on every member's API: `args(id)` gives member `id`'s serve
    /// flags (its own certificate files), and the harness trusts `ca_pem` for their APIs.
    pub async fn start_tls(n: u64, ca_pem: &[u8], args: impl Fn(u64) -> Vec<String>) -> Cluster {
        let mut members: Vec<Member> = (1..=n).map(Member::new).collect();
        let spec = members
            .iter()
            .map(|m| format!("{}={}/{}", m.id, m.api_addr, m.peer_addr))
            .collect::<Vec<_>>()
            .join(",");
        for m in &mut members {
            m.tls_ca = Some(ca_pem.to_vec());
            m.args = vec!["--initial-cluster".into(), spec.clone()];
            m.args.extend(args(m.id));
            m.spawn();
        }
        for m in &members {
            m.wait_ready(Duration::from_secs(30)).await;
        }
        Cluster { members }
    }

    /// Starts a new member with `--join` (not yet added; add it through the API or CLI).
    pub fn spawn_joiner(&mut self, id: u64, extra: &[&str]) -> &Member {
        let mut m = Member::new(id);
        m.args = vec!["--join".into()];
        m.args.extend(extra.iter().map(|s| s.to_string()));
        m.spawn();
        self.members.push(m);
        self.members.last().expect("just pushed")
    }

    /// The member with this id.
    pub fn member(&self, id: u64) -> &Member {
        self.members
            .iter()
            .find(|m| m.id == id)
            .unwrap_or_else(|| panic!("no member {id}"))
    }

    /// Mutable access to the member with this id.
    pub fn member_mut(&mut self, id: u64) -> &mut Member {
        self.members
            .iter_mut()
            .find(|m| m.id == id)
            .unwrap_or_else(|| panic!("no member {id}"))
    }

    /// The leader as seen by the members in `among`, once they all agree (within `within`).
    pub async fn leader(&self, among: &[u64], within: Duration) -> u64 {
        self.leader_except(among, None, within).await
    }

    /// Like [`Cluster::leader`], but waits until the agreed leader is not `except` (a killed one).
    pub async fn leader_except(&self, among: &[u64], except: Option<u64>, within: Duration) -> u64 {
        let result = wait_for(within, || async {
            let mut seen = Vec::new();
            for id in among {
                let v = self
                    .member(*id)
                    .api
                    .try_get("/v1/cluster")
                    .await
                    .map(|r| r.json["leader"].as_u64())
                    .unwrap_or(None);
                seen.push(v);
            }
            match seen.first() {
                Some(Some(l)) if Some(*l) != except && seen.iter().all(|s| *s == Some(*l)) => {
                    Ok(*l)
                }
                _ => Err(format!("leaders seen by {among:?}: {seen:?}")),
            }
        })
        .await;
        result.unwrap_or_else(|e| panic!("no agreed leader within {within:?}: {e}"))
    }

    /// `GET /v1/cluster` from one member.
    pub async fn view(&self, from: u64) -> Value {
        self.member(from).api.get("/v1/cluster").await.ok().json
    }
}
