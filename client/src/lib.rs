//! A typed async client for distributed-sync's public API: locks, queues, the
//! coherent cache, and the gateway's own health/cluster/stats views.
//!
//! - [`types`]: the request and answer bodies, re-exported from the `api`
//!   crate (the one contract: the services decode them and the gateway's
//!   OpenAPI document is generated from them);
//! - [`Client`]: one method per route, pooled keep-alive connections;
//! - [`LockGuard`]: a held lock renewed in the background at a third of its
//!   TTL, reporting loss on a watch channel;
//! - [`Error`]: API errors carry the JSON error `code`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), client::Error> {
//! use client::{AcquireRequest, Client};
//! let c = Client::builder("127.0.0.1:8080").client_id("worker-1").build()?;
//! let guard = c
//!     .lock(AcquireRequest { resource: "orders".into(), owner: "worker-1".into(), ..Default::default() })
//!     .await?;
//! c.enqueue_one("emails", serde_json::json!({"to": "a@example.com"})).await?;
//! guard.release().await?;
//! # Ok(()) }
//! ```

mod client;
mod error;
mod guard;

pub use api::{limits, types, Payload};
pub use client::{Client, ClientBuilder, CACHE_NODE_HEADER, CLIENT_ID_HEADER, DEFAULT_TIMEOUT};
pub use error::Error;
pub use guard::{LockGuard, LockStatus, DEFAULT_TTL_MS};
pub use types::*;
