//! openraft's own storage test suite, run against Verdict's sled log store and state machine.

use openraft::testing::log::StoreBuilder;
use openraft::testing::log::Suite;
use openraft::type_config::TypeConfigExt;
use openraft::StorageError;
use tempfile::TempDir;
use verdict_cluster::log_store::LogStore;
use verdict_cluster::state_machine::StateMachine;
use verdict_cluster::types::TypeConfig;

/// Builds stores with `segment_len` entries per log segment (`None`: the default).
struct Builder {
    segment_len: Option<u64>,
}

fn err(e: impl std::fmt::Display) -> StorageError<TypeConfig> {
    StorageError::read(TypeConfig::err_from_error(&std::io::Error::other(
        e.to_string(),
    )))
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let dir = TempDir::new().map_err(err)?;
        let db = sled::Config::new()
            .path(dir.path().join("raft"))
            .open()
            .map_err(err)?;
        let log = match self.segment_len {
            Some(len) => LogStore::open_with_segment_len(db, len),
            None => LogStore::open(db),
        }
        .map_err(err)?;
        let sm = StateMachine::open(&dir.path().join("snapshots")).map_err(err)?;
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite_passes() -> Result<(), StorageError<TypeConfig>> {
    Suite::test_all(Builder { segment_len: None }).await?;
    Ok(())
}

/// The suite's logs are short: with three entries per segment every test crosses segment
/// boundaries (appends, reads, truncations and purges that span segments).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite_passes_with_tiny_segments() -> Result<(), StorageError<TypeConfig>>
{
    Suite::test_all(Builder {
        segment_len: Some(3),
    })
    .await?;
    Ok(())
}
