//! The lock service's metric families: lock table sizes and counters, Raft
//! term, leadership and log writes. They live on the node's registry beside
//! the HTTP request metrics and are brought up to date at scrape time from
//! the replicated counters (which every node keeps, leader or not).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use common::metrics::{Gauge, Histogram, MetricsRegistry};
use prometheus_client::metrics::counter::Counter;
use raft_core::RaftNode;

use crate::machine::LockMachine;
use crate::table::Limits;

/// Domain metrics, refreshed from the replicated counters at scrape time.
pub struct LockMetrics {
    resources: Gauge,
    holds: Gauge,
    waiters: Gauge,
    placed: Gauge,
    max_locks: Gauge,
    remembered: Gauge,
    max_remembered: Gauge,
    term: Gauge,
    is_leader: Gauge,
    grants: Counter,
    handoffs: Counter,
    releases: Counter,
    expirations: Counter,
    wait_timeouts: Counter,
    deadlocks: Counter,
    leader_changes: Counter,
    log_fsyncs: Counter,
    log_entries: Counter,
    seen: Mutex<[u64; 8]>,
    leader_changes_seen: AtomicU64,
    waits: Histogram,
}

impl LockMetrics {
    /// Create the families and register them on `reg`, with `node`'s
    /// write latency among them.
    pub fn register(reg: &mut MetricsRegistry, node: &RaftNode<LockMachine>) -> Self {
        let m = Self {
            resources: Gauge::default(),
            holds: Gauge::default(),
            waiters: Gauge::default(),
            placed: Gauge::default(),
            max_locks: Gauge::default(),
            remembered: Gauge::default(),
            max_remembered: Gauge::default(),
            term: Gauge::default(),
            is_leader: Gauge::default(),
            grants: Counter::default(),
            handoffs: Counter::default(),
            releases: Counter::default(),
            expirations: Counter::default(),
            wait_timeouts: Counter::default(),
            deadlocks: Counter::default(),
            leader_changes: Counter::default(),
            log_fsyncs: Counter::default(),
            log_entries: Counter::default(),
            seen: Mutex::new([0; 8]),
            leader_changes_seen: AtomicU64::new(0),
            waits: common::metrics::latency_histogram(),
        };
        reg.register(
            "lock_resources",
            "Resources with holders or waiters",
            m.resources.clone(),
        );
        reg.register("lock_holds", "Locks held", m.holds.clone());
        reg.register(
            "lock_waiters",
            "Requests waiting in queues",
            m.waiters.clone(),
        );
        reg.register(
            "lock_placed",
            "Locks held plus requests waiting (what --max-locks bounds)",
            m.placed.clone(),
        );
        reg.register(
            "lock_max_locks",
            "This node's --max-locks",
            m.max_locks.clone(),
        );
        reg.register(
            "lock_remembered_answers",
            "Answers remembered for retries (what --max-remembered bounds)",
            m.remembered.clone(),
        );
        reg.register(
            "lock_max_remembered",
            "This node's --max-remembered",
            m.max_remembered.clone(),
        );
        reg.register("raft_term", "Current Raft term", m.term.clone());
        reg.register(
            "raft_is_leader",
            "1 when this node leads",
            m.is_leader.clone(),
        );
        reg.register("lock_grants", "Locks granted", m.grants.clone());
        reg.register(
            "lock_handoffs",
            "Locks granted to a request that waited (after a release, an expiry or a withdrawal ahead of it); part of lock_grants",
            m.handoffs.clone(),
        );
        reg.register(
            "lock_wait_seconds",
            "Time a granted acquire waited in the queue, on the node that took the call",
            m.waits.clone(),
        );
        reg.register(
            "raft_commit_seconds",
            "Raft writes on this node from the call to the applied answer: proposal, replication to a majority, fsync, apply (plus the hop to the leader on a follower)",
            node.write_latency(),
        );
        reg.register("lock_releases", "Locks released", m.releases.clone());
        reg.register(
            "lock_expirations",
            "Leases that expired",
            m.expirations.clone(),
        );
        reg.register(
            "lock_wait_timeouts",
            "Waits that ended ungranted",
            m.wait_timeouts.clone(),
        );
        reg.register(
            "lock_deadlocks",
            "Requests aborted to break deadlocks",
            m.deadlocks.clone(),
        );
        reg.register(
            "raft_leader_changes",
            "Leader changes seen by this node",
            m.leader_changes.clone(),
        );
        reg.register(
            "raft_log_fsyncs",
            "Raft log fsyncs (group commits)",
            m.log_fsyncs.clone(),
        );
        reg.register(
            "raft_log_entries",
            "Raft log entries written",
            m.log_entries.clone(),
        );
        m
    }

    /// Time a granted acquire spent waiting, from its queueing to its grant.
    pub fn observe_wait(&self, waited: std::time::Duration) {
        self.waits.observe(waited.as_secs_f64());
    }

    /// Count leader changes as this node sees them.
    pub fn spawn_leader_watch(self: &Arc<Self>, node: &RaftNode<LockMachine>) {
        let mut rx = node.server_metrics();
        let metrics = self.clone();
        tokio::spawn(async move {
            let mut last = rx.borrow().current_leader;
            while rx.changed().await.is_ok() {
                let now = rx.borrow().current_leader;
                if now != last && now.is_some() {
                    metrics.leader_changes_seen.fetch_add(1, Ordering::Relaxed);
                }
                last = now;
            }
        });
    }

    /// Bring every family up to date with `node` (at scrape time).
    pub fn refresh(&self, node: &RaftNode<LockMachine>, limits: Limits) {
        let (counters, sizes, placed, remembered) = node.read(|m, _| {
            let t = &m.table;
            (t.counters(), t.sizes(), t.placed(), t.remembered_count())
        });
        self.resources.set(sizes.0 as i64);
        self.holds.set(sizes.1 as i64);
        self.waiters.set(sizes.2 as i64);
        self.placed.set(placed as i64);
        self.max_locks.set(limits.max_locks as i64);
        self.remembered.set(remembered as i64);
        self.max_remembered.set(limits.max_remembered as i64);
        let status = node.status();
        self.term.set(status.term as i64);
        self.is_leader.set(i64::from(status.state == "Leader"));
        let log = node.log_stats();
        let now = [
            counters.grants,
            counters.handoffs,
            counters.releases,
            counters.expirations,
            counters.wait_timeouts,
            counters.deadlocks,
            log.fsyncs,
            log.entries,
        ];
        let targets = [
            &self.grants,
            &self.handoffs,
            &self.releases,
            &self.expirations,
            &self.wait_timeouts,
            &self.deadlocks,
            &self.log_fsyncs,
            &self.log_entries,
        ];
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        for i in 0..now.len() {
            // Counters only move forward; a snapshot restore that lowers a
            // replicated counter is not a negative increment.
            if now[i] > seen[i] {
                targets[i].inc_by(now[i] - seen[i]);
            }
            seen[i] = seen[i].max(now[i]);
        }
        let changes = self.leader_changes_seen.load(Ordering::Relaxed);
        let counted = self.leader_changes.get();
        if changes > counted {
            self.leader_changes.inc_by(changes - counted);
        }
    }
}
