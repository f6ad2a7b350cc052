//! Writes the SURFconext example: `schema.cedarschema`, `policies.cedar`, `entities.json` and
//! `requests.json`.
//!
//! ```text
//! cargo run --example surfconext -- [--policies 400] [--users 200] [--groups 40] [--out DIR]
//! ```
//!
//! `--out` defaults to this example's directory, so the committed files are regenerated in place.

use std::path::PathBuf;
use std::process::ExitCode;

use verdict_fixtures::{surfconext, ExampleFiles};

fn main() -> ExitCode {
    let mut policies = surfconext::DEFAULT_POLICIES;
    let mut users = surfconext::DEFAULT_USERS;
    let mut groups = surfconext::DEFAULT_GROUPS;
    let mut out = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/surfconext"));
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next();
        let number = value.as_deref().and_then(|v| v.parse::<usize>().ok());
        match (flag.as_str(), number) {
            ("--policies", Some(n)) => policies = n,
            ("--users", Some(n)) => users = n,
            ("--groups", Some(n)) => groups = n,
            ("--out", _) if value.is_some() => out = PathBuf::from(value.unwrap_or_default()),
            _ => {
                eprintln!(
                    "error: unexpected argument `{flag}`\n\
                     usage: surfconext [--policies N] [--users N] [--groups N] [--out DIR]"
                );
                return ExitCode::from(2);
            }
        }
    }
    let data = surfconext::Dataset::new(policies, users, groups);
    let mut generated_by = "cargo run --example surfconext".to_owned();
    if (policies, users, groups)
        != (
            surfconext::DEFAULT_POLICIES,
            surfconext::DEFAULT_USERS,
            surfconext::DEFAULT_GROUPS,
        )
    {
        generated_by.push_str(&format!(
            " -- --policies {policies} --users {users} --groups {groups}"
        ));
    }
    let files = ExampleFiles {
        generated_by,
        schema: surfconext::SCHEMA.to_owned(),
        policies: data.policies_text(),
        entities: data.entities(),
        samples: data.samples(),
    };
    if let Err(e) = files.write(&out) {
        eprintln!("error: cannot write `{}`: {e}", out.display());
        return ExitCode::FAILURE;
    }
    println!(
        "wrote {} policies over {} service providers, {} requests to {}",
        data.policy_count(),
        data.sp_count(),
        files.samples.len(),
        out.display()
    );
    ExitCode::SUCCESS
}
