//! Writes the project RBAC example: `schema.cedarschema`, `policies.cedar`, `entities.json` and
//! `requests.json`.
//!
//! ```text
//! cargo run --example project-rbac -- [--users 30] [--projects 8] [--out DIR]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use verdict_fixtures::{project_rbac, ExampleFiles};

fn main() -> ExitCode {
    let mut users = project_rbac::DEFAULT_USERS;
    let mut projects = project_rbac::DEFAULT_PROJECTS;
    let mut out = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/project-rbac"
    ));
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next();
        let number = value.as_deref().and_then(|v| v.parse::<usize>().ok());
        match (flag.as_str(), number) {
            ("--users", Some(n)) => users = n,
            ("--projects", Some(n)) => projects = n,
            ("--out", _) if value.is_some() => out = PathBuf::from(value.unwrap_or_default()),
            _ => {
                eprintln!(
                    "error: unexpected argument `{flag}`\n\
                     usage: project-rbac [--users N] [--projects N] [--out DIR]"
                );
                return ExitCode::from(2);
            }
        }
    }
    let org = project_rbac::Org::new(users, projects);
    let mut generated_by = "cargo run --example project-rbac".to_owned();
    if (users, projects) != (project_rbac::DEFAULT_USERS, project_rbac::DEFAULT_PROJECTS) {
        generated_by.push_str(&format!(" -- --users {users} --projects {projects}"));
    }
    let files = ExampleFiles {
        generated_by,
        schema: project_rbac::SCHEMA.to_owned(),
        policies: project_rbac::POLICIES.to_owned(),
        entities: org.entities(),
        samples: org.samples(),
    };
    if let Err(e) = files.write(&out) {
        eprintln!("error: cannot write `{}`: {e}", out.display());
        return ExitCode::FAILURE;
    }
    println!(
        "wrote {} requests to {}",
        files.samples.len(),
        out.display()
    );
    ExitCode::SUCCESS
}
