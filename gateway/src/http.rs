//! The handlers: one per public route. The proxied routes' handlers are
//! called by [`crate::proxy`] (which has already checked the method and the
//! token), each a thin call into the routing module of its service; the
//! gateway's own routes (`/health`, `/cluster`, `/stats`, `/metrics`) are
//! axum handlers on the router. The `#[utoipa::path]` attributes here are
//! the source of `/openapi.json`, so every route's request and answer
//! bodies are documented where the route is served.

use api::responses::{CacheErrors, LockWriteErrors, QueueWriteErrors, ReadErrors, ViewErrors};
use api::types::*;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::error::Error;
use crate::protect::read_body;
use crate::state::{Gateway, Outbound};
use crate::{cache, events, lock, queue, view};

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

/// A POST route the gateway forwards whole (through `lock_write` or
/// `queue_write`): the handler and its OpenAPI description, written once.
macro_rules! forwarded_post {
    (
        $(#[doc = $doc:tt])*
        $name:ident, $via:ident, post $path:tt, tag $tag:tt,
        $req:ident => $status:tt $desc:tt $resp:ident, $errors:ident
    ) => {
        $(#[doc = $doc])*
        #[utoipa::path(post, path = $path, tag = $tag,
            request_body = $req,
            responses(
                (status = $status, description = $desc, body = $resp),
                $errors,
            ),
            security((), ("bearer" = [])))]
        pub async fn $name(gw: &Gateway, req: Request) -> Answer {
            $via(gw, $path, req).await
        }
    };
}

async fn lock_write(gw: &Gateway, route: &'static str, req: Request) -> Answer {
    let (parts, body) = req.into_parts();
    let body = read_body(gw, &parts.headers, body).await?;
    let window = lock::retry_window_ms(gw.settings());
    let (bytes, wait_ms) = lock::prepare_write(&body, window).map_err(|e| refused(gw, e))?;
    lock::forward(gw, post(route, &parts.uri, Some(bytes)), wait_ms).await
}

forwarded_post! {
    /// Acquire a lock (exclusive or shared), optionally waiting for it.
    lock_acquire, lock_write, post "/api/lock/acquire", tag "lock",
    AcquireRequest => 200 "Granted" LockGrant, LockWriteErrors
}

forwarded_post! {
    /// Release a held lock (owner and token must match).
    lock_release, lock_write, post "/api/lock/release", tag "lock",
    ReleaseRequest => 200 "Released" ReleaseResponse, LockWriteErrors
}

forwarded_post! {
    /// Extend a held lock's lease.
    lock_renew, lock_write, post "/api/lock/renew", tag "lock",
    RenewRequest => 200 "Renewed" RenewResponse, LockWriteErrors
}

/// Holders and waiters of a resource (linearizable unless `consistency=stale`).
#[utoipa::path(get, path = "/api/lock/{resource}", tag = "lock",
    params(
        ("resource" = String, Path, description = "Lock resource name (percent-encode `/`)", min_length = 1, max_length = 256, pattern = r"^(?!\.\.?$)[^\x00-\x1F\x7F-\x9F]*$"),
        ("consistency" = Option<Consistency>, Query, description = "`stale` reads the answering node's state; default `linearizable`"),
    ),
    responses(
        (status = 200, description = "Holders and waiters", body = LockState),
        ReadErrors,
    ),
    security((), ("bearer" = [])))]
pub async fn lock_get(gw: &Gateway, req: Request) -> Answer {
    lock::forward(gw, get("/api/lock/{resource}", req.uri()), 0).await
}

/// `?prefix=&after=&limit=` of the list routes, for the document.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[expect(
    dead_code,
    reason = "read from the query by api::ListQuery; here for the document"
)]
struct ListParams {
    /// Only names that start with this (default: all)
    #[param(max_length = 256, pattern = r"^[^\x00-\x1F\x7F-\x9F]*$")]
    prefix: Option<String>,
    /// The cursor: only names after this one (the `next` of the previous page)
    #[param(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*$"
    )]
    after: Option<String>,
    /// Page size (default 100)
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
}

/// The list query of `uri`, checked: 400 `invalid_input` when it does not
/// parse or is out of range.
fn list_page(gw: &Gateway, uri: &Uri) -> Result<(api::limits::Page, ListQuery), Error> {
    let q = axum::extract::Query::<ListQuery>::try_from_uri(uri)
        .map_err(|e| refused(gw, Error::InvalidInput(e.body_text())))?
        .0;
    let page = api::limits::page(q.prefix.as_deref(), q.after.as_deref(), q.limit)
        .map_err(|e| refused(gw, Error::InvalidInput(e.message)))?;
    Ok((page, q))
}

/// Held and waited-for locks, sorted by resource, one page at a time: each
/// as `GET /api/lock/{resource}` shows it. Read from the lock leader like a
/// single lock: linearizable unless `consistency=stale`.
#[utoipa::path(get, path = "/api/locks", tag = "lock",
    params(
        ListParams,
        ("consistency" = Option<Consistency>, Query, description = "`stale` reads the answering node's state; default `linearizable`"),
    ),
    responses(
        (status = 200, description = "One page of locks (`next`: the cursor of the following page)", body = LockList),
        ReadErrors,
    ),
    security((), ("bearer" = [])))]
pub async fn lock_list(gw: &Gateway, req: Request) -> Answer {
    list_page(gw, req.uri())?;
    lock::forward(gw, get("/api/locks", req.uri()), 0).await
}

/// Known queues with their counts, sorted by name, one page at a time. Every
/// queue node lists the queues it owns; the gateway merges them (each queue
/// once, from its owner) and names the nodes that did not answer in
/// `unavailable` (their queues are missing from the page).
#[utoipa::path(get, path = "/api/queues", tag = "queue",
    params(ListParams),
    responses(
        (status = 200, description = "One page of queues (`next`: the cursor of the following page)", body = QueueList),
        ReadErrors,
    ),
    security((), ("bearer" = [])))]
pub async fn queue_list(gw: &Gateway, req: Request) -> Answer {
    let (page, _) = list_page(gw, req.uri())?;
    events::queues(gw, &page, path_and_query(req.uri())).await
}

/// `?limit=` of `GET /api/events`, for the document.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[expect(
    dead_code,
    reason = "read from the query by api::EventQuery; here for the document"
)]
struct EventParams {
    /// At most this many events (default 100)
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
}

/// Recent deadlock aborts and leader changes (lock nodes), dead-letterings
/// and redrives (queue nodes), newest first. Each node keeps its newest 256
/// in memory (lost on restart); the gateway merges every node's, an event
/// several nodes recorded once, and names the nodes that did not answer.
#[utoipa::path(get, path = "/api/events", tag = "gateway",
    params(EventParams),
    responses(
        (status = 200, description = "Events, newest first", body = EventList),
        ReadErrors,
    ),
    security((), ("bearer" = [])))]
pub async fn events(gw: &Gateway, req: Request) -> Answer {
    let q = axum::extract::Query::<EventQuery>::try_from_uri(req.uri())
        .map_err(|e| refused(gw, Error::InvalidInput(e.body_text())))?
        .0;
    let limit = api::limits::event_limit(q.limit)
        .map_err(|e| refused(gw, Error::InvalidInput(e.message)))?;
    events::events(gw, limit).await
}

async fn queue_write(gw: &Gateway, route: &'static str, req: Request) -> Answer {
    let (parts, body) = req.into_parts();
    let body = read_body(gw, &parts.headers, body).await?;
    let (name, wait_ms) = queue::queue_of(&body).map_err(|e| refused(gw, e))?;
    queue::forward(gw, post(route, &parts.uri, Some(body)), &name, wait_ms).await
}

forwarded_post! {
    /// Enqueue one message (`payload`) or a batch (`messages`).
    queue_enqueue, queue_write, post "/api/queue/enqueue", tag "queue",
    EnqueueRequest => 201 "Enqueued" EnqueueResponse, QueueWriteErrors
}

forwarded_post! {
    /// Take up to `max` messages, hidden for `visibility_ms`; `wait_ms` long-polls.
    queue_dequeue, queue_write, post "/api/queue/dequeue", tag "queue",
    DequeueRequest => 200 "Messages (possibly none)" DequeueResponse, QueueWriteErrors
}

forwarded_post! {
    /// Acknowledge (delete) delivered messages by receipt.
    queue_ack, queue_write, post "/api/queue/ack", tag "queue",
    AckRequest => 200 "Acknowledged" AckResponse, QueueWriteErrors
}

forwarded_post! {
    /// Give a delivered message back (visible again after `delay_ms`).
    queue_nack, queue_write, post "/api/queue/nack", tag "queue",
    NackRequest => 200 "Returned to the queue, dead-lettered or expired" NackResponse, QueueWriteErrors
}

forwarded_post! {
    /// Extend a delivered message's visibility timeout.
    queue_extend, queue_write, post "/api/queue/extend", tag "queue",
    ExtendRequest => 200 "Extended" ExtendResponse, QueueWriteErrors
}

/// Counts of ready, delayed, in-flight and dead-lettered messages.
#[utoipa::path(get, path = "/api/queue/{queue}", tag = "queue",
    params(("queue" = String, Path, description = "Queue name", min_length = 1, max_length = 256, pattern = r"^(?!\.\.?$)[^\x00-\x1F\x7F-\x9F]*$")),
    responses(
        (status = 200, description = "Queue counts", body = QueueStats),
        ReadErrors,
    ),
    security((), ("bearer" = [])))]
pub async fn queue_get(gw: &Gateway, req: Request, name: String) -> Answer {
    queue::check_name(&name).map_err(|e| refused(gw, e))?;
    queue::forward(gw, get("/api/queue/{queue}", req.uri()), &name, 0).await
}

forwarded_post! {
    /// Move dead letters back to ready (all up to `max`, or the given `ids`).
    queue_redrive, queue_write, post "/api/queue/redrive", tag "queue",
    RedriveRequest => 200 "Ids moved back to ready" RedriveResponse, QueueWriteErrors
}

forwarded_post! {
    /// Set a queue's `max_attempts` (`null`: back to the service default).
    queue_config, queue_write, post "/api/queue/config", tag "queue",
    QueueConfig => 200 "The setting now in force" QueueConfig, QueueWriteErrors
}

/// The oldest dead letters of a queue.
#[utoipa::path(get, path = "/api/queue/{queue}/dead", tag = "queue",
    params(
        ("queue" = String, Path, description = "Queue name", min_length = 1, max_length = 256, pattern = r"^(?!\.\.?$)[^\x00-\x1F\x7F-\x9F]*$"),
        ("limit" = Option<u64>, Query, description = "At most this many (default 100)", minimum = 1, maximum = 1000),
    ),
    responses(
        (status = 200, description = "Dead letters", body = DeadLetters),
        ReadErrors,
    ),
    security((), ("bearer" = [])))]
pub async fn queue_dead(gw: &Gateway, req: Request, name: String) -> Answer {
    queue::check_name(&name).map_err(|e| refused(gw, e))?;
    queue::forward(gw, get("/api/queue/{queue}/dead", req.uri()), &name, 0).await
}

/// Forward a cache call; `with_body`: the route takes a JSON body.
async fn cache_call(
    gw: &Gateway,
    route: &'static str,
    method: Method,
    req: Request,
    with_body: bool,
) -> Answer {
    let (parts, body) = req.into_parts();
    let body = if with_body {
        Some(read_body(gw, &parts.headers, body).await?)
    } else {
        None
    };
    let uri = &parts.uri;
    cache::forward(
        gw,
        route,
        method,
        &parts.headers,
        uri.path(),
        uri.query(),
        body,
    )
    .await
    .map_err(|e| {
        if matches!(e, Error::UnknownNode { .. }) {
            gw.count_rejected("unknown_node");
        }
        e
    })
}

/// `?key=` of the cache routes that name a key.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[expect(
    dead_code,
    reason = "read from the query by the cache node; here for the document"
)]
struct CacheKey {
    /// Cache key
    #[param(
        min_length = 1,
        max_length = 512,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*$"
    )]
    key: String,
}

/// `?node=`: which cache node answers.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[expect(
    dead_code,
    reason = "read by cache::choose from the query; here for the document"
)]
struct CacheNodeQuery {
    /// Cache node to use (`host:port` as listed in /cluster)
    node: Option<String>,
}

/// The headers that pick the cache node.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[expect(
    dead_code,
    reason = "read by cache::choose from the headers; here for the document"
)]
struct CacheNodeHeaders {
    /// Cache node to use; wins over `node`
    #[param(rename = "X-Cache-Node")]
    x_cache_node: Option<String>,
    /// Sticky client identity: the same id keeps to the same node
    #[param(rename = "X-Client-Id")]
    x_client_id: Option<String>,
}

/// A cache route: its handler and its OpenAPI description, written once.
/// Every one goes to the node `cache::choose` picks (header, `?node=`,
/// client id, or round robin) and documents how to pick it.
macro_rules! cache_route {
    (
        $(#[doc = $doc:tt])*
        $name:ident, $method:ident $path:tt, params($($params:ident),*),
        $status:tt $desc:tt $resp:path
    ) => {
        $(#[doc = $doc])*
        #[utoipa::path($method, path = $path, tag = "cache",
            params($($params,)* CacheNodeQuery, CacheNodeHeaders),
            responses(
                (status = $status, description = $desc, body = $resp),
                CacheErrors,
            ),
            security((), ("bearer" = [])))]
        pub async fn $name(gw: &Gateway, req: Request) -> Answer {
            cache_call(gw, $path, cache_route!(@method $method), req, false).await
        }
    };
    // A route with a JSON body.
    (
        $(#[doc = $doc:tt])*
        $name:ident, $method:ident $path:tt, params($($params:ident),*),
        $status:tt $desc:tt $resp:path, body $req:ident
    ) => {
        $(#[doc = $doc])*
        #[utoipa::path($method, path = $path, tag = "cache",
            request_body = $req,
            params($($params,)* CacheNodeQuery, CacheNodeHeaders),
            responses(
                (status = $status, description = $desc, body = $resp),
                CacheErrors,
            ),
            security((), ("bearer" = [])))]
        pub async fn $name(gw: &Gateway, req: Request) -> Answer {
            cache_call(gw, $path, cache_route!(@method $method), req, true).await
        }
    };
    (@method get) => { Method::GET };
    (@method post) => { Method::POST };
    (@method delete) => { Method::DELETE };
}

cache_route! {
    /// Write a key through the chosen cache node (invalidates other copies first).
    cache_set, post "/api/cache/set", params(),
    200 "Stored" CacheSetResponse, body CacheSetRequest
}

cache_route! {
    /// Read a key through the chosen cache node.
    cache_get, get "/api/cache/get", params(CacheKey),
    200 "Hit" CacheValue
}

cache_route! {
    /// Delete a key everywhere.
    cache_delete, delete "/api/cache/delete", params(CacheKey),
    200 "Deleted" CacheDeleteResponse
}

cache_route! {
    /// Every node's MESI state for a key.
    cache_line, get "/api/cache/line", params(CacheKey),
    200 "Line states per node" serde_json::Value
}

cache_route! {
    /// Hit/miss/eviction/invalidation counters of the chosen cache node.
    cache_stats, get "/api/cache/stats", params(),
    200 "Counters" serde_json::Value
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
        ViewErrors,
    ),
    security((), ("bearer" = [])))]
pub async fn cluster(State(gw): State<Gateway>) -> Json<ClusterView> {
    Json(view::cluster(&gw).await)
}

/// The gateway's forwarding counters.
#[utoipa::path(get, path = "/stats", tag = "gateway",
    responses(
        (status = 200, description = "Counters", body = GatewayStats),
        ViewErrors,
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
        ViewErrors,
    ),
    security((), ("bearer" = [])))]
pub async fn metrics(State(gw): State<Gateway>) -> Response {
    gw.refresh_metrics();
    common::metrics::text_response(gw.metrics())
}
