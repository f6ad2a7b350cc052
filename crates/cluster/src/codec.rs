//! The format number in front of every persisted or wire value, and bincode 1.3 (frozen) behind
//! it.
//!
//! Each [`Kind`] of value numbers its layouts on its own, so a layout change of one kind never
//! makes another unreadable to an older release. A reader dispatches on the number, never by
//! trying layouts in turn; a number newer than it knows is refused with a [`FormatError`] that says
//! which release reads it, never misread. The table of every format ever written is in
//! docs/architecture.md ("Persisted formats").
//!
//! What a writer writes is chosen in one place, [`LEVELS`], by the cluster's active format
//! level: nothing newer than the level is ever written while older releases are still members.

use std::fmt;
use std::io;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// What a value is; each kind has its own format numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A Raft log entry in the sled log (and inside append-entries requests).
    LogEntry,
    /// The vote, the committed log id and the purge point in the sled `meta` tree.
    RaftMeta,
    /// A snapshot file, and a snapshot transfer (the same bytes).
    Snapshot,
    /// A peer RPC request or answer (Raft RPCs, forwarded writes, membership, status).
    PeerMessage,
}

impl Kind {
    /// Every kind, for tables and tests.
    pub const ALL: [Kind; 4] = [
        Kind::LogEntry,
        Kind::RaftMeta,
        Kind::Snapshot,
        Kind::PeerMessage,
    ];
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::LogEntry => "log entry",
            Kind::RaftMeta => "raft metadata",
            Kind::Snapshot => "snapshot",
            Kind::PeerMessage => "peer message",
        })
    }
}

/// One format number per kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Formats {
    /// See [`Kind::LogEntry`].
    pub log_entry: u8,
    /// See [`Kind::RaftMeta`].
    pub raft_meta: u8,
    /// See [`Kind::Snapshot`].
    pub snapshot: u8,
    /// See [`Kind::PeerMessage`].
    pub peer_message: u8,
}

impl Formats {
    /// The number for `kind`.
    pub const fn of(&self, kind: Kind) -> u8 {
        match kind {
            Kind::LogEntry => self.log_entry,
            Kind::RaftMeta => self.raft_meta,
            Kind::Snapshot => self.snapshot,
            Kind::PeerMessage => self.peer_message,
        }
    }
}

/// The formats of each format level, level 1 first. INVARIANT: every writer takes its format from
/// the cluster's active level (through [`encode`]), never newer, so a member of the release before
/// a level can read everything while the cluster is below that level.
///
/// Level 1 is exactly what the release before levels writes (commit a5c32ea, the previous release
/// in tests/upgrade/previous-release): log entry 1, raft metadata 1, snapshot 3, peer message 1.
/// Level 2 adds log entry format 2 (commands the previous release cannot decode: `RaiseLevel`,
/// `EditParents`), snapshot format 4 (format 3 followed by the active level) and peer message
/// format 2 (a member's status report carries its release and highest level).
pub const LEVELS: [Formats; 2] = [
    Formats {
        log_entry: 1,
        raft_meta: 1,
        snapshot: 3,
        peer_message: 1,
    },
    Formats {
        log_entry: 2,
        raft_meta: 1,
        snapshot: 4,
        peer_message: 2,
    },
];

/// The highest format level this release supports.
pub const TOP_LEVEL: u8 = LEVELS.len() as u8;

/// The formats of `level`, clamped to the levels this release knows (0 counts as 1).
pub fn formats(level: u8) -> Formats {
    let i = usize::from(level.clamp(1, TOP_LEVEL)) - 1;
    LEVELS.get(i).copied().unwrap_or(LEVELS[0])
}

/// The newest format of each kind this release reads; it reads every older one too.
pub const NEWEST_READ: Formats = LEVELS[LEVELS.len() - 1];

/// The words every "written by a newer release" error contains, so a stopped member can tell
/// that cause from others in openraft's error text.
pub const NEWER_RELEASE: &str = "written by a newer release";

/// Why a value's format cannot be read. Travels inside an [`io::Error`] (kind `InvalidData`), so
/// a caller can tell "newer than this release" from corruption with [`FormatError::of`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// Written by a newer release.
    #[error(
        "{kind} format {format} was written by a newer release (this node, release {release}, \
         reads {kind} formats 1 to {newest}); upgrade this node to a release that reads {kind} \
         format {format}", release = crate::levels::release()
    )]
    Newer {
        /// What the value is.
        kind: Kind,
        /// The number it carries.
        format: u8,
        /// The newest this release reads.
        newest: u8,
    },
    /// Empty, or a number no release has written: the value is damaged.
    #[error("{kind} has no format number (empty or 0): the value is damaged")]
    Missing {
        /// What the value is.
        kind: Kind,
    },
}

impl FormatError {
    /// The format error inside `e` (or anywhere down its chain of sources), if there is one.
    pub fn of(e: &io::Error) -> Option<&FormatError> {
        let mut next: Option<&(dyn std::error::Error + 'static)> = e.get_ref().map(|inner| {
            let inner: &(dyn std::error::Error + 'static) = inner;
            inner
        });
        while let Some(err) = next {
            if let Some(found) = err.downcast_ref::<FormatError>() {
                return Some(found);
            }
            next = err
                .downcast_ref::<io::Error>()
                .and_then(|io| {
                    io.get_ref()
                        .map(|i| -> &(dyn std::error::Error + 'static) { i })
                })
                .or_else(|| err.source());
        }
        None
    }
}

impl From<FormatError> for io::Error {
    fn from(e: FormatError) -> Self {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// Encodes `value` as a `kind` in the format of format level `level` (the active level, or the
/// level the value's content needs if higher).
pub fn encode<T: Serialize>(level: u8, kind: Kind, value: &T) -> Result<Vec<u8>, io::Error> {
    encode_as(formats(level).of(kind), value)
}

/// Encodes `value` as `[format] ++ bincode(value)`; the caller vouches that `value`'s layout is
/// that of `format`.
pub fn encode_as<T: Serialize>(format: u8, value: &T) -> Result<Vec<u8>, io::Error> {
    let mut out = vec![format];
    bincode::serialize_into(&mut out, value)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("encode: {e}")))?;
    Ok(out)
}

/// Splits a `kind` value into its format number and body, refusing a number this release does not
/// read. The caller dispatches on the number.
pub fn open(kind: Kind, bytes: &[u8]) -> Result<(u8, &[u8]), FormatError> {
    match bytes.split_first() {
        None | Some((0, _)) => Err(FormatError::Missing { kind }),
        Some((&format, body)) if format <= NEWEST_READ.of(kind) => Ok((format, body)),
        Some((&format, _)) => Err(FormatError::Newer {
            kind,
            format,
            newest: NEWEST_READ.of(kind),
        }),
    }
}

/// Decodes a log entry, raft metadata or peer message: so far each of these kinds has had one
/// layout; log entry and peer message format 2 only add enum variants at the end (new commands),
/// which a format-1 reader could not decode. A status report has its own reader
/// ([`crate::types::NodeReport::decode`]). Snapshots have theirs (the snapshot file module).
pub fn decode<T: DeserializeOwned>(kind: Kind, bytes: &[u8]) -> Result<T, io::Error> {
    match (kind, open(kind, bytes)?) {
        (Kind::LogEntry | Kind::PeerMessage, (1 | 2, body)) | (Kind::RaftMeta, (1, body)) => {
            body_of(body)
        }
        (kind, (format, _)) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{kind} format {format} is not read by the one-layout decoder"),
        )),
    }
}

/// Decodes the bincode body of a value (the part after the format number).
pub(crate) fn body_of<T: DeserializeOwned>(body: &[u8]) -> Result<T, io::Error> {
    bincode::deserialize(body)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("decode: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_in_the_written_format() {
        for level in 1..=TOP_LEVEL {
            for kind in [Kind::LogEntry, Kind::RaftMeta, Kind::PeerMessage] {
                let bytes = encode(level, kind, &(1u64, "x".to_string())).unwrap();
                assert_eq!(bytes[0], formats(level).of(kind));
                let back: (u64, String) = decode(kind, &bytes).unwrap();
                assert_eq!(back, (1, "x".to_string()));
            }
        }
    }

    /// Level 1 is exactly what the previous release writes (tests/upgrade/previous-release):
    /// changing it would make a mixed cluster unreadable to that release's members.
    #[test]
    fn level_1_is_the_previous_release_and_levels_only_grow() {
        assert_eq!(
            LEVELS[0],
            Formats {
                log_entry: 1,
                raft_meta: 1,
                snapshot: 3,
                peer_message: 1
            }
        );
        for pair in LEVELS.windows(2) {
            for kind in Kind::ALL {
                assert!(pair[1].of(kind) >= pair[0].of(kind), "{kind}");
            }
        }
        assert_eq!(formats(0), LEVELS[0]);
        assert_eq!(formats(200), NEWEST_READ);
    }

    #[test]
    fn a_newer_format_is_refused_with_what_to_do() {
        for kind in Kind::ALL {
            let newer = NEWEST_READ.of(kind) + 1;
            let mut bytes = encode(TOP_LEVEL, kind, &7u64).unwrap();
            bytes[0] = newer;
            let e = open(kind, &bytes).unwrap_err();
            assert_eq!(
                e,
                FormatError::Newer {
                    kind,
                    format: newer,
                    newest: NEWEST_READ.of(kind)
                }
            );
            let text = e.to_string();
            assert!(text.contains("written by a newer release"), "{text}");
            assert!(
                text.contains(&format!(
                    "upgrade this node to a release that reads {kind} format {newer}"
                )),
                "{text}"
            );
            let io: io::Error = e.into();
            assert!(matches!(
                FormatError::of(&io),
                Some(FormatError::Newer { .. })
            ));
        }
        for damaged in [&[][..], &[0u8, 1, 2][..]] {
            assert_eq!(
                open(Kind::LogEntry, damaged),
                Err(FormatError::Missing {
                    kind: Kind::LogEntry
                })
            );
        }
    }

    /// Everything a token write puts in the log or a snapshot must survive bincode (which cannot
    /// read self-describing serde shapes such as internally tagged enums).
    #[test]
    fn token_writes_and_state_survive_the_log_encoding() -> Result<(), Box<dyn std::error::Error>> {
        use verdict_engine::command::KeyMaterial;
        use verdict_engine::keyring::RotationPolicy;
        use verdict_engine::persist::PersistedState;
        use verdict_engine::revocation::Selector;
        use verdict_engine::Command;
        use verdict_engine::Outcome;
        use verdict_engine::ParseCache;
        use verdict_engine::Snapshot;
        use verdict_engine::Write;
        let writes = [
            Command::RotateKeys {
                material: KeyMaterial([1; 32]),
                first_primary: Some(KeyMaterial([2; 32])),
                policy: RotationPolicy::default(),
            },
            Command::Revoke {
                events: vec![(
                    Selector::SubjectScope {
                        sub: "alice".into(),
                        scope: "p".into(),
                    },
                    None,
                )],
            },
        ];
        let mut snap = Snapshot::empty();
        for (i, command) in writes.into_iter().enumerate() {
            let write = Write {
                command,
                if_match: None,
                idempotency_key: None,
                stamped_ms: 1_000,
            };
            let back: Write = decode(Kind::LogEntry, &encode(1, Kind::LogEntry, &write)?)?;
            assert_eq!(back, write);
            let applied = snap.apply_in_place(i as u64 + 1, &back, &ParseCache::new());
            assert_eq!(applied.outcome, Outcome::Applied);
        }
        let state = snap.to_persisted();
        assert_eq!(state.tokens.revocations.marks.len(), 1);
        let back: PersistedState = body_of(&bincode::serialize(&state)?)?;
        assert_eq!(back, state);
        Ok(())
    }
}
