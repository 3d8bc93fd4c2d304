//! The cache node's Prometheus metric families.
//!
//! [`Stats`] holds the domain counters a node keeps (hits, misses,
//! evictions, invalidations, write-backs, line census, home-memory usage,
//! view changes); the node bumps them as it works, `GET /api/cache/stats`
//! reads them as JSON and `GET /metrics` exports them after [`Stats::register`].

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Domain counters, exported both as JSON stats and Prometheus metrics.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub hits: Counter,
    pub misses: Counter,
    pub evictions: Counter,
    pub invalidations_sent: Counter,
    pub invalidations_received: Counter,
    pub write_backs: Counter,
    pub lines: Family<StateLabel, Gauge>,
    /// Home-memory entries evicted by its bounds (a delete).
    pub memory_evictions: Counter,
    pub memory_entries: Gauge,
    pub memory_bytes: Gauge,
    /// Accepted view changes.
    pub view_changes: Counter,
    /// 1 while this node's view is confirmed by a majority.
    pub view_confirmed: Gauge,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

impl Stats {
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "cache_hits",
            "Gets answered from this node's cache",
            self.hits.clone(),
        );
        r.register(
            "cache_misses",
            "Gets that went to the key's home",
            self.misses.clone(),
        );
        r.register(
            "cache_evictions",
            "Lines evicted by the LRU",
            self.evictions.clone(),
        );
        r.register(
            "cache_invalidations_sent",
            "Invalidations this node sent as a home",
            self.invalidations_sent.clone(),
        );
        r.register(
            "cache_invalidations_received",
            "Invalidations this node received",
            self.invalidations_received.clone(),
        );
        r.register(
            "cache_write_backs",
            "Dirty values written to the backing memory",
            self.write_backs.clone(),
        );
        r.register(
            "cache_lines",
            "Lines held per MESI state",
            self.lines.clone(),
        );
        r.register(
            "cache_memory_evictions",
            "Home-memory entries evicted (deleted) by the memory bounds",
            self.memory_evictions.clone(),
        );
        r.register(
            "cache_memory_entries",
            "Entries in this node's home memory",
            self.memory_entries.clone(),
        );
        r.register(
            "cache_memory_bytes",
            "Bytes of keys and values in this node's home memory",
            self.memory_bytes.clone(),
        );
        r.register(
            "cache_view_changes",
            "Membership views this node accepted",
            self.view_changes.clone(),
        );
        r.register(
            "cache_view_confirmed",
            "1 while a majority confirms this node's view (it may serve)",
            self.view_confirmed.clone(),
        );
    }
}
