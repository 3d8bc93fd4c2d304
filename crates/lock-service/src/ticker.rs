//! The leader's clock: proposes a `Tick` when the next lease or wait ends.
//!
//! Time only enters the lock table through the log, so expiries need an
//! entry at (or just after) each deadline. Only the leader proposes them.
//! The loop sleeps until the table's next deadline and re-plans whenever an
//! apply changes the table or leadership changes — no fixed-rate polling.

use std::time::Duration;

use raft_core::RaftNode;
use tokio::sync::watch;

use crate::machine::LockMachine;
use crate::table::Command;

/// Pause after a failed tick proposal (no quorum) before trying again.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Sleep used when nothing is due: only a change can create a deadline.
const IDLE: Duration = Duration::from_secs(3600);

pub async fn run(node: RaftNode<LockMachine>, mut changed: watch::Receiver<u64>) {
    let mut metrics = node.metrics();
    loop {
        if !node.is_leader() {
            if metrics.changed().await.is_err() {
                return;
            }
            continue;
        }
        changed.borrow_and_update();
        let next = node.read(|m, _| m.table.next_deadline());
        let pause = match next {
            Some(at) => Duration::from_millis(at.saturating_sub(common::now_ms())),
            None => IDLE,
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {
                if next.is_some() {
                    if let Err(e) = node.write(Command::Tick).await {
                        tracing::debug!(error = %e, "tick not committed");
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                }
            }
            res = changed.changed() => if res.is_err() { return },
            res = metrics.changed() => if res.is_err() { return },
        }
    }
}
