//! The queue's write routes, one `impl` [`QueueWrite`] per request type of
//! the `api` crate (mini-redis's one struct per command): what the request
//! must satisfy, which queue it names, how long the owner may take, and what
//! the owner does with it. `http::write` is the one handler that runs them:
//! check, forward to the queue's owner unless this node is it, serve.
//!
//! - Every check runs on the node the request reached, before anything is
//!   forwarded: a bad request is refused once, where it arrived, and never
//!   costs the owner a call.
//! - Validation is one place per type: an enqueue becomes a [`Batch`] of
//!   [`NewMessage`]s in `TryFrom<&api::EnqueueRequest>`, the rest in their
//!   `check`.

use std::future::Future;
use std::time::Duration;

use api::limits::{self, queue as lim, Invalid, MAX_NAME_CHARS};
use api::Payload;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use common::{now_ms, ApiError};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use crate::delivery::{self, NewMessage, ReceiptError};
use crate::error::{receipt_error, Error};
use crate::node::Node;

/// A write route of the queue API.
pub(crate) trait QueueWrite: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// Its path, where it is served and where a forward goes.
    const ROUTE: &'static str;
    /// What [`QueueWrite::check`] makes of the request for the owner.
    type Checked: Send;
    /// The queue the request names (its owner serves it).
    fn queue(&self) -> &str;
    /// Every check of the request; an error is the 4xx answer.
    fn check(&self) -> Result<Self::Checked, ApiError>;
    /// How much longer than a plain call the owner may take (a long poll).
    fn wait(_checked: &Self::Checked) -> Duration {
        Duration::ZERO
    }
    /// Serve the request on the queue's owner.
    fn serve(
        self,
        checked: Self::Checked,
        node: &Node,
    ) -> impl Future<Output = Result<Response, ApiError>> + Send;
}

/// Stored payload text as sent (it was validated on enqueue).
pub(crate) fn raw(text: String) -> Payload {
    Payload::from_text(text).unwrap_or_default()
}

pub(crate) fn check_queue(queue: &str) -> Result<(), Invalid> {
    limits::path_name("queue", queue, MAX_NAME_CHARS)
}

fn check_receipt(r: &str) -> Result<(), ApiError> {
    if delivery::receipt_seq(r).is_none() {
        return Err(receipt_error(r, ReceiptError::Malformed));
    }
    Ok(())
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
pub(crate) struct Batch(Vec<NewMessage>);

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

impl QueueWrite for api::EnqueueRequest {
    const ROUTE: &'static str = "/api/queue/enqueue";
    type Checked = Batch;

    fn queue(&self) -> &str {
        &self.queue
    }

    fn check(&self) -> Result<Batch, ApiError> {
        Batch::try_from(self)
    }

    async fn serve(self, Batch(batch): Batch, node: &Node) -> Result<Response, ApiError> {
        let n = batch.len() as u64;
        let (res, events) = node
            .timed("enqueue", node.store.enqueue(&self.queue, batch, now_ms()))
            .await?;
        node.record(&self.queue, events);
        let ids = res.map_err(|full| {
            node.metrics.refused(&full);
            Error::QueueFull(full)
        })?;
        node.metrics.enqueued.inc_by(n);
        node.wake(&self.queue);
        let body = if self.messages.is_some() {
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
}

/// A dequeue's values with their defaults: at most `max`, hidden for
/// `visibility_ms`, waiting up to `wait`.
pub(crate) struct Take {
    max: u64,
    visibility_ms: u64,
    wait: Duration,
}

impl QueueWrite for api::DequeueRequest {
    const ROUTE: &'static str = "/api/queue/dequeue";
    type Checked = Take;

    fn queue(&self) -> &str {
        &self.queue
    }

    fn check(&self) -> Result<Take, ApiError> {
        check_queue(&self.queue)?;
        let max = self.max.map_or(1, u64::from);
        let visibility_ms = self.visibility_ms.unwrap_or(lim::DEFAULT_VISIBILITY_MS);
        let wait_ms = self.wait_ms.unwrap_or(0);
        limits::range("max", max, 1, lim::MAX_DEQUEUE)?;
        limits::range(
            "visibility_ms",
            visibility_ms,
            lim::MIN_VISIBILITY_MS,
            lim::MAX_VISIBILITY_MS,
        )?;
        limits::range("wait_ms", wait_ms, 0, lim::MAX_WAIT_MS)?;
        Ok(Take {
            max,
            visibility_ms,
            wait: Duration::from_millis(wait_ms),
        })
    }

    fn wait(take: &Take) -> Duration {
        take.wait
    }

    async fn serve(self, take: Take, node: &Node) -> Result<Response, ApiError> {
        let got = node
            .dequeue(
                &self.queue,
                take.max as usize,
                take.visibility_ms,
                take.wait,
            )
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
}

/// The receipts of an ack, and whether it was the single form (whose
/// refusal is the call's error, where a batch lists its failures).
pub(crate) struct Receipts {
    receipts: Vec<String>,
    single: bool,
}

impl QueueWrite for api::AckRequest {
    const ROUTE: &'static str = "/api/queue/ack";
    type Checked = Receipts;

    fn queue(&self) -> &str {
        &self.queue
    }

    fn check(&self) -> Result<Receipts, ApiError> {
        check_queue(&self.queue)?;
        match (&self.receipt, &self.receipts) {
            (Some(_), Some(_)) => Err(ApiError::invalid(
                "give either `receipt` or `receipts`, not both",
            )),
            (None, None) => Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
                "missing field `receipt` (or `receipts`)",
            )),
            (Some(r), None) => {
                check_receipt(r)?;
                Ok(Receipts {
                    receipts: vec![r.clone()],
                    single: true,
                })
            }
            (None, Some(rs)) => {
                limits::count("receipts", rs.len(), lim::MAX_BATCH)?;
                Ok(Receipts {
                    receipts: rs.clone(),
                    single: false,
                })
            }
        }
    }

    async fn serve(self, checked: Receipts, node: &Node) -> Result<Response, ApiError> {
        let Receipts { receipts, single } = checked;
        let (results, events) = node
            .timed(
                "ack",
                node.store.ack(&self.queue, receipts.clone(), now_ms()),
            )
            .await?;
        node.record(&self.queue, events);
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
}

impl QueueWrite for api::NackRequest {
    const ROUTE: &'static str = "/api/queue/nack";
    /// The delay before the message is visible again.
    type Checked = u64;

    fn queue(&self) -> &str {
        &self.queue
    }

    fn check(&self) -> Result<u64, ApiError> {
        check_queue(&self.queue)?;
        check_receipt(&self.receipt)?;
        let delay_ms = self.delay_ms.unwrap_or(0);
        limits::range("delay_ms", delay_ms, 0, lim::MAX_DELAY_MS)?;
        Ok(delay_ms)
    }

    async fn serve(self, delay_ms: u64, node: &Node) -> Result<Response, ApiError> {
        let (res, events) = node
            .timed(
                "nack",
                node.store
                    .nack(&self.queue, &self.receipt, delay_ms, now_ms()),
            )
            .await?;
        node.record(&self.queue, events);
        let outcome = res.map_err(|k| receipt_error(&self.receipt, k))?;
        node.metrics.nacked.inc();
        node.wake(&self.queue);
        Ok(Json(json!({ "outcome": outcome })).into_response())
    }
}

impl QueueWrite for api::ExtendRequest {
    const ROUTE: &'static str = "/api/queue/extend";
    type Checked = ();

    fn queue(&self) -> &str {
        &self.queue
    }

    fn check(&self) -> Result<(), ApiError> {
        check_queue(&self.queue)?;
        check_receipt(&self.receipt)?;
        limits::range(
            "visibility_ms",
            self.visibility_ms,
            lim::MIN_VISIBILITY_MS,
            lim::MAX_VISIBILITY_MS,
        )?;
        Ok(())
    }

    async fn serve(self, (): (), node: &Node) -> Result<Response, ApiError> {
        let (res, events) = node
            .timed(
                "extend",
                node.store
                    .extend(&self.queue, &self.receipt, self.visibility_ms, now_ms()),
            )
            .await?;
        node.record(&self.queue, events);
        let until = res.map_err(|k| receipt_error(&self.receipt, k))?;
        Ok(Json(json!({ "visible_until_ms": until })).into_response())
    }
}

/// What a redrive moves: the given ids (parsed), or up to `max` of the
/// oldest dead letters.
pub(crate) struct Redrive {
    ids: Option<Vec<delivery::Seq>>,
    max: u64,
}

impl QueueWrite for api::RedriveRequest {
    const ROUTE: &'static str = "/api/queue/redrive";
    type Checked = Redrive;

    fn queue(&self) -> &str {
        &self.queue
    }

    fn check(&self) -> Result<Redrive, ApiError> {
        check_queue(&self.queue)?;
        let max = self.max.unwrap_or(lim::DEFAULT_DEAD_PAGE);
        limits::range("max", max, 1, lim::MAX_DEAD_PAGE)?;
        let ids = match &self.ids {
            None => None,
            Some(ids) => {
                limits::count("ids", ids.len(), lim::MAX_DEAD_PAGE as usize)?;
                Some(
                    ids.iter()
                        .map(|id| {
                            delivery::parse_id(id).ok_or_else(|| {
                                ApiError::invalid(format!("`{id}` is not a message id"))
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                )
            }
        };
        Ok(Redrive { ids, max })
    }

    async fn serve(self, r: Redrive, node: &Node) -> Result<Response, ApiError> {
        let ids = node
            .timed(
                "redrive",
                node.store
                    .redrive(&self.queue, r.ids, r.max as usize, now_ms()),
            )
            .await?;
        node.redriven(&self.queue, &ids);
        node.wake(&self.queue);
        Ok(Json(api::RedriveResponse { redriven: ids }).into_response())
    }
}

impl QueueWrite for api::QueueConfig {
    const ROUTE: &'static str = "/api/queue/config";
    type Checked = ();

    fn queue(&self) -> &str {
        &self.queue
    }

    fn check(&self) -> Result<(), ApiError> {
        check_queue(&self.queue)?;
        if let Some(n) = self.max_attempts {
            limits::range("max_attempts", n.into(), 1, lim::MAX_MAX_ATTEMPTS.into())?;
        }
        Ok(())
    }

    async fn serve(self, (): (), node: &Node) -> Result<Response, ApiError> {
        node.timed(
            "config",
            node.store.set_max_attempts(&self.queue, self.max_attempts),
        )
        .await?;
        Ok(Json(self).into_response())
    }
}
