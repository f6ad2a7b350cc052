//! `verdict cluster …` and `verdict watch`.

use std::process::ExitCode;

use anyhow::bail;
use verdict_client::Client;

use crate::cli::ClusterCommand;
use crate::cli::Output;
use crate::cli::UpgradeCommand;
use crate::cli::WatchArgs;
use crate::output::print_json;
use crate::output::print_table;
use crate::output::written;

/// `verdict cluster …`.
pub async fn run(client: &Client, cmd: ClusterCommand, out: Output) -> anyhow::Result<ExitCode> {
    match cmd {
        ClusterCommand::Status => {
            let s = client.cluster().await?;
            match out {
                Output::Json => print_json(&s)?,
                Output::Table => {
                    let rows: Vec<Vec<String>> = s
                        .members
                        .iter()
                        .map(|m| {
                            let opt =
                                |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or("-".into());
                            vec![
                                m.id.to_string(),
                                if m.is_leader {
                                    "leader".into()
                                } else {
                                    m.role.clone()
                                },
                                m.api_addr.clone(),
                                m.peer_addr.clone(),
                                opt(m.applied_version),
                                release_of(m.reachable, m.release.as_deref()),
                                m.supported_level.map_or("-".to_string(), |l| l.to_string()),
                                match (m.reachable, m.ready, &m.not_ready_reason) {
                                    (false, _, _) => "unreachable".into(),
                                    (true, Some(true), _) => "ready".into(),
                                    (true, _, Some(r)) => format!("not ready: {r}"),
                                    (true, _, None) => "not ready".into(),
                                },
                            ]
                        })
                        .collect();
                    print_table(
                        &[
                            "ID", "ROLE", "API", "PEER", "APPLIED", "RELEASE", "LEVEL", "STATE",
                        ],
                        &rows,
                    );
                    println!(
                        "leader {}, term {}, committed {}, format level {}{}",
                        s.leader.map(|l| l.to_string()).unwrap_or("unknown".into()),
                        s.term,
                        s.committed,
                        s.active_level.unwrap_or(1),
                        if s.removed.is_empty() {
                            String::new()
                        } else {
                            format!(", removed ids {:?}", s.removed)
                        }
                    );
                }
            }
        }
        ClusterCommand::AddLearner { id, api, peer } => {
            let v = client.add_learner(id, &api, &peer).await?;
            written(out, &format!("added node {id} as a learner"), v)?;
        }
        ClusterCommand::Promote { id } => {
            let s = client.cluster().await?;
            if !s.learners.contains(&id) && !s.voters.contains(&id) {
                bail!("node {id} is not a member; add it first with `verdict cluster add-learner`");
            }
            let mut voters = s.voters.clone();
            if !voters.contains(&id) {
                voters.push(id);
            }
            let v = client.set_voters(&voters).await?;
            written(out, &format!("node {id} is a voter"), v)?;
        }
        ClusterCommand::Remove { id } => {
            let v = client.remove_member(id).await?;
            written(out, &format!("removed node {id}"), v)?;
        }
        ClusterCommand::TransferLeader { to } => {
            let v = client.transfer_leader(to).await?;
            written(out, &format!("asked node {to} to lead"), v)?;
        }
        ClusterCommand::Drain {
            check: Some(without),
            min_headroom,
            ..
        } => return check(client, &without, min_headroom, out).await,
        ClusterCommand::Drain { id, .. } => {
            let d = match id {
                Some(id) => client.drain_member(id).await?,
                None => client.drain().await?,
            };
            match out {
                Output::Json => print_json(&d)?,
                Output::Table => {
                    let who = d
                        .node_id
                        .map_or("node".to_string(), |n| format!("node {n}"));
                    match d.transferred_to {
                        Some(to) => println!("{who} draining; leadership handed to node {to}"),
                        None if d.is_leader => {
                            println!("{who} draining; still the leader (it is the only voter)")
                        }
                        None => println!("{who} draining"),
                    }
                }
            }
        }
        ClusterCommand::Upgrade(cmd) => return upgrade(client, cmd, out).await,
        ClusterCommand::Undrain { id } => {
            let u = match id {
                Some(id) => client.undrain_member(id).await?,
                None => client.undrain().await?,
            };
            match out {
                Output::Json => print_json(&u)?,
                Output::Table => match &u.not_ready_reason {
                    None => println!("node {} undrained and ready", u.node_id),
                    Some(r) => println!("node {} undrained; not ready yet: {r}", u.node_id),
                },
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// How a member's release reads in a table: a member that answers without one runs the release
/// before format levels.
fn release_of(reachable: bool, release: Option<&str>) -> String {
    match (reachable, release) {
        (_, Some(r)) => r.to_string(),
        (true, None) => "previous (no levels)".to_string(),
        (false, None) => "-".to_string(),
    }
}

/// `verdict cluster upgrade status|finalize`.
async fn upgrade(client: &Client, cmd: UpgradeCommand, out: Output) -> anyhow::Result<ExitCode> {
    match cmd {
        UpgradeCommand::Status => {
            let u = client.upgrade_status().await?;
            match out {
                Output::Json => print_json(&u)?,
                Output::Table => {
                    let rows: Vec<Vec<String>> = u
                        .members
                        .iter()
                        .map(|m| {
                            vec![
                                m.id.to_string(),
                                m.role.clone(),
                                release_of(m.reachable, m.release.as_deref()),
                                m.supported_level.map_or("-".to_string(), |l| l.to_string()),
                            ]
                        })
                        .collect();
                    print_table(&["ID", "ROLE", "RELEASE", "SUPPORTS"], &rows);
                    println!(
                        "active format level {}; every member supports {}; {}",
                        u.active_level,
                        u.cluster_supports,
                        match u.next_level {
                            None => "final (nothing to upgrade)".to_string(),
                            Some(n) if u.holding_back.is_empty() => format!(
                                "level {n} can be finalised{}",
                                if u.auto_finalize {
                                    " (auto_finalize will)"
                                } else {
                                    ""
                                }
                            ),
                            Some(n) => format!("level {n} is held back"),
                        }
                    );
                    for h in &u.holding_back {
                        println!("  {}", h.reason);
                    }
                }
            }
        }
        UpgradeCommand::Finalize { level } => {
            let v = client.finalize_upgrade(level).await?;
            written(out, "finalised the upgrade", v)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `verdict cluster drain --check IDS`: the capacity pre-flight. Exit 0: the rest carries the
/// load with the headroom asked for; 2: it does not; 1: cannot tell (no figures).
async fn check(
    client: &Client,
    without: &[u64],
    min_headroom: f64,
    out: Output,
) -> anyhow::Result<ExitCode> {
    let c = client.capacity(without, min_headroom).await?;
    match out {
        Output::Json => print_json(&c)?,
        Output::Table => {
            let num = |v: Option<f64>, digits: usize| {
                v.map_or("-".to_string(), |v| format!("{v:.digits$}"))
            };
            let rows: Vec<Vec<String>> = c
                .members
                .iter()
                .map(|m| {
                    vec![
                        m.id.to_string(),
                        if m.leaving { "out" } else { "stays" }.to_string(),
                        num(m.decision_rate, 1),
                        num(m.cpu_seconds_per_decision.map(|s| s * 1e6), 0),
                        m.cpus.map_or("-".to_string(), |n| n.to_string()),
                        m.unknown_reason.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            print_table(
                &[
                    "ID",
                    "DRAIN",
                    "DECISIONS/S",
                    "CPU-µS/DECISION",
                    "CPUS",
                    "NOTE",
                ],
                &rows,
            );
            for note in &c.notes {
                println!("note: {note}");
            }
            println!("{}", c.summary);
        }
    }
    Ok(match c.ok {
        Some(true) => ExitCode::SUCCESS,
        Some(false) => ExitCode::from(crate::exit::DENY),
        None => ExitCode::from(crate::exit::FAILURE),
    })
}

/// `verdict watch`: prints each event's data (one JSON object per line); a `resync` event is
/// printed as `{"resync": …}`.
pub async fn watch(client: &Client, args: &WatchArgs) -> anyhow::Result<ExitCode> {
    let mut resp = client.watch(args.from).await?;
    let mut buf = String::new();
    let mut seen = 0u64;
    while let Some(chunk) = resp.chunk().await? {
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut kind = "message";
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    kind = if v.trim() == "resync" {
                        "resync"
                    } else {
                        "change"
                    };
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            if data.is_empty() {
                continue; // keep-alive comment
            }
            if kind == "resync" {
                println!("{{\"resync\": {data}}}");
            } else {
                println!("{data}");
            }
            seen += 1;
            if args.count.is_some_and(|n| seen >= n) {
                return Ok(ExitCode::SUCCESS);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
