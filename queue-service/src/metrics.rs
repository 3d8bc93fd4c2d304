//! The queue service's metric families: messages enqueued, delivered,
//! acknowledged, dead-lettered and expired through this node, forwarding,
//! the depth of the queues it owns and the latency of its storage calls,
//! and the storage limits: each limit, what is stored against it, and the
//! enqueues refused by it. They live on the node's registry beside the HTTP
//! request metrics.

use std::time::Duration;

use common::metrics::{latency_family, Gauge, MetricsRegistry};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

use crate::delivery::{Events, QueueStats};
use crate::limit::{Full, Limits, Usage};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabel {
    op: &'static str,
}

/// `queue` (one queue's limit), `node` (the node's), or `fullest_queue`
/// (the use of the queue this node owns that is nearest its limits).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScopeLabel {
    scope: &'static str,
}

/// `queue_messages`, `queue_bytes`, `node_messages`, `node_bytes`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabel {
    limit: &'static str,
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
    limit_messages: Family<ScopeLabel, Gauge>,
    limit_bytes: Family<ScopeLabel, Gauge>,
    stored_messages: Family<ScopeLabel, Gauge>,
    stored_bytes: Family<ScopeLabel, Gauge>,
    full_refusals: Family<LimitLabel, Counter>,
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
            limit_messages: Family::default(),
            limit_bytes: Family::default(),
            stored_messages: Family::default(),
            stored_bytes: Family::default(),
            full_refusals: Family::default(),
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
        r.register(
            "queue_limit_messages",
            "Most messages one queue (scope=queue) or this node (scope=node, embedded store only) may store",
            m.limit_messages.clone(),
        );
        r.register(
            "queue_limit_bytes",
            "Most payload bytes one queue (scope=queue) or this node (scope=node, embedded store only) may store",
            m.limit_bytes.clone(),
        );
        r.register(
            "queue_stored_messages",
            "Messages stored by this node (scope=node, embedded store) and by the owned queue nearest its limits (scope=fullest_queue, refreshed every 5 s)",
            m.stored_messages.clone(),
        );
        r.register(
            "queue_stored_bytes",
            "Payload bytes stored by this node (scope=node, embedded store) and by the owned queue nearest its limits (scope=fullest_queue, refreshed every 5 s)",
            m.stored_bytes.clone(),
        );
        r.register(
            "queue_full_refusals",
            "Enqueues refused with 429 queue_full, by the limit that refused them",
            m.full_refusals.clone(),
        );
        m
    }

    /// Publish the limits in force: the per-queue ones, and the per-node
    /// ones when the store enforces them.
    pub fn set_limits(&self, queue: Limits, node: Option<Limits>) {
        let scopes = [("queue", Some(queue)), ("node", node)];
        for (scope, limits) in scopes.into_iter() {
            let Some(l) = limits else { continue };
            let label = ScopeLabel { scope };
            self.limit_messages
                .get_or_create(&label)
                .set(gauge_value(l.max_messages));
            self.limit_bytes
                .get_or_create(&label)
                .set(gauge_value(l.max_bytes));
        }
    }

    /// Set what `scope` (`node` or `fullest_queue`) stores.
    pub fn set_stored(&self, scope: &'static str, u: Usage) {
        let label = ScopeLabel { scope };
        self.stored_messages
            .get_or_create(&label)
            .set(gauge_value(u.messages));
        self.stored_bytes
            .get_or_create(&label)
            .set(gauge_value(u.bytes));
    }

    /// What `scope` stores, as last set (zero if never).
    pub fn stored(&self, scope: &'static str) -> Usage {
        let label = ScopeLabel { scope };
        Usage {
            messages: self.stored_messages.get_or_create(&label).get().max(0) as u64,
            bytes: self.stored_bytes.get_or_create(&label).get().max(0) as u64,
        }
    }

    /// Count an enqueue refused by `full`.
    pub fn refused(&self, full: &Full) {
        self.full_refusals
            .get_or_create(&LimitLabel {
                limit: full.limit_name(),
            })
            .inc();
    }

    /// Enqueues refused so far, by limit name.
    pub fn refusals(&self) -> Vec<(&'static str, u64)> {
        [
            "queue_messages",
            "queue_bytes",
            "node_messages",
            "node_bytes",
        ]
        .into_iter()
        .map(|limit| {
            let n = self
                .full_refusals
                .get_or_create(&LimitLabel { limit })
                .get();
            (limit, n)
        })
        .collect()
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
            bytes: 0,
        }
    }
}

/// A count as an `i64` gauge value (limits may be set to `u64::MAX`).
fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
