//! The home's directory: for every key this node is home for, who holds it
//! and how, and the transaction in flight. Pure: the network adapter runs
//! the forwards a transaction asks for and hands their replies back.
//!
//! A transaction is `begin` (which sets a transient state and lists the
//! forwards to send) then `finish` (which takes the replies, and the backing
//! memory's value when the owner had none, and returns the grant plus the
//! memory write to make). The home runs one transaction per key at a time;
//! `begin` refuses a key whose transaction is still in flight.
//!
//! Invariants:
//! - `Exclusive(n)` means `n` holds the key in E or M under grant `epoch`;
//!   `Shared(s)` means every node in `s` may hold an S copy granted at or
//!   before `epoch` (a silent S eviction leaves a harmless extra sharer);
//! - a write or delete is granted only after every other holder acknowledged
//!   its invalidation; a read of a key held exclusively is granted only after
//!   the owner surrendered (or was found not to have) the value;
//! - every transaction that changes holders takes a new, larger epoch;
//! - the first transaction on a key this home has no entry for invalidates
//!   the key on every live node (a previous home, now dead or restarted, may
//!   have left copies behind);
//! - **write-back: memory never holds a value while a node holds the key
//!   exclusively** (E or M). Granting E or M deletes the memory value; the
//!   owner's value (dirty or clean) is written back when it surrenders it
//!   (downgrade, eviction). So when an exclusive owner is lost (it crashed,
//!   was suspected, or its home moved), the key reads as absent — never as
//!   the value before the owner's unacknowledged-to-memory writes.
//!
//! Tested by the goldenscripts in `directory/testscripts/`, run by
//! `directory/tests.rs` against a small simulated cluster.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;

use crate::protocol::{
    next_epoch, Data, Epoch, Forward, ForwardReply, HomeReply, HomeRequest, LineState, NodeId,
    Version,
};

/// Who holds a key, between transactions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Holders {
    Uncached,
    Shared { sharers: BTreeSet<NodeId> },
    Exclusive { owner: NodeId },
}

/// The transaction in flight on a key (the textbook transient states).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Transient {
    /// A read waiting for the owner's value (`owner`) or for nothing.
    Reading {
        requester: NodeId,
        owner: Option<NodeId>,
    },
    /// A write waiting for invalidation acks.
    Writing {
        requester: NodeId,
        value: serde_json::Value,
        expires_at_ms: Option<u64>,
        awaiting: BTreeSet<NodeId>,
    },
    /// A delete waiting for invalidation acks.
    Deleting {
        requester: NodeId,
        awaiting: BTreeSet<NodeId>,
    },
}

/// One key's directory entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub holders: Holders,
    pub epoch: Epoch,
    pub transient: Option<Transient>,
}

/// How M lines reach the backing memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum WritePolicy {
    /// Writes stay in the owner's M line; memory is updated on downgrade,
    /// eviction and delete.
    WriteBack,
    /// Every write reaches memory before it is acknowledged; lines are never
    /// dirty (a writer ends in E, never M).
    WriteThrough,
}

/// What the home must do to the backing memory before answering.
#[derive(Debug, Clone, PartialEq)]
pub enum MemoryOp {
    None,
    Write(Data),
    Delete,
}

/// The forwards to send for a transaction; send all, await all.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub forwards: Vec<(NodeId, Forward)>,
}

/// The end of a transaction: the reply to the requester and the memory op.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub reply: HomeReply,
    pub memory: MemoryOp,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirError {
    #[error("a transaction on this key is already in flight")]
    Busy,
    #[error("no transaction in flight on this key")]
    Idle,
}

/// The directory of one home node.
#[derive(Debug)]
pub struct Directory {
    entries: HashMap<String, Entry>,
    policy: WritePolicy,
}

impl Directory {
    pub fn new(policy: WritePolicy) -> Self {
        Self {
            entries: HashMap::new(),
            policy,
        }
    }

    pub fn policy(&self) -> WritePolicy {
        self.policy
    }

    pub fn entry(&self, key: &str) -> Option<&Entry> {
        self.entries.get(key)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Start a GetS, GetM or Delete from `requester` (a `Put` goes through
    /// [`Directory::put`]). `live` lists the nodes now considered up, for the
    /// first-touch sweep.
    pub fn begin(
        &mut self,
        key: &str,
        requester: &str,
        request: &HomeRequest,
        live: &[NodeId],
        now_ms: u64,
    ) -> Result<Plan, DirError> {
        let mut forwards = Vec::new();
        let entry = match self.entries.get_mut(key) {
            Some(e) => e,
            None => {
                let epoch = next_epoch(0, now_ms);
                for n in live {
                    forwards.push((n.clone(), Forward::Invalidate { epoch, force: true }));
                }
                self.entries.entry(key.to_string()).or_insert(Entry {
                    holders: Holders::Uncached,
                    epoch,
                    transient: None,
                })
            }
        };
        if entry.transient.is_some() {
            return Err(DirError::Busy);
        }
        let others: BTreeSet<NodeId> = match &entry.holders {
            Holders::Uncached => BTreeSet::new(),
            Holders::Shared { sharers } => sharers.clone(),
            Holders::Exclusive { owner } => BTreeSet::from([owner.clone()]),
        }
        .into_iter()
        .filter(|n| n != requester)
        .collect();
        let transient = match request {
            HomeRequest::GetS => {
                let owner = match &entry.holders {
                    Holders::Exclusive { owner } => {
                        let fwd = if owner == requester {
                            Forward::Recall { epoch: entry.epoch }
                        } else {
                            Forward::Downgrade { epoch: entry.epoch }
                        };
                        forwards.push((owner.clone(), fwd));
                        Some(owner.clone())
                    }
                    _ => None,
                };
                Transient::Reading {
                    requester: requester.to_string(),
                    owner,
                }
            }
            HomeRequest::GetM {
                value,
                expires_at_ms,
            } => {
                push_invalidations(&mut forwards, &others, entry.epoch);
                Transient::Writing {
                    requester: requester.to_string(),
                    value: value.clone(),
                    expires_at_ms: *expires_at_ms,
                    awaiting: others,
                }
            }
            HomeRequest::Delete => {
                // The requester's own copies go too, before the delete
                // completes: once the home records "uncached", nothing may
                // still be served from them (its reply may be slow to land).
                let mut others = others;
                if holds(&entry.holders, requester) {
                    others.insert(requester.to_string());
                }
                push_invalidations(&mut forwards, &others, entry.epoch);
                Transient::Deleting {
                    requester: requester.to_string(),
                    awaiting: others,
                }
            }
            HomeRequest::Put { .. } => return Err(DirError::Idle),
        };
        entry.transient = Some(transient);
        Ok(Plan { forwards })
    }

    /// Whether a read in flight on `key` still needs the memory's value after
    /// these forward replies (the owner had none to give).
    pub fn needs_memory(&self, key: &str, replies: &[(NodeId, ForwardReply)]) -> bool {
        match self.entries.get(key).and_then(|e| e.transient.as_ref()) {
            Some(Transient::Reading { owner, .. }) => !owner
                .as_ref()
                .is_some_and(|o| replies.iter().any(|(n, r)| n == o && r.data.is_some())),
            _ => false,
        }
    }

    /// Finish the transaction on `key` with the forward replies and, for a
    /// read whose owner had no value, the memory's value (`None` = absent or
    /// expired).
    pub fn finish(
        &mut self,
        key: &str,
        replies: &[(NodeId, ForwardReply)],
        memory: Option<Data>,
        now_ms: u64,
    ) -> Result<Outcome, DirError> {
        let policy = self.policy;
        let entry = self.entries.get_mut(key).ok_or(DirError::Idle)?;
        let transient = entry.transient.take().ok_or(DirError::Idle)?;
        let epoch = next_epoch(entry.epoch, now_ms);
        entry.epoch = epoch;
        let outcome = match transient {
            Transient::Reading { requester, owner } => {
                let mut holders: BTreeSet<NodeId> = match &entry.holders {
                    Holders::Shared { sharers } => sharers.clone(),
                    _ => BTreeSet::new(),
                };
                let mut data = memory;
                // The owner's value, surrendered: memory held nothing while
                // it was exclusive (write-back), so it must be written even
                // when clean.
                let mut surrendered = false;
                if let Some(owner) = &owner {
                    if let Some((_, r)) =
                        replies.iter().find(|(n, r)| n == owner && r.data.is_some())
                    {
                        surrendered = r.dirty || policy == WritePolicy::WriteBack;
                        if owner != &requester {
                            holders.insert(owner.clone()); // downgraded to S
                        }
                        data = r.data.clone();
                    }
                }
                let expired = data.as_ref().is_some_and(|d| d.is_expired(now_ms));
                let was_sharer = holders.remove(&requester);
                match data.filter(|d| !d.is_expired(now_ms)) {
                    None => {
                        // A sharer that asked again stays listed: an older
                        // copy of its may still be valid or in flight.
                        if was_sharer {
                            holders.insert(requester.clone());
                        }
                        entry.holders = shared_or_uncached(holders);
                        Outcome {
                            reply: HomeReply::Absent { epoch },
                            memory: if expired {
                                MemoryOp::Delete
                            } else {
                                MemoryOp::None
                            },
                        }
                    }
                    Some(d) => {
                        let (state, memory) = if holders.is_empty() {
                            entry.holders = Holders::Exclusive {
                                owner: requester.clone(),
                            };
                            // An E line may turn M silently under
                            // write-back: memory must not keep a value the
                            // owner can make stale without telling anyone.
                            let op = if policy == WritePolicy::WriteBack {
                                MemoryOp::Delete
                            } else if surrendered {
                                MemoryOp::Write(d.clone())
                            } else {
                                MemoryOp::None
                            };
                            (LineState::E, op)
                        } else {
                            holders.insert(requester.clone());
                            entry.holders = Holders::Shared { sharers: holders };
                            let op = if surrendered {
                                MemoryOp::Write(d.clone())
                            } else {
                                MemoryOp::None
                            };
                            (LineState::S, op)
                        };
                        Outcome {
                            reply: HomeReply::Line {
                                state,
                                epoch,
                                data: d,
                            },
                            memory,
                        }
                    }
                }
            }
            Transient::Writing {
                requester,
                value,
                expires_at_ms,
                ..
            } => {
                let data = Data {
                    value,
                    version: Version::granted(epoch),
                    expires_at_ms,
                };
                entry.holders = Holders::Exclusive { owner: requester };
                let (state, memory) = match policy {
                    // The value lives only in the M line from now on; memory
                    // keeps nothing older that a lost line would expose.
                    WritePolicy::WriteBack => (LineState::M, MemoryOp::Delete),
                    WritePolicy::WriteThrough => (LineState::E, MemoryOp::Write(data.clone())),
                };
                Outcome {
                    reply: HomeReply::Line { state, epoch, data },
                    memory,
                }
            }
            Transient::Deleting { .. } => {
                entry.holders = Holders::Uncached;
                Outcome {
                    reply: HomeReply::Absent { epoch },
                    memory: MemoryOp::Delete,
                }
            }
        };
        Ok(outcome)
    }

    /// Give up a transaction that could not complete (a forward failed for
    /// good). Holders stay as they were; nodes that already obeyed an
    /// invalidation simply stay listed, which only costs a spare message.
    pub fn abort(&mut self, key: &str) {
        if let Some(e) = self.entries.get_mut(key) {
            e.transient = None;
        }
    }

    /// An eviction notice from `from` for its exclusive grant at `epoch`.
    /// Applied only when that grant is still the current one; a stale
    /// notice (the home already downgraded or invalidated that copy) changes
    /// nothing. Returns the memory write to make.
    pub fn put(
        &mut self,
        key: &str,
        from: &str,
        epoch: Epoch,
        data: Option<Data>,
        now_ms: u64,
    ) -> MemoryOp {
        let Some(entry) = self.entries.get_mut(key) else {
            return MemoryOp::None;
        };
        let current = entry.transient.is_none()
            && entry.epoch == epoch
            && entry.holders
                == Holders::Exclusive {
                    owner: from.to_string(),
                };
        if !current {
            return MemoryOp::None;
        }
        entry.holders = Holders::Uncached;
        match data {
            Some(d) if self.policy == WritePolicy::WriteBack => {
                if d.is_expired(now_ms) {
                    MemoryOp::Delete
                } else {
                    MemoryOp::Write(d)
                }
            }
            _ => MemoryOp::None,
        }
    }

    /// A node was declared dead (or came back as a new incarnation): it holds
    /// nothing any more.
    pub fn forget_node(&mut self, node: &str) {
        for e in self.entries.values_mut() {
            match &mut e.holders {
                Holders::Exclusive { owner } if owner == node => e.holders = Holders::Uncached,
                Holders::Shared { sharers } => {
                    sharers.remove(node);
                    if sharers.is_empty() {
                        e.holders = Holders::Uncached;
                    }
                }
                _ => {}
            }
        }
    }

    /// Forget everything about `key` (a transaction abandoned after a view
    /// change); the next one starts with a sweep of every live node.
    pub fn remove(&mut self, key: &str) {
        self.entries.remove(key);
    }

    /// Keep only entries for which `keep` holds (keys still homed here) and
    /// that have no transaction in flight.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.entries.retain(|k, e| e.transient.is_some() || keep(k));
    }
}

fn push_invalidations(forwards: &mut Vec<(NodeId, Forward)>, to: &BTreeSet<NodeId>, epoch: Epoch) {
    for n in to {
        forwards.push((
            n.clone(),
            Forward::Invalidate {
                epoch,
                force: false,
            },
        ));
    }
}

fn holds(holders: &Holders, node: &str) -> bool {
    match holders {
        Holders::Uncached => false,
        Holders::Shared { sharers } => sharers.contains(node),
        Holders::Exclusive { owner } => owner == node,
    }
}

fn shared_or_uncached(sharers: BTreeSet<NodeId>) -> Holders {
    if sharers.is_empty() {
        Holders::Uncached
    } else {
        Holders::Shared { sharers }
    }
}

#[cfg(test)]
mod tests;
