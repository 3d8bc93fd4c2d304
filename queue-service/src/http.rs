//! HTTP handlers: validate input, route to the queue's owner or serve
//! locally, and answer; [`Error`]'s status codes and JSON error bodies are
//! in [`crate::error`].
//!
//! Routes (bodies as in `README.md`):
//! - `POST /api/queue/enqueue|dequeue|ack|nack|extend|redrive|config`
//! - `GET /api/queue/{queue}` (counts), `GET /api/queue/{queue}/dead`
//! - `GET /health`, `/stats`, `/metrics`, `/cluster`

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use common::{now_ms, validate, ApiError, ApiJson};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::delivery::{self, NewMessage, ReceiptError};
use crate::error::{receipt_error, Error};
use crate::node::{Node, Route, FORWARDED_HEADER};

/// Largest request body: a full batch of small messages or a few large
/// ones. Single payloads are limited separately to
/// [`delivery::MAX_PAYLOAD_BYTES`].
pub const BODY_LIMIT_BYTES: usize = 4 * 1024 * 1024;
/// Default and largest page of dead letters.
const DEFAULT_DEAD_PAGE: u64 = 100;

#[derive(Clone)]
pub struct AppState {
    pub node: Arc<Node>,
    pub metrics: common::metrics::Metrics,
}

/// Deserialize a present field (even `null`) as `Some`, so "missing" and
/// "null payload" differ.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

#[derive(Debug, Serialize, Deserialize)]
pub struct EnqueueItem {
    pub payload: Box<RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct EnqueueReq {
    pub queue: String,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub payload: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<EnqueueItem>>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DequeueReq {
    pub queue: String,
    #[serde(default = "one")]
    pub max: u64,
    #[serde(default = "default_visibility")]
    pub visibility_ms: u64,
    #[serde(default)]
    pub wait_ms: u64,
}

fn one() -> u64 {
    1
}

fn default_visibility() -> u64 {
    delivery::DEFAULT_VISIBILITY_MS
}

#[derive(Debug, Serialize, Deserialize)]
pub struct AckReq {
    pub queue: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipts: Option<Vec<String>>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct NackReq {
    pub queue: String,
    pub receipt: String,
    #[serde(default)]
    pub delay_ms: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ExtendReq {
    pub queue: String,
    pub receipt: String,
    pub visibility_ms: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RedriveReq {
    pub queue: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ids: Option<Vec<String>>,
    #[serde(default = "default_dead_page")]
    pub max: u64,
}

fn default_dead_page() -> u64 {
    DEFAULT_DEAD_PAGE
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ConfigReq {
    pub queue: String,
    /// `null` resets to the service default.
    pub max_attempts: Option<u32>,
}

#[derive(Debug, Deserialize)]
pub struct DeadQuery {
    #[serde(default = "default_dead_page")]
    pub limit: u64,
}

/// A delivered message on the wire; the payload is the stored JSON text,
/// sent verbatim.
#[derive(Debug, Serialize)]
struct DeliveryOut {
    id: String,
    receipt: String,
    payload: Box<RawValue>,
    attempts: u32,
    enqueued_at_ms: u64,
}

#[derive(Debug, Serialize)]
struct DequeueOut {
    messages: Vec<DeliveryOut>,
}

#[derive(Debug, Serialize)]
struct DeadPage {
    queue: String,
    messages: Vec<DeadOut>,
}

#[derive(Debug, Serialize)]
struct DeadOut {
    id: String,
    payload: Box<RawValue>,
    attempts: u32,
    enqueued_at_ms: u64,
    dead_lettered_at_ms: u64,
}

/// Stored payload text as raw JSON (it was validated on enqueue).
fn raw(text: String) -> Box<RawValue> {
    RawValue::from_string(text)
        .unwrap_or_else(|_| RawValue::from_string("null".into()).expect("`null` is JSON"))
}

fn check_queue(queue: &str) -> Result<(), ApiError> {
    validate::name("queue", queue, validate::MAX_NAME_BYTES)
}

fn check_payload(p: &RawValue) -> Result<String, ApiError> {
    let text = p.get();
    if text.len() > delivery::MAX_PAYLOAD_BYTES {
        return Err(Error::TooLarge(format!(
            "`payload` is {} bytes; the limit is {} bytes",
            text.len(),
            delivery::MAX_PAYLOAD_BYTES
        ))
        .into());
    }
    Ok(text.to_string())
}

fn new_message(
    payload: &RawValue,
    delay_ms: Option<u64>,
    ttl_ms: Option<u64>,
) -> Result<NewMessage, ApiError> {
    let delay_ms = delay_ms.unwrap_or(0);
    validate::range("delay_ms", delay_ms, 0, delivery::MAX_DELAY_MS)?;
    if let Some(t) = ttl_ms {
        validate::range("ttl_ms", t, 1, delivery::MAX_TTL_MS)?;
    }
    Ok(NewMessage {
        payload: check_payload(payload)?,
        delay_ms,
        ttl_ms,
    })
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
    ApiJson(req): ApiJson<EnqueueReq>,
) -> Result<Response, ApiError> {
    check_queue(&req.queue)?;
    let batch = match (&req.payload, &req.messages) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "give either `payload` (one message) or `messages` (a batch), not both",
            ))
        }
        (None, None) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
                "missing field `payload` (or `messages` for a batch)",
            ))
        }
        (Some(p), None) => {
            vec![new_message(p, req.delay_ms, req.ttl_ms)?]
        }
        (None, Some(items)) => {
            if items.is_empty() || items.len() > delivery::MAX_BATCH {
                return Err(ApiError::invalid(format!(
                    "`messages` must hold 1 to {} messages, got {}",
                    delivery::MAX_BATCH,
                    items.len()
                )));
            }
            items
                .iter()
                .map(|i| new_message(&i.payload, i.delay_ms, i.ttl_ms))
                .collect::<Result<Vec<_>, _>>()?
        }
    };
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
        json!({ "ids": ids })
    } else {
        json!({ "id": ids.first() })
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn dequeue(
    State(s): State<AppState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<DequeueReq>,
) -> Result<Response, ApiError> {
    check_queue(&req.queue)?;
    validate::range("max", req.max, 1, delivery::MAX_DEQUEUE)?;
    validate::range(
        "visibility_ms",
        req.visibility_ms,
        delivery::MIN_VISIBILITY_MS,
        delivery::MAX_VISIBILITY_MS,
    )?;
    validate::range("wait_ms", req.wait_ms, 0, delivery::MAX_WAIT_MS)?;
    let wait = Duration::from_millis(req.wait_ms);
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
        .dequeue(&req.queue, req.max as usize, req.visibility_ms, wait)
        .await?;
    let messages: Vec<DeliveryOut> = got
        .into_iter()
        .map(|d| DeliveryOut {
            id: d.id,
            receipt: d.receipt,
            payload: raw(d.payload),
            attempts: d.attempts,
            enqueued_at_ms: d.enqueued_at_ms,
        })
        .collect();
    // A struct, not `json!`: going through `Value` would re-encode payloads.
    Ok(Json(DequeueOut { messages }).into_response())
}

async fn ack(
    State(s): State<AppState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<AckReq>,
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
            if rs.is_empty() || rs.len() > delivery::MAX_BATCH {
                return Err(ApiError::invalid(format!(
                    "`receipts` must hold 1 to {} receipts, got {}",
                    delivery::MAX_BATCH,
                    rs.len()
                )));
            }
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
    ApiJson(req): ApiJson<NackReq>,
) -> Result<Response, ApiError> {
    check_queue(&req.queue)?;
    check_receipt(&req.receipt)?;
    validate::range("delay_ms", req.delay_ms, 0, delivery::MAX_DELAY_MS)?;
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
                .nack(&req.queue, &req.receipt, req.delay_ms, now_ms()),
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
    ApiJson(req): ApiJson<ExtendReq>,
) -> Result<Response, ApiError> {
    check_queue(&req.queue)?;
    check_receipt(&req.receipt)?;
    validate::range(
        "visibility_ms",
        req.visibility_ms,
        delivery::MIN_VISIBILITY_MS,
        delivery::MAX_VISIBILITY_MS,
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
    Ok(Json(json!({
        "queue": queue,
        "node": node.advertise,
        "ready": st.ready,
        "delayed": st.delayed,
        "in_flight": st.in_flight,
        "dead_lettered": st.dead_lettered,
        "expired_total": st.expired_total,
    }))
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
    validate::range("limit", q.limit, 1, delivery::MAX_DEAD_PAGE)?;
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
    let messages: Vec<DeadOut> = dead
        .into_iter()
        .map(|d| DeadOut {
            id: d.id,
            payload: raw(d.payload),
            attempts: d.attempts,
            enqueued_at_ms: d.enqueued_at_ms,
            dead_lettered_at_ms: d.dead_lettered_at_ms,
        })
        .collect();
    Ok(Json(DeadPage { queue, messages }).into_response())
}

async fn redrive(
    State(s): State<AppState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<RedriveReq>,
) -> Result<Response, ApiError> {
    check_queue(&req.queue)?;
    validate::range("max", req.max, 1, delivery::MAX_DEAD_PAGE)?;
    let ids = match &req.ids {
        None => None,
        Some(ids) => {
            if ids.is_empty() || ids.len() as u64 > delivery::MAX_DEAD_PAGE {
                return Err(ApiError::invalid(format!(
                    "`ids` must hold 1 to {} ids",
                    delivery::MAX_DEAD_PAGE
                )));
            }
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
            node.store
                .redrive(&req.queue, ids, req.max as usize, now_ms()),
        )
        .await?;
    node.wake(&req.queue);
    Ok(Json(json!({ "redriven": ids })).into_response())
}

async fn config(
    State(s): State<AppState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<ConfigReq>,
) -> Result<Response, ApiError> {
    check_queue(&req.queue)?;
    if let Some(n) = req.max_attempts {
        validate::range(
            "max_attempts",
            n as u64,
            1,
            delivery::MAX_MAX_ATTEMPTS as u64,
        )?;
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
    Ok(Json(json!({ "queue": req.queue, "max_attempts": req.max_attempts })).into_response())
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
