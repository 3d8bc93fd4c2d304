//! Process plumbing shared by every binary: tracing, the `/internal/` token
//! guard, and graceful shutdown.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;

use crate::error::ApiError;

/// Header that carries the cluster token on internal calls. A bearer
/// `Authorization` header is accepted too.
pub const CLUSTER_TOKEN_HEADER: &str = "x-cluster-token";

/// Structured logs to stderr, filtered by `RUST_LOG` (default `info`).
/// `LOG_FORMAT=json` switches to one JSON object per line.
pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let res = if std::env::var("LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    // A second init (tests) keeps the first subscriber.
    let _ = res;
}

/// The shared secret for `/internal/` routes; `None` means open (local runs).
#[derive(Clone, Debug, Default)]
pub struct ClusterToken(pub Option<String>);

impl ClusterToken {
    /// Whether the request carries this token (always true when none is set).
    pub fn admits(&self, headers: &axum::http::HeaderMap) -> bool {
        let Some(expected) = &self.0 else {
            return true;
        };
        let given = headers
            .get(CLUSTER_TOKEN_HEADER)
            .and_then(|v| v.to_str().ok())
            .or_else(|| {
                headers
                    .get(axum::http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
            });
        given.is_some_and(|g| constant_time_eq(g.as_bytes(), expected.as_bytes()))
    }

    /// Add the token to an outbound internal request.
    pub fn apply(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.0 {
            Some(t) => req.header(CLUSTER_TOKEN_HEADER, t),
            None => req,
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Middleware for the `/internal/` router: 401 unless the cluster token
/// matches. Install with `from_fn_with_state(token, require_cluster_token)`.
pub async fn require_cluster_token(
    State(token): State<ClusterToken>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if token.admits(req.headers()) {
        Ok(next.run(req).await)
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "internal route: missing or wrong cluster token",
        ))
    }
}

/// Resolves on SIGINT or SIGTERM: the signal to drain and stop.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received");
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    #[test]
    fn token_checks() {
        let open = ClusterToken(None);
        assert!(open.admits(&HeaderMap::new()));
        let t = ClusterToken(Some("s3cret".into()));
        assert!(!t.admits(&HeaderMap::new()));
        let mut h = HeaderMap::new();
        h.insert(CLUSTER_TOKEN_HEADER, "wrong".parse().unwrap());
        assert!(!t.admits(&h));
        h.insert(CLUSTER_TOKEN_HEADER, "s3cret".parse().unwrap());
        assert!(t.admits(&h));
        let mut b = HeaderMap::new();
        b.insert("authorization", "Bearer s3cret".parse().unwrap());
        assert!(t.admits(&b));
    }
}
