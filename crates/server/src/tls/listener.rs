//! A TLS listener for `axum::serve`: a background task accepts TCP connections and hands each to
//! its own handshake task, so a client that stalls or fails its handshake never holds up the
//! accept loop; finished handshakes queue (bounded) for axum.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::sync::Semaphore;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Most handshakes in progress at once per listener; beyond it new connections are closed at once
/// (bounded memory under a flood of clients that connect and never finish).
const MAX_HANDSHAKES: usize = 4096;
/// Finished handshakes waiting for axum to take them.
const READY_QUEUE: usize = 256;

type Accepted = (TlsStream<TcpStream>, SocketAddr);

/// Yields connections whose TLS handshake is complete. Dropping it (axum does at shutdown) stops
/// the background accept loop and closes the TCP listener.
pub struct TlsListener {
    ready: mpsc::Receiver<Accepted>,
    local: SocketAddr,
}

impl TlsListener {
    /// Starts accepting on `tcp`; each handshake uses the config `config` holds when it begins.
    pub fn new(
        tcp: TcpListener,
        config: Arc<ArcSwap<ServerConfig>>,
        handshake_timeout: Duration,
        what: &'static str,
    ) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        tokio::spawn(accept_loop(tcp, config, handshake_timeout, tx, what));
        Ok(Self { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // INVARIANT: the accept loop only ends once this receiver is dropped, so this is
            // never reached while the listener is alive; wait rather than invent a connection.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

async fn accept_loop(
    tcp: TcpListener,
    config: Arc<ArcSwap<ServerConfig>>,
    handshake_timeout: Duration,
    ready: mpsc::Sender<Accepted>,
    what: &'static str,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let (stream, addr) = tokio::select! {
            _ = ready.closed() => return,
            accepted = tcp.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    accept_error(e, what).await;
                    continue;
                }
            },
        };
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            tracing::warn!(
                listener = what,
                %addr,
                "{MAX_HANDSHAKES} TLS handshakes already in progress; closed a new connection"
            );
            continue;
        };
        let acceptor = TlsAcceptor::from(config.load_full());
        let ready = ready.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    // Fails only when the listener was dropped (shutdown): the connection closes.
                    let _ = ready.send((tls, addr)).await;
                }
                Ok(Err(e)) => handshake_failed(what, addr, &e.to_string()),
                Err(_) => handshake_failed(what, addr, "timed out"),
            }
        });
    }
}

/// On the peer listener, which only members should reach, a failed handshake (no or an unknown
/// client certificate, plain HTTP) is worth a warning; on the public API it is everyday noise.
fn handshake_failed(what: &'static str, addr: SocketAddr, error: &str) {
    if what == "peer" {
        tracing::warn!(listener = what, %addr, error, "TLS handshake failed");
    } else {
        tracing::debug!(listener = what, %addr, error, "TLS handshake failed");
    }
}

/// As axum's own accept loop: a connection that failed before it was accepted is not an error of
/// the listener; anything else (out of file descriptors) is logged and retried after a pause.
async fn accept_error(e: std::io::Error, what: &'static str) {
    use std::io::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(listener = what, error = %e, "accept failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
