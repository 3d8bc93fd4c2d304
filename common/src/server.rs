//! Process plumbing shared by every binary: tracing, the `/internal/` token
//! guard, the router tail every service ends with, and one way to serve it
//! until shutdown.
//!
//! A service's `run` builds its routes, passes them through [`tail`], and
//! hands the result to [`serve`]:
//! - [`tail`]: JSON 404/405 fallbacks, the request body limit, the
//!   per-route request metrics and a tracing span per request, in the same
//!   order everywhere;
//! - [`serve`]: `TCP_NODELAY` on every accepted connection, then graceful
//!   shutdown when the given future resolves (main passes
//!   [`shutdown_signal`]: SIGINT or SIGTERM).

use std::future::Future;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use tokio::net::TcpListener;
use tower_http::trace::{DefaultOnFailure, TraceLayer};

use crate::config::LogFormat;
use crate::error::ApiError;
use crate::metrics::Metrics;

/// Header that carries the cluster token on internal calls. A bearer
/// `Authorization` header is accepted too.
pub const CLUSTER_TOKEN_HEADER: &str = "x-cluster-token";

/// Structured logs to stderr, filtered by `filter` (tracing's `EnvFilter`
/// directives; one that does not parse logs at `info`), as text or as one
/// JSON object per line. The binaries take both from [`ServerArgs`]
/// (`--log-filter`/`RUST_LOG`, `--log-format`/`LOG_FORMAT`).
///
/// [`ServerArgs`]: crate::config::ServerArgs
pub fn init_tracing(filter: &str, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let res = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
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

/// The end of every service's router: unknown paths and wrong methods
/// answer the JSON error body (404 `not_found`, 405 `method_not_allowed`),
/// bodies over `body_limit` bytes are refused with 413 before a handler
/// parses them, every request, matched or not, is counted and timed in
/// `metrics` by its route template, and runs inside a `request` span
/// (method, URI) that its handler's log lines carry.
///
/// The span and the request/response events are at DEBUG, failures
/// included: a 503 during a failover is an answer the caller handles, not a
/// server error to log at every node; `--log-filter tower_http=debug` shows
/// every request.
///
/// A router merged in before this keeps a body limit of its own if it sets
/// one (the innermost `DefaultBodyLimit` wins): Raft's internal routes carry
/// snapshots far larger than any client body.
pub fn tail<S>(router: Router<S>, metrics: Metrics, body_limit: usize) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    router
        .method_not_allowed_fallback(crate::error::method_not_allowed_fallback)
        .fallback(crate::error::not_found_fallback)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            crate::metrics::track,
        ))
        .layer(
            TraceLayer::new_for_http()
                .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
        )
}

/// Serve `service` (a `Router`, or the gateway's own service around one)
/// on `listener` until `shutdown` resolves, then stop accepting and let the
/// requests in flight finish.
///
/// Every accepted connection gets `TCP_NODELAY`: clients, peers and the
/// gateway send small requests and answers on long-lived connections, and
/// Nagle's algorithm would hold each one back waiting for the ACK of the
/// last (a delayed ACK costs up to 40 ms on Linux).
pub async fn serve<S>(
    listener: TcpListener,
    service: S,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    S: tower::Service<Request, Response = Response, Error = std::convert::Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        // Failing to set it only costs latency; the connection still works.
        let _ = tcp.set_nodelay(true);
    });
    let make = axum::ServiceExt::<Request>::into_make_service(service);
    axum::serve(listener, make)
        .with_graceful_shutdown(shutdown)
        .await
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
    use crate::metrics::MetricsRegistry;
    use axum::http::HeaderMap;
    use axum::routing::post;

    /// A router through the tail, served on 127.0.0.1:0: the fallbacks, the
    /// body limit and the metrics behave as every service relies on, and
    /// the server stops when its shutdown future resolves.
    #[tokio::test]
    async fn tail_and_serve() {
        let metrics = Metrics::new(MetricsRegistry::default());
        let app = tail(
            Router::new().route("/echo", post(|body: String| async move { body })),
            metrics.clone(),
            16,
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, app, async {
            let _ = stopped.await;
        }));
        let http = reqwest::Client::new();

        let ok = http
            .post(format!("{base}/echo"))
            .body("hi")
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200);
        assert_eq!(ok.text().await.unwrap(), "hi");

        let big = http
            .post(format!("{base}/echo"))
            .body("x".repeat(17))
            .send()
            .await
            .unwrap();
        assert_eq!(big.status(), 413);

        let missing = http.get(format!("{base}/nope")).send().await.unwrap();
        assert_eq!(missing.status(), 404);
        let body: serde_json::Value = missing.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_found");

        let wrong = http.get(format!("{base}/echo")).send().await.unwrap();
        assert_eq!(wrong.status(), 405);
        assert_eq!(wrong.headers()["allow"], "POST");
        let body: serde_json::Value = wrong.json().await.unwrap();
        assert_eq!(body["error"]["code"], "method_not_allowed");

        let text = metrics.render();
        for line in [
            r#"http_requests_total{method="POST",route="/echo",status="200"} 1"#,
            r#"http_requests_total{method="POST",route="/echo",status="413"} 1"#,
            r#"http_requests_total{method="GET",route="unmatched",status="404"} 1"#,
        ] {
            assert!(text.contains(line), "missing `{line}` in\n{text}");
        }

        stop.send(()).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), server)
            .await
            .expect("the server stops once shutdown resolves")
            .unwrap()
            .unwrap();
    }

    /// Log lines written while a handler runs carry the request's span.
    #[tokio::test]
    async fn handlers_log_inside_the_request_span() {
        use std::sync::{Arc, Mutex};
        use tower::ServiceExt;

        #[derive(Clone, Default)]
        struct Captured(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Captured {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        // This test's thread only; the handler runs on it (oneshot, current-thread runtime).
        let _guard = tracing::subscriber::set_default(subscriber);

        let app = tail(
            Router::new().route(
                "/hello",
                axum::routing::get(|| async {
                    tracing::info!("handler ran");
                    "hi"
                }),
            ),
            Metrics::new(MetricsRegistry::default()),
            16,
        );
        let req = axum::http::Request::get("/hello?x=1")
            .body(axum::body::Body::empty())
            .unwrap();
        assert_eq!(app.oneshot(req).await.unwrap().status(), 200);

        let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let line = logs
            .lines()
            .find(|l| l.contains("handler ran"))
            .unwrap_or_else(|| panic!("no handler line in\n{logs}"));
        assert!(line.contains("request{method=GET uri=/hello?x=1"), "{line}");
    }

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
