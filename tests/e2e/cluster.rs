//! A three-node cluster on loopback, bootstrapped statically: a write through any node (followers
//! forward to the leader) replicates over the peer transport and every node answers at the written
//! version. (Membership changes and failure tests belong to the cluster issue.)

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tempfile::TempDir;

use crate::harness::Api;

struct Member {
    child: Child,
    api: Api,
    _data: TempDir,
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

async fn start_cluster(n: u64) -> Vec<Member> {
    let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
    let spec = ports
        .iter()
        .enumerate()
        .map(|(i, (a, p))| format!("{}=127.0.0.1:{a}/127.0.0.1:{p}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let members: Vec<Member> = ports
        .iter()
        .enumerate()
        .map(|(i, (a, p))| {
            let data = TempDir::with_prefix("verdict-e2e-cluster-").expect("data dir");
            let child = Command::new(env!("CARGO_BIN_EXE_verdict"))
                .args(["serve", "--node-id", &(i + 1).to_string()])
                .arg("--data-dir")
                .arg(data.path())
                .args(["--listen", &format!("127.0.0.1:{a}")])
                .args(["--peer-listen", &format!("127.0.0.1:{p}")])
                .args(["--initial-cluster", &spec])
                .env("VERDICT_CLUSTER_SECRET", "e2e-secret")
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn verdict serve");
            Member {
                child,
                api: Api::new(&format!("http://127.0.0.1:{a}")),
                _data: data,
            }
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    for m in &members {
        loop {
            match m.api.try_get("/readyz").await {
                Ok(r) if r.status == 200 => break,
                _ if Instant::now() > deadline => panic!("cluster not ready within 30 s"),
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
    members
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_three_node_cluster_replicates_writes_to_every_node() {
    let members = start_cluster(3).await;
    // Every node agrees on the leader and the membership.
    let views: Vec<Value> = cluster_views(&members).await;
    let leader = views[0]["leader"].as_u64().expect("a leader");
    for v in &views {
        assert_eq!(v["leader"].as_u64(), Some(leader), "{v}");
        assert_eq!(v["members"].as_array().map(Vec::len), Some(3), "{v}");
    }
    let leader_api = &members[(leader - 1) as usize].api;
    let request = json!({"subject": {"type": "User", "id": "alice"}, "action": {"name": "view"},
                         "resource": {"type": "Doc", "id": "d1"}});
    for (i, effect) in ["permit", "forbid"].iter().enumerate() {
        let version = leader_api
            .put_policy(
                &format!("p{i}"),
                &format!("{effect}(principal == User::\"alice\", action, resource);"),
            )
            .await;
        let expect = *effect == "permit";
        for m in &members {
            let resp = m.api.evaluate_at(&request, version).await.ok();
            assert_eq!(resp.json["decision"], json!(expect), "{}", resp.text);
            assert!(resp.version_header() >= version, "{}", resp.text);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_any_node_is_visible_on_every_node() {
    let members = start_cluster(3).await;
    let request = |id: usize| {
        json!({"subject": {"type": "User", "id": format!("u{id}")}, "action": {"name": "view"},
               "resource": {"type": "Doc", "id": "d1"}})
    };
    for (i, through) in members.iter().enumerate() {
        let version = through
            .api
            .put_policy(
                &format!("via-{i}"),
                &format!("permit(principal == User::\"u{i}\", action, resource);"),
            )
            .await;
        for m in &members {
            let resp = m.api.evaluate_at(&request(i), version).await.ok();
            assert_eq!(
                resp.json["decision"],
                json!(true),
                "write via node {} then read: {}",
                i + 1,
                resp.text
            );
        }
    }
    // Every node holds all three policies at the same version.
    let mut lists = Vec::new();
    for m in &members {
        let resp = m.api.evaluate_at(&request(0), 0).await.ok();
        lists.push((
            m.api.get("/v1/policies").await.ok().json["policies"].clone(),
            resp.version_header(),
        ));
    }
    assert!(
        lists
            .iter()
            .all(|(p, _)| p.as_array().map(Vec::len) == Some(3)),
        "{lists:?}"
    );
}

async fn cluster_views(members: &[Member]) -> Vec<Value> {
    let mut out = Vec::new();
    for m in members {
        out.push(m.api.get("/v1/cluster").await.ok().json);
    }
    out
}
