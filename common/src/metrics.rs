//! Prometheus metrics for one service instance.
//!
//! Each instance owns its [`Metrics`] (not a process-global recorder), so the
//! tests that run three nodes in one process still see per-node numbers. The
//! HTTP middleware counts requests and times them per route template
//! (`/api/lock/{resource}`, never the raw path, so label cardinality stays
//! bounded); services register their domain gauges and counters on the same
//! registry before wrapping it.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

pub use prometheus_client::metrics::gauge::Gauge;
pub use prometheus_client::registry::Registry as MetricsRegistry;

/// Latency buckets in seconds: 100 µs to 10 s, covering a local hit and a
/// long poll alike.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    method: String,
    route: String,
}

/// A histogram family with the project's latency buckets, for services that
/// time their own steps (storage calls, peer round trips).
pub fn latency_family<L>() -> Family<L, Histogram>
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS.into_iter()))
}

/// The registry plus the HTTP request metrics every service exposes.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    requests: Family<RouteLabels, Counter>,
    latency: Family<LatencyLabels, Histogram>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// Wrap a registry on which the service already registered its own
    /// metrics; the HTTP metrics are added here.
    pub fn new(mut registry: Registry) -> Self {
        let requests = Family::<RouteLabels, Counter>::default();
        let latency = latency_family::<LatencyLabels>();
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route and method",
            latency.clone(),
        );
        Self {
            registry: Arc::new(Mutex::new(registry)),
            requests,
            latency,
        }
    }

    /// The registry in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &registry);
        out
    }

    fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RouteLabels {
                method: method.to_string(),
                route: route.to_string(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&LatencyLabels {
                method: method.to_string(),
                route: route.to_string(),
            })
            .observe(seconds);
    }
}

/// Axum middleware: count and time every request by its route template.
/// Install with `axum::middleware::from_fn_with_state(metrics, track)`.
pub async fn track(State(metrics): State<Metrics>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = req.method().as_str().to_string();
    let start = Instant::now();
    let resp = next.run(req).await;
    metrics.observe(
        &method,
        &route,
        resp.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    resp
}

/// Handler body for `GET /metrics`.
pub fn text_response(metrics: &Metrics) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_registered_and_http_metrics() {
        let mut registry = Registry::default();
        let g = Gauge::<i64>::default();
        registry.register("holds", "locks held", g.clone());
        g.set(3);
        let m = Metrics::new(registry);
        m.observe("GET", "/health", 200, 0.001);
        let text = m.render();
        assert!(text.contains("holds 3"), "{text}");
        assert!(
            text.contains("http_requests_total{method=\"GET\",route=\"/health\",status=\"200\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("http_request_duration_seconds_bucket"),
            "{text}"
        );
    }
}
