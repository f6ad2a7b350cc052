//! How a node enters Raft at start-up, read from its configuration: alone (a one-member cluster),
//! as one of a static member list, or by waiting to be added to a running cluster.

use verdict_cluster::Bootstrap;
use verdict_cluster::NodeInfo;

use crate::config::parse_initial_cluster;
use crate::config::Config;

/// The bootstrap `config` asks for, or why it cannot work (with the flag to fix).
pub fn choose(config: &Config) -> anyhow::Result<Bootstrap> {
    match &config.initial_cluster {
        None if config.join => {
            if config.cluster_secret.is_none() {
                anyhow::bail!(
                    "--join needs the cluster's shared --cluster-secret (or VERDICT_CLUSTER_SECRET)"
                );
            }
            Ok(Bootstrap::Join)
        }
        Some(_) if config.join => anyhow::bail!(
            "--join and --initial-cluster exclude each other: a joining node is added later by the cluster"
        ),
        None => Ok(Bootstrap::Single),
        Some(spec) => {
            let members = parse_initial_cluster(spec)?;
            if !members.iter().any(|(id, _, _)| *id == config.node_id) {
                anyhow::bail!(
                    "--initial-cluster does not name this node's id {}; add it or pass --node-id",
                    config.node_id
                );
            }
            if members.len() > 1 && config.cluster_secret.is_none() {
                anyhow::bail!(
                    "a multi-node cluster needs a shared --cluster-secret (or VERDICT_CLUSTER_SECRET) on every node"
                );
            }
            Ok(Bootstrap::Static(
                members
                    .into_iter()
                    .map(|(id, api_addr, peer_addr)| {
                        (
                            id,
                            NodeInfo {
                                api_addr,
                                peer_addr,
                            },
                        )
                    })
                    .collect(),
            ))
        }
    }
}

/// The addresses other members and forwarded writes use to reach this node.
pub fn node_info(config: &Config) -> NodeInfo {
    NodeInfo {
        api_addr: config
            .advertise_api
            .clone()
            .unwrap_or_else(|| config.listen.to_string()),
        peer_addr: config
            .advertise_peer
            .clone()
            .unwrap_or_else(|| config.peer_listen.to_string()),
    }
}

/// The secret peer RPCs must carry: the configured one, or for a node without one (a single node
/// needs no peers) a random one that keeps its peer listener closed to everyone.
pub fn cluster_secret(config: &Config) -> String {
    if let Some(s) = &config.cluster_secret {
        return s.clone();
    }
    use rand::Rng;
    let bytes: [u8; 32] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chooses_the_bootstrap_the_flags_ask_for() {
        let mut c = Config::default();
        assert!(matches!(choose(&c).unwrap(), Bootstrap::Single));
        c.join = true;
        let e = choose(&c).unwrap_err().to_string();
        assert!(e.contains("--cluster-secret"), "{e}");
        c.cluster_secret = Some("s".into());
        assert!(matches!(choose(&c).unwrap(), Bootstrap::Join));
        c.initial_cluster = Some("1=a:1/a:2".into());
        assert!(choose(&c).is_err(), "--join with --initial-cluster");
        c.join = false;
        c.node_id = 2;
        let e = choose(&c).unwrap_err().to_string();
        assert!(e.contains("node's id 2"), "{e}");
        c.initial_cluster = Some("1=a:1/a:2,2=b:1/b:2".into());
        assert!(matches!(choose(&c).unwrap(), Bootstrap::Static(m) if m.len() == 2));
        c.cluster_secret = None;
        assert!(choose(&c).is_err(), "several members need a secret");
    }
}
