//! `verdict serve`: config from file and flags, logging, signals, then `verdict_server::run`.

use std::process::ExitCode;

use tracing_subscriber::EnvFilter;
use verdict_server::Config;

use crate::cli::LogFormat;
use crate::cli::ServeArgs;

/// Runs a node until SIGINT or SIGTERM.
pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    init_logging(args.log_format)?;
    let config = config(&args)?;
    tracing::info!(
        node_id = config.node_id,
        listen = %config.listen,
        peer_listen = %config.peer_listen,
        data_dir = %config.data_dir.display(),
        "starting verdict"
    );
    let shutdown = shutdown_signal()?;
    verdict_server::run(config, shutdown).await?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// The file's values (or the defaults), then each flag given on top.
fn config(args: &ServeArgs) -> anyhow::Result<Config> {
    let mut c = match &args.config {
        Some(path) => Config::from_toml_file(path)?,
        None => Config::default(),
    };
    if let Some(v) = &args.data_dir {
        c.data_dir = v.clone();
    }
    if let Some(v) = args.listen {
        c.listen = v;
    }
    if let Some(v) = args.peer_listen {
        c.peer_listen = v;
    }
    if let Some(v) = args.health_listen {
        c.health_listen = Some(v);
    }
    if let Some(v) = args.node_id {
        c.node_id = v;
    }
    if let Some(v) = &args.advertise_api {
        c.advertise_api = Some(v.clone());
    }
    if let Some(v) = &args.advertise_peer {
        c.advertise_peer = Some(v.clone());
    }
    if let Some(v) = &args.initial_cluster {
        c.initial_cluster = Some(v.clone());
    }
    if let Some(v) = &args.cluster_secret {
        c.cluster_secret = Some(v.clone());
    }
    if args.join {
        c.join = true;
    }
    if let Some(v) = &args.admin_secret_file {
        c.admin_secret_file = Some(v.clone());
    }
    if args.require_credentials {
        c.require_credentials = true;
    }
    if let Some(v) = args.decisions_require_credential {
        c.decisions_require_credential = Some(v);
    }
    if let Some(v) = args.max_lag {
        c.max_lag = v;
    }
    if args.fail_closed {
        c.fail_closed = true;
    }
    if let Some(v) = args.auto_finalize {
        c.auto_finalize = v;
    }
    if let Some(v) = args.snapshot_every {
        c.snapshot_every = v;
    }
    if let Some(v) = args.keep_log_behind_snapshot {
        c.keep_log_behind_snapshot = v;
    }
    tls_flags(&args.tls, &mut c.tls);
    Ok(c)
}

/// The `--tls-*` flags on top of the `[tls]` table.
fn tls_flags(args: &crate::cli::TlsArgs, t: &mut verdict_server::tls::TlsConfig) {
    let files = [
        (&args.tls_cert_file, &mut t.cert_file),
        (&args.tls_key_file, &mut t.key_file),
        (&args.tls_peer_cert_file, &mut t.peer_cert_file),
        (&args.tls_peer_key_file, &mut t.peer_key_file),
        (&args.tls_peer_ca_file, &mut t.peer_ca_file),
    ];
    for (flag, field) in files {
        if let Some(v) = flag {
            *field = Some(v.clone());
        }
    }
    if args.tls_peer_client_auth {
        t.peer_client_auth = true;
    }
}

/// The log filter without `RUST_LOG`: Verdict's own events at `info` (a target prefix: every
/// `verdict_*` crate), everything else — openraft, sled, hyper, rustls — at `warn`. openraft logs
/// multi-kilobyte state dumps at `info` on every start and election; the node's events it
/// stands for are logged by Verdict (`verdict_cluster::events`) in one line each.
pub const DEFAULT_LOG_FILTER: &str = "warn,verdict=info";

fn init_logging(format: LogFormat) -> anyhow::Result<()> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}

/// Resolves on the first SIGINT or SIGTERM. The handlers are installed before this returns, so a
/// signal that arrives while the node is still starting is not lost.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| anyhow::anyhow!("cannot install the SIGTERM handler: {e}"))?;
    #[cfg(unix)]
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| anyhow::anyhow!("cannot install the SIGINT handler: {e}"))?;
    Ok(async move {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutting down"),
                _ = int.recv() => tracing::info!(signal = "SIGINT", "shutting down"),
            }
        }
        #[cfg(not(unix))]
        {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
            tracing::info!(signal = "ctrl-c", "shutting down");
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn serve_args(argv: &[&str]) -> ServeArgs {
        let cli = crate::cli::Cli::try_parse_from(argv).unwrap();
        match cli.command {
            crate::cli::Command::Serve(a) => *a,
            other => panic!("not serve: {other:?}"),
        }
    }

    #[test]
    fn flags_override_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("node.toml");
        std::fs::write(
            &file,
            "node_id = 3\nlisten = \"127.0.0.1:9000\"\nmax_batch = 7\n",
        )
        .unwrap();
        let file = file.to_str().unwrap();
        let args = serve_args(&["verdict", "serve", "--config", file, "--node-id", "5"]);
        let c = config(&args).unwrap();
        assert_eq!(c.node_id, 5);
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.max_batch, 7);
        assert_eq!(c.peer_listen.port(), 8081);
    }

    #[test]
    fn tls_flags_override_the_tls_table() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("node.toml");
        std::fs::write(
            &file,
            "[tls]\ncert_file = \"/a.pem\"\nkey_file = \"/a-key.pem\"\n",
        )
        .unwrap();
        let file = file.to_str().unwrap();
        let args = serve_args(&[
            "verdict",
            "serve",
            "--config",
            file,
            "--tls-cert-file",
            "/b.pem",
            "--tls-peer-cert-file",
            "/p.pem",
            "--tls-peer-key-file",
            "/p-key.pem",
            "--tls-peer-ca-file",
            "/ca.pem",
            "--tls-peer-client-auth",
        ]);
        let t = config(&args).unwrap().tls;
        assert_eq!(t.cert_file.as_deref(), Some(std::path::Path::new("/b.pem")));
        assert_eq!(
            t.key_file.as_deref(),
            Some(std::path::Path::new("/a-key.pem"))
        );
        assert!(t.api_enabled() && t.peer_enabled() && t.peer_client_auth);
    }

    #[test]
    fn no_flags_is_the_default_config() {
        let c = config(&serve_args(&["verdict", "serve"])).unwrap();
        assert_eq!(c.node_id, Config::default().node_id);
        assert_eq!(c.listen, Config::default().listen);
        assert_eq!(c.tls, Config::default().tls);
    }
}
