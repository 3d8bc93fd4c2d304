//! The lock table as a Raft state machine, and the bridge from applied
//! entries to the HTTP handlers that wait on them.
//!
//! `apply` runs the pure [`LockTable`] and then publishes what it settled
//! (grants, timeouts, deadlock aborts of waiting requests) to the
//! [`Waiters`] registry, so a blocked `acquire` is answered by the very
//! apply that granted it, on whichever node the client is connected to, with
//! no polling. Settlements that arrive before the handler registered (the
//! handler is still receiving its "queued" answer) are kept briefly and
//! handed over on registration.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::{oneshot, watch};

use crate::events::Events;
use crate::table::{Applied, Command, LockTable, Outcome, WaitId};

/// Settlements kept for handlers that register after them. A handler
/// registers within one round trip of its entry being applied, so a few
/// thousand covers any realistic burst.
const RECENT_CAPACITY: usize = 4096;

/// Where blocked acquires wait for their settlement. Several handlers may
/// wait for one request (a client's retry on a second connection gets the
/// same wait id): each is answered, and each withdraws only itself.
#[derive(Default)]
pub struct Waiters {
    inner: Mutex<WaitersInner>,
}

#[derive(Default)]
struct WaitersInner {
    waiting: HashMap<WaitId, Vec<(u64, oneshot::Sender<Outcome>)>>,
    next_ticket: u64,
    /// The latest settlements, for handlers that register after theirs
    /// was applied (the handler is still receiving its "queued" answer).
    recent: HashMap<WaitId, Outcome>,
    recent_order: VecDeque<WaitId>,
}

impl Waiters {
    /// Register interest in `wait_id`: a ticket for [`Waiters::forget`]
    /// and the receiver its settlement comes on.
    pub fn wait_for(&self, wait_id: WaitId) -> (u64, oneshot::Receiver<Outcome>) {
        let (tx, rx) = oneshot::channel();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.next_ticket += 1;
        let ticket = inner.next_ticket;
        match inner.recent.get(&wait_id) {
            Some(outcome) => {
                let _ = tx.send(outcome.clone());
            }
            None => inner.waiting.entry(wait_id).or_default().push((ticket, tx)),
        }
        (ticket, rx)
    }

    /// Stop waiting (the handler holding `ticket` gave up or finished).
    pub fn forget(&self, wait_id: WaitId, ticket: u64) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(list) = inner.waiting.get_mut(&wait_id) {
            list.retain(|(t, _)| *t != ticket);
            if list.is_empty() {
                inner.waiting.remove(&wait_id);
            }
        }
    }

    fn publish(&self, settled: Vec<(WaitId, Outcome)>) {
        if settled.is_empty() {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for (id, outcome) in settled {
            for (_, tx) in inner.waiting.remove(&id).unwrap_or_default() {
                let _ = tx.send(outcome.clone());
            }
            if inner.recent.insert(id, outcome).is_none() {
                inner.recent_order.push_back(id);
            }
            while inner.recent_order.len() > RECENT_CAPACITY {
                if let Some(old) = inner.recent_order.pop_front() {
                    inner.recent.remove(&old);
                }
            }
        }
    }
}

/// The replicated state machine of the lock service.
pub struct LockMachine {
    pub table: LockTable,
    waiters: Arc<Waiters>,
    /// Bumped after every apply; the leader's ticker watches it to re-plan.
    changed: watch::Sender<u64>,
    /// Where the deadlocks applies break are recorded.
    events: Arc<Events>,
}

impl LockMachine {
    pub fn new(waiters: Arc<Waiters>, changed: watch::Sender<u64>, events: Arc<Events>) -> Self {
        Self {
            table: LockTable::new(),
            waiters,
            changed,
            events,
        }
    }
}

impl raft_core::StateMachine for LockMachine {
    type Command = Command;
    type Response = Applied;
    type Image = LockTable;

    fn apply(&mut self, cmd: Command, index: u64, now_ms: u64) -> Applied {
        let mut applied = self.table.apply(cmd, index, now_ms);
        self.waiters.publish(std::mem::take(&mut applied.settled));
        for abort in std::mem::take(&mut applied.deadlocks) {
            self.events.deadlock(&abort);
        }
        self.changed.send_modify(|n| *n += 1);
        applied
    }

    /// A clone of the table, serialized off the lock: the copy takes a
    /// fraction of the encoding's time (see `docs/architecture.md`).
    fn snapshot(&self) -> raft_core::SnapshotJob {
        let table = self.table.clone();
        Box::new(move || serde_json::to_vec(&table).unwrap_or_default())
    }

    fn decode(bytes: &[u8]) -> Result<LockTable, String> {
        serde_json::from_slice(bytes)
            .map(LockTable::recounted)
            .map_err(|e| e.to_string())
    }

    fn restore(&mut self, table: LockTable) -> LockTable {
        let replaced = std::mem::replace(&mut self.table, table);
        self.changed.send_modify(|n| *n += 1);
        replaced
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settlement_before_registration_is_handed_over() {
        let w = Waiters::default();
        w.publish(vec![(7, Outcome::WaitTimeout)]);
        let (_, mut rx) = w.wait_for(7);
        assert_eq!(rx.try_recv().unwrap(), Outcome::WaitTimeout);
        let (_, mut rx) = w.wait_for(8);
        assert!(rx.try_recv().is_err());
        w.publish(vec![(8, Outcome::Released)]);
        assert_eq!(rx.try_recv().unwrap(), Outcome::Released);
        // A late second handler of the same request gets it too.
        let (_, mut late) = w.wait_for(8);
        assert_eq!(late.try_recv().unwrap(), Outcome::Released);
    }

    #[test]
    fn two_handlers_of_one_wait_are_both_answered_and_withdraw_only_themselves() {
        let w = Waiters::default();
        let (first, mut rx1) = w.wait_for(9);
        let (_, mut rx2) = w.wait_for(9);
        let (_, mut rx3) = w.wait_for(9);
        // The first gives up: the others keep waiting.
        w.forget(9, first);
        assert!(rx2.try_recv().is_err() && rx3.try_recv().is_err());
        w.publish(vec![(9, Outcome::WaitTimeout)]);
        assert_eq!(rx2.try_recv().unwrap(), Outcome::WaitTimeout);
        assert_eq!(rx3.try_recv().unwrap(), Outcome::WaitTimeout);
        assert!(
            rx1.try_recv().is_err(),
            "the withdrawn handler hears nothing"
        );
    }
}
