//! Command-line and environment configuration of a queue node.

use std::path::PathBuf;

use clap::Parser;

use crate::delivery::{DEFAULT_MAX_ATTEMPTS, MAX_MAX_ATTEMPTS};

#[derive(Parser, Debug, Clone)]
#[command(
    name = "queue-service",
    about = "At-least-once work queues placed by consistent hashing"
)]
pub struct Config {
    /// Address to listen on (host:port).
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:7101")]
    pub listen: String,

    /// This node's name in the ring, as it appears in PEERS (default: the
    /// listen address).
    #[arg(long, env = "ADVERTISE_ADDR")]
    pub advertise: Option<String>,

    /// Every queue node including this one, comma-separated host:port.
    /// Names are re-resolved periodically (a scaled compose service name
    /// yields one member per replica). Empty: this node alone.
    #[arg(long, env = "PEERS", default_value = "")]
    pub peers: String,

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

    /// Shared secret between nodes: sent on forwarded requests, and required
    /// for a forwarded request to be served without routing it again.
    #[arg(long, env = "CLUSTER_TOKEN", hide_env_values = true)]
    pub cluster_token: Option<String>,

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
            listen: listen.into(),
            advertise: None,
            peers: String::new(),
            redis_url: None,
            data_dir: None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            cluster_token: None,
            forward_timeout_ms: 2000,
            peer_refresh_ms: 2000,
        }
    }

    pub fn advertise(&self) -> String {
        self.advertise
            .clone()
            .unwrap_or_else(|| self.listen.clone())
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(|| {
            let port = self.listen.rsplit(':').next().unwrap_or("7101");
            PathBuf::from(format!("data/queue-{port}"))
        })
    }
}
