//! Membership views agreed by a majority: the guarantee that a key has at
//! most one acting home at any moment. Pure: the heartbeat loop feeds it the
//! views peers report and the time (a monotonic clock, ms), and asks whether
//! this node may act (be a home, serve a cached line) right now.
//!
//! A **view** is a numbered set of live nodes; the ring of homes is built
//! over it. Every node holds one *accepted* view and gossips it on every
//! heartbeat; a node adopts any view numbered above its own. A node proposes
//! the next number (it accepts it itself; the heartbeats spread it) when the
//! live set it would propose differs from its view's. That live set is the
//! configured nodes minus those **a majority suspects**: heartbeats also
//! carry each node's suspicions, and a node counts its own plus those of the
//! peers its failure detector hears. So one node that cannot reach another
//! (a cut link) does not evict it, and two nodes suspecting each other do
//! not make views flap; their shared keys wait instead. A node that hears
//! fewer than a majority proposes nothing (it could not be confirmed). A
//! node accepts at most one view per number, so at most one live set per
//! number can gather a majority.
//!
//! A node **acts** (answers as a key's home, serves cached lines) only while
//! its view is *confirmed*: a majority of the configured nodes, itself
//! included, reported that same view in answers to pings it sent within the
//! last `valid_ms`. The promise that makes two confirmations exclusive:
//! - a node reports a view as *settled* only `settle_ms` after accepting it,
//!   so every report it made of its previous view is at least `settle_ms`
//!   older than its first report of the next one;
//! - a confirmation counts a report for `valid_ms < settle_ms` from the
//!   *send* time of the ping it answered, which precedes the report.
//!
//! Any two majorities share a node, so a confirmation of view `v` ends
//! (`sent + valid_ms`) before any confirmation of a later view can begin
//! (`report of v + settle_ms`): there is never a moment at which two views
//! are confirmed, and within one view the ring names one home per key.
//! `settle_ms - valid_ms` is the margin for clock-rate differences.
//!
//! Invariants:
//! - the accepted view number only grows;
//! - `authorized_until` is 0 right after a view is accepted;
//! - numbers are `genesis_ms << GENESIS_SHIFT` plus the count of changes
//!   since, so a cluster restarted from nothing numbers its views above any
//!   it used before (the Redis fence depends on that), and two consecutive
//!   views differ by exactly 1 — which is how a node knows it missed none.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::protocol::NodeId;

/// A view number.
pub type ViewId = u64;

/// Bits left for view changes after a genesis (about a million).
pub const GENESIS_SHIFT: u32 = 20;

/// A numbered set of live nodes (sorted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewInfo {
    pub id: ViewId,
    pub live: Vec<NodeId>,
}

/// What a node says about its view on a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewReport {
    pub view: ViewInfo,
    /// Accepted at least `settle_ms` ago: counts towards confirmation.
    pub settled: bool,
}

/// A change of the accepted view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub from: Option<ViewInfo>,
    pub to: ViewInfo,
}

impl Transition {
    /// The new view directly follows the old one: no view this node did not
    /// see came in between, so state kept for keys whose home did not change
    /// is still the whole story.
    pub fn continuous(&self) -> bool {
        self.from.as_ref().is_some_and(|f| f.id + 1 == self.to.id)
    }
}

#[derive(Debug, Clone)]
struct Seen {
    view: ViewInfo,
    /// When this node sent the ping the report answered.
    sent_ms: u64,
}

/// Tunables.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How long after accepting a view a node starts reporting it.
    pub settle_ms: u64,
    /// How long a report counts, from the send time of its ping.
    pub valid_ms: u64,
    /// Least time between two proposals by this node.
    pub propose_gap_ms: u64,
    /// How long a fresh node listens for an existing view before it
    /// proposes a genesis view.
    pub genesis_wait_ms: u64,
}

impl Timing {
    /// Derived from the failure-detector timeout and heartbeat interval.
    pub fn from_failure_timeout(timeout_ms: u64, heartbeat_ms: u64) -> Self {
        Self {
            settle_ms: timeout_ms,
            valid_ms: timeout_ms - timeout_ms / 4,
            propose_gap_ms: timeout_ms,
            genesis_wait_ms: heartbeat_ms * 3,
        }
    }
}

#[derive(Debug)]
pub struct Views {
    me: NodeId,
    timing: Timing,
    configured: Vec<NodeId>,
    accepted: Option<ViewInfo>,
    accepted_at_ms: u64,
    started_ms: u64,
    last_proposal_ms: Option<u64>,
    seen: BTreeMap<NodeId, Seen>,
    /// The latest suspicions each peer reported.
    suspicions: BTreeMap<NodeId, Vec<NodeId>>,
}

impl Views {
    pub fn new(me: NodeId, timing: Timing, now_ms: u64) -> Self {
        Self {
            configured: vec![me.clone()],
            me,
            timing,
            accepted: None,
            accepted_at_ms: now_ms,
            started_ms: now_ms,
            last_proposal_ms: None,
            seen: BTreeMap::new(),
            suspicions: BTreeMap::new(),
        }
    }

    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// The configured members (discovery's list, this node included):
    /// confirmation needs a majority of these.
    pub fn set_configured(&mut self, members: &[NodeId]) {
        let mut c: Vec<NodeId> = members.to_vec();
        if !c.contains(&self.me) {
            c.push(self.me.clone());
        }
        c.sort();
        c.dedup();
        self.seen.retain(|n, _| c.contains(n));
        self.suspicions.retain(|n, _| c.contains(n));
        self.configured = c;
    }

    pub fn configured(&self) -> &[NodeId] {
        &self.configured
    }

    /// Smallest majority of the configured nodes.
    pub fn quorum(&self) -> usize {
        self.configured.len() / 2 + 1
    }

    pub fn accepted(&self) -> Option<&ViewInfo> {
        self.accepted.as_ref()
    }

    /// Adopt `view` if it is numbered above the accepted one.
    pub fn offer(&mut self, view: &ViewInfo, now_ms: u64) -> Option<Transition> {
        if self.accepted.as_ref().is_some_and(|a| a.id >= view.id) {
            return None;
        }
        let mut to = view.clone();
        to.live.sort();
        to.live.dedup();
        let from = self.accepted.replace(to.clone());
        self.accepted_at_ms = now_ms;
        Some(Transition { from, to })
    }

    /// What this node reports on a heartbeat at `now_ms`.
    pub fn report(&self, now_ms: u64) -> Option<ViewReport> {
        self.accepted.as_ref().map(|v| ViewReport {
            view: v.clone(),
            settled: now_ms >= self.accepted_at_ms + self.timing.settle_ms,
        })
    }

    /// `peer` answered a ping sent at `sent_ms` with `report`. Returns the
    /// transition if the report carried a newer view.
    pub fn observe_reply(
        &mut self,
        peer: &str,
        report: Option<&ViewReport>,
        sent_ms: u64,
        now_ms: u64,
    ) -> Option<Transition> {
        let Some(r) = report else {
            self.seen.remove(peer);
            return None;
        };
        let t = self.offer(&r.view, now_ms);
        if r.settled && self.configured.iter().any(|c| c == peer) {
            let newer = self.seen.get(peer).is_none_or(|s| s.sent_ms <= sent_ms);
            if newer {
                self.seen.insert(
                    peer.to_string(),
                    Seen {
                        view: r.view.clone(),
                        sent_ms,
                    },
                );
            }
        } else {
            self.seen.remove(peer);
        }
        t
    }

    /// `peer` reported (on a ping or a reply) the nodes its failure
    /// detector suspects.
    pub fn observe_suspects(&mut self, peer: &str, suspects: &[NodeId]) {
        if self.configured.iter().any(|c| c == peer) {
            self.suspicions.insert(peer.to_string(), suspects.to_vec());
        }
    }

    /// The live set this node would propose: configured nodes that fewer
    /// than a majority suspect, counting this node's detector (`reachable`:
    /// the nodes it considers up) and the reports of the peers in
    /// `reachable`. `None` when fewer than a majority are reachable.
    fn wanted_live(&self, reachable: &[NodeId]) -> Option<Vec<NodeId>> {
        let reachable: Vec<&NodeId> = self
            .configured
            .iter()
            .filter(|c| reachable.contains(c) || **c == self.me)
            .collect();
        if reachable.len() < self.quorum() {
            return None;
        }
        let suspected_by = |x: &NodeId| {
            let mine = usize::from(!reachable.contains(&x));
            let theirs = reachable
                .iter()
                .filter(|p| ***p != self.me)
                .filter(|p| self.suspicions.get(**p).is_some_and(|s| s.contains(x)))
                .count();
            mine + theirs
        };
        Some(
            self.configured
                .iter()
                .filter(|x| **x == self.me || suspected_by(x) < self.quorum())
                .cloned()
                .collect(),
        )
    }

    /// Until when (exclusive, ms) this node may act in its accepted view,
    /// as known at `now_ms`; 0 when it may not act at all.
    pub fn authorized_until(&self, now_ms: u64) -> u64 {
        let Some(v) = &self.accepted else { return 0 };
        if now_ms < self.accepted_at_ms + self.timing.settle_ms || !v.live.contains(&self.me) {
            return 0;
        }
        let mut until: Vec<u64> = self
            .seen
            .iter()
            .filter(|(n, s)| **n != self.me && s.view == *v)
            .map(|(_, s)| s.sent_ms + self.timing.valid_ms)
            .collect();
        until.push(u64::MAX); // this node's own, settled report
        until.sort_unstable_by(|a, b| b.cmp(a));
        match until.get(self.quorum() - 1) {
            Some(&t) if t > now_ms => t,
            _ => 0,
        }
    }

    /// A view to propose now, if any: a genesis view when this node has
    /// heard of none for `genesis_wait_ms`, else the next number with the
    /// live set it wants (see `Views::wanted_live`; `reachable` is what
    /// its failure detector considers up) when that differs from the
    /// view's — at most once per `propose_gap_ms` — or when the view has
    /// stayed unconfirmed for that long (a split between competing
    /// proposals). Nothing when fewer than a majority are reachable. The
    /// caller offers it to itself; heartbeats spread it.
    pub fn proposal(
        &mut self,
        reachable: &[NodeId],
        now_ms: u64,
        wall_ms: u64,
    ) -> Option<ViewInfo> {
        let live = self.wanted_live(reachable)?;
        let id = match &self.accepted {
            None if now_ms >= self.started_ms + self.timing.genesis_wait_ms => {
                wall_ms << GENESIS_SHIFT
            }
            None => return None,
            Some(a) => {
                let recent = self
                    .last_proposal_ms
                    .is_some_and(|p| now_ms < p + self.timing.propose_gap_ms);
                let unconfirmed_for = now_ms.saturating_sub(self.accepted_at_ms);
                let stuck = self.authorized_until(now_ms) == 0
                    && unconfirmed_for > self.timing.settle_ms + self.timing.propose_gap_ms * 2;
                if recent || (a.live == live && !stuck) {
                    return None;
                }
                a.id + 1
            }
        };
        self.last_proposal_ms = Some(now_ms);
        Some(ViewInfo { id, live })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timing = Timing {
        settle_ms: 100,
        valid_ms: 75,
        propose_gap_ms: 100,
        genesis_wait_ms: 30,
    };

    fn ids(v: &[&str]) -> Vec<NodeId> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn view(id: ViewId, live: &[&str]) -> ViewInfo {
        ViewInfo {
            id,
            live: ids(live),
        }
    }

    fn settled(v: &ViewInfo) -> ViewReport {
        ViewReport {
            view: v.clone(),
            settled: true,
        }
    }

    fn node(me: &str) -> Views {
        let mut v = Views::new(me.into(), T, 0);
        v.set_configured(&ids(&["a", "b", "c"]));
        v
    }

    #[test]
    fn a_fresh_node_waits_then_proposes_a_genesis_above_old_numbers() {
        let mut a = node("a");
        assert_eq!(a.proposal(&ids(&["a", "b", "c"]), 10, 5), None);
        let g = a.proposal(&ids(&["a", "b", "c", "zz"]), 30, 5).unwrap();
        // (an unconfigured node is never part of a view)
        assert_eq!(g, view(5 << GENESIS_SHIFT, &["a", "b", "c"]));
        assert!(a.offer(&g, 30).is_some());
        assert!(a.offer(&g, 31).is_none(), "same number twice: no");
        assert_eq!(a.proposal(&ids(&["a", "b", "c"]), 40, 6), None);
    }

    #[test]
    fn confirmation_needs_a_settled_majority_of_fresh_reports() {
        let v = view(7, &["a", "b", "c"]);
        let mut a = node("a");
        a.offer(&v, 0);
        assert_eq!(a.authorized_until(50), 0, "not settled");
        a.observe_reply("b", Some(&settled(&v)), 90, 95);
        assert_eq!(a.authorized_until(99), 0, "own report not settled");
        assert_eq!(a.authorized_until(100), 165);
        assert_eq!(a.authorized_until(165), 0, "report too old");
        // An unsettled report does not count (and withdraws b's older one).
        a.observe_reply(
            "b",
            Some(&ViewReport {
                view: v.clone(),
                settled: false,
            }),
            120,
            121,
        );
        assert_eq!(a.authorized_until(130), 0);
        // A report of another view does not count.
        a.observe_reply("c", Some(&settled(&view(7, &["a", "c"]))), 130, 131);
        assert_eq!(a.authorized_until(132), 0);
        a.observe_reply("c", Some(&settled(&v)), 140, 141);
        assert_eq!(a.authorized_until(142), 215);
    }

    #[test]
    fn a_node_outside_its_view_never_acts() {
        let v = view(7, &["b", "c"]);
        let mut a = node("a");
        a.offer(&v, 0);
        a.observe_reply("b", Some(&settled(&v)), 200, 201);
        a.observe_reply("c", Some(&settled(&v)), 200, 201);
        assert_eq!(a.authorized_until(210), 0);
    }

    #[test]
    fn two_views_are_never_confirmed_at_once() {
        // b reports view 7 to a, then accepts view 8 (c's proposal) and
        // reports it to c only once settled: a's confirmation of 7 has run
        // out by then.
        let v7 = view(7, &["a", "b", "c"]);
        let v8 = view(8, &["b", "c"]);
        let (mut a, mut b, mut c) = (node("a"), node("b"), node("c"));
        for n in [&mut a, &mut b, &mut c] {
            n.offer(&v7, 0);
        }
        let t_ping = 200;
        a.observe_reply("b", b.report(t_ping).as_ref(), t_ping, t_ping + 1);
        let a_until = a.authorized_until(t_ping + 1);
        assert_eq!(a_until, t_ping + T.valid_ms);
        // c proposes 8 (b told it a is down too) and b adopts it right
        // after answering a.
        c.observe_suspects("b", &ids(&["a"]));
        let p = c.proposal(&ids(&["b", "c"]), t_ping, 9).unwrap();
        assert_eq!(p, v8);
        c.offer(&p, t_ping);
        b.observe_reply("c", c.report(t_ping + 1).as_ref(), t_ping + 1, t_ping + 1);
        assert_eq!(b.accepted(), Some(&v8));
        // c is confirmed only once b reports 8 settled; try every ms.
        let mut first = None;
        for t in t_ping + 1..t_ping + 400 {
            c.observe_reply("b", b.report(t).as_ref(), t, t);
            if c.authorized_until(t) > t {
                first = Some(t);
                break;
            }
        }
        let first = first.expect("c is confirmed in the end");
        assert!(first >= a_until, "c from {first}, a until {a_until}");
        assert_eq!(a.authorized_until(first), 0);
    }

    #[test]
    fn a_majority_suspicion_proposes_the_next_number_at_most_once_per_gap() {
        let mut a = Views::new("a".into(), T, 0);
        a.set_configured(&ids(&["a", "b", "c", "d", "e"]));
        a.offer(&view(7, &["a", "b", "c", "d", "e"]), 0);
        let all = ids(&["a", "b", "c", "d", "e"]);
        assert_eq!(a.proposal(&all, 10, 0), None);
        // a alone suspects e: not enough.
        let up = ids(&["a", "b", "c", "d"]);
        assert_eq!(a.proposal(&up, 20, 0), None);
        // b and c (which a hears) suspect e too: e goes.
        a.observe_suspects("b", &ids(&["e"]));
        a.observe_suspects("c", &ids(&["e", "d"]));
        let p = a.proposal(&up, 20, 0).unwrap();
        assert_eq!(p, view(8, &["a", "b", "c", "d"]));
        assert!(a.offer(&p, 20).unwrap().continuous());
        // d down too, seen by a, c, and now b.
        a.observe_suspects("b", &ids(&["e", "d"]));
        let up = ids(&["a", "b", "c"]);
        assert_eq!(a.proposal(&up, 50, 0), None, "too soon");
        assert_eq!(a.proposal(&up, 120, 0), Some(view(9, &["a", "b", "c"])));
        // A jump over a number is not continuous.
        assert!(!a.offer(&view(11, &["a"]), 130).unwrap().continuous());
    }

    #[test]
    fn two_nodes_suspecting_each_other_evict_nobody() {
        // The link a-b is cut; c hears both. a suspects b, b suspects a.
        let all = ids(&["a", "b", "c"]);
        let (mut a, mut b) = (node("a"), node("b"));
        a.offer(&view(7, &["a", "b", "c"]), 0);
        b.offer(&view(7, &["a", "b", "c"]), 0);
        a.observe_suspects("c", &[]);
        b.observe_suspects("c", &[]);
        assert_eq!(a.proposal(&ids(&["a", "c"]), 250, 0), None);
        assert_eq!(b.proposal(&ids(&["b", "c"]), 250, 0), None);
        // A node hearing no majority proposes nothing, not even when stuck.
        let mut m = node("a");
        m.offer(&view(7, &["a", "b", "c"]), 0);
        assert_eq!(m.proposal(&ids(&["a"]), 10_000, 0), None);
        // c, hearing both, keeps everyone.
        let mut c = node("c");
        c.offer(&view(7, &["a", "b", "c"]), 0);
        c.observe_suspects("a", &ids(&["b"]));
        c.observe_suspects("b", &ids(&["a"]));
        assert_eq!(c.proposal(&all, 250, 0), None);
    }

    #[test]
    fn an_unconfirmed_view_is_proposed_again_after_a_while() {
        let mut a = node("a");
        a.offer(&view(7, &["a", "b", "c"]), 0);
        assert_eq!(a.proposal(&ids(&["a", "b", "c"]), 250, 0), None);
        assert_eq!(
            a.proposal(&ids(&["a", "b", "c"]), 301, 0),
            Some(view(8, &["a", "b", "c"]))
        );
    }
}
