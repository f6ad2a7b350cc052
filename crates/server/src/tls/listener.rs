//! The server side of a TLS handshake, run in each connection's own task (see
//! `crate::connections`), so a client that stalls or fails its handshake never holds up the
//! accept loop; it holds one of its listener's connection slots until the handshake timeout.

use std::net::SocketAddr;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Completes the handshake of `stream` with the config `config` holds now, within `timeout`;
/// `None` (logged) when it fails or times out. With `peer_client_auth`, the client certificate is
/// verified here, before any HTTP byte is read.
pub async fn handshake(
    stream: TcpStream,
    config: &ArcSwap<ServerConfig>,
    timeout: Duration,
    what: &'static str,
    addr: SocketAddr,
) -> Option<TlsStream<TcpStream>> {
    let acceptor = TlsAcceptor::from(config.load_full());
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            handshake_failed(what, addr, &e.to_string());
            None
        }
        Err(_) => {
            handshake_failed(what, addr, "timed out");
            None
        }
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
