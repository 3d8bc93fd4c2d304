//! Prometheus metrics for one service instance.
//!
//! Each instance owns its [`Metrics`] (not a process-global recorder), so the
//! tests that run three nodes in one process still see per-node numbers. The
//! HTTP middleware counts requests and times them per route template
//! (`/api/lock/{resource}`, never the raw path, so label cardinality stays
//! bounded); services register their domain gauges and counters on the same
//! registry before wrapping it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
pub use prometheus_client::metrics::histogram::Histogram;
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

/// One histogram with the project's latency buckets (seconds), for a step
/// timed without labels (a Raft write, a lock wait).
pub fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS.into_iter())
}

/// A histogram family with the project's latency buckets, for services that
/// time their own steps (storage calls, peer round trips).
pub fn latency_family<L>() -> Family<L, Histogram>
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS.into_iter()))
}

/// One (method, status) of a route: the handles of its series.
struct Series {
    method: String,
    status: u16,
    count: Counter,
    latency: Histogram,
}

/// The registry plus the HTTP request metrics every service exposes.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    requests: Family<RouteLabels, Counter>,
    latency: Family<LatencyLabels, Histogram>,
    /// Route → its series' handles. A family lookup builds its label set
    /// (six `String`s a request); this finds the handles by borrowed
    /// route and method, so a request allocates nothing here once its
    /// series exists.
    series: Arc<RwLock<HashMap<String, Vec<Series>>>>,
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
            series: Arc::default(),
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

    /// Count one request to `route` (its template) and its latency: what
    /// [`observe_request`] does around a handler, for a server that matches
    /// routes itself (the gateway's proxied routes).
    pub fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        {
            let series = self.series.read().unwrap_or_else(|e| e.into_inner());
            if let Some(s) = series.get(route).and_then(|all| {
                all.iter()
                    .find(|s| s.status == status && s.method == method)
            }) {
                s.count.inc();
                s.latency.observe(seconds);
                return;
            }
        }
        // First of its series: through the families, then remembered (two
        // requests racing here remember it twice, to the same metrics).
        let count = self
            .requests
            .get_or_create(&RouteLabels {
                method: method.to_string(),
                route: route.to_string(),
                status,
            })
            .clone();
        let latency = self
            .latency
            .get_or_create(&LatencyLabels {
                method: method.to_string(),
                route: route.to_string(),
            })
            .clone();
        count.inc();
        latency.observe(seconds);
        self.series
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(route.to_string())
            .or_default()
            .push(Series {
                method: method.to_string(),
                status,
                count,
                latency,
            });
    }
}

/// Axum middleware: count and time every request by its route template.
/// Install with `axum::middleware::from_fn_with_state(metrics, track)`.
pub async fn track(State(metrics): State<Metrics>, req: Request, next: Next) -> Response {
    observe_request(&metrics, req, |req| next.run(req)).await
}

/// [`track`]'s one body, for a middleware that does more around the same
/// call (the gateway's, with its deadline): run `run` on `req`, then count
/// and time it by its route template.
pub async fn observe_request<F>(
    metrics: &Metrics,
    req: Request,
    run: impl FnOnce(Request) -> F,
) -> Response
where
    F: std::future::Future<Output = Response>,
{
    // Handles, not copies: `MatchedPath` is an `Arc<str>` inside, and a
    // standard method is a constant.
    let route = req.extensions().get::<MatchedPath>().cloned();
    let method = req.method().clone();
    let start = Instant::now();
    let resp = run(req).await;
    metrics.observe(
        method.as_str(),
        route.as_ref().map_or("unmatched", |r| r.as_str()),
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
        // Again (through the remembered handles), and other series beside.
        m.observe("GET", "/health", 200, 0.001);
        m.observe("GET", "/health", 503, 0.001);
        m.observe("POST", "/health", 200, 0.001);
        let text = m.render();
        assert!(text.contains("holds 3"), "{text}");
        for (series, n) in [
            ("method=\"GET\",route=\"/health\",status=\"200\"", 2),
            ("method=\"GET\",route=\"/health\",status=\"503\"", 1),
            ("method=\"POST\",route=\"/health\",status=\"200\"", 1),
        ] {
            assert!(
                text.contains(&format!("http_requests_total{{{series}}} {n}")),
                "{series}: {text}"
            );
        }
        assert!(
            text.contains(
                "http_request_duration_seconds_count{method=\"GET\",route=\"/health\"} 3"
            ),
            "{text}"
        );
        assert!(
            text.contains("http_request_duration_seconds_bucket"),
            "{text}"
        );
    }
}
