//! Command-line and environment configuration of a queue node.

use std::path::PathBuf;

use clap::Parser;
use common::config::{listen_default, ClusterArgs, MemberArgs, ServerArgs};

use crate::delivery::{DEFAULT_MAX_ATTEMPTS, MAX_MAX_ATTEMPTS};
use crate::limit::{
    Limits, StoreLimits, DEFAULT_MAX_NODE_BYTES, DEFAULT_MAX_NODE_MESSAGES,
    DEFAULT_MAX_QUEUE_BYTES, DEFAULT_MAX_QUEUE_MESSAGES,
};

#[derive(Parser, Debug, Clone)]
#[command(
    name = "queue-service",
    about = "At-least-once work queues placed by consistent hashing",
    mut_arg("listen", |a| listen_default(a, "127.0.0.1:7101"))
)]
pub struct Config {
    /// Where this node listens, and how it logs.
    #[command(flatten)]
    pub server: ServerArgs,

    /// This node's name in the ring (default: the listen address) and the
    /// other queue nodes.
    #[command(flatten)]
    pub members: MemberArgs,

    /// Redis URL (redis://host:port/db). Unset: the embedded store in
    /// --data-dir.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,

    /// Directory of the embedded store (default: `data/queue-<listen port>`).
    #[arg(long, env = "DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Deliveries before a message is dead-lettered, for queues that set no
    /// value of their own.
    #[arg(long, env = "MAX_ATTEMPTS", default_value_t = DEFAULT_MAX_ATTEMPTS,
          value_parser = clap::value_parser!(u32).range(1..=MAX_MAX_ATTEMPTS as i64))]
    pub max_attempts: u32,

    /// Most messages one queue stores, in every state (ready, delayed, in
    /// flight, dead-lettered); an enqueue that would go over gets 429
    /// `queue_full`. Both stores.
    #[arg(long, env = "MAX_QUEUE_MESSAGES", default_value_t = DEFAULT_MAX_QUEUE_MESSAGES,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_queue_messages: u64,

    /// Most payload bytes (JSON text) one queue stores; as
    /// --max-queue-messages.
    #[arg(long, env = "MAX_QUEUE_BYTES", default_value_t = DEFAULT_MAX_QUEUE_BYTES,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_queue_bytes: u64,

    /// Most messages this node stores across all its queues (the embedded
    /// store holds them all in memory). Not applied with --redis-url:
    /// Redis's maxmemory bounds Redis.
    #[arg(long, env = "MAX_NODE_MESSAGES", default_value_t = DEFAULT_MAX_NODE_MESSAGES,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_node_messages: u64,

    /// Most payload bytes this node stores across all its queues; as
    /// --max-node-messages.
    #[arg(long, env = "MAX_NODE_BYTES", default_value_t = DEFAULT_MAX_NODE_BYTES,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_node_bytes: u64,

    /// Sent on forwarded requests, and required for a forwarded request to
    /// be served without routing it again.
    #[command(flatten)]
    pub cluster: ClusterArgs,

    /// Time allowed for a forwarded request to the queue's owner (plus the
    /// request's own wait_ms for long polls).
    #[arg(long, env = "FORWARD_TIMEOUT_MS", default_value_t = 2000)]
    pub forward_timeout_ms: u64,

    /// How often member names in PEERS are re-resolved.
    #[arg(long, env = "PEER_REFRESH_MS", default_value_t = 2000)]
    pub peer_refresh_ms: u64,
}

impl Config {
    /// Defaults for tests and embedding: the given listen address, nothing
    /// else set.
    pub fn for_listen(listen: impl Into<String>) -> Self {
        Self {
            server: ServerArgs::listen_on(listen),
            members: MemberArgs::default(),
            redis_url: None,
            data_dir: None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            max_queue_messages: DEFAULT_MAX_QUEUE_MESSAGES,
            max_queue_bytes: DEFAULT_MAX_QUEUE_BYTES,
            max_node_messages: DEFAULT_MAX_NODE_MESSAGES,
            max_node_bytes: DEFAULT_MAX_NODE_BYTES,
            cluster: ClusterArgs::default(),
            forward_timeout_ms: 2000,
            peer_refresh_ms: 2000,
        }
    }

    /// This node's name in the ring: `--advertise`, else the listen address.
    pub fn advertise(&self) -> String {
        self.members
            .advertise()
            .unwrap_or(&self.server.listen)
            .to_string()
    }

    /// The storage limits the flags set.
    pub fn limits(&self) -> StoreLimits {
        StoreLimits {
            queue: Limits {
                max_messages: self.max_queue_messages,
                max_bytes: self.max_queue_bytes,
            },
            node: Limits {
                max_messages: self.max_node_messages,
                max_bytes: self.max_node_bytes,
            },
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(|| {
            let port = self.server.listen.rsplit(':').next().unwrap_or("7101");
            PathBuf::from(format!("data/queue-{port}"))
        })
    }
}
