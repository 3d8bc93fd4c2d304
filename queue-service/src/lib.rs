//! queue-service: at-least-once work queues, placed on nodes by consistent
//! hashing, stored in Redis or in an embedded durable store.
//!
//! Modules, from the core outwards:
//! - [`delivery`]: the pure delivery rules of one queue (enqueue, dequeue
//!   with visibility, ack/nack/extend by per-delivery receipt, redelivery,
//!   dead-lettering, TTL, re-drive); no I/O, time passed in.
//! - [`limit`]: the per-queue and per-node storage limits and the refusal
//!   of an enqueue that would go over one; pure.
//! - [`store`]: the [`store::QueueStore`] trait and its two backends, Redis
//!   (Lua scripts) and embedded (redb, group commit).
//! - [`node`]: placement on the ring, forwarding to owners, long polls.
//! - [`metrics`]: the queue metric families on `/metrics`.
//! - `command`: one `QueueWrite` impl per write route's request type: its
//!   checks and what the queue's owner does with it;
//! - [`http`]: the axum handlers (one generic handler for the writes) and
//!   [`router`].
//! - [`error`]: the crate's error and its one mapping to HTTP.
//! - [`config`]: flags with environment fallbacks.
//!
//! [`run`] wires them together for `main.rs` and the tests.

mod command;
pub mod config;
pub mod delivery;
pub mod error;
pub mod http;
pub mod limit;
pub mod metrics;
pub mod node;
pub mod store;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use common::discovery::{parse_list, Members};
use common::metrics::{Metrics, MetricsRegistry};
use tokio::net::TcpListener;

pub use config::Config;
pub use error::{Error, Result};
pub use http::{router, AppState};

use metrics::QueueMetrics;
use node::Node;
use store::embedded::EmbeddedStore;
use store::redis::RedisStore;
use store::QueueStore;

/// Open the store the config asks for: Redis when `redis_url` is set, else
/// the embedded store in the data dir.
pub fn open_store(config: &Config) -> Result<Arc<dyn QueueStore>> {
    Ok(match &config.redis_url {
        Some(url) => Arc::new(RedisStore::new(
            url,
            config.max_attempts,
            config.limits().queue,
        )?),
        None => Arc::new(EmbeddedStore::open(
            &config.data_dir(),
            config.max_attempts,
            config.limits(),
        )?),
    })
}

/// Build the node state around a store.
pub async fn build_state(config: &Config, store: Arc<dyn QueueStore>) -> AppState {
    let advertise = config.advertise();
    let mut specs = parse_list(&config.members.peers);
    if specs.is_empty() {
        specs.push(advertise.clone());
    }
    let members = Members::spawn(
        specs,
        Duration::from_millis(config.peer_refresh_ms.max(100)),
    )
    .await;
    let mut registry = MetricsRegistry::default();
    let queue_metrics = QueueMetrics::register(&mut registry);
    let node = Node::new(
        advertise,
        members,
        store,
        queue_metrics,
        config.cluster.token(),
        Duration::from_millis(config.forward_timeout_ms.max(1)),
        config.limits(),
    );
    AppState {
        node: Arc::new(node),
        metrics: Metrics::new(registry),
    }
}

/// Serve the node on `listener` until `shutdown` resolves.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let store = open_store(&config)?;
    let state = build_state(&config, store).await;
    tracing::info!(
        listen = %config.server.listen,
        node = %state.node.advertise,
        backend = state.node.store.backend(),
        members = ?state.node.members.current(),
        "queue-service up"
    );
    let node = state.node.clone();
    let refresher = tokio::spawn(async move {
        let mut tick = tokio::time::interval(node::DEPTH_REFRESH);
        loop {
            tick.tick().await;
            if let Err(e) = node.refresh_depth().await {
                tracing::debug!(error = %e, "depth refresh failed");
            }
        }
    });
    let res = common::server::serve(listener, router(state), shutdown).await;
    refresher.abort();
    res?;
    Ok(())
}
