//! This node's ring of recent notable events, for `GET /api/events`:
//! deadlocks the lock table broke and the leader changes this node saw.
//!
//! - Bounded: the newest [`api::limits::list::EVENT_RING`] events
//!   ([`api::events::EventRing`]).
//! - Per node, in memory: lost on restart. Deadlocks are recorded by the
//!   apply, so every replica records the same one (same `key`, the log
//!   index; the gateway lists it once), and a restarted node re-applying
//!   its log since the last snapshot records those again, at their
//!   original (replicated) times.
//! - Leader changes are this node's own observation (its wall clock):
//!   nodes see one at slightly different times; the key (term and leader)
//!   lets the gateway list it once.

use std::sync::Arc;

use api::events::EventRing;
use api::{DeadlockEvent, Event, EventKind, LeaderEvent, WaitForEdge};
use raft_core::RaftNode;

use crate::deadlock::Abort;
use crate::machine::LockMachine;

/// The ring and the name events are recorded under (the node's address).
#[derive(Debug, Default)]
pub struct Events {
    ring: EventRing,
    node: String,
}

impl Events {
    /// An empty ring for the node at `node`.
    pub fn new(node: impl Into<String>) -> Arc<Self> {
        Arc::new(Self {
            ring: EventRing::default(),
            node: node.into(),
        })
    }

    /// Record a broken deadlock.
    pub fn deadlock(&self, a: &Abort) {
        let edges = a
            .edges
            .iter()
            .map(|(waiter, blocker, resources)| WaitForEdge {
                waiter: waiter.clone(),
                blocker: blocker.clone(),
                resources: resources.clone(),
            })
            .collect();
        self.ring.push(Event {
            at_ms: a.at_ms,
            service: "lock".into(),
            node: self.node.clone(),
            kind: EventKind::Deadlock,
            summary: format!(
                "deadlock {} broken: {}'s wait for {} aborted",
                a.cycle.join(" → "),
                a.victim,
                a.resource
            ),
            key: Some(format!("deadlock@{}", a.index)),
            deadlock: Some(DeadlockEvent {
                cycle: a.cycle.clone(),
                edges,
                victim: a.victim.clone(),
                resource: a.resource.clone(),
                wait_id: a.wait_id,
                index: a.index,
            }),
            leader: None,
            queue: None,
        });
    }

    /// Record that this node now follows `leader` in `term`.
    pub fn leader_change(&self, at_ms: u64, term: u64, leader: u64, previous: Option<u64>) {
        let from = previous.map_or("none".to_string(), |p| p.to_string());
        self.ring.push(Event {
            at_ms,
            service: "lock".into(),
            node: self.node.clone(),
            kind: EventKind::LeaderChange,
            summary: format!("leader {leader} in term {term} (was {from})"),
            key: Some(format!("leader@{term}:{leader}")),
            deadlock: None,
            leader: Some(LeaderEvent {
                term,
                leader_id: Some(leader),
                previous_leader_id: previous,
            }),
            queue: None,
        });
    }

    /// The newest `limit` events, newest first.
    pub fn newest(&self, limit: usize) -> Vec<Event> {
        self.ring.newest(limit)
    }
}

/// Record every new leader `node` learns of, until the node stops.
pub fn spawn_leader_watch(
    node: &RaftNode<LockMachine>,
    events: Arc<Events>,
) -> tokio::task::JoinHandle<()> {
    let mut rx = node.server_metrics();
    let node = node.clone();
    tokio::spawn(async move {
        let mut last = None;
        loop {
            let now = rx.borrow_and_update().current_leader;
            if let Some(leader) = now.filter(|l| Some(*l) != last) {
                let term = node.status().term;
                events.leader_change(common::now_ms(), term, leader, last);
            }
            if now.is_some() {
                last = now;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    })
}
