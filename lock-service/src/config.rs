//! Command-line and environment configuration of a lock node.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Parser;
use common::config::{listen_default, ClusterArgs, ServerArgs};
use raft_core::NodeId;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "lock-service",
    about = "Replicated lock service node (Raft)",
    mut_arg("listen", |a| listen_default(a, "127.0.0.1:7001"))
)]
pub struct Config {
    /// This node's Raft id (must appear in --peers).
    #[arg(long, env = "NODE_ID", default_value_t = 1)]
    pub id: NodeId,

    /// Where clients and peers reach this node, and how it logs.
    #[command(flatten)]
    pub server: ServerArgs,

    /// Every member as id=host:port, comma-separated (this node included).
    #[arg(
        long,
        env = "PEERS",
        default_value = "1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003"
    )]
    pub peers: String,

    /// Directory for the Raft log, vote and snapshots.
    #[arg(long, env = "DATA_DIR", default_value = "./data/lock")]
    pub data_dir: PathBuf,

    /// The secret on Raft's `/internal/` routes.
    #[command(flatten)]
    pub cluster: ClusterArgs,

    /// Raft heartbeat interval in milliseconds.
    #[arg(long, env = "HEARTBEAT_MS", default_value_t = 30)]
    pub heartbeat_ms: u64,

    /// Minimum election timeout in milliseconds. openraft's own random
    /// election timer is off (elections start from raft-core's ranked,
    /// pre-voted loop); this bounds how long one append RPC may take, and
    /// must stay below `election_max_ms`.
    #[arg(long, env = "ELECTION_MIN_MS", default_value_t = 100)]
    pub election_min_ms: u64,

    /// Maximum election timeout in milliseconds: the leader lease, after
    /// which a silent leader is replaced.
    #[arg(long, env = "ELECTION_MAX_MS", default_value_t = 200)]
    pub election_max_ms: u64,

    /// Build a snapshot after this many log entries (and once the commands
    /// since add up to the size of the last snapshot).
    #[arg(long, env = "SNAPSHOT_EVERY", default_value_t = 10_000)]
    pub snapshot_every: u64,

    /// Writes the leader lets wait to be proposed; past this it answers
    /// 429 `overloaded` at once instead of queueing without bound.
    #[arg(long, env = "MAX_QUEUED_WRITES", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_queued_writes: u64,

    /// Most locks held plus requests waiting, over all resources. A new
    /// acquire that would hold or wait past it gets 429
    /// `capacity_exceeded`; releases, renewals and reads always work.
    /// Measured at ~1.5 KB of RSS per held lock on each node (its
    /// remembered grant, the log until the next snapshot, and the snapshot
    /// included): 100,000 held took each node to 159 MB.
    #[arg(long, env = "MAX_LOCKS", default_value_t = 100_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_locks: u64,

    /// Most answers remembered for retries (`request_id`). Past it, the
    /// ones due to be forgotten soonest are forgotten first; a retry of a
    /// forgotten request is applied anew (README, "Limits"). Measured at
    /// ~1.6 KB of RSS each (a refused acquire's answer with its holders,
    /// and its log entry): with both limits reached a node stays near
    /// 350 MB, inside a 512 MB container.
    #[arg(long, env = "MAX_REMEMBERED", default_value_t = 100_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_remembered: u64,

    /// Runtime worker threads; 0 means one per core, 1 runs everything on
    /// the main thread (tokio's current-thread runtime). Nodes that share a
    /// machine's cores (run-local.sh, one-host compose) do better with 1:
    /// Raft's core loop is one task, and fewer threads mean fewer wake-ups
    /// handed across cores.
    #[arg(long, env = "WORKER_THREADS", default_value_t = 0)]
    pub worker_threads: usize,
}

impl Config {
    /// Parse `--peers` into id → address.
    pub fn peer_map(&self) -> Result<BTreeMap<NodeId, String>, String> {
        parse_peers(&self.peers)
    }

    /// The tokio runtime `--worker-threads` asks for.
    ///
    /// One thread means tokio's current-thread runtime, not a multi-thread
    /// one with a single worker, which would still run `block_on` on a
    /// second thread and pay the work-stealing scheduler's bookkeeping on
    /// every wake-up. On this 2-core host, three nodes on current-thread
    /// runtimes did 1.03-1.08x the hand-offs and 1.02-1.16x the 16-client
    /// pairs of the same nodes on one-worker runtimes, at 0.92-1.01x the CPU
    /// (three invocations, medians of 5, alternating in each).
    pub fn runtime(&self) -> std::io::Result<tokio::runtime::Runtime> {
        let mut runtime = if self.worker_threads == 1 {
            tokio::runtime::Builder::new_current_thread()
        } else {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            if self.worker_threads > 0 {
                b.worker_threads(self.worker_threads);
            }
            b
        };
        runtime.enable_all().build()
    }
}

pub fn parse_peers(s: &str) -> Result<BTreeMap<NodeId, String>, String> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| format!("peer `{part}` is not id=host:port"))?;
        let id: NodeId = id
            .trim()
            .parse()
            .map_err(|_| format!("peer id `{id}` is not a number"))?;
        if out.insert(id, addr.trim().to_string()).is_some() {
            return Err(format!("peer id {id} appears twice"));
        }
    }
    if out.is_empty() {
        return Err("no peers given".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse() {
        let m = parse_peers("1=127.0.0.1:7001, 2=h:2").unwrap();
        assert_eq!(m[&1], "127.0.0.1:7001");
        assert_eq!(m[&2], "h:2");
        assert!(parse_peers("x=1").is_err());
        assert!(parse_peers("1").is_err());
        assert!(parse_peers("1=a,1=b").is_err());
        assert!(parse_peers("").is_err());
    }
}
