//! cache-service
pub mod directory;
pub mod line;
pub mod protocol;
