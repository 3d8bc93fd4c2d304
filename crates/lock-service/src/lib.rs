//! lock-service
