//! The record: what the server hands to [`crate::DecisionLog::append`], and the line a sink
//! receives.
//!
//! # Line schema
//!
//! Every sink receives ndjson: one JSON object per line, `\n`-terminated, fields in this order:
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `seq` | integer | per-node sequence, from 1, increasing across restarts; a gap means records were evicted (`when_full = "drop_oldest"`) or lost to corruption, both counted |
//! | `node_id` | integer | the node that decided |
//! | `decision_id` | string | UUIDv7 (time-ordered) of the decision |
//! | `timestamp_ms` | integer | when the decision was made, ms since the Unix epoch |
//! | `version` | integer | snapshot version the decision was computed from |
//! | `request` | object | the AuthZEN request with the configured paths masked or removed |
//! | `decision` | boolean | `true` = permit |
//! | `policies` | array of strings | determining policy ids |
//! | `reasons` | any JSON | reasons as answered (`reason_admin`, `reason_user`), `null` if none |
//! | `obligations` | array of strings | obligations of the determining permits |
//! | `latency_us` | integer | time spent deciding, in microseconds |
//!
//! Delivery is at-least-once, so a consumer may see a line twice; `(node_id, seq)` identifies it.
//! [`LoggedRecord`] parses a line.

use std::io::Write;
use std::time::SystemTime;
use std::time::UNIX_EPOCH;

use serde::Deserialize;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

/// One decision, as the server describes it. The log adds `seq` and `node_id` and masks `request`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// UUIDv7 of the decision; the server may also return it to the caller.
    pub decision_id: Uuid,
    /// When the decision was made, ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// Snapshot version the decision was computed from.
    pub version: u64,
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
            request,
            decision,
            policies: Vec::new(),
            reasons: Value::Null,
            obligations: Vec::new(),
            latency_us: 0,
        }
    }
}

/// A line as a sink receives it: a [`Record`] with its place in the node's log.
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

/// The stored form of a record: its JSON with `node_id` as the first field, ready to have `seq`
/// spliced in front when a line is made (the sequence is assigned later, under the queue's lock,
/// and serialising there would serialise every decision behind one mutex).
pub(crate) fn encode_payload(node_id: u64, record: &Record) -> Result<Vec<u8>, serde_json::Error> {
    // A SURFconext-sized record is about 600 bytes: start big enough not to grow twice.
    let mut out = Vec::with_capacity(1024);
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{{\"node_id\":{node_id}");
    let brace = out.len();
    serde_json::to_writer(&mut out, record)?;
    // INVARIANT: a struct serialises as an object, so `out[brace]` is its `{`; it becomes the
    // comma after `node_id`.
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
}
