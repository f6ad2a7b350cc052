//! `verdict`: the node (`serve`), the admin and decision CLI, and the load generator (`bench`).
//!
//! This binary is argument parsing and glue; the node is `verdict-server`, the HTTP calls are
//! `verdict-client`. Layout: `cli.rs` (clap structs), `serve.rs`, `admin.rs` (policy, schema,
//! entity), `check.rs`, `bench/` and `output.rs` (printing helpers shared by the client commands).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod admin;
mod bench;
mod check;
mod cli;
mod cluster;
mod output;
mod serve;
mod tokens;

use std::process::ExitCode;

/// mimalloc: per-thread heaps, so concurrent decisions (and the writer building the next snapshot)
/// do not contend on allocator locks.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;

use cli::Cli;
use cli::Command;

/// Exit codes; `cli::AFTER_HELP` documents them for users.
pub mod exit {
    /// The server rejected the request, or local input is invalid.
    pub const FAILURE: u8 = 1;
    /// `check` answered deny (table output).
    pub const DENY: u8 = 2;
    /// The server could not be reached.
    pub const UNREACHABLE: u8 = 3;
    /// The command line does not parse (sysexits' EX_USAGE, so it never looks like a deny).
    pub const USAGE: u8 = 64;
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(exit::USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    let url = cli.url.clone();
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => report(&e, &url),
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let out = cli.output;
    let (url, ca_file) = (cli.url.clone(), cli.ca_file.clone());
    let (token, token_file) = (cli.token.clone(), cli.token_file.clone());
    let connect = || {
        client(
            &url,
            ca_file.as_deref(),
            token.as_deref(),
            token_file.as_deref(),
        )
    };
    match cli.command {
        Command::Serve(args) => serve::run(*args).await,
        Command::Bench(args) => {
            let credential = credential(token.as_deref(), token_file.as_deref())?;
            bench::run(&cli.url, credential.as_deref(), &args, out).await
        }
        Command::Policy(cmd) => admin::policy(&connect()?, cmd, out).await,
        Command::Schema(cmd) => admin::schema(&connect()?, cmd, out).await,
        Command::Entity(cmd) => admin::entity(&connect()?, cmd, out).await,
        Command::Check(args) => check::run(&connect()?, &args, out).await,
        Command::Cluster(cmd) => cluster::run(&connect()?, cmd, out).await,
        Command::Watch(args) => cluster::watch(&connect()?, &args).await,
        Command::Keys(cmd) => tokens::keys(&connect()?, cmd, out).await,
        Command::Token(cmd) => tokens::token(&connect()?, cmd, out).await,
        Command::Revoke(args) => tokens::revoke(&connect()?, args, out).await,
        Command::Credential(cmd) => tokens::credential(&connect()?, cmd, out).await,
    }
}

/// The credential of `--token` (`VERDICT_TOKEN`), else the content of `--token-file`
/// (`VERDICT_TOKEN_FILE`), if either is given.
fn credential(
    token: Option<&str>,
    token_file: Option<&std::path::Path>,
) -> anyhow::Result<Option<String>> {
    Ok(match (token, token_file) {
        (Some(t), _) => Some(t.to_string()),
        (None, Some(path)) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| {
                    anyhow::anyhow!(
                        "cannot read the credential file {}: {e}; set VERDICT_TOKEN_FILE or \
                         --token-file to a file holding `<id>.<secret>`",
                        path.display()
                    )
                })?
                .trim()
                .to_string(),
        ),
        (None, None) => None,
    })
}

/// The typed client for `--url`, trusting `--ca-file` (`VERDICT_CA_FILE`) as well when given, and
/// sending the credential of `--token` / `--token-file` when given.
fn client(
    url: &str,
    ca_file: Option<&std::path::Path>,
    token: Option<&str>,
    token_file: Option<&std::path::Path>,
) -> anyhow::Result<verdict_client::Client> {
    let client = match ca_file {
        None => verdict_client::Client::new(url)?,
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                anyhow::anyhow!(
                    "cannot read --ca-file (VERDICT_CA_FILE) `{}`: {e}; give the PEM certificate of the CA that signed the node's certificate",
                    path.display()
                )
            })?;
            verdict_client::Client::with_ca_pem(url, &pem).map_err(|e| {
                anyhow::anyhow!(
                    "--ca-file (VERDICT_CA_FILE) `{}`: {e}; give the PEM certificate of the CA that signed the node's certificate",
                    path.display()
                )
            })?
        }
    };
    Ok(match credential(token, token_file)? {
        Some(t) => client.with_token(&t),
        None => client,
    })
}

/// Prints `err` for a person and picks the exit code.
fn report(err: &anyhow::Error, url: &str) -> ExitCode {
    use verdict_client::Error;
    let Some(e) = err.downcast_ref::<Error>() else {
        eprintln!("error: {err:#}");
        return ExitCode::from(exit::FAILURE);
    };
    match e {
        Error::Problem {
            code,
            detail,
            location,
            ..
        } => {
            eprintln!("error: {code}: {detail}");
            // The server's detail usually names the position already; say it only once.
            if let Some(l) = location {
                let at = format!("line {}, column {}", l.line, l.column);
                if !detail.contains(&at) {
                    eprintln!("  at {at}");
                }
            }
            ExitCode::from(exit::FAILURE)
        }
        Error::Transport(source) => {
            let what = if source.is_timeout() {
                "no answer in time from"
            } else {
                "cannot reach"
            };
            let cause = root_cause(source);
            eprintln!("error: {what} Verdict at {url}: {cause}");
            if cause.contains("certificate") {
                eprintln!(
                    "hint: to trust the CA that signed the node's certificate, set VERDICT_CA_FILE or --ca-file to its PEM file"
                );
            } else {
                eprintln!(
                    "hint: is `verdict serve` running at {url}? set VERDICT_URL or --url to point elsewhere"
                );
            }
            ExitCode::from(exit::UNREACHABLE)
        }
        Error::InvalidUrl { .. } => {
            eprintln!("error: {e}; set VERDICT_URL or --url to e.g. http://127.0.0.1:8080");
            ExitCode::from(exit::FAILURE)
        }
        Error::Status { .. } | Error::Decode { .. } | Error::InvalidCa { .. } => {
            eprintln!("error: {e}");
            ExitCode::from(exit::FAILURE)
        }
    }
}

/// The innermost error: for a refused connection that is "Connection refused (os error 111)"
/// rather than reqwest's "error sending request for url …".
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
