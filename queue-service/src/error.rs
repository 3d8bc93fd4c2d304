//! The crate's one error type. Variants say what the caller must do; only
//! `http.rs` turns them into status codes and JSON bodies.

use crate::delivery::ReceiptError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The request is wrong; fix it before retrying (400).
    #[error("{0}")]
    InvalidInput(String),
    /// A payload exceeds the size limit (413).
    #[error("{0}")]
    TooLarge(String),
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
