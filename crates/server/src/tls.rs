//! TLS for the API and peer listeners, and for the connections this node opens to its peers.
//!
//! Everything is off until the `[tls]` table names files; a listener whose files are named speaks
//! only TLS (rustls with the ring provider, TLS 1.2 and 1.3). Layout: [`TlsConfig`] (the table),
//! [`Tls`] (the loaded material, swapped in place on [`Tls::reload`]), [`reload_on_sighup`], and
//! [`handshake`] (the server side of a handshake, which `crate::connections` runs in each
//! connection's own task, off the accept path).
//!
//! Reload swaps what new handshakes use; connections already open keep the certificate they were
//! set up with, so nothing is dropped. A file that does not load leaves everything as it was.

mod listener;

pub use listener::handshake;

use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use arc_swap::ArcSwap;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::client::danger::ServerCertVerified;
use rustls::client::danger::ServerCertVerifier;
use rustls::client::ResolvesClientCert;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::ServerName;
use rustls::pki_types::UnixTime;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::ClientConfig;
use rustls::DigitallySignedStruct;
use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::SignatureScheme;
use serde::Deserialize;
use serde::Serialize;

/// The `[tls]` table. Unset (the default): both listeners and all peer traffic are plain HTTP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain the API listener presents (leaf first, then intermediates). With
    /// `key_file`, the API listener speaks HTTPS only. Re-read on SIGHUP.
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1, unencrypted) of `cert_file`'s first certificate.
    pub key_file: Option<PathBuf>,
    /// PEM certificate chain the peer listener presents, and that this node shows as its client
    /// certificate when it connects to other members. With `peer_key_file` and `peer_ca_file`,
    /// all traffic between members is HTTPS; every member of a cluster must agree. Re-read on
    /// SIGHUP.
    pub peer_cert_file: Option<PathBuf>,
    /// PEM private key of `peer_cert_file`'s first certificate.
    pub peer_key_file: Option<PathBuf>,
    /// PEM certificate(s) of the CA that signs the members' peer certificates: the only roots
    /// trusted for the peers this node connects to, and (with `peer_client_auth`) for the client
    /// certificates of the peers that connect to it. Re-read on SIGHUP.
    pub peer_ca_file: Option<PathBuf>,
    /// Require and verify a client certificate signed by `peer_ca_file` from every connection to
    /// the peer listener (mutual TLS). The cluster secret is still required on top of it.
    pub peer_client_auth: bool,
    /// How long a connecting client has to finish its TLS handshake, in milliseconds; slower ones
    /// are closed. Handshakes never hold up the accept loop.
    pub handshake_timeout_ms: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert_file: None,
            key_file: None,
            peer_cert_file: None,
            peer_key_file: None,
            peer_ca_file: None,
            peer_client_auth: false,
            handshake_timeout_ms: 10_000,
        }
    }
}

impl TlsConfig {
    /// Whether the API listener speaks HTTPS.
    pub fn api_enabled(&self) -> bool {
        self.cert_file.is_some() && self.key_file.is_some()
    }

    /// Whether traffic between members is HTTPS.
    pub fn peer_enabled(&self) -> bool {
        self.peer_cert_file.is_some() && self.peer_key_file.is_some() && self.peer_ca_file.is_some()
    }

    /// Refuses half-given settings, which would otherwise silently mean plain HTTP.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.cert_file.is_some() != self.key_file.is_some() {
            anyhow::bail!(
                "tls.cert_file (--tls-cert-file) and tls.key_file (--tls-key-file) go together: \
                 give both for HTTPS on the API listener, or neither for plain HTTP"
            );
        }
        let peer = [
            (
                "tls.peer_cert_file (--tls-peer-cert-file)",
                &self.peer_cert_file,
            ),
            (
                "tls.peer_key_file (--tls-peer-key-file)",
                &self.peer_key_file,
            ),
            ("tls.peer_ca_file (--tls-peer-ca-file)", &self.peer_ca_file),
        ];
        let missing: Vec<&str> = peer
            .iter()
            .filter(|(_, v)| v.is_none())
            .map(|(name, _)| *name)
            .collect();
        if !missing.is_empty() && missing.len() < peer.len() {
            anyhow::bail!(
                "peer TLS needs a certificate, its key and the peer CA together; missing: {}",
                missing.join(", ")
            );
        }
        if self.peer_client_auth && !self.peer_enabled() {
            anyhow::bail!(
                "tls.peer_client_auth (--tls-peer-client-auth) needs peer TLS: give \
                 tls.peer_cert_file, tls.peer_key_file and tls.peer_ca_file"
            );
        }
        if self.handshake_timeout_ms == 0 {
            anyhow::bail!("tls.handshake_timeout_ms must be at least 1 (default 10000)");
        }
        Ok(())
    }
}

/// The loaded TLS material of a node; what a listener or peer client uses is swapped on reload.
pub struct Tls {
    config: TlsConfig,
    provider: Arc<CryptoProvider>,
    api: Option<Arc<ArcSwap<ServerConfig>>>,
    peer: Option<Peer>,
}

/// Peer TLS: the peer listener's config, and the parts of the peer client config that reload.
struct Peer {
    server: Arc<ArcSwap<ServerConfig>>,
    identity: Arc<PeerIdentity>,
    verifier: Arc<PeerVerifier>,
    client: Arc<ClientConfig>,
}

impl Tls {
    /// Loads every file the table names; `None` when it names none. Errors say which setting and
    /// file is wrong and what it should hold.
    pub fn load(config: &TlsConfig) -> anyhow::Result<Option<Tls>> {
        config.validate()?;
        if !config.api_enabled() && !config.peer_enabled() {
            return Ok(None);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let api = api_server_config(config, &provider)?.map(|c| Arc::new(ArcSwap::from_pointee(c)));
        let peer = match PeerFiles::load(config, &provider)? {
            Some(files) => {
                let server = Arc::new(ArcSwap::from_pointee(files.server));
                let identity = Arc::new(PeerIdentity(ArcSwap::from_pointee(files.identity)));
                let verifier = Arc::new(PeerVerifier(ArcSwap::new(files.verifier)));
                let mut client = ClientConfig::builder_with_provider(provider.clone())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| anyhow!("cannot set up TLS for peer connections: {e}"))?
                    .dangerous()
                    .with_custom_certificate_verifier(verifier.clone())
                    .with_client_cert_resolver(identity.clone());
                client.alpn_protocols = vec![b"http/1.1".to_vec()];
                Some(Peer {
                    server,
                    identity,
                    verifier,
                    client: Arc::new(client),
                })
            }
            None => None,
        };
        Ok(Some(Tls {
            config: config.clone(),
            provider,
            api,
            peer,
        }))
    }

    /// The API listener's config, when it speaks HTTPS.
    pub fn api(&self) -> Option<Arc<ArcSwap<ServerConfig>>> {
        self.api.clone()
    }

    /// The peer listener's config, when peer TLS is on.
    pub fn peer_server(&self) -> Option<Arc<ArcSwap<ServerConfig>>> {
        self.peer.as_ref().map(|p| p.server.clone())
    }

    /// The config of the connections to other members, when peer TLS is on.
    pub fn peer_client(&self) -> Option<Arc<ClientConfig>> {
        self.peer.as_ref().map(|p| p.client.clone())
    }

    /// How long a handshake may take.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.config.handshake_timeout_ms)
    }

    /// Re-reads the certificate, key and CA files. The API and the peer material are reloaded
    /// independently; whatever fails to load is logged and keeps what it had.
    pub fn reload(&self) {
        if let Some(slot) = &self.api {
            match api_server_config(&self.config, &self.provider) {
                Ok(Some(c)) => {
                    slot.store(Arc::new(c));
                    tracing::info!(
                        cert_file = %path_text(&self.config.cert_file),
                        "reloaded the API certificate; new connections use it"
                    );
                }
                Ok(None) => {}
                Err(e) => tracing::error!(
                    error = %format!("{e:#}"),
                    "cannot reload the API certificate; keeping the one in use"
                ),
            }
        }
        if let Some(peer) = &self.peer {
            match PeerFiles::load(&self.config, &self.provider) {
                Ok(Some(files)) => {
                    peer.server.store(Arc::new(files.server));
                    peer.identity.0.store(Arc::new(files.identity));
                    peer.verifier.0.store(files.verifier);
                    tracing::info!(
                        peer_cert_file = %path_text(&self.config.peer_cert_file),
                        peer_ca_file = %path_text(&self.config.peer_ca_file),
                        "reloaded the peer certificate and CA; new connections use them"
                    );
                }
                Ok(None) => {}
                Err(e) => tracing::error!(
                    error = %format!("{e:#}"),
                    "cannot reload the peer certificate; keeping the one in use"
                ),
            }
        }
    }
}

fn path_text(path: &Option<PathBuf>) -> String {
    path.as_deref()
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// The API listener's config from `cert_file` and `key_file`, if both are given.
fn api_server_config(
    config: &TlsConfig,
    provider: &Arc<CryptoProvider>,
) -> anyhow::Result<Option<ServerConfig>> {
    let (Some(cert), Some(key)) = (&config.cert_file, &config.key_file) else {
        return Ok(None);
    };
    let chain = read_chain("cert_file", cert)?;
    let key_der = read_key("key_file", key)?;
    let server = server_config(provider, chain, key_der, None)
        .map_err(|e| key_mismatch("key_file", key, "cert_file", cert, e))?;
    Ok(Some(server))
}

/// Everything peer TLS loads from its three files.
struct PeerFiles {
    server: ServerConfig,
    identity: CertifiedKey,
    verifier: Arc<WebPkiServerVerifier>,
}

impl PeerFiles {
    fn load(config: &TlsConfig, provider: &Arc<CryptoProvider>) -> anyhow::Result<Option<Self>> {
        let (Some(cert), Some(key), Some(ca)) = (
            &config.peer_cert_file,
            &config.peer_key_file,
            &config.peer_ca_file,
        ) else {
            return Ok(None);
        };
        let chain = read_chain("peer_cert_file", cert)?;
        let key_der = read_key("peer_key_file", key)?;
        let roots = Arc::new(read_roots("peer_ca_file", ca)?);
        let identity = CertifiedKey::from_der(chain.clone(), key_der.clone_key(), provider)
            .map_err(|e| key_mismatch("peer_key_file", key, "peer_cert_file", cert, e))?;
        let clients = if config.peer_client_auth {
            Some(roots.clone())
        } else {
            None
        };
        let server = server_config(provider, chain, key_der, clients)
            .map_err(|e| key_mismatch("peer_key_file", key, "peer_cert_file", cert, e))?;
        let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| {
                anyhow!(
                    "tls.peer_ca_file `{}` cannot verify peers: {e}; give the PEM certificate of \
                     the CA that signs the peer certificates",
                    ca.display()
                )
            })?;
        Ok(Some(Self {
            server,
            identity,
            verifier,
        }))
    }
}

/// A server config presenting `chain`; with `client_roots`, clients must show a certificate that
/// chains to them.
fn server_config(
    provider: &Arc<CryptoProvider>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_roots: Option<Arc<RootCertStore>>,
) -> Result<ServerConfig, rustls::Error> {
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match client_roots {
        None => builder.with_no_client_auth(),
        Some(roots) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(format!("client verifier: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key)?;
    // axum is built with HTTP/1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn key_mismatch(
    key_field: &str,
    key: &Path,
    cert_field: &str,
    cert: &Path,
    e: rustls::Error,
) -> anyhow::Error {
    anyhow!(
        "tls.{key_field} `{}` is not a usable key for the certificate in tls.{cert_field} `{}`: \
         {e}; give the unencrypted private key of the chain's first certificate",
        key.display(),
        cert.display()
    )
}

fn pem_error(
    field: &str,
    path: &Path,
    e: rustls::pki_types::pem::Error,
    what: &str,
) -> anyhow::Error {
    match e {
        rustls::pki_types::pem::Error::Io(io) => {
            anyhow!(
                "cannot read tls.{field} `{}`: {io}; give {what}",
                path.display()
            )
        }
        other => anyhow!(
            "tls.{field} `{}` is not valid PEM: {other}; give {what}",
            path.display()
        ),
    }
}

/// Every `CERTIFICATE` block of a PEM file, in order; at least one.
fn read_chain(field: &str, path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    const WHAT: &str = "a PEM certificate chain (leaf first)";
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(field, path, e, WHAT))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(field, path, e, WHAT))?;
    if certs.is_empty() {
        anyhow::bail!(
            "tls.{field} `{}` holds no `-----BEGIN CERTIFICATE-----` block; give {WHAT}",
            path.display()
        );
    }
    Ok(certs)
}

/// The first private key block of a PEM file.
fn read_key(field: &str, path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    const WHAT: &str = "an unencrypted PEM private key (`PRIVATE KEY`, `RSA PRIVATE KEY` or \
                        `EC PRIVATE KEY`)";
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => anyhow!(
            "tls.{field} `{}` holds no private key; give {WHAT}",
            path.display()
        ),
        other => pem_error(field, path, other, WHAT),
    })
}

/// The CA certificates of a PEM file as trust roots.
fn read_roots(field: &str, path: &Path) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for (i, cert) in read_chain(field, path)?.into_iter().enumerate() {
        roots.add(cert).map_err(|e| {
            anyhow!(
                "tls.{field} `{}`: certificate {} is not a usable CA certificate: {e}",
                path.display(),
                i + 1
            )
        })?;
    }
    Ok(roots)
}

/// This node's client certificate for peer connections, swapped on reload.
#[derive(Debug)]
struct PeerIdentity(ArcSwap<CertifiedKey>);

impl ResolvesClientCert for PeerIdentity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Verifies peers against the peer CA of the last (re)load.
#[derive(Debug)]
struct PeerVerifier(ArcSwap<WebPkiServerVerifier>);

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.0
            .load()
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.load().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.load().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.load().supported_verify_schemes()
    }
}

/// Reloads `tls` on every SIGHUP until the task is aborted. The handler is installed before this
/// returns, so a SIGHUP after start-up never falls back to the default action (terminate).
pub fn reload_on_sighup(tls: Arc<Tls>) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::signal;
        use tokio::signal::unix::SignalKind;
        let mut hup = signal(SignalKind::hangup())
            .map_err(|e| anyhow!("cannot install the SIGHUP handler (certificate reload): {e}"))?;
        Ok(tokio::spawn(async move {
            while hup.recv().await.is_some() {
                tracing::info!(signal = "SIGHUP", "reloading TLS certificates");
                tls.reload();
            }
        }))
    }
    #[cfg(not(unix))]
    {
        drop(tls);
        Ok(tokio::spawn(async {}))
    }
}
