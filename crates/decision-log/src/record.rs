//! The records: what the server hands to [`crate::DecisionLog::append`] and
//! [`crate::DecisionLog::append_batch`], and the lines a sink receives.
//!
//! # Line schema
//!
//! Every sink receives ndjson: one JSON object per line, `\n`-terminated. There are two kinds of
//! line. A **decision line** (no `kind` field) has these fields, in this order:
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `seq` | integer | per-node sequence, from 1, increasing across restarts; a gap means records were evicted (`when_full = "drop_oldest"`) or lost to corruption, both counted |
//! | `node_id` | integer | the node that decided |
//! | `decision_id` | string | UUIDv7 (time-ordered) of the decision |
//! | `timestamp_ms` | integer | when the decision was made, ms since the Unix epoch |
//! | `version` | integer | snapshot version the decision was computed from |
//! | `batch_id` | string | only on a batch item's line: the `batch_id` of its batch line; absent otherwise |
//! | `request` | object | the AuthZEN request with the configured paths masked or removed; on a batch item's line only the item's own `subject`, `action`, `resource`, `context` |
//! | `decision` | boolean | `true` = permit |
//! | `policies` | array of strings | determining policy ids |
//! | `reasons` | any JSON | reasons as answered (`reason_admin`, `reason_user`), `null` if none |
//! | `obligations` | array of strings | obligations of the determining permits |
//! | `latency_us` | integer | time spent deciding, in microseconds |
//!
//! A **batch line** (`"kind": "batch"`) carries the top-level defaults of one
//! `POST /access/v1/evaluations` once, instead of a copy in every item's line (a 1 MB default
//! `context` used to be copied into each of 1,000 records):
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `seq`, `node_id` | integer | as above |
//! | `kind` | string | `"batch"` |
//! | `items` | integer | how many decision lines of this batch follow it |
//! | `batch_id` | string | UUIDv7 of the batch, named by each of its decision lines |
//! | `timestamp_ms` | integer | when the batch was taken, ms since the Unix epoch |
//! | `version` | integer | snapshot version the batch was decided on |
//! | `defaults` | object | the batch's top-level `subject`, `action`, `resource`, `context` (those sent), masked like any request |
//!
//! A batch line comes immediately before its `items` decision lines: they are appended together
//! (all or none, in one write) and have consecutive sequences. The full request of a batch item is
//! its line's `request` with each of `subject`, `action`, `resource`, `context` that it lacks taken
//! whole from its batch line's `defaults`: AuthZEN's own rule for batch defaults, so masking
//! (`mask_mode = "remove"` of a whole field removes it from both) cannot change the outcome.
//! [`BatchRecord::request_of`] does it. A single evaluation's line has no `batch_id` and its
//! `request` is whole; lines written before batch lines existed are such lines (a batch item's
//! `request` then holds the defaults applied), and [`LoggedRecord`] reads them all.
//!
//! Delivery is at-least-once, so a consumer may see a line twice; `(node_id, seq)` identifies it.
//! [`Line`] parses either kind of line; [`LoggedRecord`] parses a decision line.

use std::io::Write;
use std::time::SystemTime;
use std::time::UNIX_EPOCH;

use serde::Deserialize;
use serde::Serialize;
use serde_json::Map;
use serde_json::Value;
use uuid::Uuid;

/// The request fields a decision is made from, and so the only ones a record keeps.
pub const REQUEST_FIELDS: [&str; 4] = ["subject", "action", "resource", "context"];

/// Bytes a decision line takes besides its `request`, for budgeting a batch before it is decided:
/// the framing on disk, `seq`, `node_id`, the ids, times and version, and the answer (`decision`,
/// `policies`, `reasons`, `obligations`) of a decision with a few determining policies. An
/// estimate: a decision that many policies determine, with long reasons, takes more.
pub const DECISION_LINE_OVERHEAD: u64 = 512;

/// Bytes a batch line takes besides its `defaults` (framing, ids, times, version).
pub const BATCH_LINE_OVERHEAD: u64 = 192;

/// One decision, as the server describes it. The log adds `seq` and `node_id` and masks `request`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// UUIDv7 of the decision; the server may also return it to the caller.
    pub decision_id: Uuid,
    /// When the decision was made, ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// Snapshot version the decision was computed from.
    pub version: u64,
    /// The batch this decision is an item of: `request` then holds only the item's own fields,
    /// the others are the batch's `defaults` ([`BatchRecord::request_of`]). Set by
    /// [`crate::DecisionLog::append_batch`]; `None` for a single evaluation, and in lines written
    /// before batch lines existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<Uuid>,
    /// The request as received; masked by [`crate::DecisionLog::append`].
    pub request: Value,
    /// `true` = permit.
    pub decision: bool,
    /// Determining policy ids.
    pub policies: Vec<String>,
    /// Reasons as answered (e.g. `{"reason_admin": …, "reason_user": …}`), `null` if none.
    pub reasons: Value,
    /// Obligations of the determining permits.
    pub obligations: Vec<String>,
    /// Time spent deciding, in microseconds.
    pub latency_us: u64,
}

impl Record {
    /// A record with a fresh UUIDv7 and the current time; policies, reasons, obligations and
    /// latency start empty for the caller to fill in.
    pub fn new(version: u64, request: Value, decision: bool) -> Self {
        Self {
            decision_id: Uuid::now_v7(),
            timestamp_ms: now_ms(),
            version,
            batch_id: None,
            request,
            decision,
            policies: Vec::new(),
            reasons: Value::Null,
            obligations: Vec::new(),
            latency_us: 0,
        }
    }
}

/// The defaults of one batch (`POST /access/v1/evaluations`), logged once, ahead of the records
/// of its items, which name it by `batch_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchRecord {
    /// How many decision records of this batch follow its line. Set by
    /// [`crate::DecisionLog::append_batch`].
    pub items: u64,
    /// UUIDv7 of the batch.
    pub batch_id: Uuid,
    /// When the batch was taken, ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// Snapshot version the batch was decided on.
    pub version: u64,
    /// The batch's top-level `subject`, `action`, `resource` and `context`, those it sent; masked
    /// by [`crate::DecisionLog::append_batch`].
    pub defaults: Value,
}

impl BatchRecord {
    /// A batch with a fresh UUIDv7, the current time and no items yet.
    pub fn new(version: u64, defaults: Value) -> Self {
        Self {
            items: 0,
            batch_id: Uuid::now_v7(),
            timestamp_ms: now_ms(),
            version,
            defaults,
        }
    }

    /// The full request of one of this batch's decisions: the record's own request fields, and
    /// each of [`REQUEST_FIELDS`] it lacks taken whole from the defaults (AuthZEN replaces a
    /// default as a whole object, it does not merge).
    pub fn request_of(&self, record: &Record) -> Value {
        let mut request = match &record.request {
            Value::Object(m) => m.clone(),
            _ => Map::new(),
        };
        for key in REQUEST_FIELDS {
            if !request.contains_key(key) {
                if let Some(v) = self.defaults.get(key) {
                    request.insert(key.to_string(), v.clone());
                }
            }
        }
        Value::Object(request)
    }
}

/// A decision line as a sink receives it: a [`Record`] with its place in the node's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedRecord {
    /// Per-node sequence.
    pub seq: u64,
    /// The deciding node.
    pub node_id: u64,
    /// The decision.
    #[serde(flatten)]
    pub record: Record,
}

/// A batch line as a sink receives it: a [`BatchRecord`] with its place in the node's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedBatch {
    /// Per-node sequence; the batch's decision lines follow it.
    pub seq: u64,
    /// The deciding node.
    pub node_id: u64,
    /// Always `"batch"`: what tells a batch line from a decision line.
    kind: BatchKind,
    /// The batch.
    #[serde(flatten)]
    pub batch: BatchRecord,
}

/// The `kind` of a batch line; decision lines have none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum BatchKind {
    Batch,
}

/// Any line a sink receives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Line {
    /// A batch's defaults (`"kind": "batch"`).
    Batch(LoggedBatch),
    /// A decision: a single evaluation, a batch item, or any line written before batch lines.
    Decision(LoggedRecord),
}

/// The stored form of a decision record: its JSON with `node_id` as the first field, ready to have
/// `seq` spliced in front when a line is made (the sequence is assigned later, under the queue's
/// lock, and serialising there would serialise every decision behind one mutex).
pub(crate) fn encode_payload(node_id: u64, record: &Record) -> Result<Vec<u8>, serde_json::Error> {
    encode(node_id, "", record, 1024)
}

/// The stored form of a batch line: as [`encode_payload`], with `"kind":"batch"` after `node_id`.
pub(crate) fn encode_batch_payload(
    node_id: u64,
    batch: &BatchRecord,
) -> Result<Vec<u8>, serde_json::Error> {
    encode(node_id, ",\"kind\":\"batch\"", batch, 256)
}

fn encode<T: Serialize>(
    node_id: u64,
    after_node_id: &str,
    value: &T,
    capacity: usize,
) -> Result<Vec<u8>, serde_json::Error> {
    // A SURFconext-sized record is about 600 bytes: start big enough not to grow twice.
    let mut out = Vec::with_capacity(capacity);
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{{\"node_id\":{node_id}{after_node_id}");
    let brace = out.len();
    serde_json::to_writer(&mut out, value)?;
    // INVARIANT: a struct serialises as an object, so `out[brace]` is its `{`; it becomes the
    // comma after what precedes it.
    if let Some(b) = out.get_mut(brace) {
        *b = b',';
    }
    Ok(out)
}

/// Appends the ndjson line for a stored payload: `{"seq":N,` + the payload after its `{` + `\n`.
pub(crate) fn push_line(out: &mut Vec<u8>, seq: u64, payload: &[u8]) {
    let _ = write!(out, "{{\"seq\":{seq},");
    out.extend_from_slice(payload.get(1..).unwrap_or_default());
    out.push(b'\n');
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_line_parses_back_into_the_record_with_seq_and_node() {
        let mut r = Record::new(7, json!({"subject": {"type": "User", "id": "u1"}}), false);
        r.policies = vec!["p1".into()];
        r.reasons = json!({"reason_user": {"en": "no"}});
        r.obligations = vec!["loa:2".into()];
        r.latency_us = 42;
        let payload = encode_payload(3, &r).unwrap();
        let mut line = Vec::new();
        push_line(&mut line, 99, &payload);
        assert_eq!(line.last(), Some(&b'\n'));
        assert!(line.starts_with(b"{\"seq\":99,\"node_id\":3,\"decision_id\":"));
        let back: LoggedRecord = serde_json::from_slice(&line).unwrap();
        assert_eq!(back.seq, 99);
        assert_eq!(back.node_id, 3);
        assert_eq!(back.record, r);
        assert_eq!(back.record.decision_id.get_version_num(), 7);
    }

    /// A line as written before batch lines existed (docs/decision-logs.md had this example): a
    /// batch item's `request` with the defaults applied, and no `batch_id`.
    const OLD_LINE: &str = r#"{"seq":1,"node_id":1,"decision_id":"01a20587-b3ee-74da-a033-3df3123d7d86","timestamp_ms":1795389109230,"version":3,"request":{"subject":{"type":"User","id":"u-109"},"action":{"name":"login"},"resource":{"type":"ServiceProvider","id":"sp-1"},"context":{"idp":"idp-6","password":"***"}},"decision":false,"policies":["sp-1-deny"],"reasons":{"reason_admin":{"policies":["sp-1-deny"],"errors":[]},"reason_user":{"en":"Only employees may log in to Zoom 1.","nl":"Alleen medewerkers mogen inloggen bij Zoom 1."}},"obligations":[],"latency_us":938}"#;

    #[test]
    fn an_old_line_still_parses_as_a_decision_without_a_batch() {
        let old: LoggedRecord = serde_json::from_str(OLD_LINE).unwrap();
        assert_eq!((old.seq, old.node_id), (1, 1));
        assert_eq!(old.record.batch_id, None);
        assert_eq!(old.record.request["context"]["idp"], "idp-6");
        assert_eq!(old.record.policies, ["sp-1-deny"]);
        assert_eq!(
            serde_json::from_str::<Line>(OLD_LINE).unwrap(),
            Line::Decision(old.clone())
        );
        // Written back, it is the same line: a single decision's line did not change.
        let again = line_of(&encode_payload(1, &old.record).unwrap(), 1);
        assert_eq!(
            serde_json::from_slice::<Value>(&again).unwrap(),
            serde_json::from_str::<Value>(OLD_LINE).unwrap()
        );
    }

    fn line_of(payload: &[u8], seq: u64) -> Vec<u8> {
        let mut line = Vec::new();
        push_line(&mut line, seq, payload);
        line
    }

    #[test]
    fn a_batch_line_and_its_items_parse_back_and_rebuild_each_full_request() {
        let mut batch = BatchRecord::new(
            5,
            json!({"subject": {"type": "User", "id": "u"}, "context": {"big": "x"}}),
        );
        batch.items = 2;
        let mut own = Record::new(5, json!({"resource": {"type": "Doc", "id": "d1"}}), true);
        own.batch_id = Some(batch.batch_id);
        let mut other = Record::new(
            5,
            json!({"resource": {"type": "Doc", "id": "d2"}, "context": {}}),
            false,
        );
        other.batch_id = Some(batch.batch_id);

        let head = line_of(&encode_batch_payload(2, &batch).unwrap(), 10);
        assert!(head.starts_with(b"{\"seq\":10,\"node_id\":2,\"kind\":\"batch\",\"items\":2,"));
        let Line::Batch(b) = serde_json::from_slice::<Line>(&head).unwrap() else {
            panic!("not a batch line: {}", String::from_utf8_lossy(&head));
        };
        assert_eq!((b.seq, b.node_id), (10, 2));
        assert_eq!(b.batch, batch);
        assert!(
            serde_json::from_slice::<LoggedRecord>(&head).is_err(),
            "a batch line is not a decision"
        );

        let item = line_of(&encode_payload(2, &own).unwrap(), 11);
        let text = String::from_utf8(item.clone()).unwrap();
        let at = |k: &str| text.find(&format!("\"{k}\":")).unwrap();
        assert!(
            at("version") < at("batch_id") && at("batch_id") < at("request"),
            "{text}"
        );
        let Line::Decision(d) = serde_json::from_slice::<Line>(&item).unwrap() else {
            panic!("not a decision line: {text}");
        };
        assert_eq!(d.record, own);
        assert!(serde_json::from_slice::<LoggedBatch>(&item).is_err());

        assert_eq!(
            b.batch.request_of(&d.record),
            json!({"subject": {"type": "User", "id": "u"}, "resource": {"type": "Doc", "id": "d1"}, "context": {"big": "x"}})
        );
        // An item's own field replaces the default whole, even an empty one.
        assert_eq!(
            b.batch.request_of(&other),
            json!({"subject": {"type": "User", "id": "u"}, "resource": {"type": "Doc", "id": "d2"}, "context": {}})
        );
        // A single decision's line has no `batch_id` at all.
        let single = line_of(
            &encode_payload(2, &Record::new(5, json!({}), true)).unwrap(),
            12,
        );
        assert!(!String::from_utf8(single).unwrap().contains("batch_id"));
    }
}
