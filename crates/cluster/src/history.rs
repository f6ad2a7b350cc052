//! What changed at each applied version, for the watch stream: a bounded, in-memory window of recent
//! versions. Every applied log entry gets one event (writes, rejected writes, membership changes and
//! the leader's blank entries alike), so versions in the window are contiguous and a reader can tell
//! a gap (resync needed) from "nothing happened".
//!
//! The window is rebuilt after a restart from the log tail openraft replays; versions at or below the
//! loaded snapshot (or an installed one) are not in it, and a reader asking for them is told to resync.

use std::collections::VecDeque;
use std::sync::Arc;

use serde::Deserialize;
use serde::Serialize;
use verdict_engine::cedar_policy::EntityUid;
use verdict_engine::AppliedWrite;
use verdict_engine::Changed;
use verdict_engine::Command;
use verdict_engine::Outcome;

/// At most this many ids are listed per change; more set `truncated`.
pub const MAX_IDS_PER_EVENT: usize = 1000;

/// One applied version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeEvent {
    /// The version (log index).
    pub version: u64,
    /// What the entry was: a write's kind (`put_policy`, `upsert_entities`, …), `membership` or
    /// `leader_elected` (the blank entry a new leader commits).
    pub kind: String,
    /// Whether the state changed. A write refused in apply (e.g. `If-Match` no longer held) or a
    /// retried idempotent write is `false`.
    pub changed: bool,
    /// The policy ids written or deleted (empty for a whole-set replacement: refetch all).
    pub policies: Vec<String>,
    /// The entity uids written or deleted, as `Type::"id"` (empty for a whole-set replacement).
    pub entities: Vec<String>,
    /// The schema changed.
    pub schema: bool,
    /// Every policy, or every entity, was replaced: drop all cached decisions.
    pub replaced_all: bool,
    /// More ids changed than are listed.
    pub truncated: bool,
}

impl ChangeEvent {
    /// The heap and inline bytes this event holds, for bounding the window in bytes.
    pub fn footprint(&self) -> usize {
        let string = std::mem::size_of::<String>();
        let ids = |v: &[String]| v.iter().map(|s| s.capacity() + string).sum::<usize>();
        std::mem::size_of::<Self>()
            + self.kind.capacity()
            + ids(&self.policies)
            + ids(&self.entities)
    }

    fn empty(version: u64, kind: &str) -> Self {
        Self {
            version,
            kind: kind.to_string(),
            changed: false,
            policies: Vec::new(),
            entities: Vec::new(),
            schema: false,
            replaced_all: false,
            truncated: false,
        }
    }

    /// A non-write entry: a membership change or a new leader's blank entry.
    pub fn internal(version: u64, kind: &str) -> Self {
        Self::empty(version, kind)
    }

    /// The event for a write applied at `version`, from the change set its store reported.
    pub fn of_write(version: u64, command: &Command, effect: &AppliedWrite) -> Self {
        let mut e = Self::empty(version, command.kind());
        if !matches!(effect.outcome, Outcome::Applied) {
            return e;
        }
        // Key rotations, revocations and credential changes list no ids: the kind is the news
        // (a PEP drops cached token introspections on `revoke`; credential hashes never leave).
        e.changed = true;
        let changes = &effect.changes;
        match &changes.policies {
            Changed::All => e.replaced_all = true,
            Changed::Ids(ids) => {
                e.truncated |= ids.len() > MAX_IDS_PER_EVENT;
                e.policies = ids.iter().take(MAX_IDS_PER_EVENT).cloned().collect();
            }
        }
        match &changes.entities {
            Changed::All => e.replaced_all = true,
            Changed::Ids(uids) => {
                e.truncated |= uids.len() > MAX_IDS_PER_EVENT;
                e.entities = uids.iter().take(MAX_IDS_PER_EVENT).map(uid_text).collect();
            }
        }
        e.schema = changes.schema;
        e
    }
}

/// `Type::"id"`, the id quoted as a JSON string.
fn uid_text(uid: &EntityUid) -> String {
    format!(
        "{}::{}",
        uid.type_name(),
        serde_json::Value::String(uid.id().unescaped().to_string())
    )
}

/// The window of recent events.
#[derive(Debug)]
pub struct History {
    events: VecDeque<Arc<ChangeEvent>>,
    /// The version the next pushed event must have (one past the newest).
    next: u64,
    capacity: usize,
    /// Most bytes the window may hold ([`ChangeEvent::footprint`]); a count alone let 1,649
    /// writes of 1,000 long ids hold 5.4 GB.
    max_bytes: usize,
    /// What the events in the window hold now.
    bytes: usize,
}

/// Default of [`History::set_max_bytes`]: 64 MiB.
pub const DEFAULT_HISTORY_MAX_BYTES: usize = 64 << 20;

/// What a reader asking for the events after a version gets.
#[derive(Debug, PartialEq, Eq)]
pub enum Since {
    /// The events after the asked version, oldest first (possibly none yet).
    Events(Vec<Arc<ChangeEvent>>),
    /// The asked version is older than the window: the reader must reload its state. `oldest` is
    /// the oldest version still listed (its predecessor is the oldest a reader can resume from).
    Gap {
        /// Oldest version in the window, if any.
        oldest: Option<u64>,
    },
}

impl History {
    /// An empty window whose first event will be `after + 1`.
    pub fn new(after: u64, capacity: usize) -> Self {
        Self {
            events: VecDeque::new(),
            next: after + 1,
            capacity: capacity.max(1),
            max_bytes: DEFAULT_HISTORY_MAX_BYTES,
            bytes: 0,
        }
    }

    /// Bounds the window in bytes as well as in events (the newest event always stays).
    pub fn set_max_bytes(&mut self, max_bytes: usize) {
        self.max_bytes = max_bytes;
        self.trim();
    }

    fn trim(&mut self) {
        while self.events.len() > self.capacity
            || (self.bytes > self.max_bytes && self.events.len() > 1)
        {
            match self.events.pop_front() {
                Some(old) => self.bytes = self.bytes.saturating_sub(old.footprint()),
                None => break,
            }
        }
    }

    /// Appends the event of the next version. An event that does not continue the window (after a
    /// snapshot install jumped ahead) restarts the window at it.
    pub fn push(&mut self, event: ChangeEvent) {
        if event.version < self.next {
            return;
        }
        if event.version != self.next {
            self.events.clear();
            self.bytes = 0;
        }
        self.next = event.version + 1;
        self.bytes = self.bytes.saturating_add(event.footprint());
        self.events.push_back(Arc::new(event));
        self.trim();
    }

    /// What the window holds now, in bytes (as [`ChangeEvent::footprint`] counts them).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Restarts the window after `version` (a snapshot was installed).
    pub fn reset(&mut self, version: u64) {
        self.events.clear();
        self.bytes = 0;
        self.next = version + 1;
    }

    /// Up to `max` events with versions greater than `after`.
    pub fn since(&self, after: u64, max: usize) -> Since {
        let newest = self.next.saturating_sub(1);
        if after >= newest {
            return Since::Events(Vec::new());
        }
        let first = self.events.front().map(|e| e.version).unwrap_or(self.next);
        // The reader needs `after + 1` onwards; the window starts at `first`.
        if after + 1 < first {
            return Since::Gap {
                oldest: self.events.front().map(|e| e.version),
            };
        }
        let skip = usize::try_from(after + 1 - first).unwrap_or(usize::MAX);
        Since::Events(self.events.iter().skip(skip).take(max).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use verdict_engine::ParseCache;
    use verdict_engine::Snapshot;
    use verdict_engine::Write;

    use super::*;

    fn ev(v: u64) -> ChangeEvent {
        ChangeEvent::internal(v, "leader_elected")
    }

    fn versions(s: Since) -> Vec<u64> {
        match s {
            Since::Events(e) => e.iter().map(|e| e.version).collect(),
            Since::Gap { .. } => panic!("unexpected gap"),
        }
    }

    #[test]
    fn window_serves_contiguous_tail_and_reports_gaps() {
        let mut h = History::new(10, 3);
        for v in 11..=15 {
            h.push(ev(v));
        }
        // Window holds 13, 14, 15.
        assert_eq!(versions(h.since(12, 10)), vec![13, 14, 15]);
        assert_eq!(versions(h.since(14, 10)), vec![15]);
        assert_eq!(versions(h.since(15, 10)), Vec::<u64>::new());
        assert_eq!(versions(h.since(99, 10)), Vec::<u64>::new());
        assert_eq!(versions(h.since(12, 2)), vec![13, 14]);
        assert_eq!(h.since(11, 10), Since::Gap { oldest: Some(13) });
        // A jump (snapshot install) restarts the window.
        h.push(ev(40));
        assert_eq!(versions(h.since(39, 10)), vec![40]);
        assert_eq!(h.since(15, 10), Since::Gap { oldest: Some(40) });
        h.reset(50);
        assert_eq!(h.since(45, 10), Since::Gap { oldest: None });
        h.push(ev(51));
        assert_eq!(versions(h.since(50, 10)), vec![51]);
    }

    #[test]
    fn window_is_bounded_in_bytes_and_keeps_the_newest_event() {
        let big = |v: u64| {
            let mut e = ev(v);
            e.entities = (0..MAX_IDS_PER_EVENT)
                .map(|i| format!("E::\"{i:0>200}\""))
                .collect();
            e
        };
        let one = big(1).footprint();
        let mut h = History::new(0, 20_000);
        h.set_max_bytes(one * 3);
        for v in 1..=50 {
            h.push(big(v));
            assert!(h.bytes() <= one * 3, "{} bytes after {v}", h.bytes());
        }
        assert_eq!(versions(h.since(47, 10)), vec![48, 49, 50]);
        assert_eq!(h.since(10, 10), Since::Gap { oldest: Some(48) });
        // One event larger than the bound still stays: the newest version is always served.
        h.set_max_bytes(1);
        assert_eq!(versions(h.since(49, 10)), vec![50]);
    }

    /// Applies `command` with idempotency key `key`; the event the state machine would record.
    fn apply(snap: &mut Snapshot, version: u64, key: &str, command: Command) -> ChangeEvent {
        let write = Write {
            command,
            if_match: None,
            idempotency_key: Some(key.to_string()),
            stamped_ms: 0,
        };
        let effect = snap.apply_in_place(version, &write, &ParseCache::new());
        ChangeEvent::of_write(version, &write.command, &effect)
    }

    #[test]
    fn write_events_name_what_changed() {
        let mut snap = Snapshot::empty();
        let upsert = Command::UpsertEntities {
            json: r#"[{"uid":{"type":"User","id":"a\"b"},"attrs":{},"parents":[]}]"#.into(),
        };
        let e = apply(&mut snap, 1, "a", upsert);
        assert_eq!(e.entities, vec![r#"User::"a\"b""#.to_string()]);
        assert!(e.changed && !e.truncated);
        let put = Command::PutPolicy {
            id: "p1".into(),
            cedar: "permit(principal, action, resource);".into(),
        };
        let e = apply(&mut snap, 2, "b", put.clone());
        assert!(e.changed && e.policies == ["p1"]);
        // The same idempotency key again: a duplicate changes nothing.
        let e = apply(&mut snap, 3, "b", put);
        assert!(!e.changed && e.policies.is_empty());
        assert_eq!(e.kind, "put_policy");
        // More ids than an event lists are cut, and say so.
        let many: Vec<(String, String)> = (0..MAX_IDS_PER_EVENT + 1)
            .map(|i| ("User".to_string(), i.to_string()))
            .collect();
        let json = serde_json::to_string(
            &many
                .iter()
                .map(|(t, i)| serde_json::json!({"uid": {"type": t, "id": i}, "attrs": {}, "parents": []}))
                .collect::<Vec<_>>(),
        )
        .unwrap();
        let e = apply(&mut snap, 4, "c", Command::UpsertEntities { json });
        assert!(e.truncated && e.entities.len() == MAX_IDS_PER_EVENT);
        let e = apply(&mut snap, 5, "d", Command::DeleteEntities { uids: many });
        assert!(e.truncated && e.entities.len() == MAX_IDS_PER_EVENT);
    }
}
