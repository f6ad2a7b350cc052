//! The capacity pre-flight: `GET /v1/cluster/capacity?without=1,2` answers whether the members
//! left after taking nodes 1 and 2 out can carry the decision rate the whole cluster answers now,
//! with the headroom in percent. Each member's figures (`crate::capacity`) are asked over the
//! peer listener (`GET /node/capacity`, JSON); a member of an older release does not have that
//! call, and its figures are reported unknown, with what the answer then assumes.
//!
//! The model: a node with `cpus` CPUs that spends `c` CPU-seconds per decision can answer at most
//! `cpus / c` decisions per second; the load of the nodes taken out moves to the rest (a load
//! balancer spreads it), so headroom = 1 − total rate / capacity of the rest. It assumes each node
//! has its CPUs to itself, and `c` charges all of a node's work to its decisions, so it errs on
//! the safe side at low rates.

use std::collections::BTreeSet;
use std::collections::HashMap;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::Query;
use axum::extract::State;
use axum::http::Method;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::response::Response;
use axum::Json;
use serde::Serialize;
use serde_json::json;
use verdict_cluster::PeerAnswer;

use crate::capacity::Figures;
use crate::capacity::WINDOW_SECS;
use crate::error::ApiError;
use crate::routes::peer::PeerState;
use crate::state::Shared;

/// The path of the figures call on the peer listener.
pub const PEER_CAPACITY_PATH: &str = "/node/capacity";

/// The headroom asked for when the request names none, in percent.
pub const DEFAULT_MIN_HEADROOM: f64 = 30.0;

/// How long a member may take to send its figures.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// One member as the plan sees it.
#[derive(Debug, Clone)]
pub struct Member {
    /// Its id.
    pub id: u64,
    /// Whether it is taken out (named in `without`).
    pub leaving: bool,
    /// Its figures, or why they are not known.
    pub figures: Result<Figures, String>,
}

/// The answer of the pre-flight.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// Decisions per second the whole cluster answers now (members without figures estimated).
    pub total_decision_rate: Option<f64>,
    /// Decisions per second the remaining members could answer with all their CPUs busy.
    pub remaining_capacity: Option<f64>,
    /// `100 × (1 − total rate / remaining capacity)`; negative: more than they can carry.
    pub headroom_percent: Option<f64>,
    /// Whether the headroom is at least the one asked for; `None`: cannot tell.
    pub ok: Option<bool>,
    /// Whether every member reported its figures.
    pub complete: bool,
    /// What was estimated or left out, and why.
    pub notes: Vec<String>,
}

/// Rate-weighted mean CPU seconds per decision of the members that answered decisions: all their
/// CPU time over all their decisions.
fn mean_cost(known: &[(u64, Figures)]) -> Option<f64> {
    let (cpu, decisions) = known.iter().fold((0.0, 0.0), |(cpu, n), (_, f)| {
        match f.cpu_seconds_per_decision {
            Some(c) if f.decision_rate > 0.0 => (cpu + c * f.decision_rate, n + f.decision_rate),
            _ => (cpu, n),
        }
    });
    (decisions > 0.0).then(|| cpu / decisions)
}

/// Works out the plan for `members` and the headroom asked for (percent).
pub fn plan(members: &[Member], min_headroom: f64) -> Plan {
    let known: Vec<(u64, Figures)> = members
        .iter()
        .filter_map(|m| m.figures.as_ref().ok().map(|f| (m.id, *f)))
        .collect();
    let mut notes = Vec::new();
    let complete = known.len() == members.len();
    if known.is_empty() {
        notes.push(
            "no member reported capacity figures (older releases, or unreachable): cannot tell"
                .to_string(),
        );
        return Plan {
            total_decision_rate: None,
            remaining_capacity: None,
            headroom_percent: None,
            ok: None,
            complete,
            notes,
        };
    }
    let mean_rate = known.iter().map(|(_, f)| f.decision_rate).sum::<f64>() / known.len() as f64;
    let cost = mean_cost(&known);
    let mut total = 0.0;
    let mut capacity = 0.0;
    for m in members {
        match &m.figures {
            Err(why) => {
                total += mean_rate;
                notes.push(format!(
                    "node {}: {why}; its decision rate is taken as the average of the nodes that \
                     report ({mean_rate:.0}/s){}",
                    m.id,
                    if m.leaving {
                        ""
                    } else {
                        ", and its capacity is not counted"
                    }
                ));
            }
            Ok(f) => {
                total += f.decision_rate;
                if m.leaving {
                    continue;
                }
                let own = f.cpu_seconds_per_decision.filter(|_| f.decision_rate > 0.0);
                if own.is_none() && cost.is_some() {
                    notes.push(format!(
                        "node {} answered no decisions in the window: its CPU per decision is \
                         taken as the others' average",
                        m.id
                    ));
                }
                if let Some(c) = own.or(cost).filter(|c| *c > 0.0) {
                    capacity += f.cpus as f64 / c;
                }
            }
        }
    }
    if total <= 0.0 {
        notes.push(format!(
            "no decisions were answered in the last {WINDOW_SECS} s: there is no load to carry"
        ));
        return Plan {
            total_decision_rate: Some(0.0),
            remaining_capacity: (capacity > 0.0).then_some(capacity),
            headroom_percent: Some(100.0),
            ok: Some(true),
            complete,
            notes,
        };
    }
    if capacity <= 0.0 {
        notes.push("the remaining members have no capacity that could be measured".into());
        return Plan {
            total_decision_rate: Some(total),
            remaining_capacity: None,
            headroom_percent: None,
            ok: Some(false),
            complete,
            notes,
        };
    }
    let headroom = 100.0 * (1.0 - total / capacity);
    Plan {
        total_decision_rate: Some(total),
        remaining_capacity: Some(capacity),
        headroom_percent: Some(headroom),
        ok: Some(headroom >= min_headroom),
        complete,
        notes,
    }
}

/// The ids in a `without` value: node ids separated by commas (`1,2`); empty is none.
pub fn parse_ids(raw: &str) -> Result<BTreeSet<u64>, ApiError> {
    let mut ids = BTreeSet::new();
    if raw.trim().is_empty() {
        return Ok(ids);
    }
    for part in raw.split(',') {
        let part = part.trim();
        match part.parse::<u64>() {
            Ok(id) => {
                ids.insert(id);
            }
            Err(_) => {
                return Err(ApiError::bad_request(
                    "invalid_request",
                    format!(
                        "`without` must be node ids separated by commas, e.g. `without=1,2`; `{}` \
                         is not a node id",
                        verdict_engine::ids::truncate(part, 32)
                    ),
                ))
            }
        }
    }
    Ok(ids)
}

fn parse_headroom(raw: Option<&String>) -> Result<f64, ApiError> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_MIN_HEADROOM);
    };
    match raw.trim().parse::<f64>() {
        Ok(v) if (0.0..=100.0).contains(&v) => Ok(v),
        _ => Err(ApiError::bad_request(
            "invalid_request",
            format!(
                "`min_headroom` must be a percentage from 0 to 100; `{}` is not",
                verdict_engine::ids::truncate(raw, 32)
            ),
        )),
    }
}

/// A member's figures: its own when it is this node, else asked over the peer listener.
async fn figures_of(state: &Shared, id: u64, peer_addr: &str) -> Result<Figures, String> {
    if id == state.node.id() {
        return Ok(state.capacity.figures());
    }
    let answer = state
        .node
        .peer_caller()
        .call(peer_addr, Method::GET, PEER_CAPACITY_PATH, ASK_TIMEOUT)
        .await;
    match answer {
        PeerAnswer::Answered { status: 200, body } => serde_json::from_value(body)
            .map_err(|e| format!("sent figures this node cannot read ({e})")),
        PeerAnswer::Answered { status, .. } => Err(format!("answered HTTP {status}")),
        PeerAnswer::NotServed => {
            Err("runs an older release, which reports no capacity figures".into())
        }
        PeerAnswer::Unreachable(e) => Err(format!("did not answer ({e})")),
    }
}

/// `GET /v1/cluster/capacity?without=1,2&min_headroom=30` (admin scope).
pub async fn capacity(
    State(state): State<Shared>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let query = match query {
        Ok(Query(q)) => q,
        Err(e) => return ApiError::bad_request("invalid_request", e.body_text()).into_response(),
    };
    match answer(&state, &query).await {
        Ok(body) => Json(body).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn answer(
    state: &Shared,
    query: &HashMap<String, String>,
) -> Result<serde_json::Value, ApiError> {
    let without = parse_ids(query.get("without").map_or("", String::as_str))?;
    let min_headroom = parse_headroom(query.get("min_headroom"))?;
    let members = state.node.status().members;
    let ids: BTreeSet<u64> = members.iter().map(|(id, _, _)| *id).collect();
    if let Some(unknown) = without.iter().find(|id| !ids.contains(id)) {
        return Err(ApiError::bad_request(
            "unknown_node",
            format!(
                "node {unknown} is not a member of this cluster (members: {})",
                list(&ids)
            ),
        ));
    }
    let remaining: BTreeSet<u64> = ids.difference(&without).copied().collect();
    if remaining.is_empty() {
        return Err(ApiError::bad_request(
            "no_node_left",
            format!(
                "`without` names every member ({}): nothing would be left to carry the load",
                list(&ids)
            ),
        ));
    }
    let asks = members.iter().map(|(id, info, voter)| async move {
        let figures = figures_of(state, *id, &info.peer_addr).await;
        (*id, *voter, figures)
    });
    let gathered = futures::future::join_all(asks).await;
    let plan_members: Vec<Member> = gathered
        .iter()
        .map(|(id, _, figures)| Member {
            id: *id,
            leaving: without.contains(id),
            figures: figures.clone(),
        })
        .collect();
    let p = plan(&plan_members, min_headroom);
    let per_member: Vec<serde_json::Value> = gathered
        .iter()
        .map(|(id, voter, figures)| {
            let mut m = json!({
                "id": id,
                "role": if *voter { "voter" } else { "learner" },
                "leaving": without.contains(id),
            });
            let extra = match figures {
                Ok(f) => json!({
                    "figures": "reported",
                    "decision_rate": f.decision_rate,
                    "cpu_seconds_per_decision": f.cpu_seconds_per_decision,
                    "cpus": f.cpus,
                    "window_seconds": f.window_seconds,
                }),
                Err(why) => json!({"figures": "unknown", "unknown_reason": why}),
            };
            if let (Some(m), serde_json::Value::Object(extra)) = (m.as_object_mut(), extra) {
                m.extend(extra);
            }
            m
        })
        .collect();
    let summary = summary(&without, &remaining, &p, min_headroom);
    let mut body = json!({
        "without": without,
        "remaining": remaining,
        "min_headroom_percent": min_headroom,
        "window_seconds": WINDOW_SECS,
        "members": per_member,
        "summary": summary,
    });
    if let (Some(obj), Ok(serde_json::Value::Object(plan))) =
        (body.as_object_mut(), serde_json::to_value(&p))
    {
        obj.extend(plan);
    }
    Ok(body)
}

fn list(ids: &BTreeSet<u64>) -> String {
    ids.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// One sentence for people (the CLI prints it).
fn summary(without: &BTreeSet<u64>, remaining: &BTreeSet<u64>, p: &Plan, min: f64) -> String {
    let taking = if without.is_empty() {
        "with every node in".to_string()
    } else {
        format!("without node(s) {}", list(without))
    };
    let left = list(remaining);
    match (p.ok, p.headroom_percent, p.total_decision_rate) {
        (None, _, _) => format!("{taking}: cannot tell (no capacity figures)"),
        (Some(ok), Some(h), Some(rate)) => format!(
            "{taking}, node(s) {left} would carry {rate:.0} decisions/s with {h:.0}% headroom \
             ({} {min:.0}%): {}",
            if ok { "at least" } else { "below" },
            if ok { "OK" } else { "NOT ENOUGH" }
        ),
        (Some(_), _, _) => format!(
            "{taking}, node(s) {left} have no measurable capacity for the current load: NOT ENOUGH"
        ),
    }
}

/// `GET /node/capacity` on the peer listener: this node's figures, for another member's
/// pre-flight.
pub async fn peer_figures(State(peer): State<PeerState>) -> Response {
    (StatusCode::OK, Json(peer.state.capacity.figures())).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(rate: f64, cost: Option<f64>, cpus: u64) -> Result<Figures, String> {
        Ok(Figures {
            decision_rate: rate,
            cpu_seconds_per_decision: cost,
            cpus,
            window_seconds: 10.0,
        })
    }

    fn member(id: u64, leaving: bool, figures: Result<Figures, String>) -> Member {
        Member {
            id,
            leaving,
            figures,
        }
    }

    #[test]
    fn headroom_is_the_share_of_the_rest_left_free() {
        // 4 nodes × 250/s; each spends 1 ms of CPU per decision on 2 CPUs: 2,000/s each.
        let all: Vec<Member> = (1..=4)
            .map(|id| member(id, id <= 2, figures(250.0, Some(0.001), 2)))
            .collect();
        let p = plan(&all, 30.0);
        assert_eq!(p.total_decision_rate, Some(1000.0));
        assert_eq!(p.remaining_capacity, Some(4000.0));
        assert_eq!(p.headroom_percent, Some(75.0));
        assert_eq!(p.ok, Some(true));
        assert!(p.complete);
        assert_eq!(plan(&all, 80.0).ok, Some(false));
    }

    #[test]
    fn overload_gives_negative_headroom() {
        let all = vec![
            member(1, true, figures(3000.0, Some(0.001), 2)),
            member(2, false, figures(1000.0, Some(0.001), 2)),
        ];
        let p = plan(&all, 0.0);
        assert_eq!(p.headroom_percent, Some(-100.0));
        assert_eq!(p.ok, Some(false));
    }

    #[test]
    fn unknown_members_are_estimated_and_said_so() {
        let all = vec![
            member(1, true, Err("runs an older release".into())),
            member(2, false, figures(100.0, Some(0.001), 1)),
            member(3, false, Err("did not answer".into())),
        ];
        let p = plan(&all, 30.0);
        assert!(!p.complete);
        // 100/s reported, two unknown members at the average 100/s each; node 3 not counted.
        assert_eq!(p.total_decision_rate, Some(300.0));
        assert_eq!(p.remaining_capacity, Some(1000.0));
        assert_eq!(p.ok, Some(true));
        assert_eq!(p.notes.len(), 2, "{:?}", p.notes);
        assert!(p.notes[0].contains("node 1: runs an older release"));
        assert!(p.notes[1].contains("its capacity is not counted"));
        let none = vec![
            member(1, true, Err("x".into())),
            member(2, false, Err("y".into())),
        ];
        assert_eq!(plan(&none, 30.0).ok, None);
    }

    #[test]
    fn an_idle_node_takes_the_others_cost_and_an_idle_cluster_has_room() {
        let all = vec![
            member(1, true, figures(500.0, Some(0.002), 2)),
            member(2, false, figures(0.0, None, 4)),
        ];
        let p = plan(&all, 30.0);
        assert_eq!(p.remaining_capacity, Some(2000.0));
        assert_eq!(p.headroom_percent, Some(75.0));
        let idle = vec![
            member(1, true, figures(0.0, None, 2)),
            member(2, false, figures(0.0, None, 2)),
        ];
        let p = plan(&idle, 30.0);
        assert_eq!((p.ok, p.headroom_percent), (Some(true), Some(100.0)));
    }

    #[test]
    fn node_lists_parse_or_say_what_is_wrong() {
        assert_eq!(parse_ids("").unwrap(), BTreeSet::new());
        assert_eq!(parse_ids("1, 2,2").unwrap(), BTreeSet::from([1, 2]));
        for bad in ["1,x", "1,,2", "-1", "1;2"] {
            let e = parse_ids(bad).unwrap_err();
            assert_eq!(e.code, "invalid_request", "{bad}");
        }
        assert_eq!(parse_headroom(None).unwrap(), 30.0);
        assert!(parse_headroom(Some(&"101".to_string())).is_err());
        assert!(parse_headroom(Some(&"NaN".to_string())).is_err());
    }
}
