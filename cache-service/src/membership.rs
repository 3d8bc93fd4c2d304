//! Failure detection over heartbeats. Pure: the node's heartbeat loop feeds
//! it answers and the time, and it says who died, who came back and who
//! restarted (a new incarnation number: a process that came back empty).
//!
//! Invariants:
//! - this node is always live in its own view;
//! - a peer is dead once `timeout_ms` passed since its last answer, and live
//!   again on its next answer;
//! - peers start live (optimistic), so a cluster that starts together routes
//!   at once; one that never answers is dropped after the timeout;
//! - a **lease**: this node serves cached lines of a home only until
//!   `lease_ms` after it *sent* the last ping that home answered. The home saw
//!   that ping after it was sent, so it cannot have declared this node dead
//!   (and forgotten its copies) before `sent + timeout_ms`; the lease ends a
//!   quarter of the timeout earlier, a margin for scheduling and clock rate.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::protocol::NodeId;

#[derive(Debug, Clone, Serialize)]
pub struct PeerState {
    pub alive: bool,
    #[serde(skip)]
    last_ok_ms: u64,
    pub incarnation: Option<u64>,
    #[serde(skip)]
    lease_from_ms: u64,
}

/// What changed in the view of live nodes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Change {
    pub died: Vec<NodeId>,
    pub revived: Vec<NodeId>,
    /// Answered with a new incarnation: it lost everything it held.
    pub restarted: Vec<NodeId>,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        self.died.is_empty() && self.revived.is_empty() && self.restarted.is_empty()
    }
}

#[derive(Debug)]
pub struct Membership {
    me: NodeId,
    timeout_ms: u64,
    peers: BTreeMap<NodeId, PeerState>,
}

impl Membership {
    pub fn new(me: NodeId, timeout_ms: u64) -> Self {
        Self {
            me,
            timeout_ms,
            peers: BTreeMap::new(),
        }
    }

    /// Adopt the configured member list (from discovery). New peers start
    /// live; removed ones are reported as dead.
    pub fn set_members(&mut self, members: &[NodeId], now_ms: u64) -> Change {
        let mut change = Change::default();
        for m in members {
            if *m != self.me && !self.peers.contains_key(m) {
                self.peers.insert(
                    m.clone(),
                    PeerState {
                        alive: true,
                        last_ok_ms: now_ms,
                        incarnation: None,
                        lease_from_ms: now_ms,
                    },
                );
                change.revived.push(m.clone());
            }
        }
        let gone: Vec<NodeId> = self
            .peers
            .keys()
            .filter(|p| !members.contains(p))
            .cloned()
            .collect();
        for g in gone {
            if self.peers.remove(&g).is_some_and(|p| p.alive) {
                change.died.push(g);
            }
        }
        change
    }

    /// `peer` answered (or pinged us) as incarnation `incarnation`.
    pub fn observe(&mut self, peer: &str, incarnation: u64, now_ms: u64) -> Change {
        let mut change = Change::default();
        let Some(p) = self.peers.get_mut(peer) else {
            return change;
        };
        p.last_ok_ms = now_ms;
        if !p.alive {
            p.alive = true;
            change.revived.push(peer.to_string());
        }
        if p.incarnation.is_some_and(|i| i != incarnation) {
            change.restarted.push(peer.to_string());
        }
        p.incarnation = Some(incarnation);
        change
    }

    /// `peer` answered, as incarnation `incarnation`, a ping this node sent
    /// at `sent_ms`: alive, and the lease on its lines runs from `sent_ms`.
    pub fn observe_reply(
        &mut self,
        peer: &str,
        incarnation: u64,
        sent_ms: u64,
        now_ms: u64,
    ) -> Change {
        let change = self.observe(peer, incarnation, now_ms);
        if let Some(p) = self.peers.get_mut(peer) {
            p.lease_from_ms = p.lease_from_ms.max(sent_ms);
        }
        change
    }

    /// Whether lines homed on `node` may be served at `now_ms`.
    pub fn lease_valid(&self, node: &str, now_ms: u64) -> bool {
        node == self.me
            || self.peers.get(node).is_some_and(|p| {
                p.alive && now_ms < p.lease_from_ms + self.timeout_ms - self.timeout_ms / 4
            })
    }

    /// Declare dead every peer silent for longer than the timeout.
    pub fn tick(&mut self, now_ms: u64) -> Change {
        let mut change = Change::default();
        for (id, p) in self.peers.iter_mut() {
            if p.alive && now_ms.saturating_sub(p.last_ok_ms) > self.timeout_ms {
                p.alive = false;
                change.died.push(id.clone());
            }
        }
        change
    }

    pub fn is_alive(&self, node: &str) -> bool {
        node == self.me || self.peers.get(node).is_some_and(|p| p.alive)
    }

    /// Live nodes, this one included, sorted.
    pub fn live(&self) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.alive)
            .map(|(id, _)| id.clone())
            .collect();
        v.push(self.me.clone());
        v.sort();
        v
    }

    pub fn peers(&self) -> &BTreeMap<NodeId, PeerState> {
        &self.peers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<NodeId> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn peers_die_after_the_timeout_and_revive_on_answer() {
        let mut m = Membership::new("a".into(), 100);
        m.set_members(&ids(&["a", "b", "c"]), 0);
        assert_eq!(m.live(), ids(&["a", "b", "c"]));
        m.observe("b", 1, 50);
        assert!(m.tick(100).is_empty());
        let c = m.tick(120);
        assert_eq!(c.died, ids(&["c"]));
        assert_eq!(m.live(), ids(&["a", "b"]));
        assert_eq!(m.tick(151).died, ids(&["b"]));
        assert_eq!(m.live(), ids(&["a"]));
        let c = m.observe("c", 7, 200);
        assert_eq!(c.revived, ids(&["c"]));
        assert!(m.is_alive("c") && !m.is_alive("b") && m.is_alive("a"));
    }

    #[test]
    fn leases_run_from_the_send_time_of_answered_pings() {
        let mut m = Membership::new("a".into(), 100);
        m.set_members(&ids(&["a", "b"]), 0);
        assert!(m.lease_valid("a", 10_000), "own lines always");
        assert!(m.lease_valid("b", 74));
        assert!(!m.lease_valid("b", 75));
        // A ping sent at 60 and answered at 90: lease until 60 + 75.
        m.observe_reply("b", 1, 60, 90);
        assert!(m.lease_valid("b", 134));
        assert!(!m.lease_valid("b", 135));
        // An incoming ping proves b is up but extends no lease.
        m.observe("b", 1, 140);
        assert!(!m.lease_valid("b", 140));
        assert!(!m.lease_valid("zz", 0));
    }

    #[test]
    fn a_new_incarnation_is_a_restart() {
        let mut m = Membership::new("a".into(), 100);
        m.set_members(&ids(&["a", "b"]), 0);
        assert!(m.observe("b", 1, 10).is_empty());
        assert!(m.observe("b", 1, 20).is_empty());
        assert_eq!(m.observe("b", 2, 30).restarted, ids(&["b"]));
        assert!(m.observe("zz", 1, 30).is_empty(), "unknown peers ignored");
    }

    #[test]
    fn removed_members_count_as_dead() {
        let mut m = Membership::new("a".into(), 100);
        m.set_members(&ids(&["a", "b", "c"]), 0);
        let c = m.set_members(&ids(&["a", "b"]), 5);
        assert_eq!(c.died, ids(&["c"]));
        assert_eq!(m.live(), ids(&["a", "b"]));
    }
}
