//! `dsync status`: the cluster at a glance, from the gateway's `/health`
//! (every backend node's health) and `/cluster` (lock leader and term, each
//! lock node's Raft view, the queue ring, the cache peers).
//!
//! Exit 0 when the gateway says every service is up, 1 when it reports one
//! down, 3 when the gateway does not answer. `--watch` redraws every
//! interval until SIGINT/SIGTERM (clearing the screen on a terminal; one
//! JSON document per line with `--json`) and then exits 0.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::Duration;

use client::{Client, ClusterView, HealthReport, NodeStatus};
use serde::Serialize;
use tokio::signal::unix::{signal, SignalKind};

use crate::error::{self, Error};
use crate::output::{indent, table, Output};

/// One look at the cluster.
#[derive(Debug, Serialize)]
pub struct Status {
    pub gateway: String,
    pub health: HealthReport,
    pub cluster: ClusterView,
}

/// Run `dsync status [--watch [INTERVAL]]`.
pub async fn run(c: &Client, out: Output, watch: Option<Duration>) -> Result<i32, Error> {
    let Some(every) = watch else {
        let s = fetch(c).await?;
        out.emit(&s, || render(&s));
        return Ok(if s.health.status == "ok" {
            error::OK
        } else {
            error::REFUSED
        });
    };
    let every = every.max(Duration::from_millis(100));
    let clear = !out.json && std::io::stdout().is_terminal();
    let mut int = signal(SignalKind::interrupt()).map_err(|e| Error::io("signal handler", e))?;
    let mut term = signal(SignalKind::terminate()).map_err(|e| Error::io("signal handler", e))?;
    loop {
        let shot = fetch(c).await;
        if clear {
            print!("\x1b[2J\x1b[H");
        }
        match &shot {
            Ok(s) => out.emit(s, || {
                format!(
                    "{}\n(every {}; Ctrl-C ends)\n",
                    render(s).trim_end(),
                    crate::duration::show(every)
                )
            }),
            Err(e) => {
                if out.json {
                    out.emit(&e.to_json(), String::new);
                } else {
                    println!("{}: {e}", c.base());
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = int.recv() => return Ok(error::OK),
            _ = term.recv() => return Ok(error::OK),
        }
    }
}

async fn fetch(c: &Client) -> Result<Status, Error> {
    let (health, cluster) = tokio::join!(c.health(), c.cluster());
    Ok(Status {
        gateway: c.base().to_string(),
        health: health?,
        cluster: cluster?,
    })
}

fn health_of(nodes: &[NodeStatus]) -> BTreeMap<&str, String> {
    nodes
        .iter()
        .map(|n| {
            let h = if n.healthy {
                "ok".to_string()
            } else {
                format!("DOWN {}", n.error.as_deref().unwrap_or(""))
                    .trim_end()
                    .to_string()
            };
            (n.addr.as_str(), h)
        })
        .collect()
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

/// The status as text.
pub fn render(s: &Status) -> String {
    let h = &s.health;
    let cl = &s.cluster;
    let mut t = format!(
        "gateway {}  {}{}\n",
        s.gateway.trim_end_matches('/'),
        h.status,
        if h.down.is_empty() {
            String::new()
        } else {
            format!(" (down: {})", h.down.join(", "))
        }
    );

    // lock
    let leader = match (&cl.lock.leader_id, &cl.lock.leader_addr) {
        (Some(id), Some(addr)) => format!("leader {id} ({addr})"),
        (Some(id), None) => format!("leader {id}"),
        _ => "NO LEADER".into(),
    };
    t.push_str(&format!(
        "\nlock   {leader}, term {}{}\n",
        opt(cl.lock.term),
        reason(&h.lock.reason)
    ));
    let lh = health_of(&h.lock.nodes);
    let rows: Vec<Vec<String>> = cl
        .lock
        .nodes
        .iter()
        .map(|n| {
            vec![
                n.addr.clone(),
                opt(n.id),
                n.state.clone().unwrap_or_else(|| {
                    if n.reachable {
                        "-".into()
                    } else {
                        "unreachable".into()
                    }
                }),
                opt(n.term),
                opt(n.leader_id),
                opt(n.last_log_index),
                opt(n.applied_index),
                lh.get(n.addr.as_str())
                    .cloned()
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    t.push_str(&indent(
        &table(
            &[
                "NODE", "ID", "ROLE", "TERM", "LEADER", "LAST LOG", "APPLIED", "HEALTH",
            ],
            &rows,
        ),
        2,
    ));

    // queue
    t.push_str(&format!(
        "\nqueue  ring of {} node(s){}\n",
        cl.queue.members.len(),
        reason(&h.queue.reason)
    ));
    let qh = health_of(&h.queue.nodes);
    let mut addrs: Vec<&str> = cl.queue.members.iter().map(String::as_str).collect();
    for n in &h.queue.nodes {
        if !addrs.contains(&n.addr.as_str()) {
            addrs.push(&n.addr);
        }
    }
    let rows: Vec<Vec<String>> = addrs
        .iter()
        .map(|a| {
            vec![
                a.to_string(),
                if cl.queue.members.iter().any(|m| m == a) {
                    "yes".into()
                } else {
                    "no".into()
                },
                qh.get(a).cloned().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    t.push_str(&indent(&table(&["NODE", "IN RING", "HEALTH"], &rows), 2));

    // cache
    t.push_str(&format!(
        "\ncache  {} node(s), {} peer(s) alive{}\n",
        cl.cache.members.len(),
        cl.cache.peers.iter().filter(|p| p.alive).count(),
        reason(&h.cache.reason)
    ));
    let ch = health_of(&h.cache.nodes);
    let mut addrs: Vec<&str> = cl.cache.members.iter().map(String::as_str).collect();
    for p in &cl.cache.peers {
        if !addrs.contains(&p.addr.as_str()) {
            addrs.push(&p.addr);
        }
    }
    let rows: Vec<Vec<String>> = addrs
        .iter()
        .map(|a| {
            vec![
                a.to_string(),
                match cl.cache.peers.iter().find(|p| p.addr == *a) {
                    Some(p) if p.alive => "yes".into(),
                    Some(_) => "no".into(),
                    None => "-".into(),
                },
                ch.get(a).cloned().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    t.push_str(&indent(&table(&["NODE", "PEER ALIVE", "HEALTH"], &rows), 2));
    t
}

fn reason(r: &Option<String>) -> String {
    match r {
        Some(r) => format!("  ({r})"),
        None => String::new(),
    }
}

/// `dsync events`: every node's recent events, newest first.
pub async fn events(c: &Client, out: Output, limit: Option<u64>) -> Result<i32, Error> {
    let l = c.events(limit).await?;
    out.emit(&l, || {
        if l.events.is_empty() {
            return "no recent events\n".into();
        }
        let rows: Vec<Vec<String>> = l
            .events
            .iter()
            .map(|e| {
                vec![
                    e.at_ms.to_string(),
                    e.service.clone(),
                    e.node.clone(),
                    serde_json::to_value(e.kind)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default(),
                    e.summary.clone(),
                ]
            })
            .collect();
        crate::output::table(&["AT (MS)", "SERVICE", "NODE", "KIND", "WHAT"], &rows)
    });
    if !l.unavailable.is_empty() {
        out.note(format!("not answering: {}", l.unavailable.join(", ")));
    }
    Ok(error::OK)
}
