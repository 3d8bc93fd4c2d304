//! The lock service's errors, and their one mapping to HTTP.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use common::ApiError;
use serde_json::json;

use crate::table::{Hold, Token};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidInput(String),
    #[error("the lock is held")]
    LockHeld { holders: Vec<Hold> },
    #[error("the wait ended before the lock was granted")]
    WaitTimeout,
    #[error("granting this request would deadlock: {cycle:?}")]
    Deadlock { cycle: Vec<String> },
    #[error("the lock is not held by this owner")]
    NotHeld,
    #[error("the token does not match this owner's hold")]
    TokenMismatch,
    #[error("the token belongs to another owner")]
    OwnerMismatch,
    #[error("this owner already holds the lock")]
    AlreadyHeld { token: Token },
    #[error("this owner is already waiting for the lock")]
    AlreadyWaiting,
    #[error(
        "this request_id already answered a different request of this owner \
         (another operation, resource, mode or token); use a new id for each \
         request and the same one only to retry it"
    )]
    RequestIdReused,
    #[error("no reachable leader")]
    NotLeader { leader: Option<(u64, String)> },
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Overloaded(String),
    #[error(
        "{limit} locks are held or waited for, this node's limit (--max-locks); \
         release locks or retry later"
    )]
    CapacityExceeded { limit: u64 },
    #[error("{0}")]
    Internal(String),
}

impl From<raft_core::Error> for Error {
    fn from(e: raft_core::Error) -> Self {
        match e {
            raft_core::Error::NotLeader { leader } => Error::NotLeader { leader },
            raft_core::Error::Unavailable(m) => Error::Unavailable(m),
            raft_core::Error::Overloaded(m) => Error::Overloaded(m),
            raft_core::Error::InvalidInput(m) => Error::InvalidInput(m),
            raft_core::Error::Storage(m) => Error::Unavailable(format!("storage: {m}")),
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let msg = e.to_string();
        match e {
            Error::InvalidInput(m) => ApiError::invalid(m),
            Error::LockHeld { holders } => ApiError::new(StatusCode::CONFLICT, "lock_held", msg)
                .with("holders", json!(holders)),
            Error::WaitTimeout => ApiError::new(StatusCode::CONFLICT, "wait_timeout", msg),
            Error::Deadlock { cycle } => {
                ApiError::new(StatusCode::CONFLICT, "deadlock", msg).with("cycle", json!(cycle))
            }
            Error::NotHeld => ApiError::new(StatusCode::NOT_FOUND, "not_held", msg),
            Error::TokenMismatch => ApiError::new(StatusCode::CONFLICT, "token_mismatch", msg),
            Error::OwnerMismatch => ApiError::new(StatusCode::CONFLICT, "owner_mismatch", msg),
            Error::AlreadyHeld { token } => {
                ApiError::new(StatusCode::CONFLICT, "already_held", msg).with("token", token)
            }
            Error::AlreadyWaiting => ApiError::new(StatusCode::CONFLICT, "already_waiting", msg),
            Error::RequestIdReused => ApiError::new(StatusCode::CONFLICT, "request_id_reused", msg),
            Error::NotLeader { leader } => {
                let mut err = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no_leader",
                    "no leader could take the request; retry",
                );
                if let Some((id, addr)) = leader {
                    err = err.with("leader_id", id).with("leader_addr", addr);
                }
                err
            }
            Error::Unavailable(m) => ApiError::unavailable(m),
            // 429, not 503: the gateway takes a 503 for a node that cannot
            // serve and moves on to the next, which would pass the load around.
            Error::Overloaded(m) => ApiError::new(StatusCode::TOO_MANY_REQUESTS, "overloaded", m),
            // 429 as etcd's gateway answers its RESOURCE_EXHAUSTED; not
            // 507, which clients take for a server fault. Nothing was
            // applied; room comes back as locks are released or expire.
            Error::CapacityExceeded { limit } => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "capacity_exceeded", msg)
                    .with("limit", limit)
                    .retry_after(1)
            }
            Error::Internal(m) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", m),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        ApiError::from(self).into_response()
    }
}
