//! `verdict check`: one AuthZEN evaluation, printed for a person or as the server's JSON.

use std::path::Path;
use std::process::ExitCode;

use anyhow::anyhow;
use anyhow::bail;
use anyhow::Context;
use serde_json::Value;
use verdict_client::Action;
use verdict_client::Client;
use verdict_client::EvaluationRequest;
use verdict_client::Resource;
use verdict_client::Subject;

use crate::cli::CheckArgs;
use crate::cli::Output;
use crate::exit;
use crate::output::print_json;
use crate::output::read_input;

/// Runs the evaluation. Table output exits [`exit::DENY`] on deny; JSON output exits 0 either way.
pub async fn run(client: &Client, args: &CheckArgs, out: Output) -> anyhow::Result<ExitCode> {
    let (st, si) = parse_uid(&args.subject).context("--subject")?;
    let (rt, ri) = parse_uid(&args.resource).context("--resource")?;
    let mut req = EvaluationRequest::new(
        Subject::new(st, si),
        Action::new(args.action.clone()),
        Resource::new(rt, ri),
    );
    if let Some(text) = &args.context {
        req = req.with_context(parse_context(text)?);
    }
    let answer = client.evaluation(&req, args.min_version).await?;
    let body = answer.body;
    match out {
        Output::Json => {
            print_json(&body)?;
            Ok(ExitCode::SUCCESS)
        }
        Output::Table => {
            let ctx = body.context.clone().unwrap_or(Value::Null);
            let version = answer.version.or_else(|| ctx["version"].as_u64());
            let verdict = if body.decision { "ALLOW" } else { "DENY" };
            match version {
                Some(v) => println!("{verdict} (version {v})"),
                None => println!("{verdict}"),
            }
            print_explanation(&ctx);
            Ok(if body.decision {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(exit::DENY)
            })
        }
    }
}

fn print_explanation(ctx: &Value) {
    if let Some(reasons) = ctx["reason_user"].as_object() {
        for (lang, text) in reasons {
            line(
                &format!("reason ({lang})"),
                text.as_str().unwrap_or_default(),
            );
        }
    }
    let admin = &ctx["reason_admin"];
    let policies = strings(&admin["policies"]);
    if !policies.is_empty() {
        line("policies", &policies.join(", "));
    } else if ctx.get("reason_admin").is_some() && ctx.get("obligations").is_none() {
        line("policies", "(none matched: default deny)");
    }
    let obligations = strings(&ctx["obligations"]);
    if !obligations.is_empty() {
        line("obligations", &obligations.join(", "));
    }
    for e in admin["errors"].as_array().into_iter().flatten() {
        let policy = e["policy"].as_str().unwrap_or("?");
        let message = e["message"].as_str().unwrap_or_default();
        line("error", &format!("in `{policy}`: {message}"));
    }
    if let Some(e) = ctx.get("error") {
        line("error", &e.to_string());
    }
}

/// One indented `label: value` line, values aligned.
fn line(label: &str, value: &str) {
    println!("  {:<14} {value}", format!("{label}:"));
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|s| s.as_str().map_or_else(|| s.to_string(), str::to_owned))
        .collect()
}

/// Parses `TYPE:ID` (the first single `:` splits, so `Ns::User:alice` works and the id may hold
/// colons) or Cedar's `TYPE::"ID"`.
fn parse_uid(text: &str) -> anyhow::Result<(String, String)> {
    let hint = || {
        anyhow!("`{text}` is not an entity; write TYPE:ID (e.g. `User:alice`) or Cedar `User::\"alice\"`")
    };
    if let Some(at) = text.find("::\"") {
        if text.ends_with('"') {
            let id: String = serde_json::from_str(&text[at + 2..]).map_err(|_| hint())?;
            let ty = &text[..at];
            if ty.is_empty() {
                return Err(hint());
            }
            return Ok((ty.to_owned(), id));
        }
    }
    let bytes = text.as_bytes();
    let split = (0..bytes.len()).find(|&i| {
        bytes[i] == b':' && bytes.get(i + 1) != Some(&b':') && (i == 0 || bytes[i - 1] != b':')
    });
    match split {
        Some(i) if i > 0 && i + 1 < text.len() => {
            Ok((text[..i].to_owned(), text[i + 1..].to_owned()))
        }
        _ => Err(hint()),
    }
}

/// `--context`: a JSON object, or `@FILE` holding one.
fn parse_context(text: &str) -> anyhow::Result<Value> {
    let (json, from) = match text.strip_prefix('@') {
        Some(path) => (read_input(Path::new(path))?, format!("`{path}`")),
        None => (text.to_owned(), "--context".to_owned()),
    };
    let value: Value =
        serde_json::from_str(&json).with_context(|| format!("{from} is not valid JSON"))?;
    if !value.is_object() {
        bail!("{from} must be a JSON object (the Cedar context record)");
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uid(text: &str) -> Option<(String, String)> {
        parse_uid(text).ok()
    }

    fn pair(t: &str, i: &str) -> Option<(String, String)> {
        Some((t.to_owned(), i.to_owned()))
    }

    #[test]
    fn uids_parse_in_both_notations() {
        assert_eq!(uid("User:alice"), pair("User", "alice"));
        assert_eq!(uid("Ns::User:alice"), pair("Ns::User", "alice"));
        assert_eq!(uid("User:urn:x:1"), pair("User", "urn:x:1"));
        assert_eq!(uid(r#"Ns::User::"al\"ice""#), pair("Ns::User", "al\"ice"));
        assert_eq!(uid(r#"User::"a:b""#), pair("User", "a:b"));
        for bad in ["alice", "User:", ":alice", "Ns::User", "", r#"::"x""#] {
            assert_eq!(uid(bad), None, "{bad}");
        }
    }

    #[test]
    fn context_must_be_an_object() {
        assert!(parse_context(r#"{"ip": "10.0.0.1"}"#).is_ok());
        assert!(parse_context("[1]").is_err());
        assert!(parse_context("{oops").is_err());
        assert!(parse_context("@/no/such/file").is_err());
    }
}
