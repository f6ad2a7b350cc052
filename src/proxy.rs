//! `verdict proxy`: a small TCP load balancer in front of the nodes' API listeners.
//!
//! It exists so `docker-compose up` has one entry point on machines that cannot pull a
//! load-balancer image (docs/containers.md). It works at layer 4: each accepted connection goes,
//! whole, to the next backend in round-robin order, and bytes are copied both ways until either
//! side closes. HTTP keep-alive therefore pins a client to one node for the life of its
//! connection; a client that wants to spread its requests opens new connections.
//!
//! A backend that refuses the connection or does not accept it in time is skipped for that
//! connection: the next one in order is tried, each backend at most once. It is then tried last
//! for `COOL_DOWN`, so a stopped node (whose address no longer answers at all) costs one connect
//! timeout per cool-down rather than one per round of the rotation. Backend names are
//! resolved at start and again every `--resolve-every`, so a container that comes back with a new
//! address is found without restarting the proxy; a failed re-resolution keeps the old addresses.
//! Name resolution is the platform's (`getaddrinfo`), which a static glibc build answers from
//! `/etc/hosts` and `/etc/resolv.conf` without loading NSS modules, so it also works in a `FROM
//! scratch` image.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tracing_subscriber::EnvFilter;

use crate::cli::ProxyArgs;

/// How long a backend that failed a connect is tried only after the others.
const COOL_DOWN: Duration = Duration::from_secs(2);

/// How the proxy treats backends and clients; the command line fills it from `ProxyArgs`.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long one connect to one backend address may take before the next backend is tried.
    pub connect_timeout: Duration,
    /// How often backend names are resolved again.
    pub resolve_every: Duration,
    /// Client connections served at once; further clients wait in the listen backlog.
    pub max_connections: usize,
}

/// Runs the proxy until SIGINT or SIGTERM.
pub async fn run(args: ProxyArgs) -> anyhow::Result<ExitCode> {
    init_logging()?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on `{}`", args.listen))?;
    let options = Options {
        connect_timeout: args.connect_timeout,
        resolve_every: args.resolve_every,
        max_connections: args.max_connections,
    };
    serve(listener, args.backends, options, shutdown_signal()?).await?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Accepts on `listener` and forwards every connection to one of `backends` (`HOST:PORT` each)
/// until `shutdown` resolves. Connections still open then are dropped: the proxy keeps no state a
/// client could lose, and HTTP clients retry on a new connection.
pub async fn serve(
    listener: TcpListener,
    backends: Vec<String>,
    options: Options,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        !backends.is_empty(),
        "the proxy needs at least one --backend"
    );
    anyhow::ensure!(
        options.max_connections > 0,
        "--max-connections must be at least 1"
    );
    anyhow::ensure!(
        !options.connect_timeout.is_zero() && !options.resolve_every.is_zero(),
        "--connect-timeout and --resolve-every must be longer than zero"
    );
    match listener.local_addr() {
        Ok(listen) => tracing::info!(%listen, ?backends, "verdict proxy serving"),
        Err(e) => tracing::info!(error = %e, ?backends, "verdict proxy serving"),
    }
    let backends: Arc<[Backend]> = backends.into_iter().map(Backend::new).collect();
    for b in backends.iter() {
        b.refresh().await;
    }
    let resolver = tokio::spawn(refresh_periodically(
        backends.clone(),
        options.resolve_every,
    ));
    let options = Arc::new(options);
    let limit = Arc::new(Semaphore::new(options.max_connections));
    let mut next = 0usize;
    tokio::pin!(shutdown);
    let result = loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(e) => break Err(anyhow::anyhow!("connection limit closed: {e}")),
            },
            () = &mut shutdown => break Ok(()),
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = &mut shutdown => break Ok(()),
        };
        let (client, from) = match accepted {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let start = next;
        next = next.wrapping_add(1);
        let backends = backends.clone();
        let options = options.clone();
        tokio::spawn(async move {
            forward(client, from, &backends, start, &options).await;
            drop(permit);
        });
    };
    resolver.abort();
    result
}

/// One upstream: its name as given and the addresses it last resolved to.
struct Backend {
    /// `HOST:PORT` as given on the command line.
    name: String,
    /// The last successful resolution; empty until one succeeds.
    addrs: Mutex<Arc<[SocketAddr]>>,
    /// Until when it is tried after the others (its last connect failed).
    cooling_until: Mutex<Option<Instant>>,
    /// The last resolution failed; a stopped container fails every time, so only the change is
    /// logged as a warning.
    unresolvable: AtomicBool,
}

impl Backend {
    fn new(name: String) -> Self {
        Self {
            name,
            addrs: Mutex::new(Arc::from(Vec::new())),
            cooling_until: Mutex::new(None),
            unresolvable: AtomicBool::new(false),
        }
    }

    fn is_cooling(&self, now: Instant) -> bool {
        let until = *self
            .cooling_until
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        until.is_some_and(|t| now < t)
    }

    fn set_cooling(&self, until: Option<Instant>) {
        *self
            .cooling_until
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = until;
    }

    fn addrs(&self) -> Arc<[SocketAddr]> {
        // A poisoned lock still holds a complete value: it is only ever replaced whole.
        self.addrs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Resolves the name again; on failure the previous addresses stay.
    async fn refresh(&self) -> Arc<[SocketAddr]> {
        match resolve(&self.name).await {
            Ok(fresh) => {
                self.unresolvable.store(false, Ordering::Relaxed);
                let fresh: Arc<[SocketAddr]> = fresh.into();
                let mut addrs = self
                    .addrs
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                if *addrs != fresh {
                    tracing::info!(backend = %self.name, addrs = ?fresh, "backend resolved");
                    *addrs = fresh.clone();
                }
                fresh
            }
            Err(e) => {
                if self.unresolvable.swap(true, Ordering::Relaxed) {
                    tracing::debug!(backend = %self.name, error = %e, "cannot resolve backend");
                } else {
                    tracing::warn!(backend = %self.name, error = %e, "cannot resolve backend; keeping its last addresses");
                }
                self.addrs()
            }
        }
    }
}

async fn resolve(name: &str) -> io::Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(name).await?.collect();
    if addrs.is_empty() {
        return Err(io::Error::other("the name has no addresses"));
    }
    Ok(addrs)
}

async fn refresh_periodically(backends: Arc<[Backend]>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        for b in backends.iter() {
            b.refresh().await;
        }
    }
}

/// Connects `client` to the first backend, from `start` on in round-robin order, that accepts, and
/// copies bytes both ways until either side closes.
async fn forward(
    mut client: TcpStream,
    from: SocketAddr,
    backends: &[Backend],
    start: usize,
    options: &Options,
) {
    let Some((mut upstream, backend)) = connect(backends, start, options.connect_timeout).await
    else {
        tracing::warn!(client = %from, "no backend accepted the connection; closing it");
        return;
    };
    // Requests and answers are small; do not let Nagle hold them back.
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((sent, received)) => {
            tracing::debug!(client = %from, backend, sent, received, "connection closed");
        }
        // Resets from either side are ordinary ends of a TCP connection, not proxy faults.
        Err(e) => tracing::debug!(client = %from, backend, error = %e, "connection ended"),
    }
}

/// Tries each backend once, in round-robin order from `start` but those cooling down last; within
/// a backend, each of its addresses.
async fn connect(
    backends: &[Backend],
    start: usize,
    timeout: Duration,
) -> Option<(TcpStream, &str)> {
    let now = Instant::now();
    let rotation = (0..backends.len()).map(|i| &backends[start.wrapping_add(i) % backends.len()]);
    let (ready, cooling): (Vec<&Backend>, Vec<&Backend>) =
        rotation.partition(|b| !b.is_cooling(now));
    for backend in ready.into_iter().chain(cooling) {
        let mut addrs = backend.addrs();
        if addrs.is_empty() {
            // Not resolvable at start (its container was not up yet): try again now.
            addrs = backend.refresh().await;
        }
        for addr in addrs.iter() {
            match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    backend.set_cooling(None);
                    return Some((stream, backend.name.as_str()));
                }
                Ok(Err(e)) => {
                    tracing::warn!(backend = %backend.name, %addr, error = %e, "backend refused the connection; trying the next");
                }
                Err(_) => {
                    tracing::warn!(backend = %backend.name, %addr, ?timeout, "backend did not accept in time; trying the next");
                }
            }
        }
        backend.set_cooling(Some(Instant::now() + COOL_DOWN));
    }
    None
}

/// Checks a `--backend` value: `HOST:PORT` or `[IPV6]:PORT`. The name is resolved later, so a
/// backend that is not up yet is not an error.
pub fn parse_backend(text: &str) -> Result<String, String> {
    let hint = "write it as HOST:PORT, e.g. `node1:8080`";
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("`{text}` has no port; {hint}"));
    };
    if host.is_empty() {
        return Err(format!("`{text}` has no host; {hint}"));
    }
    if port.parse::<u16>().is_err() {
        return Err(format!("`{port}` in `{text}` is not a port; {hint}"));
    }
    Ok(text.to_string())
}

fn init_logging() -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}

/// Resolves on the first SIGINT or SIGTERM. In a container the proxy is process 1, which the
/// kernel gives no default signal handling, so without this `docker stop` would wait for its
/// timeout and then kill it.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::signal;
        use tokio::signal::unix::SignalKind;
        let mut term =
            signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
        let mut int =
            signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutting down"),
                _ = int.recv() => tracing::info!(signal = "SIGINT", "shutting down"),
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
            tracing::info!(signal = "ctrl-c", "shutting down");
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::io::AsyncWriteExt;

    /// A backend that greets every connection with its id byte, then echoes.
    async fn backend(id: u8) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    s.write_all(&[id]).await.unwrap();
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr.to_string()
    }

    /// An address nothing listens on.
    /// An address that refuses connections: bound but never listening, and kept bound for the
    /// rest of the test process so no other test's listener can take the port.
    async fn refusing() -> String {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = socket.local_addr().unwrap().to_string();
        std::mem::forget(socket);
        addr
    }

    async fn proxy(backends: Vec<String>) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let options = Options {
            connect_timeout: Duration::from_secs(1),
            resolve_every: Duration::from_secs(60),
            max_connections: 16,
        };
        let task = tokio::spawn(async move {
            serve(listener, backends, options, std::future::pending())
                .await
                .unwrap();
        });
        (addr, task)
    }

    /// Opens one connection through the proxy and returns the id of the backend that answered.
    async fn which(proxy: SocketAddr) -> u8 {
        let mut s = TcpStream::connect(proxy).await.unwrap();
        let mut id = [0u8];
        s.read_exact(&mut id).await.unwrap();
        id[0]
    }

    #[tokio::test]
    async fn connections_go_round_robin_and_bytes_flow_both_ways() {
        let backends = vec![backend(1).await, backend(2).await, backend(3).await];
        let (addr, task) = proxy(backends).await;
        let mut seen = Vec::new();
        for _ in 0..6 {
            seen.push(which(addr).await);
        }
        assert_eq!(seen, [1, 2, 3, 1, 2, 3]);

        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 6];
        s.write_all(b"hello").await.unwrap();
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf[1..], b"hello");
        task.abort();
    }

    #[tokio::test]
    async fn a_refusing_backend_is_skipped() {
        let backends = vec![refusing().await, backend(2).await, refusing().await];
        let (addr, task) = proxy(backends).await;
        for _ in 0..4 {
            assert_eq!(which(addr).await, 2);
        }
        task.abort();
    }

    #[tokio::test]
    async fn the_client_is_closed_when_no_backend_accepts() {
        let (addr, task) = proxy(vec![refusing().await, refusing().await]).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
        task.abort();
    }

    #[tokio::test]
    async fn zero_durations_are_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let options = Options {
            connect_timeout: Duration::ZERO,
            resolve_every: Duration::from_secs(5),
            max_connections: 16,
        };
        let backends = vec!["127.0.0.1:1".to_string()];
        let err = serve(listener, backends, options, std::future::pending())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("longer than zero"), "{err}");
    }

    #[test]
    fn backends_need_a_host_and_a_port() {
        assert_eq!(parse_backend("node1:8080").unwrap(), "node1:8080");
        assert_eq!(parse_backend("[::1]:8080").unwrap(), "[::1]:8080");
        assert!(parse_backend("node1").is_err());
        assert!(parse_backend(":8080").is_err());
        assert!(parse_backend("node1:http").is_err());
        assert!(parse_backend("node1:70000").is_err());
    }
}
