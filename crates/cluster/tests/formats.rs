//! Every persisted format an older release wrote still loads, and a newer one is refused with what
//! to do. The fixtures under `tests/fixtures/` were written by the older releases' own binaries
//! (`tests/fixtures/generate.sh`, one directory per release): the sled values of their Raft log
//! and metadata, and their newest snapshot file. They are loaded through the real log store and
//! state machine.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::path::PathBuf;

use openraft::alias::EntryOf;
use openraft::storage::RaftLogStorage;
use openraft::storage::RaftStateMachine;
use openraft::EntryPayload;
use openraft::RaftLogReader;
use tempfile::TempDir;
use verdict_cluster::codec::decode;
use verdict_cluster::codec::FormatError;
use verdict_cluster::codec::Kind;
use verdict_cluster::codec::NEWEST_READ;
use verdict_cluster::log_store::LogStore;
use verdict_cluster::state_machine::StateMachine;
use verdict_cluster::types::TypeConfig;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// One older release's fixture and what it holds.
struct Release {
    /// The directory under `tests/fixtures/`.
    dir: &'static str,
    /// The kind of every log entry, in index order from 0.
    entries: Vec<&'static str>,
    /// Whether its state has token keys and revocations.
    tokens: bool,
    /// Whether its state has API credentials.
    credentials: bool,
    /// Whether it purged the log (releases with `keep_log_behind_snapshot`).
    purged: bool,
}

/// The writes of tests/fixtures/generate.sh, in order.
const BASE: [&str; 11] = [
    "put_policy",
    "put_policy",
    "delete_policy",
    "replace_policies",
    "replace_policies",
    "put_schema",
    "delete_schema",
    "upsert_entities",
    "delete_entities",
    "replace_entities",
    "upsert_entities",
];
const TOKENS: [&str; 4] = ["rotate_keys", "rotate_keys", "revoke", "revoke"];
const CREDENTIALS: [&str; 3] = [
    "create_credential",
    "create_credential",
    "revoke_credential",
];

fn releases() -> Vec<Release> {
    let start = ["membership", "blank"];
    vec![
        // Snapshot layout 1: no membership history.
        Release {
            dir: "format1-base-69652bd",
            entries: [&start[..], &BASE].concat(),
            tokens: false,
            credentials: false,
            purged: false,
        },
        // Snapshot layout 2: with the node ids seen.
        Release {
            dir: "format1-members-ab57cf8",
            entries: [&start[..], &BASE].concat(),
            tokens: false,
            credentials: false,
            purged: true,
        },
        // Snapshot layout 3: with tokens.
        Release {
            dir: "format1-tokens-a525be3",
            entries: [&start[..], &BASE, &TOKENS].concat(),
            tokens: true,
            credentials: false,
            purged: true,
        },
        // Snapshot layout 4: with credentials; the last release before explicit formats.
        Release {
            dir: "format1-credentials-8ff5677",
            entries: [
                &start[..],
                &["bootstrap_admin"],
                &BASE,
                &TOKENS,
                &CREDENTIALS,
            ]
            .concat(),
            tokens: true,
            credentials: true,
            purged: true,
        },
    ]
}

fn fixture(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(dir)
}

fn kind_of(entry: &EntryOf<TypeConfig>) -> &'static str {
    match &entry.payload {
        EntryPayload::Blank => "blank",
        EntryPayload::Membership(_) => "membership",
        EntryPayload::Normal(req) => req.0.command.kind(),
    }
}

/// Every value file of a fixture's `raft/` directory: `(tree, key, path)`. The key is hex unless
/// it is a plain word (see examples/dump_sled.rs).
type Values = Vec<(String, Vec<u8>, PathBuf)>;

fn sled_values(raft: &Path) -> Result<Values, Box<dyn std::error::Error>> {
    let name_of = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    let mut out = Vec::new();
    for tree_dir in fs::read_dir(raft)? {
        let tree_dir = tree_dir?.path();
        let tree = name_of(&tree_dir).ok_or("tree")?;
        for value in fs::read_dir(&tree_dir)? {
            let path = value?.path();
            let name = name_of(&path).ok_or("key")?;
            let key = if name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                name.into_bytes()
            } else {
                (0..name.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&name[i..i + 2], 16))
                    .collect::<Result<Vec<u8>, _>>()?
            };
            out.push((tree.clone(), key, path));
        }
    }
    out.sort();
    Ok(out)
}

/// The sled database the fixture's `raft/` directory describes.
fn rebuild_sled(raft: &Path, into: &Path) -> Result<sled::Db, Box<dyn std::error::Error>> {
    let db = sled::Config::new().path(into).open()?;
    for (tree, key, path) in sled_values(raft)? {
        db.open_tree(tree)?.insert(key, fs::read(&path)?)?;
    }
    db.flush()?;
    Ok(db)
}

/// The raw log values of a fixture, by index (keys are big-endian, so they sort by index).
fn raw_entries(raft: &Path) -> Result<Vec<Vec<u8>>, Box<dyn std::error::Error>> {
    Ok(sled_values(raft)?
        .into_iter()
        .filter(|(tree, _, _)| tree == "log" || tree.starts_with("log."))
        .map(|(_, _, path)| fs::read(path))
        .collect::<Result<_, _>>()?)
}

#[test]
fn log_entries_of_every_older_release_decode_in_order() -> TestResult {
    for release in releases() {
        let raw = raw_entries(&fixture(release.dir).join("raft"))?;
        let kinds = raw
            .iter()
            .map(|bytes| {
                assert_eq!(
                    bytes[0], 1,
                    "{}: every older entry carries format 1",
                    release.dir
                );
                decode::<EntryOf<TypeConfig>>(Kind::LogEntry, bytes).map(|e| kind_of(&e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        assert_eq!(kinds, release.entries, "{}", release.dir);
    }
    Ok(())
}

#[tokio::test]
async fn the_raft_log_and_metadata_of_every_older_release_open() -> TestResult {
    for release in releases() {
        let tmp = TempDir::new()?;
        let db = rebuild_sled(&fixture(release.dir).join("raft"), &tmp.path().join("raft"))?;
        let mut log = LogStore::open(db)?;
        let last = release.entries.len() as u64 - 1;
        let vote = log.read_vote().await?.ok_or("no vote")?;
        assert_eq!(vote.leader_id().node_id, 1, "{}", release.dir);
        let committed = log.read_committed().await?;
        assert!(
            committed.is_some_and(|c| c.index <= last),
            "{}",
            release.dir
        );
        let state = log.get_log_state().await?;
        assert_eq!(
            state.last_log_id.map(|l| l.index),
            Some(last),
            "{}",
            release.dir
        );
        let first = match state.last_purged_log_id {
            Some(purged) => {
                assert!(release.purged, "{}", release.dir);
                purged.index + 1
            }
            None => {
                assert!(!release.purged, "{}", release.dir);
                0
            }
        };
        let entries = log.try_get_log_entries(first..=last).await?;
        let kinds: Vec<_> = entries.iter().map(kind_of).collect();
        assert_eq!(kinds, release.entries[first as usize..], "{}", release.dir);
    }
    Ok(())
}

#[tokio::test]
async fn the_snapshot_files_of_every_older_release_load() -> TestResult {
    for release in releases() {
        let tmp = TempDir::new()?;
        let snapshots = tmp.path().join("snapshots");
        fs::create_dir_all(&snapshots)?;
        for file in fs::read_dir(fixture(release.dir).join("snapshots"))? {
            let file = file?.path();
            let bytes = fs::read(&file)?;
            assert_eq!(
                bytes[0], 1,
                "{}: older snapshots carry format 1",
                release.dir
            );
            fs::write(snapshots.join(file.file_name().ok_or("name")?), bytes)?;
        }
        let mut sm = StateMachine::open(&snapshots)?;
        let last = release.entries.len() as u64 - 1;
        let (applied, membership) = sm.applied_state().await?;
        assert_eq!(applied.map(|l| l.index), Some(last), "{}", release.dir);
        let voters: BTreeSet<u64> = membership.membership().voter_ids().collect();
        assert_eq!(voters, BTreeSet::from([1]), "{}", release.dir);
        assert_eq!(*sm.published().members_seen(), BTreeSet::from([1]));

        let state = sm.published().load().to_persisted();
        assert_eq!(state.version, last, "{}", release.dir);
        let policies: Vec<&str> = state.policies.iter().map(|p| p.0.as_str()).collect();
        assert_eq!(policies, ["p1", "p3"], "{}", release.dir);
        assert_eq!(state.schema, None, "{}", release.dir);
        assert_eq!(state.entities.len(), 2, "{}", release.dir);
        assert!(state
            .entities
            .iter()
            .any(|(json, _)| json.contains("alice")));
        let keys: Vec<&str> = state.idempotency.iter().map(|k| k.0.as_str()).collect();
        assert_eq!(keys, ["fixture-key"], "{}", release.dir);
        let tokens = &state.tokens;
        assert_eq!(
            (tokens.keys.list().len(), tokens.revocations.marks.len()),
            if release.tokens { (3, 3) } else { (0, 0) },
            "{}",
            release.dir
        );
        let credentials = &state.credentials;
        let ids: BTreeSet<&str> = credentials
            .credentials
            .iter()
            .map(|c| c.id.as_str())
            .collect();
        assert_eq!(
            (ids.len(), ids.contains("admin"), credentials.bootstrapped),
            if release.credentials {
                (2, true, true)
            } else {
                (0, false, false)
            },
            "{}",
            release.dir
        );

        // What this release sends a follower (and would store) is never format 1 again, and it
        // reads back as the same state.
        let current = sm.get_current_snapshot().await?.ok_or("no snapshot")?;
        let sent = current.snapshot.get_ref().clone();
        assert_eq!(sent[0], 3, "{}", release.dir);
        let other = TempDir::new()?;
        let mut follower = StateMachine::open(other.path())?;
        follower
            .install_snapshot(&current.meta, std::io::Cursor::new(sent))
            .await?;
        assert_eq!(follower.published().load().to_persisted(), state);
        let stored = fs::read_dir(other.path())?
            .map(|f| fs::read(f?.path()))
            .collect::<Result<Vec<_>, _>>()?;
        assert!(stored.iter().all(|b| b[0] == 3), "{}", release.dir);
    }
    Ok(())
}

#[test]
fn a_snapshot_of_a_newer_format_is_refused_with_what_to_do() -> TestResult {
    let tmp = TempDir::new()?;
    let mut bytes = fs::read(
        fixture("format1-credentials-8ff5677").join("snapshots/snap-00000000000000000020.bin"),
    )?;
    let newer = NEWEST_READ.snapshot + 1;
    bytes[0] = newer;
    fs::write(tmp.path().join("snap-00000000000000000020.bin"), bytes)?;
    let Err(e) = StateMachine::open(tmp.path()) else {
        return Err(format!("a snapshot of format {newer} was loaded").into());
    };
    assert!(matches!(
        FormatError::of(&e),
        Some(FormatError::Newer { format, .. }) if *format == newer
    ));
    let text = e.to_string();
    assert!(
        text.contains(&format!(
            "snapshot format {newer} was written by a newer release"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "upgrade this node to a release that reads snapshot format {newer}"
        )),
        "{text}"
    );
    Ok(())
}

#[tokio::test]
async fn a_log_entry_or_vote_of_a_newer_format_is_refused_with_what_to_do() -> TestResult {
    let source = fixture("format1-credentials-8ff5677").join("raft");
    for (tree, key, kind, newer) in [
        (
            "log.0000000000000000",
            "0000000000000014",
            "log entry",
            NEWEST_READ.log_entry + 1,
        ),
        ("meta", "vote", "raft metadata", NEWEST_READ.raft_meta + 1),
    ] {
        let tmp = TempDir::new()?;
        let db = rebuild_sled(&source, &tmp.path().join("raft"))?;
        let path = source.join(tree).join(key);
        let mut bytes = fs::read(&path)?;
        bytes[0] = newer;
        let key_bytes = if kind == "log entry" {
            20u64.to_be_bytes().to_vec()
        } else {
            key.as_bytes().to_vec()
        };
        db.open_tree(tree)?.insert(key_bytes, bytes)?;
        let refused = match LogStore::open(db) {
            Err(e) => e.to_string(),
            Ok(mut log) => match (log.read_vote().await, log.try_get_log_entries(0..=20).await) {
                (Err(e), _) | (_, Err(e)) => e.to_string(),
                (Ok(_), Ok(_)) => return Err(format!("a {kind} of format {newer} was read").into()),
            },
        };
        assert!(
            refused.contains(&format!(
                "{kind} format {newer} was written by a newer release"
            )),
            "{refused}"
        );
        assert!(
            refused.contains(&format!(
                "upgrade this node to a release that reads {kind} format {newer}"
            )),
            "{refused}"
        );
    }
    Ok(())
}

/// The fixtures of releases with format levels: `(directory, snapshot format, active level)`.
/// Written by tests/fixtures/generate.sh: the previous release (commit a5c32ea, before levels:
/// what level 1 means) with era `credentials`, and this release with era `levels`.
const LEVEL_FIXTURES: [(&str, u8, u8); 2] = [
    ("format3-level1-a5c32ea", 3, 1),
    ("format4-level2-708c42f", 4, 2),
];

#[tokio::test]
async fn the_data_of_each_format_level_loads_and_is_written_back_at_its_level() -> TestResult {
    for (dir, format, level) in LEVEL_FIXTURES {
        let root = fixture(dir);
        // Every log entry decodes, in the log entry format of its level or older.
        for bytes in raw_entries(&root.join("raft"))? {
            assert!(bytes[0] <= NEWEST_READ.log_entry, "{dir}");
            decode::<EntryOf<TypeConfig>>(Kind::LogEntry, &bytes)?;
        }
        let tmp = TempDir::new()?;
        let db = rebuild_sled(&root.join("raft"), &tmp.path().join("raft"))?;
        let mut log = LogStore::open(db)?;
        let last = log.get_log_state().await?.last_log_id.ok_or("empty log")?;
        let first = log
            .get_log_state()
            .await?
            .last_purged_log_id
            .map_or(0, |p| p.index + 1);
        let kinds: Vec<_> = log
            .try_get_log_entries(first..=last.index)
            .await?
            .iter()
            .map(kind_of)
            .collect();
        assert_eq!(
            kinds.contains(&"raise_level"),
            level > 1,
            "{dir}: {kinds:?}"
        );

        let snapshots = tmp.path().join("snapshots");
        fs::create_dir_all(&snapshots)?;
        for file in fs::read_dir(root.join("snapshots"))? {
            let file = file?.path();
            let bytes = fs::read(&file)?;
            assert_eq!(bytes[0], format, "{dir}");
            fs::write(snapshots.join(file.file_name().ok_or("name")?), bytes)?;
        }
        let mut sm = StateMachine::open(&snapshots)?;
        let published = sm.published().load_full();
        assert_eq!(published.format_level(), level, "{dir}");
        let state = published.to_persisted();
        let policies: Vec<&str> = state.policies.iter().map(|p| p.0.as_str()).collect();
        assert_eq!(policies, ["p1", "p3"], "{dir}");
        assert_eq!(state.entities.len(), 2, "{dir}");
        assert_eq!(state.credentials.credentials.len(), 2, "{dir}");
        let alice = published
            .entities()
            .find(|e| e.json.to_string().contains("alice"))
            .ok_or("no alice")?;
        // The `levels` era moved alice into a second group with `edit_parents`.
        assert_eq!(alice.parents.len(), level as usize, "{dir}");

        // What this release sends a follower (and would store) keeps the level's format: a
        // level-1 snapshot stays readable by the previous release.
        let current = sm.get_current_snapshot().await?.ok_or("no snapshot")?;
        let sent = current.snapshot.get_ref().clone();
        assert_eq!(sent[0], format, "{dir}");
        let other = TempDir::new()?;
        let mut follower = StateMachine::open(other.path())?;
        follower
            .install_snapshot(&current.meta, std::io::Cursor::new(sent))
            .await?;
        assert_eq!(follower.published().load().format_level(), level, "{dir}");
        assert_eq!(follower.published().load().to_persisted(), state, "{dir}");
    }
    Ok(())
}
