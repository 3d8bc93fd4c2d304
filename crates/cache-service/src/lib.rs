//! cache-service
