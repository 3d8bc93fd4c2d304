//! The queue service's metric families: messages enqueued, delivered,
//! acknowledged, dead-lettered and expired through this node, forwarding,
//! the depth of the queues it owns and the latency of its storage calls.
//! They live on the node's registry beside the HTTP request metrics.

use std::time::Duration;

use common::metrics::{latency_family, Gauge, MetricsRegistry};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

use crate::delivery::{Events, QueueStats};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabel {
    op: &'static str,
}

/// Domain counters and gauges (registered on the node's registry).
#[derive(Clone)]
pub struct QueueMetrics {
    pub enqueued: Counter,
    pub delivered: Counter,
    pub redelivered: Counter,
    pub acked: Counter,
    pub nacked: Counter,
    pub dead_lettered: Counter,
    pub expired: Counter,
    pub forwarded: Counter,
    pub owner_fallbacks: Counter,
    depth: Family<StateLabel, Gauge>,
    storage: Family<OpLabel, Histogram>,
}

impl QueueMetrics {
    /// Create the families and register them on `registry`.
    pub fn register(registry: &mut MetricsRegistry) -> Self {
        let m = QueueMetrics {
            enqueued: Counter::default(),
            delivered: Counter::default(),
            redelivered: Counter::default(),
            acked: Counter::default(),
            nacked: Counter::default(),
            dead_lettered: Counter::default(),
            expired: Counter::default(),
            forwarded: Counter::default(),
            owner_fallbacks: Counter::default(),
            depth: Family::default(),
            storage: latency_family(),
        };
        let r = registry;
        r.register(
            "queue_enqueued",
            "Messages enqueued through this node",
            m.enqueued.clone(),
        );
        r.register(
            "queue_delivered",
            "Deliveries handed out by this node",
            m.delivered.clone(),
        );
        r.register(
            "queue_redelivered",
            "Deliveries with attempts > 1 handed out by this node",
            m.redelivered.clone(),
        );
        r.register(
            "queue_acked",
            "Messages acknowledged through this node",
            m.acked.clone(),
        );
        r.register(
            "queue_nacked",
            "Deliveries given back through this node",
            m.nacked.clone(),
        );
        r.register(
            "queue_dead_lettered",
            "Messages moved to a dead-letter list by operations on this node",
            m.dead_lettered.clone(),
        );
        r.register(
            "queue_expired",
            "Messages dropped by TTL by operations on this node",
            m.expired.clone(),
        );
        r.register(
            "queue_forwarded",
            "Requests forwarded to the queue's owner",
            m.forwarded.clone(),
        );
        r.register(
            "queue_owner_fallbacks",
            "Requests served here because the owner was unreachable (Redis backend)",
            m.owner_fallbacks.clone(),
        );
        r.register(
            "queue_depth",
            "Messages per state over the queues this node owns",
            m.depth.clone(),
        );
        r.register(
            "queue_storage_duration_seconds",
            "Latency of storage operations",
            m.storage.clone(),
        );
        m
    }

    /// Count what an operation did besides its answer.
    pub fn record(&self, events: Events) {
        self.expired.inc_by(events.expired);
        self.dead_lettered.inc_by(events.dead_lettered);
    }

    /// Time one storage call took, by operation.
    pub fn observe_storage(&self, op: &'static str, took: Duration) {
        self.storage
            .get_or_create(&OpLabel { op })
            .observe(took.as_secs_f64());
    }

    /// Set the depth gauges to `s`, the sum over the queues this node owns.
    pub fn set_depth(&self, s: &QueueStats) {
        for (state, v) in [
            ("ready", s.ready),
            ("delayed", s.delayed),
            ("in_flight", s.in_flight),
            ("dead_lettered", s.dead_lettered),
        ] {
            self.depth
                .get_or_create(&StateLabel { state })
                .set(v as i64);
        }
    }

    /// The depth gauges as last set.
    pub fn depth(&self) -> QueueStats {
        let g = |state| self.depth.get_or_create(&StateLabel { state }).get().max(0) as u64;
        QueueStats {
            ready: g("ready"),
            delayed: g("delayed"),
            in_flight: g("in_flight"),
            dead_lettered: g("dead_lettered"),
            expired_total: 0,
        }
    }
}
