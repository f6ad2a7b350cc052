//! The state machine publishes a batch only once the committed index covering it is on disk
//! (issue #12): real sled log store, real state machine, openraft's own entry types.

use std::io;
use std::time::Duration;

use openraft::alias::EntryOf;
use openraft::entry::RaftEntry;
use openraft::storage::RaftLogStorage;
use openraft::storage::RaftStateMachine;
use openraft::testing::log_id;
use verdict_cluster::log_store::LogStore;
use verdict_cluster::state_machine::StateMachine;
use verdict_cluster::types::TypeConfig;

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_published_only_after_its_commit_is_flushed() -> TestResult {
    let dir = tempfile::tempdir()?;
    let db = sled::Config::new().path(dir.path().join("raft")).open()?;
    let mut log = LogStore::open(db)?;
    let mut sm = StateMachine::open(&dir.path().join("snapshots"))?
        .publishing_when_durable(log.durable_commit());
    let published = sm.published();
    let entries: Vec<EntryOf<TypeConfig>> = (1..=3)
        .map(|i| EntryOf::<TypeConfig>::new_blank(log_id::<TypeConfig>(1, 1, i)))
        .collect();
    let mut apply = tokio::spawn(async move {
        let stream =
            futures::stream::iter(entries.into_iter().map(|e| Ok::<_, io::Error>((e, None))));
        sm.apply(stream).await
    });

    // Applied but not committed on disk: readers still see the old version.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !apply.is_finished(),
        "apply returned before its commit was durable"
    );
    assert_eq!(published.load().version(), 0);

    // A committed index below the batch's end is not enough either.
    log.save_committed(Some(log_id::<TypeConfig>(1, 1, 2)))
        .await?;
    let early = tokio::time::timeout(Duration::from_millis(300), &mut apply).await;
    assert!(early.is_err(), "published at 3 with only 2 committed");
    assert_eq!(published.load().version(), 0);

    log.save_committed(Some(log_id::<TypeConfig>(1, 1, 3)))
        .await?;
    tokio::time::timeout(Duration::from_secs(10), apply).await???;
    assert_eq!(published.load().version(), 3);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_committed_index_found_at_open_needs_no_flush() -> TestResult {
    let dir = tempfile::tempdir()?;
    {
        let db = sled::Config::new().path(dir.path().join("raft")).open()?;
        let mut log = LogStore::open(db.clone())?;
        log.save_committed(Some(log_id::<TypeConfig>(1, 1, 5)))
            .await?;
        db.flush_async().await?;
    }
    let db = sled::Config::new().path(dir.path().join("raft")).open()?;
    let log = LogStore::open(db)?;
    // Start-up replay re-applies up to the index on disk; it must not wait for a write.
    tokio::time::timeout(Duration::from_millis(100), log.durable_commit().covers(5)).await??;
    Ok(())
}
