//! raft-core: the Raft plumbing a replicated service stands on.
//!
//! An application implements [`StateMachine`]: a deterministic
//! `apply(command, log index, leader timestamp) -> response`, plus snapshot to
//! bytes and restore. raft-core owns everything else, on openraft 0.9
//! (`storage-v2`):
//!
//! - [`log_store`]: the durable Raft log, vote and committed index on
//!   [`wal`], a segmented write-ahead log of checksummed records. Appends are
//!   group-committed by one writer thread: everything that queued while the
//!   previous fsync ran is written in one batch and shares one fsync, and
//!   openraft hears "flushed" only after that fsync.
//! - [`state_machine`]: the adapter that feeds committed entries to the
//!   application, builds and persists snapshots, and restores from them.
//! - [`network`]: the outbound HTTP transport (one hyper HTTP/1.1 keep-alive
//!   connection per openraft peer connection, per-RPC timeouts, connection
//!   failures reported as openraft's `Unreachable`), with a fault-injection
//!   switch that drops traffic to chosen peers.
//! - [`http`]: the inbound `/internal/raft/*` routes (append, vote, snapshot,
//!   forwarded writes, read index), all behind the cluster token.
//! - `proposer`: commands packed into log entries (group commit).
//! - `rpc`: the member-to-member messages that are ours (pre-vote,
//!   forwarded-call answers, snapshot chunk framing).
//! - [`election`]: prompt, ranked elections once the leader falls silent
//!   past its lease (instead of waiting out a random timeout on a tick).
//! - [`node`]: the handle a service holds: start from a data dir, bootstrap,
//!   write (a follower forwards to the leader), linearizable read barrier,
//!   status.
//!
//! Proposals are batched: openraft 0.9 appends each client entry with its
//! own fsync while its core loop waits, so the next entry is handed over the
//! moment the previous one is on the leader's disk, carrying every command
//! that arrived meanwhile. A batch costs one entry, one fsync per replica,
//! one round trip. A command that would go alone may wait up to 200 µs for
//! company (`linger`), adaptively: one commit often answers two clients whose
//! next commands then share an entry.
//!
//! Time enters the log only through the leader: every write is stamped with
//! the leader's wall clock when it is proposed, and the state machine sees
//! `max(stamp, previous stamp)`, so every replica applies the same clock.

pub mod election;
mod error;
pub mod http;
mod linger;
pub mod log_store;
pub mod network;
pub mod node;
mod proposer;
mod rpc;
pub mod state_machine;
mod types;
pub mod wal;

pub use error::Error;
pub use node::{NodeConfig, ProposalBounds, RaftNode, Status, Timing};
pub use types::{NodeId, Request, SnapshotJob, StateMachine, TypeConfig, MAX_BATCH};
