//! Connections: the accept loop every listener runs, with a cap on open connections, a deadline
//! for each request head, TLS handshakes off the accept path, graceful shutdown, and the counters
//! behind `verdict_connections_*` on /metrics.
//!
//! hyper drives each connection (`http1::Builder::header_read_timeout`, which hyper starts when a
//! connection opens and again when a response is done, so it is the keep-alive idle timeout as
//! well); axum's own `serve` offers neither that timeout nor a cap.
//!
//! At the cap a new connection is accepted and closed at once, so that it neither waits in the
//! kernel's backlog (its client would hang until its own timeout) nor makes `accept` fail for
//! want of file descriptors: a plain-HTTP listener first writes a canned `503
//! too_many_connections`; a TLS listener cannot answer before a handshake and just closes. Every
//! such connection is counted, and logged at most every [`WARN_EVERY_SECS`].

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::Router;

use crate::edge::Edge;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::rt::TokioTimer;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::server::graceful::Watcher;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::io::AsyncRead;
use tokio::io::AsyncWrite;
use tokio::net::TcpListener;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// A listener's TLS: the config new handshakes use (swapped on reload) and how long one may take.
pub type ListenerTls = Option<(Arc<ArcSwap<ServerConfig>>, Duration)>;

/// Refusals at the cap are logged at most this often per listener (each is counted).
pub const WARN_EVERY_SECS: u64 = 10;

/// The limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct ListenerLimits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Deadline for a complete request head, from a connection's start or its last response.
    pub header_read_timeout: Duration,
    /// After the stop signal, how long open requests may take to finish (`shutdown_grace_ms`).
    pub shutdown_grace: Duration,
}

/// Counters of one listener.
#[derive(Debug, Default)]
pub struct Counters {
    /// Connections open now.
    pub open: AtomicU64,
    /// The cap in force (after any lowering for the open-file limit).
    pub limit: AtomicU64,
    /// Connections closed at once because the listener was at its cap.
    pub refused_at_cap: AtomicU64,
    /// Connections closed because no complete request head came in time (slow or idle).
    pub timed_out: AtomicU64,
    /// `accept` calls that failed (e.g. out of file descriptors).
    pub accept_errors: AtomicU64,
    /// When a refusal was last logged, in seconds since the Unix epoch.
    last_warned_secs: AtomicU64,
}

/// The counters of the node's three listeners.
#[derive(Debug, Default)]
pub struct ConnectionMetrics {
    /// The API listener.
    pub api: Arc<Counters>,
    /// The peer listener.
    pub peer: Arc<Counters>,
    /// The health listener.
    pub health: Arc<Counters>,
}

impl ConnectionMetrics {
    /// Appends the `verdict_connections_*` families in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let listeners = [
            ("api", &self.api),
            ("peer", &self.peer),
            ("health", &self.health),
        ];
        let families: [(&str, &str, &str, CounterOf); 5] = [
            (
                "verdict_connections_open",
                "gauge",
                "Connections open now, by listener.",
                |c| &c.open,
            ),
            (
                "verdict_connections_limit",
                "gauge",
                "Most connections a listener keeps open (max_connections and friends, after any lowering for the open-file limit).",
                |c| &c.limit,
            ),
            (
                "verdict_connections_refused_total",
                "counter",
                "Connections closed at once because their listener was at its cap.",
                |c| &c.refused_at_cap,
            ),
            (
                "verdict_connections_timed_out_total",
                "counter",
                "Connections closed because no complete request head came within header_read_timeout_ms (slow or idle).",
                |c| &c.timed_out,
            ),
            (
                "verdict_connection_accept_errors_total",
                "counter",
                "accept() failures (e.g. out of file descriptors).",
                |c| &c.accept_errors,
            ),
        ];
        for (name, kind, help, field) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (listener, counters) in listeners {
                let v = field(counters).load(Ordering::Relaxed);
                let _ = writeln!(out, "{name}{{listener=\"{listener}\"}} {v}");
            }
        }
    }
}

/// Picks one counter out of a listener's.
type CounterOf = fn(&Counters) -> &AtomicU64;

/// Counts a connection open for as long as it lives.
struct OpenGuard(Arc<Counters>);

impl OpenGuard {
    fn new(counters: Arc<Counters>) -> Self {
        counters.open.fetch_add(1, Ordering::Relaxed);
        Self(counters)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves `app` on `tcp` until `stop` turns true: plain HTTP without `tls`, else TLS with the
/// config it holds at each handshake. Graceful: open requests finish, idle connections close.
pub async fn serve(
    tcp: TcpListener,
    app: Edge<Router>,
    tls: ListenerTls,
    what: &'static str,
    limits: ListenerLimits,
    counters: Arc<Counters>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    counters
        .limit
        .store(limits.max_connections as u64, Ordering::Relaxed);
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, addr) = tokio::select! {
            () = stopped(&mut stop) => break,
            accepted = tcp.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    accept_error(e, what, &counters).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refuse_at_cap(stream, addr, what, tls.is_none(), &counters, limits);
            continue;
        };
        let conn = Connection {
            http: http.clone(),
            app: app.clone(),
            watcher: graceful.watcher(),
            counters: counters.clone(),
            what,
            addr,
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _open = OpenGuard::new(conn.counters.clone());
            match tls {
                None => conn.serve(stream).await,
                Some((config, timeout)) => {
                    if let Some(tls) =
                        crate::tls::handshake(stream, &config, timeout, what, addr).await
                    {
                        conn.serve(tls).await;
                    }
                }
            }
        });
    }
    // No new connections: closing the socket makes the kernel refuse them (a load balancer's
    // check fails at once). Then the open ones finish the request they are in, bounded: idle
    // ones close now, busy ones after their response (hyper's graceful shutdown).
    drop(tcp);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            listener = what,
            open = counters.open.load(Ordering::Relaxed),
            grace_ms = u64::try_from(limits.shutdown_grace.as_millis()).unwrap_or(u64::MAX),
            "requests still running when shutdown_grace_ms ran out; their connections are closed"
        );
    }
    Ok(())
}

/// Resolves once `stop` turns true (or its sender is gone). Its own function so that the
/// watch guard `wait_for` returns is dropped here, not held across the accept loop's awaits.
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// One accepted connection and what serving it needs.
struct Connection {
    http: http1::Builder,
    app: Edge<Router>,
    watcher: Watcher,
    counters: Arc<Counters>,
    what: &'static str,
    addr: SocketAddr,
}

impl Connection {
    async fn serve<I>(self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let conn = self
            .http
            .serve_connection(TokioIo::new(io), TowerToHyperService::new(self.app));
        match self.watcher.watch(conn).await {
            Ok(()) => {}
            Err(e) if e.is_timeout() => {
                self.counters.timed_out.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    listener = self.what,
                    addr = %self.addr,
                    "closed a connection: no complete request head within header_read_timeout_ms"
                );
            }
            Err(e) => {
                tracing::debug!(listener = self.what, addr = %self.addr, error = %e, "connection ended with an error");
            }
        }
    }
}

/// The answer a plain-HTTP listener writes to a connection it refuses at its cap.
fn at_cap_response(what: &str, max: usize) -> String {
    let body = format!(
        "{{\"type\":\"https://verdict.dev/problems/too_many_connections\",\"title\":\"Too many \
         connections\",\"status\":503,\"code\":\"too_many_connections\",\"detail\":\"the {what} \
         listener has its maximum of {max} connections open; retry shortly, reuse connections, \
         or raise the limit\"}}"
    );
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Closes a connection the listener has no room for, answering `503` first on plain HTTP. The
/// write is a single non-blocking attempt into an empty socket buffer: it never waits.
fn refuse_at_cap(
    stream: TcpStream,
    addr: SocketAddr,
    what: &'static str,
    plain: bool,
    counters: &Counters,
    limits: ListenerLimits,
) {
    counters.refused_at_cap.fetch_add(1, Ordering::Relaxed);
    if plain {
        let _ = stream.try_write(at_cap_response(what, limits.max_connections).as_bytes());
    }
    drop(stream);
    let now = crate::state::now_ms() / 1000;
    let last = counters.last_warned_secs.load(Ordering::Relaxed);
    if now.saturating_sub(last) >= WARN_EVERY_SECS
        && counters
            .last_warned_secs
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(
            listener = what,
            %addr,
            max_connections = limits.max_connections,
            refused_total = counters.refused_at_cap.load(Ordering::Relaxed),
            "listener at its connection cap: refusing new connections (logged at most every \
             {WARN_EVERY_SECS} s; see verdict_connections_refused_total)"
        );
    }
}

/// As axum's own accept loop: a connection that failed before it was accepted is not an error of
/// the listener; anything else (out of file descriptors) is counted, logged and retried after a
/// pause.
async fn accept_error(e: std::io::Error, what: &'static str, counters: &Counters) {
    use std::io::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    counters.accept_errors.fetch_add(1, Ordering::Relaxed);
    tracing::error!(listener = what, error = %e, "accept failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_at_cap_answer_is_a_complete_http_response() {
        let text = at_cap_response("API", 7);
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["code"], "too_many_connections");
    }

    #[test]
    fn metrics_name_every_listener() {
        let m = ConnectionMetrics::default();
        m.api.refused_at_cap.fetch_add(3, Ordering::Relaxed);
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains("verdict_connections_refused_total{listener=\"api\"} 3"));
        assert!(out.contains("verdict_connections_open{listener=\"health\"} 0"));
    }
}
