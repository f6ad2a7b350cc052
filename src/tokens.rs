//! `verdict keys|token|revoke`: the token key ring, tokens and revocations.

use std::process::ExitCode;

use anyhow::bail;
use anyhow::Context;
use serde_json::json;
use serde_json::Value;
use verdict_client::Client;

use crate::cli::CredentialCommand;
use crate::cli::KeysCommand;
use crate::cli::Output;
use crate::cli::RevokeArgs;
use crate::cli::TokenCommand;
use crate::exit;
use crate::output::print_json;
use crate::output::print_table;
use crate::output::written;

/// `verdict keys …`.
pub async fn keys(client: &Client, cmd: KeysCommand, out: Output) -> anyhow::Result<ExitCode> {
    match cmd {
        KeysCommand::Rotate => {
            let v = client.rotate_keys().await?;
            written(out, "rotated the key ring", v)?;
        }
        KeysCommand::List => {
            let list = client.list_keys().await?;
            match out {
                Output::Json => print_json(&list)?,
                Output::Table => {
                    let empty = Vec::new();
                    let rows: Vec<Vec<String>> = list["keys"]
                        .as_array()
                        .unwrap_or(&empty)
                        .iter()
                        .map(|k| {
                            vec![
                                k["id"].to_string(),
                                k["state"].as_str().unwrap_or("?").to_string(),
                                format!("{} s", k["age_ms"].as_u64().unwrap_or(0) / 1000),
                            ]
                        })
                        .collect();
                    print_table(&["ID", "STATE", "AGE"], &rows);
                    if rows.is_empty() {
                        println!("no keys yet: `verdict keys rotate` creates the first ones");
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `verdict token …`. Introspection in table output exits [`exit::DENY`] for an inactive token.
pub async fn token(client: &Client, cmd: TokenCommand, out: Output) -> anyhow::Result<ExitCode> {
    match cmd {
        TokenCommand::Issue {
            sub,
            scope,
            lifetime_ms,
            aud_chain,
            claims,
        } => {
            let claims: Value = match claims {
                Some(text) => serde_json::from_str(&text)
                    .context("--claims must be a JSON object, e.g. '{\"tenant\": \"acme\"}'")?,
                None => json!({}),
            };
            if !claims.is_object() {
                bail!("--claims must be a JSON object, e.g. '{{\"tenant\": \"acme\"}}'");
            }
            let request = json!({"sub": sub, "scope": scope, "lifetime_ms": lifetime_ms,
                                 "aud_chain": aud_chain, "claims": claims});
            let issued = client.issue_token(&request).await?;
            match out {
                Output::Json => print_json(&issued)?,
                Output::Table => println!("{}", issued["token"].as_str().unwrap_or_default()),
            }
            Ok(ExitCode::SUCCESS)
        }
        TokenCommand::Introspect { token, min_version } => {
            let answer = client.introspect(&token, min_version).await?;
            let active = answer["active"] == json!(true);
            match out {
                Output::Json => print_json(&answer)?,
                Output::Table if active => println!(
                    "ACTIVE  sub {}  scope {}  expires {} ms",
                    answer["sub"].as_str().unwrap_or("?"),
                    answer["scope"].as_str().unwrap_or("-"),
                    answer["exp"]
                ),
                Output::Table => println!(
                    "INACTIVE  {}",
                    answer["reason"].as_str().unwrap_or("unknown")
                ),
            }
            Ok(if active || out == Output::Json {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(exit::DENY)
            })
        }
    }
}

/// `verdict revoke --jti|--chain|--sub [--scope] [--issued-before MS]`.
pub async fn revoke(client: &Client, args: RevokeArgs, out: Output) -> anyhow::Result<ExitCode> {
    let mut event = match (&args.jti, &args.chain, &args.sub, &args.scope) {
        (Some(jti), None, None, None) => json!({"by": "token", "jti": jti}),
        (None, Some(chain), None, None) => json!({"by": "audit_chain", "chain": chain}),
        (None, None, Some(sub), None) => json!({"by": "subject", "sub": sub}),
        (None, None, Some(sub), Some(scope)) => {
            json!({"by": "subject_scope", "sub": sub, "scope": scope})
        }
        _ => bail!("name what to revoke: exactly one of --jti, --chain or --sub (with --scope)"),
    };
    if let Some(before) = args.issued_before {
        event["issued_before"] = json!(before);
    }
    let v = client
        .revoke(&event, args.idempotency_key.as_deref())
        .await?;
    written(out, "revoked", v)?;
    Ok(ExitCode::SUCCESS)
}

/// `verdict credential …`.
pub async fn credential(
    client: &Client,
    cmd: CredentialCommand,
    out: Output,
) -> anyhow::Result<ExitCode> {
    match cmd {
        CredentialCommand::Create { name, scopes } => {
            let created = client.create_credential(&name, &scopes).await?;
            match out {
                Output::Json => print_json(&created)?,
                Output::Table => {
                    let secret = created["secret"].as_str().unwrap_or("?");
                    println!("{secret}");
                    eprintln!(
                        "created credential {} ({}) at version {}; the secret above is shown \
                         only now: store it (e.g. in a file for VERDICT_TOKEN_FILE)",
                        created["id"].as_str().unwrap_or("?"),
                        scopes.join(", "),
                        created["version"]
                    );
                }
            }
        }
        CredentialCommand::List => {
            let list = client.list_credentials().await?;
            match out {
                Output::Json => print_json(&list)?,
                Output::Table => {
                    let empty = Vec::new();
                    let rows: Vec<Vec<String>> = list["credentials"]
                        .as_array()
                        .unwrap_or(&empty)
                        .iter()
                        .map(|c| {
                            let scopes: Vec<&str> = c["scopes"]
                                .as_array()
                                .map(|s| s.iter().filter_map(Value::as_str).collect())
                                .unwrap_or_default();
                            vec![
                                c["id"].as_str().unwrap_or("?").to_string(),
                                c["name"].as_str().unwrap_or("?").to_string(),
                                scopes.join(" "),
                                c["version"].to_string(),
                            ]
                        })
                        .collect();
                    print_table(&["ID", "NAME", "SCOPES", "VERSION"], &rows);
                }
            }
        }
        CredentialCommand::Revoke { id } => {
            let v = client.revoke_credential(&id).await?;
            written(out, &format!("revoked credential {id}"), v)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
