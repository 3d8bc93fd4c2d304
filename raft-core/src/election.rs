//! Prompt, ranked elections once the leader falls silent, each asked for
//! before it is held (pre-vote).
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
//! turn [`RANK_STAGGER`] later, and so on round-robin for as long as no
//! leader is heard. So one candidate usually asks alone and wins in one
//! round trip, as soon as the voters' leases allow it. A node that knows of
//! no leader at all (a whole cluster restarting) ranks among all voters and
//! counts from its own start.
//!
//! openraft's own election timer is off (`enable_elect = false`): this loop
//! is the only one that starts elections, and it asks first. Each turn
//! begins with a pre-vote round (`PreVoteRequest`): every other voter
//! says whether it would vote for us now, by the rules of a real vote,
//! without changing anything. Only with a majority of yeses does the node
//! raise its term and campaign. Without this, a follower cut off from the
//! others raised its term on every timeout, and when it came back, the
//! leader's first append to it was refused for that higher term and the
//! leader stepped down: a healthy cluster lost its leader for an election
//! (~200 ms) every time one link flapped. This is Raft's pre-vote (Ongaro's
//! thesis, §9.6), which etcd also has.
//!
//! Safety stays openraft's: starting an election is always allowed in Raft,
//! a voter still refuses while its own lease from the leader runs and
//! refuses a candidate whose log is behind its own. Pre-vote only ever
//! holds an election back.
//!
//! The loop does not poll: it sleeps until the next turn, which lies a lease
//! past the newest append; while a leader is alive each wake-up finds a newer
//! append and goes back to sleep (about once per lease).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::network::RaftNetworkFactory;
use openraft::{BasicNode, LogId, Raft, ServerState};

use crate::log_store::LogTail;
use crate::network::Network;
use crate::rpc::PreVoteRequest;
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

/// How long a candidate waits for pre-vote answers. Peers on one network
/// answer in about a millisecond; one that does not answer in this time
/// counts as a no, and the next turn asks again.
pub const PRE_VOTE_TIMEOUT: Duration = Duration::from_millis(50);

/// When this node last accepted an append from a leader (heartbeats
/// included), or when it started. Written by the inbound append route.
#[derive(Clone, Debug)]
pub struct Heard(Arc<Mutex<Instant>>);

impl Default for Heard {
    /// A node that just started counts as having heard a leader: it gives
    /// the leader, if there is one, a lease to reach it before it campaigns
    /// or says yes to anyone else's pre-vote.
    fn default() -> Self {
        Self(Arc::new(Mutex::new(Instant::now())))
    }
}

impl Heard {
    pub fn now(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    pub(crate) fn get(&self) -> Instant {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The pure part of a voter's answer: a yes exactly when a real vote
/// could be given now. `heard_ago` is the time since this node last heard
/// its leader (or started), `lease` the leader lease.
pub fn pre_vote_verdict(
    is_leader: bool,
    heard_ago: Duration,
    lease: Duration,
    mine: Option<LogId<NodeId>>,
    candidate: Option<LogId<NodeId>>,
) -> Result<(), String> {
    if is_leader {
        return Err("this node is the leader".into());
    }
    if heard_ago < lease {
        return Err(format!(
            "heard from a leader {} ms ago, within its {} ms lease",
            heard_ago.as_millis(),
            lease.as_millis()
        ));
    }
    // Raft's "at least as up to date": by last term, then last index;
    // openraft's LogId orders exactly so.
    if candidate < mine {
        return Err(format!(
            "candidate's log ends at {candidate:?}, behind this node's {mine:?}"
        ));
    }
    Ok(())
}

/// The pure part: when this node's next turn is, if it has one.
///
/// `voters` are the cluster's voters, `silent` the leader that fell silent
/// (None: no leader known, so every voter takes turns), `heard` when we
/// last heard a leader (or started), `attempt` how many turns we took since.
pub fn next_turn(
    me: NodeId,
    voters: &[NodeId],
    silent: Option<NodeId>,
    heard: Instant,
    lease: Duration,
    attempt: u32,
) -> Option<Instant> {
    let mut others: Vec<NodeId> = voters
        .iter()
        .copied()
        .filter(|v| Some(*v) != silent)
        .collect();
    others.sort_unstable();
    let rank = others.iter().position(|v| *v == me)? as u32;
    let turn = rank + attempt * others.len() as u32;
    Some(heard + lease + LEASE_MARGIN + RANK_STAGGER * turn)
}

/// What the election loop of one node works with.
pub(crate) struct Campaigner {
    pub raft: Raft<TypeConfig>,
    pub me: NodeId,
    pub heard: Heard,
    pub lease: Duration,
    pub log: LogTail,
    pub network: Network,
}

impl Campaigner {
    /// Run the ranked election loop until openraft shuts down.
    pub async fn run(mut self) {
        // Server metrics change only with vote, role, leader or membership,
        // not with every applied entry.
        let mut metrics = self.raft.server_metrics();
        let mut last_leader: Option<NodeId> = None;
        // Turns taken since the append heard at the instant recorded here.
        let mut attempts: (Instant, u32) = (self.heard.get(), 0);
        loop {
            let (state, leader, voters, nodes) = {
                let m = metrics.borrow_and_update();
                let membership = m.membership_config.membership();
                let voters: Vec<NodeId> = membership.voter_ids().collect();
                let nodes: BTreeMap<NodeId, BasicNode> =
                    membership.nodes().map(|(id, n)| (*id, n.clone())).collect();
                (m.state, m.current_leader, voters, nodes)
            };
            if let Some(l) = leader.filter(|l| *l != self.me) {
                last_leader = Some(l);
            }
            let heard_at = self.heard.get();
            if attempts.0 != heard_at {
                attempts = (heard_at, 0);
            }
            let turn = match state {
                ServerState::Follower | ServerState::Candidate => next_turn(
                    self.me,
                    &voters,
                    last_leader,
                    heard_at,
                    self.lease,
                    attempts.1,
                ),
                _ => None,
            };
            let Some(turn) = turn else {
                // Leader, learner or not a voter: wait for the cluster to
                // change (or a lease, to look again).
                tokio::select! {
                    res = metrics.changed() => if res.is_err() { return },
                    _ = tokio::time::sleep(self.lease) => {}
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
            // Our turn and still nothing heard since: ask, then campaign.
            attempts.1 += 1;
            let (yes, noes) = self.pre_vote(&voters, &nodes).await;
            if (yes + 1) * 2 <= voters.len() {
                // A node cut off for long asks every two staggers; say so
                // once per silence, not eight times a second.
                if attempts.1 == 1 {
                    tracing::info!(id = self.me, silent_leader = ?last_leader, ?noes,
                        "leader silent past its lease, but no majority would vote for this node");
                } else {
                    tracing::debug!(id = self.me, attempt = attempts.1, ?noes, "pre-vote lost");
                }
                continue;
            }
            tracing::info!(id = self.me, silent_leader = ?last_leader, attempt = attempts.1,
                "leader silent past its lease; campaigning");
            if self.raft.trigger().elect().await.is_err() {
                return;
            }
        }
    }

    /// Ask every other voter at once; the yeses, and why the others said no.
    async fn pre_vote(
        &mut self,
        voters: &[NodeId],
        nodes: &BTreeMap<NodeId, BasicNode>,
    ) -> (usize, Vec<String>) {
        let req = PreVoteRequest {
            candidate: self.me,
            last_log_id: self.log.last_log_id(),
        };
        let mut asks = Vec::new();
        for id in voters.iter().copied().filter(|v| *v != self.me) {
            let Some(node) = nodes.get(&id) else {
                continue;
            };
            let mut conn = self.network.new_client(id, node).await;
            let req = req.clone();
            asks.push(async move { (id, conn.pre_vote(&req, PRE_VOTE_TIMEOUT).await) });
        }
        let mut yes = 0;
        let mut noes = Vec::new();
        for (id, answer) in futures::future::join_all(asks).await {
            match answer {
                Ok(r) if r.granted => yes += 1,
                Ok(r) => noes.push(format!("{id}: {}", r.reason.unwrap_or_default())),
                Err(e) => noes.push(format!("{id}: {e}")),
            }
        }
        (yes, noes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;

    const LEASE: Duration = Duration::from_millis(200);

    #[test]
    fn turns_go_round_robin_among_the_other_voters() {
        let h = Instant::now();
        let base = h + LEASE + LEASE_MARGIN;
        let voters = [3, 1, 2];
        // Leader 1 fell silent: 2 goes first, then 3, then 2 again.
        assert_eq!(next_turn(2, &voters, Some(1), h, LEASE, 0), Some(base));
        assert_eq!(
            next_turn(3, &voters, Some(1), h, LEASE, 0),
            Some(base + RANK_STAGGER)
        );
        assert_eq!(
            next_turn(2, &voters, Some(1), h, LEASE, 1),
            Some(base + RANK_STAGGER * 2)
        );
        assert_eq!(
            next_turn(3, &voters, Some(1), h, LEASE, 1),
            Some(base + RANK_STAGGER * 3)
        );
        // Leader 2 fell silent: 1 goes first.
        assert_eq!(next_turn(1, &voters, Some(2), h, LEASE, 0), Some(base));
        assert_eq!(
            next_turn(3, &voters, Some(2), h, LEASE, 0),
            Some(base + RANK_STAGGER)
        );
        // Turns never run out: openraft's own timer is off.
        assert_eq!(
            next_turn(2, &voters, Some(1), h, LEASE, 100),
            Some(base + RANK_STAGGER * 200)
        );
    }

    #[test]
    fn with_no_leader_known_every_voter_takes_turns() {
        let h = Instant::now();
        let base = h + LEASE + LEASE_MARGIN;
        let voters = [1, 2, 3];
        assert_eq!(next_turn(1, &voters, None, h, LEASE, 0), Some(base));
        assert_eq!(
            next_turn(3, &voters, None, h, LEASE, 0),
            Some(base + RANK_STAGGER * 2)
        );
        assert_eq!(
            next_turn(1, &voters, None, h, LEASE, 1),
            Some(base + RANK_STAGGER * 3)
        );
    }

    #[test]
    fn no_turn_for_the_silent_leader_or_a_non_voter() {
        let h = Instant::now();
        assert_eq!(next_turn(1, &[1, 2, 3], Some(1), h, LEASE, 0), None);
        assert_eq!(next_turn(4, &[1, 2, 3], Some(1), h, LEASE, 0), None);
        assert_eq!(next_turn(4, &[1, 2, 3], None, h, LEASE, 0), None);
    }

    fn log(term: u64, index: u64) -> Option<LogId<NodeId>> {
        Some(LogId::new(CommittedLeaderId::new(term, 0), index))
    }

    #[test]
    fn a_pre_vote_is_granted_exactly_when_a_real_vote_could_be() {
        let past = LEASE + Duration::from_millis(1);
        // (leader?, heard ago, mine, candidate's) → granted?
        let cases = [
            (false, past, log(2, 10), log(2, 10), true),
            (false, past, log(2, 10), log(2, 11), true),
            (false, past, log(2, 10), log(3, 1), true),
            (false, past, None, log(1, 1), true),
            (false, past, None, None, true),
            // Its log is behind ours: by index, by term, or empty.
            (false, past, log(2, 10), log(2, 9), false),
            (false, past, log(3, 1), log(2, 50), false),
            (false, past, log(1, 1), None, false),
            // We heard a leader within its lease, or we are the leader.
            (
                false,
                LEASE - Duration::from_millis(1),
                log(2, 10),
                log(2, 10),
                false,
            ),
            (false, Duration::ZERO, None, log(9, 9), false),
            (true, past, log(2, 10), log(2, 11), false),
        ];
        for (leader, ago, mine, theirs, granted) in cases {
            let verdict = pre_vote_verdict(leader, ago, LEASE, mine, theirs);
            assert_eq!(
                verdict.is_ok(),
                granted,
                "leader {leader}, heard {ago:?} ago, mine {mine:?}, candidate's {theirs:?}: {verdict:?}"
            );
        }
    }
}
