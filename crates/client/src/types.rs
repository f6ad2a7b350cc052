//! Request and response bodies, mirroring `docs/api.md` field for field.

use serde::Deserialize;
use serde::Serialize;
use serde_json::Value;

/// The AuthZEN subject: who asks. Becomes the Cedar principal `type::"id"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subject {
    /// Cedar entity type, e.g. `User` or `Ns::User`.
    pub r#type: String,
    /// Entity id.
    pub id: String,
    /// Attributes merged over the stored entity's for this request only (Cedar entity-JSON values).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<Value>,
}

/// The AuthZEN action. Becomes `Action::"name"`, or `name` itself when it is a full Cedar uid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    /// Action name, e.g. `view` or `Ns::Action::"view"`.
    pub name: String,
    /// Attributes for this request only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<Value>,
}

/// The AuthZEN resource: what is accessed. Becomes the Cedar resource `type::"id"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    /// Cedar entity type.
    pub r#type: String,
    /// Entity id.
    pub id: String,
    /// Attributes merged over the stored entity's for this request only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<Value>,
}

impl Subject {
    /// A subject without properties.
    pub fn new(r#type: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            r#type: r#type.into(),
            id: id.into(),
            properties: None,
        }
    }
}

impl Action {
    /// An action without properties.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            properties: None,
        }
    }
}

impl Resource {
    /// A resource without properties.
    pub fn new(r#type: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            r#type: r#type.into(),
            id: id.into(),
            properties: None,
        }
    }
}

/// Body of `POST /access/v1/evaluation`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluationRequest {
    /// Who asks.
    pub subject: Subject,
    /// What they want to do.
    pub action: Action,
    /// What to.
    pub resource: Resource,
    /// The Cedar context record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Value>,
}

impl EvaluationRequest {
    /// A request without context.
    pub fn new(subject: Subject, action: Action, resource: Resource) -> Self {
        Self {
            subject,
            action,
            resource,
            context: None,
        }
    }

    /// Sets the Cedar context record.
    pub fn with_context(mut self, context: Value) -> Self {
        self.context = Some(context);
        self
    }
}

/// One decision: `decision` plus the server's explanation in `context`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluationResponse {
    /// True for permit.
    pub decision: bool,
    /// `version`, `reason_user`, `reason_admin`, `obligations`, or `error` for a batch item that could
    /// not be evaluated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Value>,
}

/// A decision together with the `Verdict-Version` header of its answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision<T> {
    /// The response body.
    pub body: T,
    /// The snapshot version the decision was computed from (`Verdict-Version`), when sent.
    pub version: Option<u64>,
}

/// How a batch stops early (`options.evaluations_semantic`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvaluationsSemantic {
    /// Evaluate every item (the default).
    ExecuteAll,
    /// Stop after the first deny.
    DenyOnFirstDeny,
    /// Stop after the first permit.
    PermitOnFirstPermit,
}

/// `options` of a batch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EvaluationsOptions {
    /// Early-stop rule; the server's default is [`EvaluationsSemantic::ExecuteAll`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluations_semantic: Option<EvaluationsSemantic>,
}

/// One item of a batch; each field present replaces the top-level default as a whole.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EvaluationItem {
    /// Overrides the default subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Subject>,
    /// Overrides the default action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    /// Overrides the default resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<Resource>,
    /// Overrides the default context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Value>,
}

/// Body of `POST /access/v1/evaluations`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EvaluationsRequest {
    /// Default subject for every item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Subject>,
    /// Default action for every item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    /// Default resource for every item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<Resource>,
    /// Default context for every item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Value>,
    /// The items; empty means one evaluation of the top-level fields.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evaluations: Vec<EvaluationItem>,
    /// Early-stop rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<EvaluationsOptions>,
}

/// Answer of `POST /access/v1/evaluations`: one result per item, in request order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluationsResponse {
    /// The results (shorter than the request when an early-stop semantic fired).
    pub evaluations: Vec<EvaluationResponse>,
}

/// A stored policy (`GET /v1/policies/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Policy id.
    pub id: String,
    /// Cedar text.
    pub cedar: String,
    /// Log index that last wrote this policy; pass it as `if_match`.
    pub version: u64,
}

/// All policies (`GET /v1/policies`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyList {
    /// Version of the snapshot listed; use it as `if_match` for a whole-set replace.
    pub version: u64,
    /// Sorted by id.
    pub policies: Vec<Policy>,
}

/// The two schema formats Cedar reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SchemaFormat {
    /// Human-readable Cedar schema text.
    Cedar,
    /// Cedar's JSON schema format.
    Json,
}

/// The schema that is set (`GET /v1/schema`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schema {
    /// A JSON string for the Cedar format, the JSON document itself for the JSON format.
    pub schema: Value,
    /// Which format `schema` is in.
    pub format: SchemaFormat,
    /// Log index that last wrote the schema.
    pub version: u64,
}

/// A stored entity (`GET /v1/entities/{type}/{id}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntityRecord {
    /// The entity in Cedar's entity JSON format (`uid`, `attrs`, `parents`, `tags`).
    pub entity: Value,
    /// Log index that last wrote this entity.
    pub version: u64,
}

/// An entity reference, as `DELETE /v1/entities` takes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityUid {
    /// Cedar entity type.
    pub r#type: String,
    /// Entity id.
    pub id: String,
}

impl EntityUid {
    /// A reference to `type::"id"`.
    pub fn new(r#type: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            r#type: r#type.into(),
            id: id.into(),
        }
    }
}

/// Answer of `GET /readyz`, ready or not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Readiness {
    /// True when the node can serve fresh decisions.
    pub ready: bool,
    /// Why not, when not ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Whatever else the node reports (leader, versions, …).
    #[serde(flatten)]
    pub details: serde_json::Map<String, Value>,
}

/// One member in `GET /v1/cluster`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterMember {
    /// Node id.
    pub id: u64,
    /// `voter` or `learner`.
    pub role: String,
    /// Its API address.
    pub api_addr: String,
    /// Its peer (Raft) address.
    pub peer_addr: String,
    /// Whether it is the leader (as the answering node knows).
    pub is_leader: bool,
    /// Whether it answered the status request (within 1 s).
    pub reachable: bool,
    /// Its applied version, when reachable.
    #[serde(default)]
    pub applied_version: Option<u64>,
    /// Whether it is ready, when reachable.
    #[serde(default)]
    pub ready: Option<bool>,
    /// Why it is not ready.
    #[serde(default)]
    pub not_ready_reason: Option<String>,
    /// Its release (crate version + git commit); `None` for a member of the release before
    /// format levels, or one that did not answer.
    #[serde(default)]
    pub release: Option<String>,
    /// The highest format level it supports, when reachable (1 for the release before levels).
    #[serde(default)]
    pub supported_level: Option<u8>,
}

/// One member in `GET /v1/cluster/upgrade`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeMember {
    /// Node id.
    pub id: u64,
    /// `voter` or `learner`.
    pub role: String,
    /// Whether it answered.
    pub reachable: bool,
    /// Its release, if it reports one.
    pub release: Option<String>,
    /// The highest format level it supports, if it answered.
    pub supported_level: Option<u8>,
}

/// A member that holds the next format level back, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldingBack {
    /// Node id.
    pub id: u64,
    /// Why.
    pub reason: String,
}

/// Answer of `GET /v1/cluster/upgrade`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeStatus {
    /// The cluster's active format level.
    pub active_level: u8,
    /// The highest level every member supports.
    pub cluster_supports: u8,
    /// The highest level the answering node's release supports.
    pub this_release_supports: u8,
    /// Whether the active level is the highest the answering node supports.
    #[serde(rename = "final")]
    pub is_final: bool,
    /// The level an upgrade would raise to next.
    pub next_level: Option<u8>,
    /// Whether the answering node raises the level by itself.
    pub auto_finalize: bool,
    /// The members that hold the next level back.
    pub holding_back: Vec<HoldingBack>,
    /// Every member.
    pub members: Vec<UpgradeMember>,
}

/// Answer of `GET /v1/cluster`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The answering node.
    pub node_id: u64,
    /// The leader it knows.
    pub leader: Option<u64>,
    /// Current term.
    pub term: u64,
    /// Highest index the answering node knows committed.
    pub committed: u64,
    /// The answering node's applied version.
    pub applied_version: u64,
    /// Voter ids.
    pub voters: Vec<u64>,
    /// Learner ids.
    pub learners: Vec<u64>,
    /// The cluster's active format level (absent from the release before levels).
    #[serde(default)]
    pub active_level: Option<u8>,
    /// Ids removed from the cluster (never accepted again).
    pub removed: Vec<u64>,
    /// Every member with its own report.
    pub members: Vec<ClusterMember>,
}

/// Answer of `POST /v1/node/drain` (and of draining a member by id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Drained {
    /// The node drained (absent from releases before it was reported).
    #[serde(default)]
    pub node_id: Option<u64>,
    /// Always true.
    pub draining: bool,
    /// Whether the node still leads (no other voter could take over).
    pub is_leader: bool,
    /// The leader after the drain.
    pub leader: Option<u64>,
    /// The voter leadership was handed to, if this node led.
    pub transferred_to: Option<u64>,
}

/// Answer of `DELETE /v1/node/drain` (and of undraining a member by id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Undrained {
    /// The node undrained.
    pub node_id: u64,
    /// Always false.
    pub draining: bool,
    /// Whether it is ready right away.
    pub ready: bool,
    /// Why not, if it is not.
    #[serde(default)]
    pub not_ready_reason: Option<String>,
}

/// Answer of `GET /v1/cluster/capacity`: can the members left carry the current decision rate?
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapacityCheck {
    /// The members taken out.
    pub without: Vec<u64>,
    /// The members left.
    pub remaining: Vec<u64>,
    /// The headroom asked for, in percent.
    pub min_headroom_percent: f64,
    /// Decisions per second the whole cluster answers now.
    pub total_decision_rate: Option<f64>,
    /// Decisions per second the remaining members could answer with all CPUs busy.
    pub remaining_capacity: Option<f64>,
    /// `100 × (1 − total rate / remaining capacity)`.
    pub headroom_percent: Option<f64>,
    /// Whether the headroom is enough; `None`: cannot tell (no figures).
    pub ok: Option<bool>,
    /// Whether every member reported its figures.
    pub complete: bool,
    /// What was estimated or left out, and why.
    pub notes: Vec<String>,
    /// One sentence for people.
    pub summary: String,
    /// Each member's figures.
    pub members: Vec<CapacityMember>,
}

/// One member in a [`CapacityCheck`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapacityMember {
    /// Its id.
    pub id: u64,
    /// `voter` or `learner`.
    pub role: String,
    /// Whether it is taken out.
    pub leaving: bool,
    /// `reported` or `unknown`.
    pub figures: String,
    /// Decisions per second over the window.
    #[serde(default)]
    pub decision_rate: Option<f64>,
    /// Process CPU seconds per decision.
    #[serde(default)]
    pub cpu_seconds_per_decision: Option<f64>,
    /// CPUs it may use.
    #[serde(default)]
    pub cpus: Option<u64>,
    /// Why its figures are unknown.
    #[serde(default)]
    pub unknown_reason: Option<String>,
}

/// The answer of every successful write.
#[derive(Debug, Deserialize)]
pub(crate) struct Written {
    pub(crate) version: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_evaluation_request_serializes_to_the_authzen_shape() {
        let req = EvaluationRequest::new(
            Subject::new("User", "alice"),
            Action::new("view"),
            Resource::new("Doc", "d1"),
        )
        .with_context(json!({"ip": "10.0.0.1"}));
        assert_eq!(
            serde_json::to_value(&req).unwrap(),
            json!({"subject": {"type": "User", "id": "alice"}, "action": {"name": "view"},
                   "resource": {"type": "Doc", "id": "d1"}, "context": {"ip": "10.0.0.1"}})
        );
    }

    #[test]
    fn a_batch_omits_what_is_not_set() {
        let req = EvaluationsRequest {
            subject: Some(Subject::new("User", "alice")),
            evaluations: vec![EvaluationItem {
                action: Some(Action::new("edit")),
                ..Default::default()
            }],
            options: Some(EvaluationsOptions {
                evaluations_semantic: Some(EvaluationsSemantic::DenyOnFirstDeny),
            }),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&req).unwrap(),
            json!({"subject": {"type": "User", "id": "alice"},
                   "evaluations": [{"action": {"name": "edit"}}],
                   "options": {"evaluations_semantic": "deny_on_first_deny"}})
        );
    }

    #[test]
    fn readiness_keeps_extra_fields() {
        let r: Readiness =
            serde_json::from_value(json!({"ready": false, "reason": "no leader", "term": 3}))
                .unwrap();
        assert!(!r.ready);
        assert_eq!(r.reason.as_deref(), Some("no leader"));
        assert_eq!(r.details.get("term"), Some(&json!(3)));
    }
}
