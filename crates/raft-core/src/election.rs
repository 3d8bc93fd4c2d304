//! Prompt, ranked elections once the leader falls silent.
//!
//! openraft 0.9 lets a follower campaign only after the leader lease
//! (`election_timeout_max` since it last heard from the leader) *plus* its
//! own random election timeout, checked on a tick of 1.5 × heartbeat. The
//! random part exists so that two followers rarely campaign at once; when
//! they do, both lose the round (a split vote) and the wait starts again.
//! After a leader crash that costs, on average, the lease + 1.5 × the
//! minimum timeout + half a tick, and a split vote doubles it.
//!
//! This module replaces chance with rank. A follower that has heard nothing
//! from the leader for the lease plus [`LEASE_MARGIN`] campaigns at once if
//! it is first among the other voters in id order; the next one takes its
//! turn [`RANK_STAGGER`] later, and so on round-robin, up to
//! [`MAX_ATTEMPTS`] turns each. So one candidate usually asks alone and wins
//! in one round trip, as soon as the voters' leases allow it.
//!
//! Safety stays openraft's: starting an election is always allowed in Raft,
//! a voter still refuses while its own lease from the leader runs and
//! refuses a candidate whose log is behind its own. openraft's own timer
//! stays armed as the fallback (a candidate with a shorter log is refused;
//! the voter with the longer log gets its turn one stagger later).
//!
//! The loop does not poll: it sleeps until the next turn, which lies a lease
//! past the newest append; while a leader is alive each wake-up finds a newer
//! append and goes back to sleep (about once per lease).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::{Raft, ServerState};

use crate::{NodeId, TypeConfig};

/// Slack past our own lease before the first turn: the other voters heard
/// the leader's last append at about the same moment, but not exactly.
pub const LEASE_MARGIN: Duration = Duration::from_millis(10);

/// Gap between two voters' turns. Each voter counts from the last append
/// *it* heard, and one follower can be a heartbeat tick behind the other (a
/// node that just rejoined is sent to less often), so the gap covers a
/// tick (45 ms at the default timing) plus a vote round trip; with 20 ms the
/// second in rank was seen campaigning first, being refused, and costing a
/// term.
pub const RANK_STAGGER: Duration = Duration::from_millis(60);

/// Turns per voter after one silence; then openraft's own timer decides.
pub const MAX_ATTEMPTS: u32 = 5;

/// When this node last accepted an append from a leader (heartbeats
/// included). Written by the inbound append route.
#[derive(Clone, Debug, Default)]
pub struct Heard(Arc<Mutex<Option<Instant>>>);

impl Heard {
    pub fn now(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    fn get(&self) -> Option<Instant> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The pure part: when this node's next turn is, if it has one.
///
/// `voters` are the cluster's voters, `leader` the one that fell silent,
/// `heard` when we last heard it, `attempt` how many turns we took since.
pub fn next_turn(
    me: NodeId,
    voters: &[NodeId],
    leader: NodeId,
    heard: Instant,
    lease: Duration,
    attempt: u32,
) -> Option<Instant> {
    if attempt >= MAX_ATTEMPTS {
        return None;
    }
    let mut others: Vec<NodeId> = voters.iter().copied().filter(|v| *v != leader).collect();
    others.sort_unstable();
    let rank = others.iter().position(|v| *v == me)? as u32;
    let turn = rank + attempt * others.len() as u32;
    Some(heard + lease + LEASE_MARGIN + RANK_STAGGER * turn)
}

/// Run the ranked election loop of node `me` until openraft shuts down.
pub async fn run(raft: Raft<TypeConfig>, me: NodeId, heard: Heard, lease: Duration) {
    // Server metrics change only with vote, role, leader or membership, not
    // with every applied entry.
    let mut metrics = raft.server_metrics();
    let mut last_leader: Option<NodeId> = None;
    // Turns taken since the append heard at the instant recorded here.
    let mut attempts: (Option<Instant>, u32) = (None, 0);
    loop {
        let (state, leader, voters) = {
            let m = metrics.borrow_and_update();
            let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
            (m.state, m.current_leader, voters)
        };
        if let Some(l) = leader.filter(|l| *l != me) {
            last_leader = Some(l);
        }
        let heard_at = heard.get();
        if attempts.0 != heard_at {
            attempts = (heard_at, 0);
        }
        let turn = match (state, last_leader, heard_at) {
            (ServerState::Follower | ServerState::Candidate, Some(l), Some(h)) => {
                next_turn(me, &voters, l, h, lease, attempts.1)
            }
            _ => None,
        };
        let Some(turn) = turn else {
            // Leader, learner, never heard a leader, or out of turns: wait
            // for the cluster to change (or a lease, to look again).
            tokio::select! {
                res = metrics.changed() => if res.is_err() { return },
                _ = tokio::time::sleep(lease) => {}
            }
            continue;
        };
        if Instant::now() < turn {
            tokio::select! {
                res = metrics.changed() => if res.is_err() { return },
                _ = tokio::time::sleep_until(turn.into()) => {}
            }
            continue;
        }
        // Our turn and still nothing heard since: campaign.
        attempts.1 += 1;
        tracing::info!(id = me, silent_leader = ?last_leader, attempt = attempts.1, "leader silent past its lease; campaigning");
        if raft.trigger().elect().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_millis(200);

    #[test]
    fn turns_go_round_robin_among_the_other_voters() {
        let h = Instant::now();
        let base = h + LEASE + LEASE_MARGIN;
        let voters = [3, 1, 2];
        // Leader 1 fell silent: 2 goes first, then 3, then 2 again.
        assert_eq!(next_turn(2, &voters, 1, h, LEASE, 0), Some(base));
        assert_eq!(
            next_turn(3, &voters, 1, h, LEASE, 0),
            Some(base + RANK_STAGGER)
        );
        assert_eq!(
            next_turn(2, &voters, 1, h, LEASE, 1),
            Some(base + RANK_STAGGER * 2)
        );
        assert_eq!(
            next_turn(3, &voters, 1, h, LEASE, 1),
            Some(base + RANK_STAGGER * 3)
        );
        // Leader 2 fell silent: 1 goes first.
        assert_eq!(next_turn(1, &voters, 2, h, LEASE, 0), Some(base));
        assert_eq!(
            next_turn(3, &voters, 2, h, LEASE, 0),
            Some(base + RANK_STAGGER)
        );
    }

    #[test]
    fn no_turn_for_the_silent_leader_a_non_voter_or_after_the_last_attempt() {
        let h = Instant::now();
        assert_eq!(next_turn(1, &[1, 2, 3], 1, h, LEASE, 0), None);
        assert_eq!(next_turn(4, &[1, 2, 3], 1, h, LEASE, 0), None);
        assert_eq!(next_turn(2, &[1, 2, 3], 1, h, LEASE, MAX_ATTEMPTS), None);
    }
}
