//! The committed examples and the check of one decision against a `requests.json` entry.

use std::path::PathBuf;

use serde_json::Value;

use super::{cli_json, Node};

/// One directory under `examples/`.
pub struct Example {
    /// `examples/<name>`.
    pub dir: PathBuf,
    /// The entries of `requests.json`: `{name, request, expect, expect_policies?,
    /// expect_obligations?, expect_reason_user_en?, expect_reason_user_nl?}`.
    pub requests: Vec<Value>,
    /// How many policies `policies.cedar` holds (its `@id` annotations).
    pub policy_count: usize,
}

impl Example {
    /// Reads `examples/<name>`.
    pub fn read(name: &str) -> Example {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(name);
        let read = |file: &str| {
            std::fs::read_to_string(dir.join(file))
                .unwrap_or_else(|e| panic!("cannot read {}/{file}: {e}", dir.display()))
        };
        let requests: Value = serde_json::from_str(&read("requests.json")).expect("requests.json");
        let policy_count = read("policies.cedar").matches("@id(").count();
        Example {
            requests: requests
                .as_array()
                .cloned()
                .expect("requests.json is an array"),
            policy_count,
            dir,
        }
    }

    /// A file of the example, as a CLI argument.
    pub fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    /// Loads schema, policies and entities through the CLI (`VERDICT_URL` = the node); returns
    /// the version of the last write.
    pub async fn load_via_cli(&self, node: &Node) -> u64 {
        let mut versions = Vec::new();
        for args in [
            ["schema", "put", &self.path("schema.cedarschema")],
            ["policy", "load", &self.path("policies.cedar")],
            ["entity", "load", &self.path("entities.json")],
        ] {
            let out = cli_json(node, &args).await;
            let v = out["version"]
                .as_u64()
                .unwrap_or_else(|| panic!("`verdict {}`: no version in {out}", args.join(" ")));
            versions.push(v);
        }
        assert!(
            versions.windows(2).all(|w| w[0] < w[1]),
            "versions of successive writes must increase: {versions:?}"
        );
        versions[2]
    }
}

/// Checks one decision (`{"decision", "context"}`, from a single evaluation or a batch item)
/// against a `requests.json` entry.
pub fn assert_decision(got: &Value, sample: &Value, what: &str) {
    let name = format!("{what} `{}`", sample["name"].as_str().unwrap_or("?"));
    let ctx = &got["context"];
    assert_eq!(
        got["decision"], sample["expect"],
        "{name}: decision; request {}; answer {got}",
        sample["request"]
    );
    assert!(
        ctx["version"].is_u64(),
        "{name}: context.version missing in {got}"
    );
    if let Some(expected) = sample.get("expect_policies") {
        let actual = sorted(&ctx["reason_admin"]["policies"]);
        assert_eq!(
            actual,
            sorted(expected),
            "{name}: reason_admin.policies in {got}"
        );
    }
    if let Some(expected) = sample.get("expect_obligations") {
        let actual = sorted(&ctx["obligations"]);
        assert_eq!(actual, sorted(expected), "{name}: obligations in {got}");
    }
    let mut any_reason = false;
    for lang in ["en", "nl"] {
        if let Some(expected) = sample.get(format!("expect_reason_user_{lang}")) {
            any_reason = true;
            assert_eq!(
                &ctx["reason_user"][lang], expected,
                "{name}: reason_user.{lang} in {got}"
            );
        }
    }
    if sample["expect"] == false && !any_reason {
        assert!(
            ctx.get("reason_user").is_none_or(Value::is_null),
            "{name}: a deny without messages must carry no reason_user: {got}"
        );
    }
}

/// A JSON array of strings as a sorted list; missing or null is empty.
fn sorted(value: &Value) -> Vec<String> {
    let mut items: Vec<String> = value
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| v.as_str().unwrap_or("<non-string>").to_owned())
                .collect()
        })
        .unwrap_or_default();
    items.sort();
    items
}
