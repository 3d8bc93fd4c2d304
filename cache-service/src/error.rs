//! The crate's one error type, and its one mapping to HTTP status codes and
//! JSON error bodies. Variants say what the caller should do.

use axum::http::StatusCode;
use common::ApiError;

use crate::protocol::NodeId;

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// Fix the request.
    #[error("{0}")]
    InvalidInput(String),
    /// Send a smaller value.
    #[error("value is {size} bytes; the limit is {limit}")]
    ValueTooLarge { size: usize, limit: usize },
    /// The key has no value.
    #[error("no value for key `{0}`")]
    NotFound(String),
    /// Internal: the receiver is not this key's home in its current view;
    /// the sender retries once views agree.
    #[error("this node is not the home of the key; its home is {home}")]
    NotHome { home: NodeId },
    /// Internal: the sender routed or acted by view `theirs`, the receiver
    /// is in view `mine`; the sender retries once views agree.
    #[error("membership views differ: this node is in view {mine}, the request in view {theirs}")]
    StaleView { mine: u64, theirs: u64 },
    /// Retry later: a peer or the backing memory did not answer in time.
    #[error("{0}")]
    Unavailable(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let msg = e.to_string();
        match e {
            Error::InvalidInput(_) => ApiError::invalid(msg),
            Error::ValueTooLarge { size, limit } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "value_too_large", msg)
                    .with("size", size)
                    .with("limit", limit)
            }
            Error::NotFound(_) => ApiError::not_found(msg),
            Error::NotHome { home } => {
                ApiError::new(StatusCode::CONFLICT, "not_home", msg).with("home", home)
            }
            Error::StaleView { mine, theirs } => {
                ApiError::new(StatusCode::CONFLICT, "stale_view", msg)
                    .with("view", mine)
                    .with("request_view", theirs)
            }
            Error::Unavailable(_) => ApiError::unavailable(msg),
        }
    }
}
