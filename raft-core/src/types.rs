//! The openraft type configuration and the application-facing trait.
//!
//! The log carries commands as JSON text so that one concrete openraft
//! type config serves any application; [`crate::RaftNode`] converts to and
//! from the application's typed commands at the edge.
//!
//! Commands and answers are [`RawValue`]s (JSON text kept as it was
//! encoded), not `serde_json::Value` trees: an entry is cloned into the log
//! mirror and once per follower it is sent to, and a tree costs an
//! allocation per field each time; malloc was a tenth of the leader's
//! profile at 16 clients. The bytes on disk and on the wire are the same
//! JSON either way.

use std::io::Cursor;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Raft node id. Ids are small positive integers from configuration.
pub type NodeId = u64;

/// Most commands carried by one log entry (see [`crate::node`] on batching).
pub const MAX_BATCH: usize = 1000;

/// One log entry's payload: a batch of commands proposed together, plus the
/// leader's clock when they were proposed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    /// Leader wall-clock milliseconds at proposal.
    pub ts_ms: u64,
    /// The application's commands, as JSON, applied in order.
    pub cmds: Vec<Box<RawValue>>,
}

openraft::declare_raft_types!(
    /// The type config of every raft-core cluster.
    pub TypeConfig:
        D = Request,
        R = Vec<Box<RawValue>>,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// Serializes a copy of a state machine's state (see
/// [`StateMachine::snapshot`]).
pub type SnapshotJob = Box<dyn FnOnce() -> Vec<u8> + Send>;

/// What an application implements to be replicated.
///
/// Determinism contract: `apply` must depend only on the current state and
/// its arguments — no clock reads, no randomness, no I/O — so that every
/// replica that applies the same log reaches the same state and answers.
/// `now_ms` is the leader's stamp, never smaller than the previous entry's.
/// `seq` is unique to the command and grows with log order: the entry's log
/// index × [`MAX_BATCH`] + the command's position in the entry.
pub trait StateMachine: Send + Sync + 'static {
    type Command: Serialize + DeserializeOwned + Send + 'static;
    type Response: Serialize + DeserializeOwned + Send + 'static;
    /// The state as read back from a snapshot, before it replaces the live
    /// one (see [`Self::decode`]).
    type Image: Send + 'static;

    /// Apply one committed command.
    fn apply(&mut self, cmd: Self::Command, seq: u64, now_ms: u64) -> Self::Response;

    /// Start a snapshot of the whole state. This runs under the state
    /// lock, so applies wait for it: take a copy of the state here and
    /// return the job that serializes the copy, which runs on a blocking
    /// thread while applies go on.
    fn snapshot(&self) -> SnapshotJob;

    /// Read a snapshot made by [`Self::snapshot`]. This runs on a blocking
    /// thread, off the state lock: a follower that installs a large
    /// snapshot from its leader keeps answering heartbeats meanwhile.
    fn decode(bytes: &[u8]) -> Result<Self::Image, String>;

    /// Replace the whole state with a decoded snapshot. Returns the state
    /// it replaced, which the caller frees off the lock.
    fn restore(&mut self, image: Self::Image) -> Self::Image;
}
