//! The gateway's one error type: what went wrong before or instead of a
//! backend answer. Backend answers (including their error bodies) are passed
//! through untouched and never become an [`Error`]; only the HTTP layer turns
//! these into status codes and the shared JSON error body.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use common::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Caller must fix the input (400 `invalid_input`).
    #[error("{0}")]
    InvalidInput(String),
    /// Body is not JSON (400 `malformed_json`).
    #[error("malformed JSON body: {0}")]
    MalformedJson(String),
    /// Body is JSON but a field is missing or of the wrong type (422 `invalid_field`).
    #[error("{0}")]
    InvalidField(String),
    /// The request body broke off or could not be read (400 `invalid_body`).
    #[error("request body could not be read: {0}")]
    InvalidBody(String),
    /// Body larger than the gateway's limit (413 `body_too_large`).
    #[error("request body exceeds {limit} bytes")]
    BodyTooLarge { limit: usize },
    /// `X-Cache-Node` / `?node=` names no known cache node (400 `unknown_node`).
    #[error("unknown cache node `{node}`")]
    UnknownNode { node: String, known: Vec<String> },
    /// Missing or wrong bearer token (401 `unauthorized`).
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// No configured or discovered node for the service (503 `unavailable`).
    #[error("no {service} nodes are known")]
    NoBackends { service: &'static str },
    /// Every candidate node failed to answer (503 `unavailable`).
    #[error("{service} backend unreachable: {reason}")]
    Unavailable {
        service: &'static str,
        backend: String,
        reason: String,
    },
    /// A backend took longer than the per-call timeout (504 `backend_timeout`).
    #[error("{service} backend {backend} did not answer within {timeout_ms} ms")]
    BackendTimeout {
        service: &'static str,
        backend: String,
        timeout_ms: u64,
    },
    /// The backend node already has `limit` calls outstanding from this
    /// gateway (503 `overloaded`, `Retry-After: 1`): shed, not queued.
    #[error("{service} backend {backend} has {limit} calls in flight, the gateway's limit (--max-in-flight); retry later")]
    Overloaded {
        service: &'static str,
        backend: String,
        limit: usize,
    },
    /// The whole request took longer than the gateway's request timeout (504 `timeout`).
    #[error("request did not complete within {timeout_ms} ms")]
    RequestTimeout { timeout_ms: u64 },
}

impl Error {
    /// The JSON error answer for this error.
    pub fn to_api(&self) -> ApiError {
        let msg = self.to_string();
        match self {
            Error::InvalidInput(_) => ApiError::invalid(msg),
            Error::MalformedJson(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", msg)
            }
            Error::InvalidField(_) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", msg)
            }
            Error::InvalidBody(_) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", msg),
            Error::BodyTooLarge { limit } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", msg)
                    .with("limit_bytes", *limit as u64)
            }
            Error::UnknownNode { known, .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "unknown_node", msg)
                    .with("known", known.clone())
            }
            Error::Unauthorized => ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", msg),
            Error::NoBackends { service } => ApiError::unavailable(msg).with("service", *service),
            Error::Unavailable {
                service, backend, ..
            } => ApiError::unavailable(msg)
                .with("service", *service)
                .with("backend", backend.clone()),
            Error::BackendTimeout {
                service, backend, ..
            } => ApiError::new(StatusCode::GATEWAY_TIMEOUT, "backend_timeout", msg)
                .with("service", *service)
                .with("backend", backend.clone()),
            Error::Overloaded {
                service,
                backend,
                limit,
            } => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", msg)
                .with("service", *service)
                .with("backend", backend.clone())
                .with("limit", *limit as u64)
                .retry_after(1),
            Error::RequestTimeout { .. } => {
                ApiError::new(StatusCode::GATEWAY_TIMEOUT, "timeout", msg)
            }
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let mut resp = self.to_api().into_response();
        if matches!(self, Error::Unauthorized) {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}
