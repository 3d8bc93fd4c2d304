//! raft-core
