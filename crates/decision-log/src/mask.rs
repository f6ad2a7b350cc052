//! Masking: configured dotted paths in a request are replaced by a mask or removed before the
//! record is serialised, so the secret never reaches the disk.
//!
//! [`ALWAYS_MASKED`] paths are masked whatever the configuration says: a subject's token
//! (`subject.properties.token`) is a bearer credential, and a log reader must not be able to
//! replay it. (The `Authorization: Bearer` token of a decision request is a header; records hold
//! only the request body's fields, so it never reaches a record.)

use serde_json::Value;

use crate::config::MaskMode;

/// Paths masked in every record, in addition to the configured ones: bearer tokens a decision
/// request may carry in its body.
pub(crate) const ALWAYS_MASKED: [&str; 1] = ["subject.properties.token"];

/// Compiled mask paths.
#[derive(Debug, Clone)]
pub(crate) struct Masker {
    paths: Vec<Vec<Segment>>,
    mode: MaskMode,
    with: Value,
}

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Key(String),
    /// `*`: every key of an object, every element of an array.
    Any,
}

impl Masker {
    /// Compiles `a.b.*.c` paths, and the [`ALWAYS_MASKED`] ones after them.
    pub(crate) fn new(paths: &[String], mode: MaskMode, with: &str) -> Self {
        let paths = paths
            .iter()
            .map(String::as_str)
            .chain(ALWAYS_MASKED)
            .map(|p| {
                p.split('.')
                    .map(|s| match s {
                        "*" => Segment::Any,
                        key => Segment::Key(key.to_string()),
                    })
                    .collect()
            })
            .collect();
        Self {
            paths,
            mode,
            with: Value::String(with.to_string()),
        }
    }

    /// Masks or removes every configured path present in `value`; absent paths are ignored.
    pub(crate) fn apply(&self, value: &mut Value) {
        for path in &self.paths {
            self.apply_path(value, path);
        }
    }

    fn apply_path(&self, value: &mut Value, path: &[Segment]) {
        let Some((head, rest)) = path.split_first() else {
            return;
        };
        let last = rest.is_empty();
        match (head, value) {
            (Segment::Key(key), Value::Object(map)) => {
                if last {
                    match self.mode {
                        MaskMode::Remove => {
                            map.remove(key);
                        }
                        MaskMode::Mask => {
                            if let Some(v) = map.get_mut(key) {
                                *v = self.with.clone();
                            }
                        }
                    }
                } else if let Some(v) = map.get_mut(key) {
                    self.apply_path(v, rest);
                }
            }
            (Segment::Any, Value::Object(map)) => {
                if last {
                    match self.mode {
                        MaskMode::Remove => map.clear(),
                        MaskMode::Mask => map.values_mut().for_each(|v| *v = self.with.clone()),
                    }
                } else {
                    map.values_mut().for_each(|v| self.apply_path(v, rest));
                }
            }
            (Segment::Any, Value::Array(items)) => {
                if last {
                    match self.mode {
                        MaskMode::Remove => items.clear(),
                        MaskMode::Mask => items.iter_mut().for_each(|v| *v = self.with.clone()),
                    }
                } else {
                    items.iter_mut().for_each(|v| self.apply_path(v, rest));
                }
            }
            // A key into an array or a scalar: the path does not exist here.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request() -> Value {
        json!({
            "subject": {"type": "User", "id": "u1", "properties": {"ssn": "123", "name": "Ann"}},
            "resource": {"type": "Doc", "id": "d", "properties": {"a": 1, "b": [1, 2]}},
            "context": {"password": "hunter2", "tokens": [{"v": "t1", "k": 1}, {"v": "t2"}]}
        })
    }

    #[test]
    fn mask_replaces_and_remove_deletes_the_configured_fields() {
        let paths = vec![
            "subject.properties.ssn".to_string(),
            "context.password".to_string(),
            "context.tokens.*.v".to_string(),
            "absent.path".to_string(),
            "subject.id.deeper".to_string(),
        ];
        let mut v = request();
        Masker::new(&paths, MaskMode::Mask, "***").apply(&mut v);
        assert_eq!(v["subject"]["properties"]["ssn"], "***");
        assert_eq!(v["subject"]["properties"]["name"], "Ann");
        assert_eq!(v["context"]["password"], "***");
        assert_eq!(
            v["context"]["tokens"],
            json!([{"v": "***", "k": 1}, {"v": "***"}])
        );
        assert_eq!(v["subject"]["id"], "u1");
        assert!(v.get("absent").is_none());

        let mut v = request();
        Masker::new(&paths, MaskMode::Remove, "***").apply(&mut v);
        assert!(v["subject"]["properties"].get("ssn").is_none());
        assert!(v["context"].get("password").is_none());
        assert_eq!(v["context"]["tokens"], json!([{"k": 1}, {}]));
    }

    #[test]
    fn a_trailing_star_covers_every_property() {
        let paths = vec!["resource.properties.*".to_string()];
        let mut v = request();
        Masker::new(&paths, MaskMode::Mask, "x").apply(&mut v);
        assert_eq!(v["resource"]["properties"], json!({"a": "x", "b": "x"}));
        let mut v = request();
        Masker::new(&paths, MaskMode::Remove, "x").apply(&mut v);
        assert_eq!(v["resource"]["properties"], json!({}));
        assert_eq!(v["resource"]["id"], "d");
    }

    #[test]
    fn a_subject_token_is_masked_with_no_configured_path() {
        let mut v = json!({"subject": {"type": "User", "id": "u", "properties": {"token": "v4.local.x", "n": 1}}});
        Masker::new(&[], MaskMode::Mask, "***").apply(&mut v);
        assert_eq!(v["subject"]["properties"], json!({"token": "***", "n": 1}));
        Masker::new(&[], MaskMode::Remove, "***").apply(&mut v);
        assert_eq!(v["subject"]["properties"], json!({"n": 1}));
    }
}
