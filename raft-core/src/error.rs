//! raft-core's error type, named for what the caller must do.

use crate::NodeId;

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// This node cannot take the write; retry on the leader (if known).
    #[error("not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<(NodeId, String)> },
    /// No quorum or leader could be reached in time; retry later.
    #[error("cluster unavailable: {0}")]
    Unavailable(String),
    /// The leader's proposal queue is full: the command was not proposed
    /// (so it will never apply); retry after a pause.
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// The request itself is wrong (e.g. a command that does not decode).
    #[error("invalid command: {0}")]
    InvalidInput(String),
    /// Local storage failed; the node cannot serve.
    #[error("storage: {0}")]
    Storage(String),
}
