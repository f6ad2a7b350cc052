//! Writes the zero-trust example: `schema.cedarschema`, `policies.cedar`, `entities.json` and
//! `requests.json`.
//!
//! ```text
//! cargo run --example zero-trust -- [--hosts 40] [--out DIR]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use verdict_fixtures::{zero_trust, ExampleFiles};

fn main() -> ExitCode {
    let mut hosts = zero_trust::DEFAULT_HOSTS;
    let mut out = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/zero-trust"));
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next();
        match (flag.as_str(), value) {
            ("--hosts", Some(v)) if v.parse::<usize>().is_ok() => {
                hosts = v.parse().unwrap_or(hosts)
            }
            ("--out", Some(v)) => out = PathBuf::from(v),
            _ => {
                eprintln!("error: unexpected argument `{flag}`\nusage: zero-trust [--hosts N] [--out DIR]");
                return ExitCode::from(2);
            }
        }
    }
    let fleet = zero_trust::Fleet::new(hosts);
    let mut generated_by = "cargo run --example zero-trust".to_owned();
    if hosts != zero_trust::DEFAULT_HOSTS {
        generated_by.push_str(&format!(" -- --hosts {hosts}"));
    }
    let files = ExampleFiles {
        generated_by,
        schema: zero_trust::SCHEMA.to_owned(),
        policies: zero_trust::POLICIES.to_owned(),
        entities: fleet.entities(),
        samples: fleet.samples(),
    };
    if let Err(e) = files.write(&out) {
        eprintln!("error: cannot write `{}`: {e}", out.display());
        return ExitCode::FAILURE;
    }
    println!(
        "wrote {} hosts, {} users, {} requests to {}",
        fleet.host_count(),
        fleet.user_count(),
        files.samples.len(),
        out.display()
    );
    ExitCode::SUCCESS
}
