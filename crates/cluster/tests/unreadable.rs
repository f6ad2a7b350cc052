//! A member never wedges on what it cannot read (issue #14, item 2): a snapshot of a format newer
//! than this release reads, sent by a "leader" of a newer release, makes the member stop applying
//! (no panic, no silent skip), report not-ready with the kind, the format number and the release
//! that would read it, and keep its last published version for decisions. A real member: sled
//! log, state machine, openraft, driven through its peer service as another member would.

use std::collections::BTreeSet;
use std::time::Duration;
use std::time::Instant;

use openraft::alias::SnapshotMetaOf;
use openraft::testing::log_id;
use openraft::Membership;
use openraft::StoredMembership;
use verdict_cluster::codec::encode_as;
use verdict_cluster::codec::NEWEST_READ;
use verdict_cluster::network::SnapshotWire;
use verdict_cluster::types::TypeConfig;
use verdict_cluster::Bootstrap;
use verdict_cluster::Limits;
use verdict_cluster::Node;
use verdict_cluster::NodeInfo;
use verdict_cluster::NodeOptions;
use verdict_cluster::PeerService;
use verdict_engine::Command;
use verdict_engine::Write;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn options(dir: &std::path::Path) -> NodeOptions {
    NodeOptions {
        node_id: 1,
        data_dir: dir.to_path_buf(),
        info: NodeInfo {
            api_addr: "127.0.0.1:1".into(),
            peer_addr: "127.0.0.1:2".into(),
        },
        cluster_secret: "s".into(),
        bootstrap: Bootstrap::Single,
        snapshot_every: 10_000,
        keep_log_behind_snapshot: 1000,
        limits: Limits {
            max_lag: 1000,
            max_leader_silence: Duration::from_secs(3),
        },
        history_max_bytes: 1 << 20,
        peer_tls: None,
    }
}

async fn wait<T>(within: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_of_a_newer_format_stops_applying_and_says_why() -> TestResult {
    let dir = tempfile::tempdir()?;
    let node = Node::start(options(dir.path())).await?;
    wait(Duration::from_secs(10), || node.is_leader().then_some(()))
        .await
        .ok_or("never led")?;
    let write = Write {
        command: Command::UpsertEntities {
            json: r#"[{"uid": {"type": "User", "id": "alice"}, "attrs": {}, "parents": []}]"#
                .into(),
        },
        if_match: None,
        idempotency_key: None,
        stamped_ms: 1,
    };
    let (version, _) = node.write(write).await?;
    let before = node.published().load_full();
    assert_eq!(before.version(), version);
    assert!(
        node.not_ready_reason().is_none(),
        "{:?}",
        node.not_ready_reason()
    );

    // A "leader" of a newer release, at a higher term, sends a snapshot whose format this
    // release does not read.
    let newer = NEWEST_READ.snapshot + 1;
    let term = node.status().term + 5;
    let membership =
        Membership::<u64, NodeInfo>::new_with_defaults(vec![BTreeSet::from([1u64, 2])], [1, 2]);
    let meta = SnapshotMetaOf::<TypeConfig> {
        last_log_id: Some(log_id::<TypeConfig>(term, 2, version + 50)),
        last_membership: StoredMembership::new(
            Some(log_id::<TypeConfig>(term, 2, version + 1)),
            membership,
        ),
    };
    let wire = SnapshotWire {
        vote: openraft::Vote::new_committed(term, 2),
        meta,
        data: vec![newer, 1, 2, 3],
    };
    let service = PeerService::new(node.clone());
    let body = encode_as(1, &wire)?;
    // The answer may be an error or a stopped Raft; what matters is what the member does next.
    let _ = service.handle("snapshot", &body, Some(1)).await;

    let reason = wait(Duration::from_secs(10), || node.not_ready_reason())
        .await
        .ok_or("still ready after an unreadable snapshot")?;
    assert!(
        reason.contains(&format!(
            "snapshot format {newer} was written by a newer release"
        )),
        "{reason}"
    );
    assert!(
        reason.contains(&format!(
            "upgrade this node to a release that reads snapshot format {newer}"
        )),
        "{reason}"
    );
    assert!(reason.contains("stopped applying"), "{reason}");
    // The last version stays published: decisions keep answering from it.
    let after = node.published().load_full();
    assert_eq!(after.version(), version);
    assert_eq!(after.entity_count(), 1);
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_request_of_a_newer_format_is_refused_and_reported() -> TestResult {
    let dir = tempfile::tempdir()?;
    let node = Node::start(options(dir.path())).await?;
    wait(Duration::from_secs(10), || {
        (node.is_leader() && node.not_ready_reason().is_none()).then_some(())
    })
    .await
    .ok_or("never ready")?;
    let newer = NEWEST_READ.peer_message + 1;
    let service = PeerService::new(node.clone());
    let refused = service
        .handle("append", &[newer, 0, 0, 0], Some(newer))
        .await;
    assert!(
        refused.is_err(),
        "an append of peer message format {newer} was read"
    );
    let reason = node
        .not_ready_reason()
        .ok_or("ready after an unreadable request")?;
    assert!(
        reason.contains(&format!(
            "peer message format {newer} was written by a newer release"
        )),
        "{reason}"
    );
    node.shutdown().await;
    Ok(())
}
