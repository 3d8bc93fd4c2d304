//! Pieces every distributed-sync service repeats, kept in one place so they
//! behave the same everywhere.
//!
//! - [`error`]: the JSON error body (`{"error":{"code","message",…}}`) and the
//!   JSON extractor that turns malformed bodies into 4xx answers instead of
//!   axum's plain-text rejections.
//! - [`ring`]: the consistent-hash ring (virtual nodes over `hashring`) that
//!   queue nodes, cache nodes and the gateway must compute identically.
//! - [`metrics`]: a per-process Prometheus registry with per-route request
//!   counters and latency histograms, plus room for each service's gauges.
//! - [`discovery`]: member lists from static addresses or re-resolved DNS names.
//! - [`config`]: the flags every service binary shares (listen address,
//!   logging, cluster token, ring membership), flattened into each
//!   service's `Config`.
//! - [`server`]: tracing setup, the `/internal/` token guard, the router
//!   tail (fallbacks, body limit, request metrics, request span) and `serve`
//!   (TCP_NODELAY, graceful shutdown).
//! - [`port`]: ports reserved across processes for servers started as
//!   separate processes (tests, the fault suite, load tools).

pub mod config;
pub mod discovery;
pub mod error;
pub mod metrics;
pub mod port;
pub mod ring;
pub mod server;

pub use error::{ApiError, ApiJson};
pub use ring::Ring;

/// Milliseconds since the Unix epoch by the local wall clock.
///
/// Only adapters call this; pure domain cores take `now` as an argument.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
