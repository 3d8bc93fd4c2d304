//! HTTP handlers: one per public route, each a thin call into the routing
//! module of its service. The `#[utoipa::path]` attributes here are the
//! source of `/openapi.json`, so every route's request and answer bodies are
//! documented where the route is served.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use client::types::*;

use crate::error::Error;
use crate::protect::Body;
use crate::state::{Gateway, Outbound};
use crate::{cache, lock, queue, view};

type Answer = Result<crate::state::Reply, Error>;

fn path_and_query(uri: &Uri) -> &str {
    uri.path_and_query()
        .map(|p| p.as_str())
        .unwrap_or_else(|| uri.path())
}

fn post<'a>(route: &'static str, uri: &'a Uri, body: Option<Bytes>) -> Outbound<'a> {
    Outbound {
        route,
        method: Method::POST,
        path_and_query: path_and_query(uri),
        body,
    }
}

fn get<'a>(route: &'static str, uri: &'a Uri) -> Outbound<'a> {
    Outbound {
        route,
        method: Method::GET,
        path_and_query: path_and_query(uri),
        body: None,
    }
}

/// Count input the gateway refused itself, then pass the error on.
fn refused(gw: &Gateway, e: Error) -> Error {
    gw.count_rejected("invalid_input");
    e
}

async fn lock_write(gw: Gateway, route: &'static str, uri: Uri, body: Body) -> Answer {
    let (bytes, wait_ms) = lock::prepare_write(&body.0).map_err(|e| refused(&gw, e))?;
    lock::forward(&gw, post(route, &uri, Some(bytes)), wait_ms).await
}

/// Acquire a lock (exclusive or shared), optionally waiting for it.
#[utoipa::path(post, path = "/api/lock/acquire", tag = "lock",
    request_body = AcquireRequest,
    responses(
        (status = 200, description = "Granted", body = LockGrant),
        (status = 400, description = "Malformed JSON or invalid input", body = ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 409, description = "`lock_held`, `wait_timeout` or `deadlock` (with the cycle)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "Missing or mistyped field", body = ErrorBody),
        (status = 503, description = "No lock leader within the retry budget", body = ErrorBody),
        (status = 429, description = "The lock leader's write queue is full: not applied; retry after a pause", body = ErrorBody),
        (status = 504, description = "Timed out", body = ErrorBody),
    ),
    security((), ("bearer" = [])))]
pub async fn lock_acquire(State(gw): State<Gateway>, uri: Uri, body: Body) -> Answer {
    lock_write(gw, "/api/lock/acquire", uri, body).await
}

/// Release a held lock (owner and token must match).
#[utoipa::path(post, path = "/api/lock/release", tag = "lock",
    request_body = ReleaseRequest,
    responses(
        (status = 200, description = "Released", body = ReleaseResponse),
        (status = 400, description = "Malformed JSON or invalid input", body = ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 404, description = "Not held", body = ErrorBody),
        (status = 409, description = "Owner or token does not match", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "Missing or mistyped field", body = ErrorBody),
        (status = 503, description = "No lock leader within the retry budget", body = ErrorBody),
        (status = 429, description = "The lock leader's write queue is full: not applied; retry after a pause", body = ErrorBody),
        (status = 504, description = "Timed out", body = ErrorBody),
    ),
    security((), ("bearer" = [])))]
pub async fn lock_release(State(gw): State<Gateway>, uri: Uri, body: Body) -> Answer {
    lock_write(gw, "/api/lock/release", uri, body).await
}

/// Extend a held lock's lease.
#[utoipa::path(post, path = "/api/lock/renew", tag = "lock",
    request_body = RenewRequest,
    responses(
        (status = 200, description = "Renewed", body = RenewResponse),
        (status = 400, description = "Malformed JSON or invalid input", body = ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 404, description = "Not held", body = ErrorBody),
        (status = 409, description = "Owner or token does not match", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "Missing or mistyped field", body = ErrorBody),
        (status = 503, description = "No lock leader within the retry budget", body = ErrorBody),
        (status = 429, description = "The lock leader's write queue is full: not applied; retry after a pause", body = ErrorBody),
        (status = 504, description = "Timed out", body = ErrorBody),
    ),
    security((), ("bearer" = [])))]
pub async fn lock_renew(State(gw): State<Gateway>, uri: Uri, body: Body) -> Answer {
    lock_write(gw, "/api/lock/renew", uri, body).await
}

/// Holders and waiters of a resource (linearizable unless `consistency=stale`).
#[utoipa::path(get, path = "/api/lock/{resource}", tag = "lock",
    params(
        ("resource" = String, Path, description = "Lock resource name (percent-encode `/`)"),
        ("consistency" = Option<String>, Query, description = "`stale` reads the answering node's state"),
    ),
    responses(
        (status = 200, description = "Holders and waiters", body = LockState),
        (status = 400, description = "Invalid resource name or parameter", body = ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 503, description = "No lock leader within the retry budget", body = ErrorBody),
        (status = 504, description = "Timed out", body = ErrorBody),
    ),
    security((), ("bearer" = [])))]
pub async fn lock_get(
    State(gw): State<Gateway>,
    Path(_resource): Path<String>,
    uri: Uri,
) -> Answer {
    lock::forward(&gw, get("/api/lock/{resource}", &uri), 0).await
}

async fn queue_write(gw: Gateway, route: &'static str, uri: Uri, body: Body) -> Answer {
    let (name, wait_ms) = queue::queue_of(&body.0).map_err(|e| refused(&gw, e))?;
    queue::forward(&gw, post(route, &uri, Some(body.0)), &name, wait_ms).await
}

/// Enqueue one message (`payload`) or a batch (`messages`).
#[utoipa::path(post, path = "/api/queue/enqueue", tag = "queue",
    request_body = EnqueueRequest,
    responses(
        (status = 201, description = "Enqueued", body = EnqueueResponse),
        (status = 400, description = "Malformed JSON or invalid input", body = ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "Missing or mistyped field", body = ErrorBody),
        (status = 503, description = "No queue node reachable", body = ErrorBody),
        (status = 504, description = "Timed out", body = ErrorBody),
    ),
    security((), ("bearer" = [])))]
pub async fn queue_enqueue(State(gw): State<Gateway>, uri: Uri, body: Body) -> Answer {
    queue_write(gw, "/api/queue/enqueue", uri, body).await
}

/// Take up to `max` messages, hidden for `visibility_ms`; `wait_ms` long-polls.
#[utoipa::path(post, path = "/api/queue/dequeue", tag = "queue",
    request_body = DequeueRequest,
    responses(
        (status = 200, description = "Messages (possibly none)", body = DequeueResponse),
        (status = 400, description = "Malformed JSON or invalid input", body = ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "Missing or mistyped field", body = ErrorBody),
        (status = 503, description = "No queue node reachable", body = ErrorBody),
        (status = 504, description = "Timed out", body = ErrorBody),
    ),
    security((), ("bearer" = [])))]
pub async fn queue_dequeue(State(gw): State<Gateway>, uri: Uri, body: Body) -> Answer {
    queue_write(gw, "/api/queue/dequeue", uri, body).await
}

/// Acknowledge (delete) delivered messages by receipt.
#[utoipa::path(post, path = "/api/queue/ack", tag = "queue",
    request_body = AckRequest,
    responses(
        (status = 200, description = "Acknowledged", body = AckResponse),
        (status = 400, description = "Malformed JSON or invalid input", body = ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 404, description = "`message_not_found`: acked, expired or never existed", body = ErrorBody),
        (status = 409, description = "`stale_receipt`: the message was redelivered since", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "Missing or mistyped field", body = ErrorBody),
        (status = 503, description = "No queue node reachable", body = ErrorBody),
        (status = 504, description = "Timed out", body = ErrorBody),
    ),
    security((), ("bearer" = [])))]
pub async fn queue_ack(State(gw): State<Gateway>, uri: Uri, body: Body) -> Answer {
    queue_write(gw, "/api/queue/ack", uri, body).await
}

/// Give a delivered message back (visible again after `delay_ms`).
#[utoipa::path(post, path = "/api/queue/nack", tag = "queue",
    request_body = NackRequest,
    responses(
        (status = 200, description = "Returned to the queue, dead-lettered or expired", body = NackResponse),
        (status = 400, description = "Malformed JSON or invalid input", body = ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 404, description = "`message_not_found`: acked, expired or never existed", body = ErrorBody),
        (status = 409, description = "`stale_receipt`: the message was redelivered since", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "Missing or mistyped field", body = ErrorBody),
        (status = 503, description = "No queue node reachable", body = ErrorBody),
        (status = 504, description = "Timed out", body = ErrorBody),
    ),
    security((), ("bearer" = [])))]
pub async fn queue_nack(State(gw): State<Gateway>, uri: Uri, body: Body) -> Answer {
    queue_write(gw, "/api/queue/nack", uri, body).await
}

/// Extend a delivered message's visibility timeout.
#[utoipa::path(post, path = "/api/queue/extend", tag = "queue",
    request_body = ExtendRequest,
    responses(
        (status = 200, description = "Extended", body = ExtendResponse),
        (status = 400, description = "Malformed JSON or invalid input", body = ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 404, description = "`message_not_found`: acked, expired or never existed", body = ErrorBody),
        (status = 409, description = "`stale_receipt`: the message was redelivered since", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "Missing or mistyped field", body = ErrorBody),
        (status = 503, description = "No queue node reachable", body = ErrorBody),
        (status = 504, description = "Timed out", body = ErrorBody),
    ),
    security((), ("bearer" = [])))]
pub async fn queue_extend(State(gw): State<Gateway>, uri: Uri, body: Body) -> Answer {
    queue_write(gw, "/api/queue/extend", uri, body).await
}

/// Counts of ready, delayed, in-flight and dead-lettered messages.
#[utoipa::path(get, path = "/api/queue/{queue}", tag = "queue",
    params(("queue" = String, Path, description = "Queue name")),
    responses(
        (status = 200, description = "Queue counts", body = QueueStats),
        (status = 400, description = "Invalid queue name", body = ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 503, description = "No queue node reachable", body = ErrorBody),
        (status = 504, description = "Timed out", body = ErrorBody),
    ),
    security((), ("bearer" = [])))]
pub async fn queue_get(State(gw): State<Gateway>, Path(name): Path<String>, uri: Uri) -> Answer {
    queue::check_name(&name).map_err(|e| refused(&gw, e))?;
    queue::forward(&gw, get("/api/queue/{queue}", &uri), &name, 0).await
}

/// Move dead letters back to ready (all up to `max`, or the given `ids`).
#[utoipa::path(post, path = "/api/queue/redrive", tag = "queue",
    request_body = RedriveRequest,
    responses(
        (status = 200, description = "Ids moved back to ready", body = RedriveResponse),
        (status = 400, description = "Malformed JSON or invalid input", body = ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "Missing or mistyped field", body = ErrorBody),
        (status = 503, description = "No queue node reachable", body = ErrorBody),
        (status = 504, description = "Timed out", body = ErrorBody),
    ),
    security((), ("bearer" = [])))]
pub async fn queue_redrive(State(gw): State<Gateway>, uri: Uri, body: Body) -> Answer {
    queue_write(gw, "/api/queue/redrive", uri, body).await
}

/// Set a queue's `max_attempts` (`null`: back to the service default).
#[utoipa::path(post, path = "/api/queue/config", tag = "queue",
    request_body = QueueConfig,
    responses(
        (status = 200, description = "The setting now in force", body = QueueConfig),
        (status = 400, description = "Malformed JSON or invalid input", body = ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "Missing or mistyped field", body = ErrorBody),
        (status = 503, description = "No queue node reachable", body = ErrorBody),
        (status = 504, description = "Timed out", body = ErrorBody),
    ),
    security((), ("bearer" = [])))]
pub async fn queue_config(State(gw): State<Gateway>, uri: Uri, body: Body) -> Answer {
    queue_write(gw, "/api/queue/config", uri, body).await
}

/// The oldest dead letters of a queue.
#[utoipa::path(get, path = "/api/queue/{queue}/dead", tag = "queue",
    params(
        ("queue" = String, Path, description = "Queue name"),
        ("limit" = Option<u64>, Query, description = "At most this many (default 100)"),
    ),
    responses(
        (status = 200, description = "Dead letters", body = DeadLetters),
        (status = 400, description = "Invalid queue name or limit", body = ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 503, description = "No queue node reachable", body = ErrorBody),
        (status = 504, description = "Timed out", body = ErrorBody),
    ),
    security((), ("bearer" = [])))]
pub async fn queue_dead(State(gw): State<Gateway>, Path(name): Path<String>, uri: Uri) -> Answer {
    queue::check_name(&name).map_err(|e| refused(&gw, e))?;
    queue::forward(&gw, get("/api/queue/{queue}/dead", &uri), &name, 0).await
}

async fn cache_call(
    gw: Gateway,
    route: &'static str,
    method: Method,
    headers: HeaderMap,
    uri: Uri,
    body: Option<Body>,
) -> Answer {
    cache::forward(
        &gw,
        route,
        method,
        &headers,
        uri.path(),
        uri.query(),
        body.map(|b| b.0),
    )
    .await
    .map_err(|e| {
        if matches!(e, Error::UnknownNode { .. }) {
            gw.count_rejected("unknown_node");
        }
        e
    })
}

/// Write a key through the chosen cache node (invalidates other copies first).
#[utoipa::path(post, path = "/api/cache/set", tag = "cache",
    request_body = CacheSetRequest,
    params(
        ("node" = Option<String>, Query, description = "Cache node to use (`host:port` as listed in /cluster)"),
        ("X-Cache-Node" = Option<String>, Header, description = "Cache node to use; wins over `node`"),
        ("X-Client-Id" = Option<String>, Header, description = "Sticky client identity"),
    ),
    responses(
        (status = 200, description = "Stored", body = CacheSetResponse),
        (status = 400, description = "Malformed JSON, invalid input or unknown node", body = ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "Missing or mistyped field", body = ErrorBody),
        (status = 503, description = "Cache node unreachable", body = ErrorBody),
        (status = 504, description = "Timed out", body = ErrorBody),
    ),
    security((), ("bearer" = [])))]
pub async fn cache_set(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> Answer {
    cache_call(gw, "/api/cache/set", Method::POST, headers, uri, Some(body)).await
}

/// Read a key through the chosen cache node.
#[utoipa::path(get, path = "/api/cache/get", tag = "cache",
    params(
        ("key" = String, Query, description = "Cache key"),
        ("node" = Option<String>, Query, description = "Cache node to use"),
        ("X-Cache-Node" = Option<String>, Header, description = "Cache node to use; wins over `node`"),
        ("X-Client-Id" = Option<String>, Header, description = "Sticky client identity"),
    ),
    responses(
        (status = 200, description = "Hit", body = CacheValue),
        (status = 400, description = "Invalid key or unknown node", body = ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 404, description = "No such key", body = ErrorBody),
        (status = 503, description = "Cache node unreachable", body = ErrorBody),
        (status = 504, description = "Timed out", body = ErrorBody),
    ),
    security((), ("bearer" = [])))]
pub async fn cache_get(State(gw): State<Gateway>, headers: HeaderMap, uri: Uri) -> Answer {
    cache_call(gw, "/api/cache/get", Method::GET, headers, uri, None).await
}

/// Delete a key everywhere.
#[utoipa::path(delete, path = "/api/cache/delete", tag = "cache",
    params(
        ("key" = String, Query, description = "Cache key"),
        ("node" = Option<String>, Query, description = "Cache node to use"),
        ("X-Cache-Node" = Option<String>, Header, description = "Cache node to use; wins over `node`"),
        ("X-Client-Id" = Option<String>, Header, description = "Sticky client identity"),
    ),
    responses(
        (status = 200, description = "Deleted", body = CacheDeleteResponse),
        (status = 400, description = "Invalid key or unknown node", body = ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 404, description = "No such key", body = ErrorBody),
        (status = 503, description = "Cache node unreachable", body = ErrorBody),
        (status = 504, description = "Timed out", body = ErrorBody),
    ),
    security((), ("bearer" = [])))]
pub async fn cache_delete(State(gw): State<Gateway>, headers: HeaderMap, uri: Uri) -> Answer {
    cache_call(gw, "/api/cache/delete", Method::DELETE, headers, uri, None).await
}

/// Every node's MESI state for a key.
#[utoipa::path(get, path = "/api/cache/line", tag = "cache",
    params(
        ("key" = String, Query, description = "Cache key"),
        ("node" = Option<String>, Query, description = "Cache node to ask"),
        ("X-Cache-Node" = Option<String>, Header, description = "Cache node to ask; wins over `node`"),
    ),
    responses(
        (status = 200, description = "Line states per node", body = serde_json::Value),
        (status = 400, description = "Invalid key or unknown node", body = ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 503, description = "Cache node unreachable", body = ErrorBody),
        (status = 504, description = "Timed out", body = ErrorBody),
    ),
    security((), ("bearer" = [])))]
pub async fn cache_line(State(gw): State<Gateway>, headers: HeaderMap, uri: Uri) -> Answer {
    cache_call(gw, "/api/cache/line", Method::GET, headers, uri, None).await
}

/// Hit/miss/eviction/invalidation counters of the chosen cache node.
#[utoipa::path(get, path = "/api/cache/stats", tag = "cache",
    params(
        ("node" = Option<String>, Query, description = "Cache node to ask"),
        ("X-Cache-Node" = Option<String>, Header, description = "Cache node to ask; wins over `node`"),
        ("X-Client-Id" = Option<String>, Header, description = "Sticky client identity"),
    ),
    responses(
        (status = 200, description = "Counters", body = serde_json::Value),
        (status = 400, description = "Unknown node", body = ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 503, description = "Cache node unreachable", body = ErrorBody),
        (status = 504, description = "Timed out", body = ErrorBody),
    ),
    security((), ("bearer" = [])))]
pub async fn cache_stats(State(gw): State<Gateway>, headers: HeaderMap, uri: Uri) -> Answer {
    cache_call(gw, "/api/cache/stats", Method::GET, headers, uri, None).await
}

/// Backends' health: 200 only when the lock cluster has a leader and every
/// service has a healthy node; 503 with the same body naming what is down.
#[utoipa::path(get, path = "/health", tag = "gateway",
    responses(
        (status = 200, description = "Everything can serve", body = HealthReport),
        (status = 503, description = "Some backend is down (see `down`)", body = HealthReport),
    ))]
pub async fn health(State(gw): State<Gateway>) -> Response {
    let (ok, report) = view::health(&gw).await;
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report)).into_response()
}

/// Lock leader, term and members; queue ring; cache peers and liveness.
#[utoipa::path(get, path = "/cluster", tag = "gateway",
    responses(
        (status = 200, description = "Cluster view", body = ClusterView),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
    ),
    security((), ("bearer" = [])))]
pub async fn cluster(State(gw): State<Gateway>) -> Json<ClusterView> {
    Json(view::cluster(&gw).await)
}

/// The gateway's forwarding counters.
#[utoipa::path(get, path = "/stats", tag = "gateway",
    responses(
        (status = 200, description = "Counters", body = GatewayStats),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
    ),
    security((), ("bearer" = [])))]
pub async fn stats(State(gw): State<Gateway>) -> Json<GatewayStats> {
    Json(view::stats(&gw))
}

/// Prometheus metrics: requests and latency per route, backend calls per
/// service/route/backend/outcome, retries, rejections, leader changes.
#[utoipa::path(get, path = "/metrics", tag = "gateway",
    responses(
        (status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
    ),
    security((), ("bearer" = [])))]
pub async fn metrics(State(gw): State<Gateway>) -> Response {
    common::metrics::text_response(gw.metrics())
}
