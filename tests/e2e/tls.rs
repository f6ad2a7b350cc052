//! TLS: a three-node cluster with HTTPS on every API and peer listener and peer mutual TLS, made
//! with the example's own certificate script (examples/tls/gen-certs.sh, openssl). Writes through
//! a follower reach every node over https, the CLI works with VERDICT_CA_FILE, the peer listener
//! refuses plain HTTP and clients without a certificate from the peer CA, and SIGHUP swaps a
//! node's API certificate (a broken file is refused and the old certificate kept).

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde_json::{json, Value};

use crate::harness::cluster::{wait_for, Cluster, SECRET};

fn gen_certs(dir: &Path, names: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/tls/gen-certs.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .arg(dir)
        .args(names)
        .output()
        .expect("run examples/tls/gen-certs.sh (needs bash and openssl)");
    assert!(
        out.status.success(),
        "gen-certs.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn copy_pair(dir: &Path, from: &str, to: &str) {
    for suffix in [".pem", "-key.pem"] {
        std::fs::copy(
            dir.join(format!("{from}{suffix}")),
            dir.join(format!("{to}{suffix}")),
        )
        .expect("copy certificate files");
    }
}

/// The DER of the first certificate in a PEM file.
fn der(path: &Path) -> Vec<u8> {
    CertificateDer::from_pem_file(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .to_vec()
}

/// The leaf certificate a new TLS connection to `url` is shown.
async fn served_cert(url: &str, ca: &[u8]) -> Result<Vec<u8>, String> {
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca).expect("CA PEM"))
        .tls_info(true)
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .expect("build client");
    let resp = client
        .get(format!("{url}/livez"))
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    let info = resp
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .ok_or("no TLS info on the response")?;
    info.peer_certificate()
        .map(<[u8]>::to_vec)
        .ok_or_else(|| "no peer certificate".to_string())
}

/// A client of peer listeners trusting `ca`, showing `identity` (certificate and key PEM).
fn peer_client(ca: &[u8], identity: Option<Vec<u8>>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca).expect("CA PEM"))
        .timeout(Duration::from_secs(5));
    if let Some(pem) = identity {
        builder = builder.identity(reqwest::Identity::from_pem(&pem).expect("identity PEM"));
    }
    builder.build().expect("build client")
}

/// `POST /raft/status` on a peer listener: the status code, or the transport error.
async fn peer_status(
    client: &reqwest::Client,
    url: &str,
    secret: Option<&str>,
) -> Result<u16, String> {
    let mut req = client.post(format!("{url}/raft/status"));
    if let Some(s) = secret {
        req = req.header("verdict-cluster-secret", s);
    }
    req.send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| format!("{e:?}"))
}

fn identity(dir: &Path, name: &str) -> Vec<u8> {
    let mut pem = std::fs::read(dir.join(format!("{name}.pem"))).expect("read cert");
    pem.extend(std::fs::read(dir.join(format!("{name}-key.pem"))).expect("read key"));
    pem
}

/// Runs the CLI against `url`, trusting `ca_file` when given.
async fn cli(url: &str, ca_file: Option<&Path>, args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_verdict"));
    command
        .args(args)
        .env("VERDICT_URL", url)
        .env_remove("VERDICT_CA_FILE")
        .kill_on_drop(true);
    if let Some(ca) = ca_file {
        command.env("VERDICT_CA_FILE", ca);
    }
    match tokio::time::timeout(Duration::from_secs(60), command.output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => panic!("cannot run `verdict {}`: {e}", args.join(" ")),
        Err(_) => panic!("`verdict {}` did not finish within 60 s", args.join(" ")),
    }
}

fn request(user: &str) -> Value {
    json!({"subject": {"type": "User", "id": user}, "action": {"name": "view"},
           "resource": {"type": "Doc", "id": "d1"}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_with_peer_mtls_serves_https_refuses_strangers_and_reloads_on_sighup() {
    let tmp = tempfile::TempDir::with_prefix("verdict-e2e-tls-").expect("temp dir");
    let d = tmp.path();
    gen_certs(d, &["node1", "node2", "node3"]);
    // The API listeners get their own copies, so rotating one does not touch the peer files.
    for i in 1..=3 {
        copy_pair(d, &format!("node{i}"), &format!("api-node{i}"));
    }
    let ca_path = d.join("ca.pem");
    let ca = std::fs::read(&ca_path).expect("read CA");
    let file = |name: String| d.join(name).display().to_string();
    let c = Cluster::start_tls(3, &ca, |id| {
        vec![
            "--tls-cert-file".into(),
            file(format!("api-node{id}.pem")),
            "--tls-key-file".into(),
            file(format!("api-node{id}-key.pem")),
            "--tls-peer-cert-file".into(),
            file(format!("node{id}.pem")),
            "--tls-peer-key-file".into(),
            file(format!("node{id}-key.pem")),
            "--tls-peer-ca-file".into(),
            file("ca.pem".into()),
            "--tls-peer-client-auth".into(),
        ]
    })
    .await;

    // A write through a follower (forwarded to the leader over peer TLS) is answered on every
    // node over https.
    let leader = c.leader(&[1, 2, 3], Duration::from_secs(10)).await;
    let follower = if leader == 1 { 2 } else { 1 };
    let version = c
        .member(follower)
        .api()
        .put_policy(
            "tls-alice",
            r#"permit(principal == User::"alice", action, resource);"#,
        )
        .await;
    for m in &c.members {
        assert!(m.url().starts_with("https://"), "{}", m.url());
        let resp = m.api().evaluate_at(&request("alice"), version).await.ok();
        assert_eq!(
            resp.json["decision"],
            json!(true),
            "node {}: {}",
            m.id,
            resp.text
        );
    }
    let plain = reqwest::Client::new()
        .get(format!("http://{}/readyz", c.member(1).api_addr))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(
        plain.is_err(),
        "plain HTTP on a TLS API listener answered: {plain:?}"
    );

    // The CLI over TLS: trusted with VERDICT_CA_FILE, refused with a hint without it.
    let url = c.member(follower).url();
    let out = cli(
        &url,
        Some(&ca_path),
        &["--output", "json", "cluster", "status"],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cluster status over TLS: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: Value = serde_json::from_str(&stdout).expect("JSON status");
    assert_eq!(
        status["members"].as_array().map(Vec::len),
        Some(3),
        "{status}"
    );
    let check = cli(
        &url,
        Some(&ca_path),
        &[
            "check",
            "--subject",
            "User:alice",
            "--action",
            "view",
            "--resource",
            "Doc:d1",
        ],
    )
    .await;
    assert_eq!(
        check.status.code(),
        Some(0),
        "check over TLS: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let untrusted = cli(&url, None, &["cluster", "status"]).await;
    let stderr = String::from_utf8_lossy(&untrusted.stderr);
    assert_eq!(untrusted.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("VERDICT_CA_FILE"), "{stderr}");

    // The peer listener: a member's certificate and the secret get in; no certificate, a
    // certificate from another CA, or plain HTTP do not; the secret is still required.
    let peer_url = format!("https://{}", c.member(leader).peer_addr);
    let member = peer_client(&ca, Some(identity(d, "node2")));
    assert_eq!(peer_status(&member, &peer_url, Some(SECRET)).await, Ok(200));
    assert_eq!(peer_status(&member, &peer_url, None).await, Ok(401));
    let anonymous = peer_client(&ca, None);
    let refused = peer_status(&anonymous, &peer_url, Some(SECRET)).await;
    assert!(refused.is_err(), "no client certificate: {refused:?}");
    let other = d.join("other-ca");
    gen_certs(&other, &["stranger"]);
    let stranger = peer_client(&ca, Some(identity(&other, "stranger")));
    let refused = peer_status(&stranger, &peer_url, Some(SECRET)).await;
    assert!(refused.is_err(), "certificate of another CA: {refused:?}");
    let plain_peer = format!("http://{}", c.member(leader).peer_addr);
    let refused = peer_status(&reqwest::Client::new(), &plain_peer, Some(SECRET)).await;
    assert!(
        refused.is_err(),
        "plain HTTP to the peer listener: {refused:?}"
    );

    // SIGHUP: node 1 swaps its API certificate for a new one; new connections see it.
    let m1 = c.member(1);
    let old = der(&d.join("api-node1.pem"));
    assert_eq!(served_cert(&m1.url(), &ca).await, Ok(old.clone()));
    gen_certs(d, &["node1-rotated"]);
    copy_pair(d, "node1-rotated", "api-node1");
    let new = der(&d.join("node1-rotated.pem"));
    assert_ne!(old, new);
    m1.sighup();
    let seen = wait_for(Duration::from_secs(10), || async {
        match served_cert(&m1.url(), &ca).await {
            Ok(cert) if cert == new => Ok(()),
            Ok(_) => Err("still the old certificate".to_string()),
            Err(e) => Err(e),
        }
    })
    .await;
    if let Err(e) = seen {
        panic!(
            "node 1 did not serve the new certificate within 10 s of SIGHUP: {e}\n{}",
            m1.log_tail(30)
        );
    }
    assert!(m1.log_contains("reloaded the API certificate"));

    // A broken file on SIGHUP: an error in the log, and the certificate in use stays.
    std::fs::write(d.join("api-node1.pem"), "not a certificate\n").expect("write");
    m1.sighup();
    let logged = wait_for(Duration::from_secs(10), || async {
        if m1.log_contains("cannot reload the API certificate") {
            Ok(())
        } else {
            Err("no reload error logged".to_string())
        }
    })
    .await;
    assert_eq!(logged, Ok(()), "{}", m1.log_tail(30));
    assert_eq!(served_cert(&m1.url(), &ca).await, Ok(new));

    // The cluster kept working through both reloads (node 1's peer material was reloaded too).
    let version = m1
        .api()
        .put_policy(
            "tls-bob",
            r#"permit(principal == User::"bob", action, resource);"#,
        )
        .await;
    for m in &c.members {
        let resp = m.api().evaluate_at(&request("bob"), version).await.ok();
        assert_eq!(
            resp.json["decision"],
            json!(true),
            "node {}: {}",
            m.id,
            resp.text
        );
    }
}
