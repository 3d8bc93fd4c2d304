//! queue-service
