//! HTTP handlers: decode the `api` crate's wire types, route to the
//! queue's owner or serve locally, and answer. The write routes are one
//! generic handler, `write`, over `command::QueueWrite` (each
//! request type's checks and what the owner does live there); errors'
//! status codes and JSON bodies are in [`crate::error`].
//!
//! Routes (bodies as in `README.md`):
//! - `POST /api/queue/enqueue|dequeue|ack|nack|extend|redrive|config`
//! - `GET /api/queue/{queue}` (counts), `GET /api/queue/{queue}/dead`
//! - `GET /api/queues` (the queues this node owns, a page with counts),
//!   `GET /api/events` (this node's recent dead-letterings and redrives)
//! - `GET /health`, `/stats`, `/metrics`, `/cluster`

use std::sync::Arc;
use std::time::Duration;

use api::limits::{self, queue as lim};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use common::{now_ms, ApiError, ApiJson};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::command::{check_queue, raw, QueueWrite};
use crate::node::{Node, Relayed, Route, FORWARDED_HEADER};

/// Largest request body: a full batch of small messages or a few large
/// ones. Single payloads are limited separately to
/// [`crate::delivery::MAX_PAYLOAD_BYTES`].
pub const BODY_LIMIT_BYTES: usize = 4 * 1024 * 1024;
/// Default page of dead letters.
const DEFAULT_DEAD_PAGE: u64 = lim::DEFAULT_DEAD_PAGE;

#[derive(Clone)]
pub struct AppState {
    pub node: Arc<Node>,
    pub metrics: common::metrics::Metrics,
}

fn default_dead_page() -> u64 {
    DEFAULT_DEAD_PAGE
}

#[derive(Debug, Deserialize)]
pub struct DeadQuery {
    #[serde(default = "default_dead_page")]
    pub limit: u64,
}

/// Every write route: check where the request arrived, forward it to the
/// queue's owner unless this node is it, serve it there.
async fn write<C: QueueWrite>(
    State(s): State<AppState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<C>,
) -> Result<Response, ApiError> {
    let checked = req.check()?;
    if let Some(r) = maybe_forward(
        &s,
        &headers,
        req.queue(),
        reqwest::Method::POST,
        C::ROUTE,
        Some(&req),
        C::wait(&checked),
    )
    .await?
    {
        return Ok(r);
    }
    req.serve(checked, &s.node).await
}

/// Serve write route `C` at its path.
fn route_write<C: QueueWrite>(router: Router<AppState>) -> Router<AppState> {
    router.route(C::ROUTE, post(write::<C>))
}

/// Whether another node already routed this request here. Honoured only
/// with the cluster token (when one is set), so a client cannot pin a queue
/// to a node that does not own it.
fn forwarded(s: &AppState, headers: &HeaderMap) -> bool {
    headers.contains_key(FORWARDED_HEADER) && s.node.token.admits(headers)
}

/// The owner's answer as this node's, with the owner's `Retry-After`.
fn relay(r: Relayed) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut resp = (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        r.body,
    )
        .into_response();
    if let Some(v) = r.retry_after {
        resp.headers_mut()
            .insert(axum::http::header::RETRY_AFTER, v);
    }
    resp
}

/// Forward to the owner unless this node serves `queue`; `Some` is the
/// owner's answer.
async fn maybe_forward<B: Serialize>(
    s: &AppState,
    headers: &HeaderMap,
    queue: &str,
    method: reqwest::Method,
    path_and_query: &str,
    body: Option<&B>,
    extra_timeout: Duration,
) -> Result<Option<Response>, ApiError> {
    let Route::Forward(owner) = s.node.route(queue, forwarded(s, headers)) else {
        return Ok(None);
    };
    let body = body
        .map(serde_json::to_vec)
        .transpose()
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    Ok(s.node
        .forward(&owner, method, path_and_query, body, extra_timeout)
        .await?
        .map(relay))
}

/// Percent-encode a path segment for forwarding.
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn queue_stats(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(queue): Path<String>,
) -> Result<Response, ApiError> {
    check_queue(&queue)?;
    let path = format!("/api/queue/{}", encode_segment(&queue));
    if let Some(r) = maybe_forward::<()>(
        &s,
        &headers,
        &queue,
        reqwest::Method::GET,
        &path,
        None,
        Duration::ZERO,
    )
    .await?
    {
        return Ok(r);
    }
    let node = &s.node;
    let (st, events) = node
        .timed("stats", node.store.stats(&queue, now_ms()))
        .await?;
    node.record(&queue, events);
    Ok(Json(api::QueueStats {
        queue,
        node: Some(node.advertise.to_string()),
        ready: st.ready,
        delayed: st.delayed,
        in_flight: st.in_flight,
        dead_lettered: st.dead_lettered,
        expired_total: st.expired_total,
    })
    .into_response())
}

async fn dead_letters(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(queue): Path<String>,
    q: Result<Query<DeadQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::invalid(e.body_text()))?;
    check_queue(&queue)?;
    limits::range("limit", q.limit, 1, lim::MAX_DEAD_PAGE)?;
    let path = format!(
        "/api/queue/{}/dead?limit={}",
        encode_segment(&queue),
        q.limit
    );
    if let Some(r) = maybe_forward::<()>(
        &s,
        &headers,
        &queue,
        reqwest::Method::GET,
        &path,
        None,
        Duration::ZERO,
    )
    .await?
    {
        return Ok(r);
    }
    let node = &s.node;
    let dead = node
        .timed(
            "dead_letters",
            node.store.dead_letters(&queue, q.limit as usize),
        )
        .await?;
    let messages: Vec<api::DeadLetter> = dead
        .into_iter()
        .map(|d| api::DeadLetter {
            id: d.id,
            payload: raw(d.payload),
            attempts: d.attempts,
            enqueued_at_ms: d.enqueued_at_ms,
            dead_lettered_at_ms: d.dead_lettered_at_ms,
        })
        .collect();
    Ok(Json(api::DeadLetters { queue, messages }).into_response())
}

/// `GET /api/queues?prefix=&after=&limit=`: one page of the queues this
/// node owns on its ring, with their counts (the gateway merges every
/// node's).
async fn list(
    State(s): State<AppState>,
    q: Result<Query<api::ListQuery>, QueryRejection>,
) -> Result<Json<api::QueueList>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::invalid(e.body_text()))?;
    let page = limits::page(q.prefix.as_deref(), q.after.as_deref(), q.limit)?;
    let (queues, more) = s.node.list(&page).await?;
    let next = more
        .then(|| queues.last().map(|q| q.queue.clone()))
        .flatten();
    Ok(Json(api::QueueList {
        queues,
        next,
        unavailable: Vec::new(),
    }))
}

/// `GET /api/events?limit=`: this node's newest events, newest first.
async fn events(
    State(s): State<AppState>,
    q: Result<Query<api::EventQuery>, QueryRejection>,
) -> Result<Json<api::EventList>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::invalid(e.body_text()))?;
    let limit = limits::event_limit(q.limit)?;
    Ok(Json(api::EventList {
        events: s.node.events.newest(limit),
        unavailable: Vec::new(),
    }))
}

async fn health(State(s): State<AppState>) -> Response {
    let backend = s.node.store.backend();
    match s.node.store.ping().await {
        Ok(()) => Json(json!({ "status": "ok", "node": s.node.advertise, "backend": backend }))
            .into_response(),
        Err(e) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            e.to_string(),
        )
        .with("backend", backend)
        .into_response(),
    }
}

/// `/stats`' `limits`: each limit beside what is stored against it.
fn limits_json(node: &Node) -> serde_json::Value {
    let q = node.limits.queue;
    let fullest = node
        .fullest_queue()
        .map(|(queue, u)| json!({ "queue": queue, "messages": u.messages, "bytes": u.bytes }));
    let node_limits = match (node.node_limits(), node.node_usage()) {
        (Some(l), Some(u)) => json!({
            "enforced": true,
            "max_messages": l.max_messages,
            "max_bytes": l.max_bytes,
            "messages": u.messages,
            "bytes": u.bytes,
        }),
        _ => json!({
            "enforced": false,
            "reason": "the Redis store keeps no messages on this node; Redis's maxmemory bounds Redis",
        }),
    };
    let refused: serde_json::Map<String, serde_json::Value> = node
        .metrics
        .refusals()
        .into_iter()
        .map(|(limit, n)| (limit.to_string(), json!(n)))
        .collect();
    json!({
        "queue": {
            "max_messages": q.max_messages,
            "max_bytes": q.max_bytes,
            "fullest_owned": fullest,
        },
        "node": node_limits,
        "refused": refused,
    })
}

async fn stats(State(s): State<AppState>) -> Response {
    let m = &s.node.metrics;
    let depth = m.depth();
    Json(json!({
        "node": s.node.advertise,
        "backend": s.node.store.backend(),
        "members": *s.node.members.current(),
        "counters": {
            "enqueued": m.enqueued.get(),
            "delivered": m.delivered.get(),
            "redelivered": m.redelivered.get(),
            "acked": m.acked.get(),
            "nacked": m.nacked.get(),
            "dead_lettered": m.dead_lettered.get(),
            "expired": m.expired.get(),
            "forwarded": m.forwarded.get(),
            "owner_fallbacks": m.owner_fallbacks.get(),
        },
        "depth_owned": {
            "ready": depth.ready,
            "delayed": depth.delayed,
            "in_flight": depth.in_flight,
            "dead_lettered": depth.dead_lettered,
        },
        "limits": limits_json(&s.node),
    }))
    .into_response()
}

async fn metrics(State(s): State<AppState>) -> Response {
    // The node's use is read at the scrape, not at the last refresh.
    s.node.node_usage();
    common::metrics::text_response(&s.metrics)
}

async fn cluster(State(s): State<AppState>) -> Response {
    Json(json!({
        "node": s.node.advertise,
        "members": *s.node.members.current(),
        "backend": s.node.store.backend(),
    }))
    .into_response()
}

/// The node's full router.
pub fn router(state: AppState) -> Router {
    let writes = [
        route_write::<api::EnqueueRequest>,
        route_write::<api::DequeueRequest>,
        route_write::<api::AckRequest>,
        route_write::<api::NackRequest>,
        route_write::<api::ExtendRequest>,
        route_write::<api::RedriveRequest>,
        route_write::<api::QueueConfig>,
    ];
    let routes = writes
        .into_iter()
        .fold(Router::new(), |r, add| add(r))
        .route("/api/queue/{queue}", get(queue_stats))
        .route("/api/queue/{queue}/dead", get(dead_letters))
        .route("/api/queues", get(list))
        .route("/api/events", get(events))
        .route("/health", get(health))
        .route("/stats", get(stats))
        .route("/metrics", get(metrics))
        .route("/cluster", get(cluster));
    common::server::tail(routes, state.metrics.clone(), BODY_LIMIT_BYTES).with_state(state)
}
