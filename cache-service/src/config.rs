//! Command-line flags, each with an environment fallback; every default
//! runs a single local node.

use clap::Parser;
use common::config::{listen_default, ClusterArgs, MemberArgs, ServerArgs};

use crate::directory::WritePolicy;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "cache-service",
    about = "Coherent near cache node (directory MESI)",
    mut_arg("listen", |a| listen_default(a, "127.0.0.1:7201"))
)]
pub struct Config {
    /// Where this node listens, and how it logs.
    #[command(flatten)]
    pub server: ServerArgs,
    /// This node's name in the ring (default: the bound address; when
    /// listening on 0.0.0.0, the local address that routes to the first
    /// peer) and the other cache nodes.
    #[command(flatten)]
    pub members: MemberArgs,
    /// The secret on the `/internal/` peer routes.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Redis URL for the backing memory; unset keeps values in the home
    /// node's own memory.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,
    /// Most lines this node caches.
    #[arg(long, env = "MAX_ENTRIES", default_value_t = 100_000)]
    pub max_entries: usize,
    /// Most bytes of keys and values this node caches.
    #[arg(long, env = "MAX_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_bytes: usize,
    /// Most values a home keeps in its own memory (no `REDIS_URL`); the
    /// least recently used goes first, and reads of it then miss.
    #[arg(long, env = "MAX_MEMORY_ENTRIES", default_value_t = 100_000)]
    pub max_memory_entries: usize,
    /// Most bytes of keys and values a home keeps in its own memory.
    #[arg(long, env = "MAX_MEMORY_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_memory_bytes: usize,
    /// When modified lines reach the backing memory.
    #[arg(long, env = "WRITE_POLICY", value_enum, default_value = "write-back")]
    pub write_policy: WritePolicy,
    /// Interval between heartbeats to each peer.
    #[arg(long, env = "HEARTBEAT_MS", default_value_t = 200)]
    pub heartbeat_ms: u64,
    /// A peer silent for this long is dropped from the ring and directories.
    #[arg(long, env = "FAILURE_TIMEOUT_MS", default_value_t = 1500)]
    pub failure_timeout_ms: u64,
    /// Enable `POST /internal/cache/faults` (cut this node's outgoing
    /// links to chosen peers). For fault tests only; off by default.
    #[arg(long, env = "FAULT_INJECTION", default_value_t = false)]
    pub fault_injection: bool,
}

impl Config {
    /// Defaults plus the given listen address and peers (tests).
    pub fn for_test(advertise: &str, peers: &[String]) -> Self {
        let mut c = Config::parse_from(["cache-service"]);
        c.server.listen = advertise.to_string();
        c.members.advertise = Some(advertise.to_string());
        c.members.peers = peers.join(",");
        c.heartbeat_ms = 100;
        // Generous: a loaded test machine must not suspect a live node.
        c.failure_timeout_ms = 3000;
        c
    }
}
