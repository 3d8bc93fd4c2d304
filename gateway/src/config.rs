//! Command-line and environment configuration of the gateway binary.

use std::time::Duration;

use clap::Parser;
use common::config::{listen_default, ServerArgs};

/// distributed-sync gateway: the one HTTP front door to the lock, queue and
/// cache services.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "gateway",
    version,
    about,
    mut_arg("listen", |a| listen_default(a, "127.0.0.1:8080"))
)]
pub struct Config {
    /// Where clients reach the gateway, and how it logs.
    #[command(flatten)]
    pub server: ServerArgs,

    /// Lock nodes (`host:port`, comma-separated). Names are re-resolved.
    #[arg(
        long,
        env = "LOCK_NODES",
        default_value = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003"
    )]
    pub lock_nodes: String,

    /// Queue nodes (`host:port`, comma-separated); a name that resolves to
    /// several addresses (a scaled compose service) yields one member each.
    #[arg(
        long,
        env = "QUEUE_NODES",
        default_value = "127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103"
    )]
    pub queue_nodes: String,

    /// Cache nodes (`host:port`, comma-separated), as for queue nodes.
    #[arg(
        long,
        env = "CACHE_NODES",
        default_value = "127.0.0.1:7201,127.0.0.1:7202,127.0.0.1:7203"
    )]
    pub cache_nodes: String,

    /// Accepted bearer tokens (comma-separated). Empty: no authentication.
    #[arg(long, env = "API_TOKENS", default_value = "", hide_env_values = true)]
    pub api_tokens: String,

    /// Largest accepted request body in bytes (larger: 413).
    #[arg(long, env = "BODY_LIMIT_BYTES", default_value_t = 1024 * 1024)]
    pub body_limit_bytes: usize,

    /// Whole-request timeout in milliseconds (exceeded: 504). Long polls
    /// (`wait_ms`) must fit inside it.
    #[arg(long, env = "REQUEST_TIMEOUT_MS", default_value_t = 30_000)]
    pub request_timeout_ms: u64,

    /// Timeout of one backend call in milliseconds, on top of the call's own
    /// `wait_ms` (acquire, dequeue).
    #[arg(long, env = "BACKEND_TIMEOUT_MS", default_value_t = 5_000)]
    pub backend_timeout_ms: u64,

    /// How long a lock call keeps retrying across a leader change or an
    /// unreachable node, in milliseconds.
    #[arg(long, env = "LOCK_RETRY_MS", default_value_t = 3_000)]
    pub lock_retry_ms: u64,

    /// How often the gateway asks the lock nodes who leads, in milliseconds.
    #[arg(long, env = "LEADER_POLL_MS", default_value_t = 1_000)]
    pub leader_poll_ms: u64,

    /// How often DNS names in the node lists are re-resolved, in milliseconds.
    #[arg(long, env = "DISCOVERY_REFRESH_MS", default_value_t = 2_000)]
    pub discovery_refresh_ms: u64,

    /// Most calls outstanding to any one backend node; past it a call is
    /// answered 503 `overloaded` with `Retry-After` at once instead of
    /// queueing in the gateway (load shedding). Long polls and blocked
    /// acquires count while they wait.
    #[arg(long, env = "MAX_IN_FLIGHT", default_value_t = 512,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_in_flight: u64,
}

/// The knobs the running gateway uses (parsed from [`Config`], or built
/// directly by tests).
#[derive(Debug, Clone)]
pub struct Settings {
    pub api_tokens: Vec<String>,
    pub body_limit_bytes: usize,
    pub request_timeout: Duration,
    pub backend_timeout: Duration,
    pub lock_retry: Duration,
    pub leader_poll: Duration,
    pub max_in_flight: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            api_tokens: Vec::new(),
            body_limit_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            backend_timeout: Duration::from_secs(5),
            lock_retry: Duration::from_secs(3),
            leader_poll: Duration::from_secs(1),
            max_in_flight: 512,
        }
    }
}

impl From<&Config> for Settings {
    fn from(c: &Config) -> Self {
        Self {
            api_tokens: common::discovery::parse_list(&c.api_tokens),
            body_limit_bytes: c.body_limit_bytes,
            request_timeout: Duration::from_millis(c.request_timeout_ms),
            backend_timeout: Duration::from_millis(c.backend_timeout_ms),
            lock_retry: Duration::from_millis(c.lock_retry_ms),
            leader_poll: Duration::from_millis(c.leader_poll_ms.max(50)),
            max_in_flight: c.max_in_flight as usize,
        }
    }
}
