//! The vocabulary of the coherence protocol: line states, versions, the
//! requests a node sends to a key's home, the forwards a home sends to the
//! holders of a key, and their replies. Pure data; both the pure cores
//! ([`crate::line`], [`crate::directory`]) and the network adapters speak it.
//!
//! Two counters order everything:
//! - the **epoch** of a key is the id of the last transaction its home ran on
//!   it. Every grant carries the epoch of the transaction that produced it and
//!   every invalidation carries the epoch up to which copies must go, so a
//!   node can tell a late reply (granted before an invalidation it already
//!   obeyed) from a fresh one.
//! - the **version** of a value is `(epoch, seq)`: the epoch of the grant under
//!   which it was written and a counter of silent local writes by the M/E
//!   owner. Versions of one key only grow, across owners and homes.

use serde::{Deserialize, Serialize};

/// A cache node, named by its advertised `host:port`.
pub type NodeId = String;

/// Id of a home transaction on one key; strictly increasing per key.
pub type Epoch = u64;

/// MESI state of one node's copy of a key. `I` is the absence of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LineState {
    M,
    E,
    S,
    I,
}

impl LineState {
    pub fn as_str(self) -> &'static str {
        match self {
            LineState::M => "M",
            LineState::E => "E",
            LineState::S => "S",
            LineState::I => "I",
        }
    }
}

/// The version of a value: ordered by `epoch`, then `seq`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Version {
    pub epoch: Epoch,
    pub seq: u64,
}

impl Version {
    /// The version a home stamps on a value written under grant `epoch`.
    pub fn granted(epoch: Epoch) -> Self {
        Self { epoch, seq: 0 }
    }

    /// The next version of a silent local write by the owner holding grant
    /// `grant_epoch`, whose current value has version `self`.
    pub fn next_local(self, grant_epoch: Epoch) -> Self {
        if self.epoch == grant_epoch {
            Self {
                epoch: grant_epoch,
                seq: self.seq + 1,
            }
        } else {
            Self {
                epoch: grant_epoch,
                seq: 1,
            }
        }
    }
}

/// A value with its version and optional absolute expiry (ms since epoch).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Data {
    pub value: serde_json::Value,
    pub version: Version,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
}

impl Data {
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|t| t <= now_ms)
    }

    /// Approximate bytes this value occupies in a cache (key excluded).
    pub fn size_bytes(&self) -> usize {
        // The serialized JSON length is what crosses the wire and a fair
        // proxy for the in-memory tree; 48 bytes cover the line bookkeeping.
        serde_json::to_vec(&self.value).map_or(0, |v| v.len()) + 48
    }
}

/// What a node asks of a key's home.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum HomeRequest {
    /// Read miss: a readable copy (E or S).
    GetS,
    /// Write from S or I: invalidate every other copy, then own it. The new
    /// value rides along so the home can stamp its version (and store it under
    /// write-through) in the same round trip.
    GetM {
        value: serde_json::Value,
        expires_at_ms: Option<u64>,
    },
    /// Delete: every copy to I, the backing memory cleared.
    Delete,
    /// Eviction of an E or M line granted at `epoch` (`data` for M: the
    /// write-back).
    Put { epoch: Epoch, data: Option<Data> },
}

/// The home's answer to a [`HomeRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "grant", rename_all = "snake_case")]
pub enum HomeReply {
    /// A copy to install in `state` (E or S for a read; M, or E under
    /// write-through, for a write) under grant `epoch`.
    Line {
        state: LineState,
        epoch: Epoch,
        data: Data,
    },
    /// The key has no value; nothing to install. `epoch` is the transaction
    /// that found (or made) it so: a delete's requester drops copies up to it.
    Absent { epoch: Epoch },
    /// An eviction notice was recorded (or was stale and ignored).
    PutAck,
}

/// What a home asks of a node that holds (or may hold) a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Forward {
    /// Drop every copy granted at or before `epoch` (any copy when `force`),
    /// and refuse to install a pending fill granted at or before `epoch`.
    Invalidate { epoch: Epoch, force: bool },
    /// The exclusive owner under grant `epoch` sends its value and drops to S
    /// (a dirty value is written back by the home).
    Downgrade { epoch: Epoch },
    /// The exclusive owner under grant `epoch` sends its value and drops it
    /// (the owner is the requester itself, after evicting the line).
    Recall { epoch: Epoch },
}

/// A node's answer to a [`Forward`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForwardReply {
    /// The owner's value, for Downgrade and Recall when it still had it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Data>,
    /// Whether `data` was modified since the grant (M): the home writes it back.
    #[serde(default)]
    pub dirty: bool,
}

impl ForwardReply {
    pub fn ack() -> Self {
        Self {
            data: None,
            dirty: false,
        }
    }
}

/// Next epoch for a key: past the previous one and never behind the wall
/// clock (scaled), so a home that takes a key over after a failure starts
/// above every epoch the previous home handed out.
pub fn next_epoch(prev: Epoch, now_ms: u64) -> Epoch {
    (prev + 1).max(now_ms.saturating_mul(EPOCHS_PER_MS))
}

/// Epoch numbers reserved per wall-clock millisecond.
pub const EPOCHS_PER_MS: u64 = 1000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_by_epoch_then_seq() {
        let a = Version::granted(5);
        let b = a.next_local(5);
        let c = b.next_local(9);
        assert!(a < b && b < c);
        assert_eq!(b, Version { epoch: 5, seq: 1 });
        assert_eq!(c, Version { epoch: 9, seq: 1 });
    }

    #[test]
    fn epochs_grow_and_follow_the_clock() {
        assert_eq!(next_epoch(7, 0), 8);
        assert_eq!(next_epoch(7, 1), 1000);
        assert_eq!(next_epoch(5000, 1), 5001);
    }
}
