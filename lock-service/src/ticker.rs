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
    let mut metrics = node.server_metrics();
    // One timer, moved only when the next deadline moves: most applies
    // (a hand-off, a renew of a later lease) leave the earliest one alone.
    let sleep = tokio::time::sleep(IDLE);
    tokio::pin!(sleep);
    let mut planned = None;
    loop {
        if !node.is_leader() {
            planned = None;
            if metrics.changed().await.is_err() {
                return;
            }
            continue;
        }
        changed.borrow_and_update();
        let next = node.read(|m, _| m.table.next_deadline());
        if planned != Some(next) {
            let pause = match next {
                Some(at) => Duration::from_millis(at.saturating_sub(common::now_ms())),
                None => IDLE,
            };
            sleep.as_mut().reset(tokio::time::Instant::now() + pause);
            planned = Some(next);
        }
        tokio::select! {
            _ = &mut sleep => {
                // A fired timer must be re-armed before it is polled again.
                planned = None;
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
