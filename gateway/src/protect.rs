//! What stands between a client and the backends: bearer tokens, the body
//! limit and the whole-request timeout, each answering with the shared JSON
//! error body. [`crate::proxy`] applies them in line on the proxied routes;
//! the middleware here applies them on the router's.
//!
//! Invariants:
//! - with tokens configured, a request without a valid token is answered 401
//!   before any backend is contacted;
//! - a body over the limit is refused with 413 before it is forwarded (the
//!   declared `Content-Length` is checked first, then the bytes read);
//! - no request outlives the request timeout; the client gets 504 `timeout`.

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::Error;
use crate::state::Gateway;

/// Whether `headers` carry one of `tokens` as a bearer token (always true
/// when no tokens are configured).
pub fn admits(tokens: &[String], headers: &axum::http::HeaderMap) -> bool {
    if tokens.is_empty() {
        return true;
    }
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
    else {
        return false;
    };
    // Compare against every token without stopping early.
    tokens.iter().fold(false, |acc, t| {
        acc | constant_time_eq(t.as_bytes(), given.as_bytes())
    })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Middleware: 401 unless the request carries a valid bearer token.
pub async fn require_token(State(gw): State<Gateway>, req: Request, next: Next) -> Response {
    if admits(&gw.settings().api_tokens, req.headers()) {
        next.run(req).await
    } else {
        gw.count_rejected("unauthorized");
        Error::Unauthorized.into_response()
    }
}

/// Middleware around every route: 504 `timeout` when the request takes
/// longer than the configured request timeout, and the request metrics
/// (`common::metrics::observe_request`). One layer, not two: each layer is
/// a boxed future per request, and on the proxy's hot path they showed.
pub async fn front(State(gw): State<Gateway>, req: Request, next: Next) -> Response {
    let limit = gw.settings().request_timeout;
    common::metrics::observe_request(gw.metrics(), req, |req| async {
        match tokio::time::timeout(limit, next.run(req)).await {
            Ok(resp) => resp,
            Err(_) => {
                gw.count_rejected("timeout");
                Error::RequestTimeout {
                    timeout_ms: limit.as_millis() as u64,
                }
                .into_response()
            }
        }
    })
    .await
}

/// The request body, read whole under the gateway's body limit: a declared
/// `Content-Length` over it is refused before a byte is read, and so is a
/// body that grows past it (413 `body_too_large`); a body that breaks off is
/// 400 `invalid_body`.
pub async fn read_body(
    gw: &Gateway,
    headers: &axum::http::HeaderMap,
    body: axum::body::Body,
) -> Result<Bytes, Error> {
    let limit = gw.settings().body_limit_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        gw.count_rejected("body_too_large");
        return Err(Error::BodyTooLarge { limit });
    }
    match http_body_util::BodyExt::collect(http_body_util::Limited::new(body, limit)).await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            gw.count_rejected("body_too_large");
            Err(Error::BodyTooLarge { limit })
        }
        Err(e) => {
            gw.count_rejected("invalid_body");
            Err(Error::InvalidBody(e.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    #[test]
    fn bearer_tokens() {
        let none: Vec<String> = vec![];
        assert!(admits(&none, &HeaderMap::new()));
        let tokens = vec!["alpha".to_string(), "beta".to_string()];
        assert!(!admits(&tokens, &HeaderMap::new()));
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, v.parse().unwrap());
            h
        };
        assert!(admits(&tokens, &with("Bearer beta")));
        assert!(admits(&tokens, &with("Bearer alpha")));
        assert!(!admits(&tokens, &with("Bearer gamma")));
        assert!(!admits(&tokens, &with("Bearer alph")));
        assert!(!admits(&tokens, &with("alpha")));
        assert!(!admits(&tokens, &with("Basic YWxwaGE=")));
    }
}
