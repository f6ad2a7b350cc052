//! [`Client`]'s cluster operations: status, membership, draining, the capacity pre-flight and
//! format-level upgrades (`docs/api.md`, "Cluster").

use reqwest::Method;

use crate::client::decode;
use crate::CapacityCheck;
use crate::Client;
use crate::ClusterStatus;
use crate::Drained;
use crate::Result;
use crate::Undrained;
use crate::UpgradeStatus;

impl Client {
    /// `GET /v1/cluster`.
    pub async fn cluster(&self) -> Result<ClusterStatus> {
        let resp = self
            .send(self.request(Method::GET, &["v1", "cluster"])?)
            .await?;
        decode(resp).await
    }

    /// `GET /v1/cluster/upgrade`: format levels, each member's release, what holds an upgrade back.
    pub async fn upgrade_status(&self) -> Result<UpgradeStatus> {
        let rb = self.request(Method::GET, &["v1", "cluster", "upgrade"])?;
        decode(self.send(rb).await?).await
    }

    /// `POST /v1/cluster/upgrade/finalize`: raises the active format level (default: the highest
    /// the answering node supports); the version of the raising entry.
    pub async fn finalize_upgrade(&self, level: Option<u8>) -> Result<u64> {
        let mut rb = self.request(Method::POST, &["v1", "cluster", "upgrade", "finalize"])?;
        if let Some(level) = level {
            rb = rb.json(&serde_json::json!({ "level": level }));
        }
        self.write(rb, None, None).await
    }

    /// `POST /v1/cluster/learners`: adds a node started with `--join` as a learner.
    pub async fn add_learner(&self, id: u64, api_addr: &str, peer_addr: &str) -> Result<u64> {
        let rb = self
            .request(Method::POST, &["v1", "cluster", "learners"])?
            .json(&serde_json::json!({"id": id, "api_addr": api_addr, "peer_addr": peer_addr}));
        self.write(rb, None, None).await
    }

    /// `PUT /v1/cluster/voters`: exactly `ids` vote; voters left out are removed.
    pub async fn set_voters(&self, ids: &[u64]) -> Result<u64> {
        let rb = self
            .request(Method::PUT, &["v1", "cluster", "voters"])?
            .json(&serde_json::json!({ "ids": ids }));
        self.write(rb, None, None).await
    }

    /// `DELETE /v1/cluster/members/{id}`.
    pub async fn remove_member(&self, id: u64) -> Result<u64> {
        let rb = self.request(
            Method::DELETE,
            &["v1", "cluster", "members", &id.to_string()],
        )?;
        self.write(rb, None, None).await
    }

    /// `POST /v1/cluster/transfer-leader`.
    pub async fn transfer_leader(&self, to: u64) -> Result<u64> {
        let rb = self
            .request(Method::POST, &["v1", "cluster", "transfer-leader"])?
            .json(&serde_json::json!({ "to": to }));
        self.write(rb, None, None).await
    }

    /// `POST /v1/node/drain` on this client's node.
    pub async fn drain(&self) -> Result<Drained> {
        let resp = self
            .send(self.request(Method::POST, &["v1", "node", "drain"])?)
            .await?;
        decode(resp).await
    }

    /// `POST /v1/cluster/members/{id}/drain`: drains member `id` through this client's node.
    pub async fn drain_member(&self, id: u64) -> Result<Drained> {
        let path = ["v1", "cluster", "members", &id.to_string(), "drain"];
        let resp = self.send(self.request(Method::POST, &path)?).await?;
        decode(resp).await
    }

    /// `DELETE /v1/node/drain`: this client's node takes traffic again.
    pub async fn undrain(&self) -> Result<Undrained> {
        let resp = self
            .send(self.request(Method::DELETE, &["v1", "node", "drain"])?)
            .await?;
        decode(resp).await
    }

    /// `DELETE /v1/cluster/members/{id}/drain`: member `id` takes traffic again.
    pub async fn undrain_member(&self, id: u64) -> Result<Undrained> {
        let path = ["v1", "cluster", "members", &id.to_string(), "drain"];
        let resp = self.send(self.request(Method::DELETE, &path)?).await?;
        decode(resp).await
    }

    /// `GET /v1/cluster/capacity?without=…&min_headroom=…`: whether the members left without
    /// `without` carry the cluster's current decision rate with at least `min_headroom` percent
    /// headroom.
    pub async fn capacity(&self, without: &[u64], min_headroom: f64) -> Result<CapacityCheck> {
        let ids: Vec<String> = without.iter().map(u64::to_string).collect();
        let rb = self
            .request(Method::GET, &["v1", "cluster", "capacity"])?
            .query(&[
                ("without", ids.join(",")),
                ("min_headroom", min_headroom.to_string()),
            ]);
        decode(self.send(rb).await?).await
    }
}
