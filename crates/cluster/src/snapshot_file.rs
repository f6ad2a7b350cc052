//! The content of a snapshot file and of a snapshot transfer (the same bytes), by format.
//!
//! | format | layout after the format byte | written by |
//! |---|---|---|
//! | 1 | one of four layouts, told apart by [`legacy_format_1`] | every release before explicit formats |
//! | 2 | [`SnapshotFileV2`]: meta, state (with tokens and credentials), members seen | releases up to the one before idempotency digests |
//! | 3 | as 2, the state ending with the idempotency keys' write digests | the release before format levels; this release at format level 1 |
//! | 4 | [`SnapshotFile`]: as 3, then the cluster's active format level | this release at format level 2 |
//!
//! A release that changes the layout adds a number here and a row to the table in
//! docs/architecture.md; it never writes a number an older reader would misread.

use std::collections::BTreeSet;
use std::io;

use openraft::alias::SnapshotMetaOf;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde::Serialize;
use verdict_engine::credential::PersistedCredentials;
use verdict_engine::persist::PersistedState;
use verdict_engine::persist::PersistedStateV1;
use verdict_engine::persist::PersistedTokens;

use crate::codec::body_of;
use crate::codec::encode_as;
use crate::codec::formats;
use crate::codec::open;
use crate::codec::Kind;
use crate::types::NodeId;
use crate::types::TypeConfig;

/// A snapshot: the log position and membership it reflects, the engine state, and every node id
/// that was ever a member (removed ids are never accepted again), and the cluster's active format
/// level. Format 4; format 3 is the same without the level (level 1).
#[derive(Serialize, Deserialize)]
pub(crate) struct SnapshotFile {
    pub(crate) meta: SnapshotMetaOf<TypeConfig>,
    pub(crate) state: PersistedState,
    pub(crate) members_seen: BTreeSet<NodeId>,
    pub(crate) level: u8,
}

/// Encodes `file` in the snapshot format of its own active level: a snapshot of a state at level
/// 1 stays readable by the release before levels.
pub(crate) fn encode_file(file: &SnapshotFile) -> Result<Vec<u8>, io::Error> {
    match formats(file.level).snapshot {
        3 => encode_as(3, &(&file.meta, &file.state, &file.members_seen)),
        format => encode_as(format, file),
    }
}

/// Decodes a snapshot of any format this release reads.
pub(crate) fn decode_file(bytes: &[u8]) -> Result<SnapshotFile, io::Error> {
    match open(Kind::Snapshot, bytes)? {
        (1, body) => legacy_format_1(body),
        (2, body) => body_of::<SnapshotFileV2>(body).map(SnapshotFile::from),
        (3, body) => body_of::<SnapshotFileV3>(body).map(SnapshotFile::from),
        (4, body) => body_of(body),
        (format, _) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("snapshot format {format} has no reader in this release"),
        )),
    }
}

/// Snapshot format 2: format 3 without the idempotency digests. bincode writes a struct as its
/// fields one after another, so the state's parts in a row read exactly what a format-2
/// `PersistedState` wrote. Read only.
#[derive(Deserialize)]
pub(crate) struct SnapshotFileV2 {
    meta: SnapshotMetaOf<TypeConfig>,
    first: PersistedStateV1,
    tokens: PersistedTokens,
    credentials: PersistedCredentials,
    members_seen: BTreeSet<NodeId>,
}

/// Snapshot format 3: format 4 without the level, which is 1. Read only (written through
/// [`encode_file`] at level 1).
#[derive(Deserialize)]
pub(crate) struct SnapshotFileV3 {
    meta: SnapshotMetaOf<TypeConfig>,
    state: PersistedState,
    members_seen: BTreeSet<NodeId>,
}

impl From<SnapshotFileV3> for SnapshotFile {
    fn from(v3: SnapshotFileV3) -> Self {
        SnapshotFile {
            meta: v3.meta,
            state: v3.state,
            members_seen: v3.members_seen,
            level: 1,
        }
    }
}

impl From<SnapshotFileV2> for SnapshotFile {
    fn from(v2: SnapshotFileV2) -> Self {
        let mut state = PersistedState::from(v2.first);
        state.tokens = v2.tokens;
        state.credentials = v2.credentials;
        SnapshotFile {
            meta: v2.meta,
            state,
            members_seen: v2.members_seen,
            level: 1,
        }
    }
}

/// Decodes a snapshot and returns it with its bytes in the format its level writes: the same
/// bytes when they already are, else re-encoded, so a legacy format-1 snapshot is never written
/// to disk or sent to a follower again.
pub(crate) fn decode_to_written_format(
    bytes: Vec<u8>,
) -> Result<(SnapshotFile, Vec<u8>), io::Error> {
    let file = decode_file(&bytes)?;
    if bytes.first() == Some(&formats(file.level).snapshot) {
        return Ok((file, bytes));
    }
    let bytes = encode_file(&file)?;
    Ok((file, bytes))
}

/// Reads snapshot format 1, which every release before explicit formats wrote for four layouts.
/// Each starts with the snapshot meta and the state fields of the first release
/// ([`PersistedStateV1`]); they differ in what follows:
///
/// 1. nothing (releases before membership changes);
/// 2. the node ids seen (before tokens);
/// 3. the token part, then the node ids seen (before credentials);
/// 4. the token part, the credential part, then the node ids seen.
///
/// The rule: nothing left → layout 1; what is left is exactly one id set (a count `n`, then `n`
/// ids of 8 bytes) → layout 2; else read the token part, and if what is then left is exactly one id
/// set → layout 3, else layout 4. The choices exclude each other, so no layout is ever taken for
/// another: a token part with `k` keys is `8 + 52k` bytes and at least 42 more, so with an id set
/// after it it is never exactly the `8 + 8k` bytes of an id set of `k` ids; likewise a credential
/// part with `c` credentials is at least `8 + 48c + 2` bytes.
/// Layout 1 had no membership history: the members of its meta stand for it.
fn legacy_format_1(body: &[u8]) -> Result<SnapshotFile, io::Error> {
    let mut rest = body;
    let meta: SnapshotMetaOf<TypeConfig> = take(&mut rest)?;
    let first: PersistedStateV1 = take(&mut rest)?;
    let mut state = PersistedState::from(first);
    let members_seen = if rest.is_empty() {
        meta.last_membership
            .membership()
            .nodes()
            .map(|(id, _)| *id)
            .collect()
    } else if is_one_id_set(rest) {
        take(&mut rest)?
    } else {
        state.tokens = take::<PersistedTokens>(&mut rest)?;
        if !is_one_id_set(rest) {
            state.credentials = take::<PersistedCredentials>(&mut rest)?;
        }
        take(&mut rest)?
    };
    if !rest.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "snapshot format 1: {} bytes left over after the newest layout; the file is damaged",
                rest.len()
            ),
        ));
    }
    Ok(SnapshotFile {
        meta,
        state,
        members_seen,
        level: 1,
    })
}

/// Decodes one value from the front of `rest` and moves `rest` past it.
fn take<T: DeserializeOwned>(rest: &mut &[u8]) -> Result<T, io::Error> {
    bincode::deserialize_from(rest).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("snapshot format 1: {e}"),
        )
    })
}

/// Whether `bytes` is exactly one encoded set of node ids: a `u64` count `n`, then `n` ids.
fn is_one_id_set(bytes: &[u8]) -> bool {
    let Some((count, ids)) = bytes.split_first_chunk::<8>() else {
        return false;
    };
    u64::from_le_bytes(*count)
        .checked_mul(8)
        .is_some_and(|len| usize::try_from(len) == Ok(ids.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_set_is_recognised_exactly() {
        let set: BTreeSet<NodeId> = (1..=3).collect();
        let bytes = bincode::serialize(&set).unwrap();
        assert!(is_one_id_set(&bytes));
        assert!(!is_one_id_set(&bytes[..bytes.len() - 1]));
        assert!(!is_one_id_set(&[bytes.clone(), vec![0]].concat()));
        assert!(is_one_id_set(&0u64.to_le_bytes()));
        assert!(!is_one_id_set(&u64::MAX.to_le_bytes()));
        assert!(!is_one_id_set(&[]));
    }

    #[test]
    fn each_level_writes_its_format_and_reads_back() {
        for (level, format) in [(1u8, 3u8), (2, 4)] {
            let file = SnapshotFile {
                meta: SnapshotMetaOf::<TypeConfig>::default(),
                state: PersistedState {
                    version: 5,
                    ..Default::default()
                },
                members_seen: (1..=2).collect(),
                level,
            };
            let bytes = encode_file(&file).unwrap();
            assert_eq!(bytes[0], format);
            let back = decode_file(&bytes).unwrap();
            assert_eq!(back.level, level);
            assert_eq!(back.state, file.state);
        }
    }

    #[test]
    fn format_3_round_trips_and_carries_its_number() {
        let file = SnapshotFile {
            meta: SnapshotMetaOf::<TypeConfig>::default(),
            state: PersistedState {
                version: 5,
                idempotency: vec![("k".into(), 4, 9)],
                idempotency_digests: vec![Some([7; 32])],
                ..Default::default()
            },
            members_seen: (1..=2).collect(),
            level: 1,
        };
        let bytes = encode_file(&file).unwrap();
        assert_eq!(bytes[0], 3);
        let back = decode_file(&bytes).unwrap();
        assert_eq!(back.state, file.state);
        assert_eq!(back.members_seen, file.members_seen);
        let (_, same) = decode_to_written_format(bytes.clone()).unwrap();
        assert_eq!(same, bytes);
    }

    /// Format 2 as its writers laid it out: the state's fields in a row, no digests. Read as
    /// format 3 with the keys kept and no digests, and re-encoded as format 3.
    #[test]
    fn format_2_reads_with_its_keys_and_no_digests() {
        let first = PersistedStateV1 {
            version: 7,
            idempotency: vec![("k".into(), 6, 9)],
            ..Default::default()
        };
        let members: BTreeSet<NodeId> = (1..=3).collect();
        let written = (
            SnapshotMetaOf::<TypeConfig>::default(),
            first.clone(),
            PersistedTokens::default(),
            PersistedCredentials::default(),
            members.clone(),
        );
        let mut bytes = vec![2];
        bytes.extend(bincode::serialize(&written).unwrap());
        let (file, now) = decode_to_written_format(bytes).unwrap();
        assert_eq!(file.state, PersistedState::from(first));
        assert!(file.state.idempotency_digests.is_empty());
        assert_eq!(file.members_seen, members);
        assert_eq!(now[0], 3);
    }
}
