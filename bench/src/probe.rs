//! What the soak and the storm ([`crate::soak`]) read from the running
//! system every few seconds, per node:
//! - its resident memory (`VmRSS` of `/proc/<pid>/status`) and its open
//!   file descriptors (the entries of `/proc/<pid>/fd`): Linux only, read
//!   from outside, so a node that leaks is seen whatever it reports itself;
//! - what it keeps that must stay bounded, as its `/stats` says: a lock
//!   node's held locks plus waiters (each lock node holds the whole
//!   replicated table), a queue node's stored messages (ready, delayed, in
//!   flight and dead-lettered in the queues it owns; the queue service
//!   recomputes these every few seconds, so they lag by up to that). Other
//!   nodes have none.
//!
//! A figure that cannot be read (the process is gone, `/stats` timed out
//! or changed shape) is `None`: a gap in the samples, not a zero.

use std::time::{Duration, Instant};

use chaos::system::{Kind, System};
use serde::Serialize;
use serde_json::Value;

/// How long a node's `/stats` may take; a node slower than this under a
/// storm is a gap in its samples, not a stall of the sampler.
const STATS_TIMEOUT: Duration = Duration::from_secs(2);

/// A node to sample.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub kind: Kind,
    pub pid: u32,
    pub addr: String,
}

/// Every running node of `sys` (Redis too, when it runs: its memory is
/// part of what the queue and cache keep).
pub fn targets(sys: &System) -> Vec<Target> {
    sys.nodes
        .values()
        .filter_map(|n| {
            Some(Target {
                name: n.name.clone(),
                kind: n.kind,
                pid: sys.pid(&n.name)?,
                addr: n.addr.clone(),
            })
        })
        .collect()
}

/// One node's figures at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct NodeSample {
    pub name: String,
    /// Resident memory, KiB.
    pub rss_kib: Option<u64>,
    /// Open file descriptors.
    pub fds: Option<u64>,
    /// Held locks plus waiters (lock nodes) or stored messages (queue
    /// nodes).
    pub held: Option<u64>,
}

/// Sample every target once (the `/stats` calls at the same time).
pub async fn sample(http: &reqwest::Client, targets: &[Target]) -> Vec<NodeSample> {
    let tasks: Vec<_> = targets
        .iter()
        .map(|t| {
            let (http, t) = (http.clone(), t.clone());
            tokio::spawn(async move {
                let held = match t.kind {
                    Kind::Lock | Kind::Queue => {
                        stats(&http, &t.addr).await.and_then(|v| held(t.kind, &v))
                    }
                    _ => None,
                };
                NodeSample {
                    rss_kib: rss_kib(t.pid),
                    fds: fds(t.pid),
                    name: t.name,
                    held,
                }
            })
        })
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for (task, t) in tasks.into_iter().zip(targets) {
        out.push(task.await.unwrap_or_else(|_| NodeSample {
            name: t.name.clone(),
            rss_kib: None,
            fds: None,
            held: None,
        }));
    }
    out
}

/// Sample at `start`, then every `step` after it, `steps` times more: the
/// samples bracket each of the load's timeline slices (`steps + 1` of
/// them, the first at `start`).
pub async fn every(
    start: Instant,
    step: Duration,
    steps: usize,
    targets: &[Target],
) -> Vec<(Instant, Vec<NodeSample>)> {
    let http = reqwest::Client::builder()
        .timeout(STATS_TIMEOUT)
        .build()
        .expect("a plain HTTP client builds");
    let mut out = Vec::with_capacity(steps + 1);
    for k in 0..=steps {
        tokio::time::sleep_until((start + step * k as u32).into()).await;
        let at = Instant::now();
        out.push((at, sample(&http, targets).await));
    }
    out
}

async fn stats(http: &reqwest::Client, addr: &str) -> Option<Value> {
    let r = http.get(format!("http://{addr}/stats")).send().await.ok()?;
    r.json().await.ok()
}

/// What a node keeps, from its `/stats`.
fn held(kind: Kind, stats: &Value) -> Option<u64> {
    match kind {
        Kind::Lock => Some(stats["holds"].as_u64()? + stats["waiters"].as_u64()?),
        Kind::Queue => ["ready", "delayed", "in_flight", "dead_lettered"]
            .iter()
            .map(|k| stats["depth_owned"][k].as_u64())
            .sum(),
        _ => None,
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    vm_rss_kib(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// `VmRSS` of a `/proc/<pid>/status` text, in KiB (the kernel writes it in
/// kB, meaning KiB).
fn vm_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn fds(pid: u32) -> Option<u64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rss_from_a_status_text() {
        let status = "Name:\tlock-service\nVmPeak:\t  900 kB\nVmRSS:\t   12345 kB\nThreads:\t4\n";
        assert_eq!(vm_rss_kib(status), Some(12345));
        assert_eq!(vm_rss_kib("Name:\tzombie\n"), None);
    }

    #[test]
    fn this_process_has_memory_and_descriptors() {
        let me = std::process::id();
        assert!(rss_kib(me).is_some_and(|k| k > 0));
        assert!(fds(me).is_some_and(|n| n >= 3));
        assert_eq!(rss_kib(u32::MAX), None);
    }

    #[test]
    fn held_units_by_kind() {
        let lock = json!({"resources": 9, "holds": 7, "waiters": 2});
        assert_eq!(held(Kind::Lock, &lock), Some(9));
        let queue = json!({"depth_owned":
            {"ready": 10, "delayed": 1, "in_flight": 2, "dead_lettered": 3}});
        assert_eq!(held(Kind::Queue, &queue), Some(16));
        // A changed shape is a gap, not a zero.
        assert_eq!(held(Kind::Queue, &json!({"depth": 5})), None);
        assert_eq!(held(Kind::Cache, &lock), None);
    }
}
