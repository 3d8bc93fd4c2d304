//! The client's one error type.
//!
//! A service or the gateway answered with its JSON error body → [`Error::Api`]
//! carrying the stable `code` (match on it: `lock_held`, `not_found`,
//! `no_leader`, `unauthorized`, …). The request never got an answer →
//! [`Error::Transport`]. The answer was not what the API promises →
//! [`Error::Decode`].

use serde_json::{Map, Value};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with an error status and a JSON error body.
    #[error("{status} {code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
        /// Extra fields of the error object (`holders`, `cycle`, `leader_addr`, …).
        details: Map<String, Value>,
    },
    /// No answer: connection refused or reset, timeout.
    #[error("transport: {0}")]
    Transport(#[from] reqwest::Error),
    /// An answer that does not match the API (wrong JSON shape, non-JSON error).
    #[error("unexpected answer (status {status}): {message}")]
    Decode { status: u16, message: String },
    /// The caller passed something the client can tell is invalid up front.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl Error {
    /// The JSON error `code`, for API errors.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } | Error::Decode { status, .. } => Some(*status),
            Error::Transport(e) => e.status().map(|s| s.as_u16()),
            Error::InvalidArgument(_) => None,
        }
    }

    /// One extra field of the error object.
    pub fn detail(&self, key: &str) -> Option<&Value> {
        match self {
            Error::Api { details, .. } => details.get(key),
            _ => None,
        }
    }

    /// Whether retrying the same call later may succeed (no answer, or 503/504).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Transport(_) => true,
            Error::Api { status, .. } => *status == 503 || *status == 504,
            _ => false,
        }
    }

    /// Build from a non-success answer's status and body.
    pub(crate) fn from_body(status: u16, body: &[u8]) -> Self {
        #[derive(serde::Deserialize)]
        struct Body {
            error: Map<String, Value>,
        }
        match serde_json::from_slice::<Body>(body) {
            Ok(Body { mut error }) => {
                let code = match error.remove("code") {
                    Some(Value::String(s)) => s,
                    _ => "unknown".to_string(),
                };
                let message = match error.remove("message") {
                    Some(Value::String(s)) => s,
                    Some(other) => other.to_string(),
                    None => String::new(),
                };
                Error::Api {
                    status,
                    code,
                    message,
                    details: error,
                }
            }
            Err(_) => Error::Decode {
                status,
                message: format!(
                    "non-JSON error body: {}",
                    String::from_utf8_lossy(&body[..body.len().min(200)])
                ),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_error_bodies() {
        let e = Error::from_body(
            409,
            br#"{"error":{"code":"lock_held","message":"held","holders":["a"]}}"#,
        );
        assert_eq!(e.code(), Some("lock_held"));
        assert_eq!(e.status(), Some(409));
        assert_eq!(e.detail("holders"), Some(&serde_json::json!(["a"])));
        assert!(!e.is_retryable());
        let e = Error::from_body(503, br#"{"error":{"code":"no_leader","message":"x"}}"#);
        assert!(e.is_retryable());
        let e = Error::from_body(500, b"oops");
        assert!(matches!(e, Error::Decode { status: 500, .. }));
        assert_eq!(e.code(), None);
    }
}
