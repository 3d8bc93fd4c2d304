//! The gateway's metric families: backend calls by service, route, backend
//! and outcome, their latency, retries, the gateway's own errors,
//! rejections and known members. They live on the gateway's registry
//! beside the HTTP request metrics; `state.rs` updates them as calls go
//! out. (The lock leader's families belong to lock routing: `lock.rs`.)

use std::collections::HashMap;
use std::sync::RwLock;

use common::metrics::{latency_family, MetricsRegistry};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct BackendLabels {
    pub(crate) service: &'static str,
    pub(crate) route: &'static str,
    pub(crate) backend: String,
    pub(crate) outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct BackendLatencyLabels {
    pub(crate) service: &'static str,
    pub(crate) route: &'static str,
    pub(crate) backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ServiceLabels {
    pub(crate) service: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct NodeLabels {
    pub(crate) backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabels {
    pub(crate) reason: &'static str,
}

/// Every gateway metric family, registered on the gateway's registry.
pub(crate) struct Families {
    pub(crate) backend_requests: Family<BackendLabels, Counter>,
    pub(crate) backend_latency: Family<BackendLatencyLabels, Histogram>,
    pub(crate) retries: Family<ServiceLabels, Counter>,
    pub(crate) gateway_errors: Family<ServiceLabels, Counter>,
    pub(crate) rejected: Family<ReasonLabels, Counter>,
    pub(crate) members: Family<ServiceLabels, Gauge>,
    /// Set at scrape time from the in-flight counts (no label lookup on
    /// the call path).
    pub(crate) in_flight: Family<NodeLabels, Gauge>,
    pub(crate) max_in_flight: Gauge,
    /// Backend → the handles of its call series, found by borrowed
    /// labels: a family lookup per call built its label set (three
    /// `String`s) and hashed it under the family's lock.
    backend_series: RwLock<HashMap<String, Vec<BackendSeries>>>,
}

/// One (service, route) of a backend: its latency and a counter per
/// outcome seen.
struct BackendSeries {
    service: &'static str,
    route: &'static str,
    latency: Histogram,
    outcomes: Vec<(String, Counter)>,
}

impl Families {
    /// Create the families and register them on `registry`.
    pub(crate) fn register(registry: &mut MetricsRegistry) -> Self {
        let f = Self {
            backend_requests: Family::default(),
            backend_latency: latency_family(),
            retries: Family::default(),
            gateway_errors: Family::default(),
            rejected: Family::default(),
            members: Family::default(),
            in_flight: Family::default(),
            max_in_flight: Gauge::default(),
            backend_series: RwLock::default(),
        };
        registry.register(
        "gateway_backend_requests",
        "Backend calls by service, route, backend and outcome (status code, unreachable, timeout)",
        f.backend_requests.clone(),
    );
        registry.register(
            "gateway_backend_request_duration_seconds",
            "Backend call latency by service, route and backend",
            f.backend_latency.clone(),
        );
        registry.register(
            "gateway_retries",
            "Extra backend attempts (leader change, failover) by service",
            f.retries.clone(),
        );
        registry.register(
        "gateway_errors",
        "Client requests the gateway answered with its own error (backend down or slow) by service",
        f.gateway_errors.clone(),
    );
        registry.register(
            "gateway_rejected",
            "Requests refused before reaching a backend, by reason",
            f.rejected.clone(),
        );
        registry.register(
            "gateway_backend_members",
            "Known backend nodes per service",
            f.members.clone(),
        );
        registry.register(
            "gateway_backend_in_flight",
            "Calls outstanding per backend node",
            f.in_flight.clone(),
        );
        registry.register(
            "gateway_max_in_flight",
            "Most calls outstanding to one backend node (--max-in-flight); past it, 503 overloaded",
            f.max_in_flight.clone(),
        );
        f
    }

    /// Count one backend call and its latency.
    pub(crate) fn observe_backend(
        &self,
        service: &'static str,
        route: &'static str,
        backend: &str,
        outcome: &str,
        seconds: f64,
    ) {
        {
            let all = self
                .backend_series
                .read()
                .unwrap_or_else(|e| e.into_inner());
            let series = all.get(backend).and_then(|list| {
                list.iter()
                    .find(|s| s.service == service && s.route == route)
            });
            if let Some(s) = series {
                if let Some((_, count)) = s.outcomes.iter().find(|(o, _)| o == outcome) {
                    count.inc();
                    s.latency.observe(seconds);
                    return;
                }
            }
        }
        // A new series or outcome: through the families, then remembered.
        let count = self
            .backend_requests
            .get_or_create(&BackendLabels {
                service,
                route,
                backend: backend.to_string(),
                outcome: outcome.to_string(),
            })
            .clone();
        let latency = self
            .backend_latency
            .get_or_create(&BackendLatencyLabels {
                service,
                route,
                backend: backend.to_string(),
            })
            .clone();
        count.inc();
        latency.observe(seconds);
        let mut all = self
            .backend_series
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let list = all.entry(backend.to_string()).or_default();
        let pos = match list
            .iter()
            .position(|s| s.service == service && s.route == route)
        {
            Some(pos) => pos,
            None => {
                list.push(BackendSeries {
                    service,
                    route,
                    latency,
                    outcomes: Vec::new(),
                });
                list.len() - 1
            }
        };
        let s = &mut list[pos];
        if !s.outcomes.iter().any(|(o, _)| o == outcome) {
            s.outcomes.push((outcome.to_string(), count));
        }
    }
}
