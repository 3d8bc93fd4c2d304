//! HTTP handlers: decode the `api` crate's wire types, validate them once
//! (where they become domain values, e.g. `TryFrom<&api::EnqueueRequest>
//! for Batch`), route to the queue's owner or serve locally, and answer;
//! [`Error`]'s status codes and JSON error bodies are in [`crate::error`].
//!
//! Routes (bodies as in `README.md`):
//! - `POST /api/queue/enqueue|dequeue|ack|nack|extend|redrive|config`
//! - `GET /api/queue/{queue}` (counts), `GET /api/queue/{queue}/dead`
//! - `GET /health`, `/stats`, `/metrics`, `/cluster`

use std::sync::Arc;
use std::time::Duration;

use api::limits::{self, queue as lim, Invalid, MAX_NAME_CHARS};
use api::Payload;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use common::{now_ms, ApiError, ApiJson};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::delivery::{self, NewMessage, ReceiptError};
use crate::error::{receipt_error, Error};
use crate::node::{Node, Route, FORWARDED_HEADER};

/// Largest request body: a full batch of small messages or a few large
/// ones. Single payloads are limited separately to
/// [`delivery::MAX_PAYLOAD_BYTES`].
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

/// Stored payload text as sent (it was validated on enqueue).
fn raw(text: String) -> Payload {
    Payload::from_text(text).unwrap_or_default()
}

fn check_queue(queue: &str) -> Result<(), Invalid> {
    limits::path_name("queue", queue, MAX_NAME_CHARS)
}

fn new_message(
    payload: &Payload,
    delay_ms: Option<u64>,
    ttl_ms: Option<u64>,
) -> Result<NewMessage, ApiError> {
    let delay_ms = delay_ms.unwrap_or(0);
    limits::range("delay_ms", delay_ms, 0, lim::MAX_DELAY_MS)?;
    if let Some(t) = ttl_ms {
        limits::range("ttl_ms", t, 1, lim::MAX_TTL_MS)?;
    }
    let text = payload.as_str();
    if text.len() > lim::MAX_PAYLOAD_BYTES {
        return Err(Error::TooLarge(format!(
            "`payload` is {} bytes; the limit is {} bytes",
            text.len(),
            lim::MAX_PAYLOAD_BYTES
        ))
        .into());
    }
    Ok(NewMessage {
        payload: text.to_string(),
        delay_ms,
        ttl_ms,
    })
}

/// The messages of one enqueue, validated.
struct Batch(Vec<NewMessage>);

/// The one validation of an enqueue: exactly one of the single form
/// (`payload`, `delay_ms`, `ttl_ms`) and the batch form (`messages`).
impl TryFrom<&api::EnqueueRequest> for Batch {
    type Error = ApiError;

    fn try_from(req: &api::EnqueueRequest) -> Result<Self, ApiError> {
        check_queue(&req.queue)?;
        match (&req.payload, &req.messages) {
            (Some(_), Some(_)) => Err(ApiError::invalid(
                "give either `payload` (one message) or `messages` (a batch), not both",
            )),
            (None, None) => Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
                "missing field `payload` (or `messages` for a batch)",
            )),
            (Some(p), None) => Ok(Batch(vec![new_message(p, req.delay_ms, req.ttl_ms)?])),
            (None, Some(items)) => {
                if req.delay_ms.is_some() || req.ttl_ms.is_some() {
                    return Err(ApiError::invalid(
                        "in the batch form `delay_ms` and `ttl_ms` go on each message",
                    ));
                }
                limits::count("messages", items.len(), lim::MAX_BATCH)?;
                items
                    .iter()
                    .map(|i| new_message(&i.payload, i.delay_ms, i.ttl_ms))
                    .collect::<Result<Vec<_>, _>>()
                    .map(Batch)
            }
        }
    }
}

fn check_receipt(r: &str) -> Result<(), ApiError> {
    if delivery::receipt_seq(r).is_none() {
        return Err(receipt_error(r, ReceiptError::Malformed));
    }
    Ok(())
}

/// Whether another node already routed this request here. Honoured only
/// with the cluster token (when one is set), so a client cannot pin a queue
/// to a node that does not own it.
fn forwarded(s: &AppState, headers: &HeaderMap) -> bool {
    headers.contains_key(FORWARDED_HEADER) && s.node.token.admits(headers)
}

fn relay((status, body): (u16, bytes::Bytes)) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
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

async fn enqueue(
    State(s): State<AppState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<api::EnqueueRequest>,
) -> Result<Response, ApiError> {
    let Batch(batch) = Batch::try_from(&req)?;
    if let Some(r) = maybe_forward(
        &s,
        &headers,
        &req.queue,
        reqwest::Method::POST,
        "/api/queue/enqueue",
        Some(&req),
        Duration::ZERO,
    )
    .await?
    {
        return Ok(r);
    }
    let node = &s.node;
    let n = batch.len() as u64;
    let ids = node
        .timed("enqueue", node.store.enqueue(&req.queue, batch, now_ms()))
        .await?;
    node.metrics.enqueued.inc_by(n);
    node.wake(&req.queue);
    let body = if req.messages.is_some() {
        api::EnqueueResponse {
            id: None,
            ids: Some(ids),
        }
    } else {
        api::EnqueueResponse {
            id: ids.into_iter().next(),
            ids: None,
        }
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn dequeue(
    State(s): State<AppState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<api::DequeueRequest>,
) -> Result<Response, ApiError> {
    check_queue(&req.queue)?;
    let max = req.max.map_or(1, u64::from);
    let visibility_ms = req.visibility_ms.unwrap_or(lim::DEFAULT_VISIBILITY_MS);
    let wait_ms = req.wait_ms.unwrap_or(0);
    limits::range("max", max, 1, lim::MAX_DEQUEUE)?;
    limits::range(
        "visibility_ms",
        visibility_ms,
        lim::MIN_VISIBILITY_MS,
        lim::MAX_VISIBILITY_MS,
    )?;
    limits::range("wait_ms", wait_ms, 0, lim::MAX_WAIT_MS)?;
    let wait = Duration::from_millis(wait_ms);
    if let Some(r) = maybe_forward(
        &s,
        &headers,
        &req.queue,
        reqwest::Method::POST,
        "/api/queue/dequeue",
        Some(&req),
        wait,
    )
    .await?
    {
        return Ok(r);
    }
    let got = s
        .node
        .dequeue(&req.queue, max as usize, visibility_ms, wait)
        .await?;
    let messages: Vec<api::Message> = got
        .into_iter()
        .map(|d| api::Message {
            id: d.id,
            receipt: d.receipt,
            payload: raw(d.payload),
            attempts: d.attempts,
            enqueued_at_ms: d.enqueued_at_ms,
        })
        .collect();
    // A struct, not `json!`: going through `Value` would re-encode payloads.
    Ok(Json(api::DequeueResponse { messages }).into_response())
}

async fn ack(
    State(s): State<AppState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<api::AckRequest>,
) -> Result<Response, ApiError> {
    check_queue(&req.queue)?;
    let (receipts, single) = match (&req.receipt, &req.receipts) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "give either `receipt` or `receipts`, not both",
            ))
        }
        (None, None) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
                "missing field `receipt` (or `receipts`)",
            ))
        }
        (Some(r), None) => {
            check_receipt(r)?;
            (vec![r.clone()], true)
        }
        (None, Some(rs)) => {
            limits::count("receipts", rs.len(), lim::MAX_BATCH)?;
            (rs.clone(), false)
        }
    };
    if let Some(r) = maybe_forward(
        &s,
        &headers,
        &req.queue,
        reqwest::Method::POST,
        "/api/queue/ack",
        Some(&req),
        Duration::ZERO,
    )
    .await?
    {
        return Ok(r);
    }
    let node = &s.node;
    let (results, events) = node
        .timed(
            "ack",
            node.store.ack(&req.queue, receipts.clone(), now_ms()),
        )
        .await?;
    node.metrics.record(events);
    let ok = results.iter().filter(|r| r.is_ok()).count() as u64;
    node.metrics.acked.inc_by(ok);
    if single {
        if let Some(Err(kind)) = results.first() {
            return Err(receipt_error(&receipts[0], *kind));
        }
        return Ok(Json(json!({ "acked": 1 })).into_response());
    }
    let failed: Vec<Value> = receipts
        .iter()
        .zip(&results)
        .filter_map(|(r, res)| {
            res.err().map(|kind| {
                let e = receipt_error(r, kind);
                json!({ "receipt": r, "status": e.status.as_u16(), "code": e.code, "message": e.message })
            })
        })
        .collect();
    Ok(Json(json!({ "acked": ok, "failed": failed })).into_response())
}

async fn nack(
    State(s): State<AppState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<api::NackRequest>,
) -> Result<Response, ApiError> {
    check_queue(&req.queue)?;
    check_receipt(&req.receipt)?;
    let delay_ms = req.delay_ms.unwrap_or(0);
    limits::range("delay_ms", delay_ms, 0, lim::MAX_DELAY_MS)?;
    if let Some(r) = maybe_forward(
        &s,
        &headers,
        &req.queue,
        reqwest::Method::POST,
        "/api/queue/nack",
        Some(&req),
        Duration::ZERO,
    )
    .await?
    {
        return Ok(r);
    }
    let node = &s.node;
    let (res, events) = node
        .timed(
            "nack",
            node.store
                .nack(&req.queue, &req.receipt, delay_ms, now_ms()),
        )
        .await?;
    node.metrics.record(events);
    let outcome = res.map_err(|k| receipt_error(&req.receipt, k))?;
    node.metrics.nacked.inc();
    node.wake(&req.queue);
    Ok(Json(json!({ "outcome": outcome })).into_response())
}

async fn extend(
    State(s): State<AppState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<api::ExtendRequest>,
) -> Result<Response, ApiError> {
    check_queue(&req.queue)?;
    check_receipt(&req.receipt)?;
    limits::range(
        "visibility_ms",
        req.visibility_ms,
        lim::MIN_VISIBILITY_MS,
        lim::MAX_VISIBILITY_MS,
    )?;
    if let Some(r) = maybe_forward(
        &s,
        &headers,
        &req.queue,
        reqwest::Method::POST,
        "/api/queue/extend",
        Some(&req),
        Duration::ZERO,
    )
    .await?
    {
        return Ok(r);
    }
    let node = &s.node;
    let (res, events) = node
        .timed(
            "extend",
            node.store
                .extend(&req.queue, &req.receipt, req.visibility_ms, now_ms()),
        )
        .await?;
    node.metrics.record(events);
    let until = res.map_err(|k| receipt_error(&req.receipt, k))?;
    Ok(Json(json!({ "visible_until_ms": until })).into_response())
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
    node.metrics.record(events);
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

async fn redrive(
    State(s): State<AppState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<api::RedriveRequest>,
) -> Result<Response, ApiError> {
    check_queue(&req.queue)?;
    let max = req.max.unwrap_or(DEFAULT_DEAD_PAGE);
    limits::range("max", max, 1, lim::MAX_DEAD_PAGE)?;
    let ids = match &req.ids {
        None => None,
        Some(ids) => {
            limits::count("ids", ids.len(), lim::MAX_DEAD_PAGE as usize)?;
            Some(
                ids.iter()
                    .map(|id| {
                        delivery::parse_id(id)
                            .ok_or_else(|| ApiError::invalid(format!("`{id}` is not a message id")))
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            )
        }
    };
    if let Some(r) = maybe_forward(
        &s,
        &headers,
        &req.queue,
        reqwest::Method::POST,
        "/api/queue/redrive",
        Some(&req),
        Duration::ZERO,
    )
    .await?
    {
        return Ok(r);
    }
    let node = &s.node;
    let ids = node
        .timed(
            "redrive",
            node.store.redrive(&req.queue, ids, max as usize, now_ms()),
        )
        .await?;
    node.wake(&req.queue);
    Ok(Json(api::RedriveResponse { redriven: ids }).into_response())
}

async fn config(
    State(s): State<AppState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<api::QueueConfig>,
) -> Result<Response, ApiError> {
    check_queue(&req.queue)?;
    if let Some(n) = req.max_attempts {
        limits::range("max_attempts", n.into(), 1, lim::MAX_MAX_ATTEMPTS.into())?;
    }
    if let Some(r) = maybe_forward(
        &s,
        &headers,
        &req.queue,
        reqwest::Method::POST,
        "/api/queue/config",
        Some(&req),
        Duration::ZERO,
    )
    .await?
    {
        return Ok(r);
    }
    let node = &s.node;
    node.timed(
        "config",
        node.store.set_max_attempts(&req.queue, req.max_attempts),
    )
    .await?;
    Ok(Json(req).into_response())
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
    }))
    .into_response()
}

async fn metrics(State(s): State<AppState>) -> Response {
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
    let routes = Router::new()
        .route("/api/queue/enqueue", post(enqueue))
        .route("/api/queue/dequeue", post(dequeue))
        .route("/api/queue/ack", post(ack))
        .route("/api/queue/nack", post(nack))
        .route("/api/queue/extend", post(extend))
        .route("/api/queue/redrive", post(redrive))
        .route("/api/queue/config", post(config))
        .route("/api/queue/{queue}", get(queue_stats))
        .route("/api/queue/{queue}/dead", get(dead_letters))
        .route("/health", get(health))
        .route("/stats", get(stats))
        .route("/metrics", get(metrics))
        .route("/cluster", get(cluster));
    common::server::tail(routes, state.metrics.clone(), BODY_LIMIT_BYTES).with_state(state)
}
