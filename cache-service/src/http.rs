//! HTTP handlers: the public `/api/cache/*` routes, the service routes
//! (`/health`, `/metrics`, `/stats`, `/cluster`) and the `/internal/` peer
//! routes behind the cluster token. Handlers only validate, call the
//! [`Node`], and answer; [`Error`]'s status codes and JSON bodies are in
//! [`crate::error`].

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use common::metrics::Metrics;
use common::server::{require_cluster_token, ClusterToken};
use common::{ApiError, ApiJson};
use serde::Deserialize;
use serde_json::json;

use crate::error::Error;
use crate::node::Node;
use crate::peer::{ForwardEnvelope, HomeEnvelope, Ping};

pub use api::limits::cache::MAX_VALUE_BYTES;
/// Longest key, in characters (the contract's limit).
pub const MAX_KEY_BYTES: usize = api::limits::MAX_KEY_CHARS;
/// Request bodies above this are refused before parsing (413): a maximal
/// value plus its key and JSON framing fit.
pub const BODY_LIMIT_BYTES: usize = MAX_VALUE_BYTES + 64 * 1024;
pub use api::limits::cache::MAX_TTL_MS;

/// What every handler needs.
#[derive(Clone, Debug)]
pub struct AppState {
    pub node: Node,
    pub metrics: Metrics,
    pub token: ClusterToken,
    /// Whether `POST /internal/cache/faults` is served.
    pub fault_injection: bool,
}

/// The whole service.
pub fn router(state: AppState) -> Router {
    let internal = Router::new()
        .route("/internal/cache/home", post(internal_home))
        .route("/internal/cache/forward", post(internal_forward))
        .route("/internal/cache/ping", post(internal_ping))
        .route("/internal/cache/local", get(internal_local))
        .route("/internal/cache/faults", post(internal_faults))
        .layer(axum::middleware::from_fn_with_state(
            state.token.clone(),
            require_cluster_token,
        ));
    let routes = Router::new()
        .route("/api/cache/set", post(set))
        .route("/api/cache/get", get(get_key))
        .route("/api/cache/delete", delete(delete_key))
        .route("/api/cache/line", get(line))
        .route("/api/cache/stats", get(stats))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/stats", get(stats))
        .route("/cluster", get(cluster))
        .merge(internal);
    common::server::tail(routes, state.metrics.clone(), BODY_LIMIT_BYTES).with_state(state)
}

/// A value's version on the wire.
fn wire_version(v: crate::protocol::Version) -> api::CacheVersion {
    api::CacheVersion {
        epoch: v.epoch,
        seq: v.seq,
    }
}

fn check_key(key: Option<&str>) -> Result<&str, ApiError> {
    let key = key.ok_or_else(|| ApiError::invalid("`key` is required"))?;
    api::limits::name("key", key, MAX_KEY_BYTES)?;
    Ok(key)
}

async fn set(
    State(s): State<AppState>,
    ApiJson(body): ApiJson<api::CacheSetRequest>,
) -> Result<Response, ApiError> {
    let key = check_key(Some(&body.key))?;
    let size = serde_json::to_vec(&body.value).map_or(0, |v| v.len());
    if size > MAX_VALUE_BYTES {
        return Err(Error::ValueTooLarge {
            size,
            limit: MAX_VALUE_BYTES,
        }
        .into());
    }
    if let Some(t) = body.ttl_ms {
        api::limits::range("ttl_ms", t, 1, MAX_TTL_MS)?;
    }
    let version = s.node.set(key, body.value, body.ttl_ms).await?;
    Ok(Json(api::CacheSetResponse {
        key: key.to_string(),
        version: wire_version(version),
    })
    .into_response())
}

async fn get_key(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let key = check_key(q.get("key").map(String::as_str))?;
    match s.node.get(key).await? {
        (Some(d), hit) => Ok(Json(api::CacheValue {
            key: key.to_string(),
            value: d.value,
            version: wire_version(d.version),
            expires_at_ms: d.expires_at_ms,
            hit,
        })
        .into_response()),
        (None, _) => Err(Error::NotFound(key.to_string()).into()),
    }
}

async fn delete_key(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let key = check_key(q.get("key").map(String::as_str))?;
    s.node.delete(key).await?;
    Ok(Json(api::CacheDeleteResponse {
        key: key.to_string(),
        deleted: true,
    })
    .into_response())
}

async fn line(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let key = check_key(q.get("key").map(String::as_str))?;
    Ok(Json(s.node.line_everywhere(key).await).into_response())
}

async fn stats(State(s): State<AppState>) -> Json<serde_json::Value> {
    Json(s.node.stats_json())
}

async fn health(State(s): State<AppState>) -> Response {
    let live = s.node.view().live.len();
    if !s.node.authorized() {
        // A minority side, or a view change settling: this node serves
        // nothing now (every cache call would wait, then answer 503).
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "status": "unavailable", "node": s.node.me(), "live_nodes": live,
                "memory": s.node.memory().backend(),
                "reason": "membership view not confirmed by a majority of the cache nodes",
                "view": s.node.view_json(),
            })),
        )
            .into_response();
    }
    match s.node.memory().ping().await {
        Ok(()) => Json(json!({
            "status": "ok", "node": s.node.me(), "live_nodes": live,
            "memory": s.node.memory().backend(),
        }))
        .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "status": "unavailable", "node": s.node.me(), "live_nodes": live,
                "memory": s.node.memory().backend(), "reason": e.to_string(),
            })),
        )
            .into_response(),
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    // Refresh the per-state line gauges before rendering.
    let _ = s.node.stats_json();
    common::metrics::text_response(&s.metrics)
}

async fn cluster(State(s): State<AppState>) -> Json<serde_json::Value> {
    let view = s.node.view();
    Json(json!({
        "node": s.node.me(),
        "peers": s.node.peers_json(),
        "live": view.live,
        "view_generation": view.generation,
        "view": s.node.view_json(),
        "write_policy": s.node.policy(),
        "memory": s.node.memory().backend(),
    }))
}

async fn internal_home(
    State(s): State<AppState>,
    ApiJson(env): ApiJson<HomeEnvelope>,
) -> Result<Response, ApiError> {
    let key = check_key(Some(&env.key))?;
    let reply = s
        .node
        .handle_home(env.from, key, env.view, env.request)
        .await?;
    Ok(Json(reply).into_response())
}

async fn internal_forward(
    State(s): State<AppState>,
    ApiJson(env): ApiJson<ForwardEnvelope>,
) -> Result<Json<crate::protocol::ForwardReply>, ApiError> {
    let key = check_key(Some(&env.key))?;
    Ok(Json(
        s.node.handle_forward(key, env.view, env.forward).await?,
    ))
}

async fn internal_ping(State(s): State<AppState>, ApiJson(from): ApiJson<Ping>) -> Json<Ping> {
    s.node.observe_ping(&from);
    Json(s.node.ping_reply())
}

#[derive(Debug, Deserialize)]
struct FaultsBody {
    /// Peers this node's outgoing calls must fail to (empty: heal).
    block: Vec<String>,
}

async fn internal_faults(
    State(s): State<AppState>,
    ApiJson(body): ApiJson<FaultsBody>,
) -> Result<Response, ApiError> {
    if !s.fault_injection {
        return Err(ApiError::not_found(
            "fault injection is off (start the node with --fault-injection)",
        ));
    }
    s.node.peers().set_blocked(body.block);
    Ok(Json(json!({ "node": s.node.me(), "blocked": s.node.peers().blocked() })).into_response())
}

async fn internal_local(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let key = check_key(q.get("key").map(String::as_str))?;
    Ok(Json(s.node.local_view(key)).into_response())
}

#[cfg(test)]
mod tests;
