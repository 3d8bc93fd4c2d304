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

use crate::table::{Applied, Command, LockTable, Outcome, WaitId};

/// Settlements kept for handlers that have not registered yet. A handler
/// registers within one round trip of its entry being applied, so a few
/// thousand covers any realistic burst.
const UNCLAIMED_CAPACITY: usize = 4096;

/// Where blocked acquires wait for their settlement.
#[derive(Default)]
pub struct Waiters {
    inner: Mutex<WaitersInner>,
}

#[derive(Default)]
struct WaitersInner {
    waiting: HashMap<WaitId, oneshot::Sender<Outcome>>,
    unclaimed: HashMap<WaitId, Outcome>,
    unclaimed_order: VecDeque<WaitId>,
}

impl Waiters {
    /// Register interest in `wait_id`; resolves with its settlement.
    pub fn wait_for(&self, wait_id: WaitId) -> oneshot::Receiver<Outcome> {
        let (tx, rx) = oneshot::channel();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(outcome) = inner.unclaimed.remove(&wait_id) {
            let _ = tx.send(outcome);
        } else {
            inner.waiting.insert(wait_id, tx);
        }
        rx
    }

    /// Stop waiting (the handler gave up or finished).
    pub fn forget(&self, wait_id: WaitId) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.waiting.remove(&wait_id);
    }

    fn publish(&self, settled: Vec<(WaitId, Outcome)>) {
        if settled.is_empty() {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for (id, outcome) in settled {
            match inner.waiting.remove(&id) {
                Some(tx) => {
                    let _ = tx.send(outcome);
                }
                None => {
                    inner.unclaimed.insert(id, outcome);
                    inner.unclaimed_order.push_back(id);
                    while inner.unclaimed_order.len() > UNCLAIMED_CAPACITY {
                        if let Some(old) = inner.unclaimed_order.pop_front() {
                            inner.unclaimed.remove(&old);
                        }
                    }
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
}

impl LockMachine {
    pub fn new(waiters: Arc<Waiters>, changed: watch::Sender<u64>) -> Self {
        Self {
            table: LockTable::new(),
            waiters,
            changed,
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
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
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
        let mut rx = w.wait_for(7);
        assert_eq!(rx.try_recv().unwrap(), Outcome::WaitTimeout);
        let mut rx = w.wait_for(8);
        assert!(rx.try_recv().is_err());
        w.publish(vec![(8, Outcome::Released)]);
        assert_eq!(rx.try_recv().unwrap(), Outcome::Released);
    }
}
