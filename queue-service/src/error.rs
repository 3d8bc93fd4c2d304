//! The crate's one error type, and its one mapping to HTTP status codes and
//! JSON error bodies. Variants say what the caller must do.

use axum::http::StatusCode;
use common::ApiError;

use crate::delivery::ReceiptError;
use crate::limit::{Full, RETRY_AFTER_SECS};

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The request is wrong; fix it before retrying (400).
    #[error("{0}")]
    InvalidInput(String),
    /// A payload exceeds the size limit (413).
    #[error("{0}")]
    TooLarge(String),
    /// The enqueue would take a queue or the node over a storage limit;
    /// nothing was enqueued. Retry after consumers ack (429).
    #[error("{0}")]
    QueueFull(Full),
    /// A receipt was refused (400 malformed, 404 not found, 409 stale).
    #[error("receipt {receipt:?} refused: {kind:?}")]
    Receipt { receipt: String, kind: ReceiptError },
    /// The store cannot be reached or failed to persist; nothing was
    /// acknowledged. Retry later (503).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The queue's owner could not be reached and this node cannot serve the
    /// queue itself (embedded store), or the forwarded call timed out and may
    /// or may not have been applied (503).
    #[error("owner {owner} of the queue is unavailable: {reason}")]
    OwnerUnavailable { owner: String, reason: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<redis::RedisError> for Error {
    fn from(e: redis::RedisError) -> Self {
        Error::Unavailable(format!("redis: {e}"))
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidInput(m) => ApiError::invalid(m),
            Error::TooLarge(m) => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", m)
            }
            Error::Receipt { receipt, kind } => receipt_error(&receipt, kind),
            Error::QueueFull(full) => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "queue_full",
                full.to_string(),
            )
            .with("limit", full.limit_name())
            .with("max", full.limit)
            .with("current", full.used)
            .with("adding", full.adding)
            .with("retry_after_s", RETRY_AFTER_SECS)
            .retry_after(RETRY_AFTER_SECS),
            Error::Unavailable(m) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", m)
            }
            Error::OwnerUnavailable { owner, reason } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "owner_unavailable",
                format!("the queue's owner {owner} could not serve the request: {reason}"),
            )
            .with("owner", owner),
        }
    }
}

/// The answer to a refused receipt, naming it.
pub(crate) fn receipt_error(receipt: &str, kind: ReceiptError) -> ApiError {
    let e = match kind {
        ReceiptError::Malformed => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_receipt",
            "not a receipt returned by dequeue",
        ),
        ReceiptError::NotFound => ApiError::new(
            StatusCode::NOT_FOUND,
            "message_not_found",
            "no such message: it was acked, expired, or never existed",
        ),
        ReceiptError::Stale => ApiError::new(
            StatusCode::CONFLICT,
            "stale_receipt",
            "this receipt's delivery is over: its visibility ended, or the message was delivered again or dead-lettered",
        ),
    };
    e.with("receipt", receipt)
}
