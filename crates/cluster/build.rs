//! Embeds the git commit this crate was built from, for the release each member reports
//! (`VERDICT_GIT_COMMIT` overrides it: container builds have no `.git`; "unknown" without either).

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=VERDICT_GIT_COMMIT");
    let commit = std::env::var("VERDICT_GIT_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| {
            let out = Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
                .filter(|c| !c.is_empty())
        })
        .unwrap_or_else(|| "unknown".to_string());
    if let Ok(out) = Command::new("git")
        .args(["rev-parse", "--git-dir"])
        .output()
    {
        if out.status.success() {
            let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
            println!("cargo:rerun-if-changed={dir}/HEAD");
            println!("cargo:rerun-if-changed={dir}/logs/HEAD");
        }
    }
    let short: String = commit.trim().chars().take(12).collect();
    println!("cargo:rustc-env=VERDICT_GIT_COMMIT={short}");
}
