//! The gateway: the one HTTP front door to distributed-sync.
//!
//! Clients call the services' public routes here, unchanged; the gateway
//! decides which node answers and hides leader changes and scaling:
//! - [`lock`]: follows the Raft leader, retries across a leader change with
//!   the same `request_id` (filled in when absent);
//! - [`queue`]: sends each queue to its owner on the shared ring, failing
//!   over to the next owner;
//! - [`cache`]: the node the client names, else sticky per client, else
//!   round-robin;
//! - [`state`]: membership (re-resolved DNS via `common::discovery`), the
//!   one bounded backend call, in-flight limits, per-backend metrics;
//! - [`upstream`]: HTTP/1.1 to the backends on pooled keep-alive
//!   connections, heads written and parsed in place;
//! - [`metrics`]: the gateway's metric families on `/metrics`;
//! - [`error`]: the gateway's error and its one mapping to HTTP;
//! - [`proxy`]: the proxied routes, matched and served without a router;
//! - [`protect`]: bearer tokens, body limit, request timeout;
//! - [`view`]: `/health`, `/cluster`, `/stats`;
//! - [`events`]: the fan-out routes (`/api/queues`, `/api/events`): every
//!   node asked, the answers merged;
//! - [`openapi`]: `/openapi.json` from the code, Swagger UI at `/docs`;
//! - [`ui`]: the web console at `/ui`, embedded in the binary;
//! - [`http`]: the handlers.
//!
//! Routes under `/internal/` of the services are never forwarded: the
//! gateway only routes the public paths it lists, everything else is a JSON 404.

pub mod cache;
pub mod config;
pub mod error;
pub mod events;
pub mod http;
pub mod lock;
pub mod metrics;
pub mod openapi;
pub mod protect;
pub mod proxy;
pub mod queue;
pub mod state;
pub mod ui;
pub mod upstream;
pub mod view;

use std::future::Future;
use std::time::Duration;

use axum::middleware::from_fn_with_state;
use axum::routing::get;
use axum::Router;
use common::discovery::{parse_list, Members};
use tokio::net::TcpListener;
use utoipa_swagger_ui::SwaggerUi;

pub use config::{Config, Settings};
pub use error::Error;
pub use state::{BackendSenders, Backends, Gateway, Service};

/// The gateway's HTTP service: the proxied routes ([`proxy::Route`]) served
/// by [`proxy::App`] directly, everything else by an axum router of the
/// gateway's own routes.
pub fn router(gw: Gateway) -> proxy::App {
    let limit = gw.settings().body_limit_bytes;
    let protected = Router::new()
        .route("/cluster", get(http::cluster))
        .route("/stats", get(http::stats))
        .route("/metrics", get(http::metrics))
        .route_layer(from_fn_with_state(gw.clone(), protect::require_token));
    let routes = Router::new()
        .merge(protected)
        .route("/health", get(http::health))
        .merge(ui::routes())
        .merge(SwaggerUi::new("/docs").url(
            "/openapi.json",
            openapi::document_for(&gw.members(state::Service::Cache)),
        ));
    // What `common::server::tail` gives the services, less its trace layer
    // (a span per request, at debug level) and with the metrics folded into
    // the deadline's layer (`protect::front`), as `proxy` does in line.
    let rest = routes
        .method_not_allowed_fallback(common::error::method_not_allowed_fallback)
        .fallback(common::error::not_found_fallback)
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .layer(from_fn_with_state(gw.clone(), protect::front))
        .with_state(gw.clone());
    proxy::App::new(gw, rest)
}

/// Serve `gw` on `listener` until `shutdown` resolves, keeping the lock
/// leader fresh in the background.
pub async fn serve(
    gw: Gateway,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let poller = tokio::spawn(lock::poll_leader(gw.clone()));
    let res = common::server::serve(listener, router(gw), shutdown).await;
    poller.abort();
    res
}

/// Resolve the configured backends and serve until `shutdown`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let refresh = Duration::from_millis(config.discovery_refresh_ms.max(100));
    let lock = Members::spawn(parse_list(&config.lock_nodes), refresh).await;
    let queue = Members::spawn(parse_list(&config.queue_nodes), refresh).await;
    let cache = Members::spawn(parse_list(&config.cache_nodes), refresh).await;
    tracing::info!(
        lock = ?lock.current(),
        queue = ?queue.current(),
        cache = ?cache.current(),
        "backends"
    );
    let gw = Gateway::new(
        Settings::from(&config),
        Backends::from_members(&lock, &queue, &cache),
    )?;
    tracing::info!(addr = %listener.local_addr()?, "gateway listening");
    serve(gw, listener, shutdown).await?;
    Ok(())
}
