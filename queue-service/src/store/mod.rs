//! Where queues live: one [`QueueStore`] trait, two backends.
//!
//! - [`redis::RedisStore`]: all state in Redis, every operation one atomic Lua
//!   script, so any node can serve any queue (after its owner dies, or while
//!   two nodes briefly both think they own it) without losing or
//!   double-acking a message.
//! - [`embedded::EmbeddedStore`]: the pure [`crate::delivery::Queue`] in
//!   memory, every change written to redb and fsynced before the answer,
//!   with concurrent requests sharing one commit (group commit).
//!
//! Both take `now_ms` from the caller, so the delivery goldenscripts
//! (`tests/testscripts/`, run by `tests/delivery.rs`) drive both with the
//! same controllable clock.
//!
//! Receipt problems are answers, not failures: operations that take receipts
//! return a per-receipt `Result<_, ReceiptError>` inside `Ok`, and `Err` only
//! means the store itself failed (nothing was done). A full queue is an
//! answer too: enqueue returns `Ok((Err(Full), _))`.
//!
//! Limits ([`crate::limit`]): both stores enforce the per-queue limits in
//! the enqueue's own atomic step; only the embedded store enforces the
//! per-node limits (it holds every message in this process's memory).

use futures::future::BoxFuture;

use crate::delivery::{
    DeadLetter, Delivery, Events, NackOutcome, NewMessage, QueueStats, ReceiptError, Seq,
};
use crate::error::Result;
use crate::limit::{Full, Usage};

pub mod embedded;
pub mod redis;

/// What a dequeue found.
#[derive(Debug, Clone, Default)]
pub struct DequeueResult {
    pub deliveries: Vec<Delivery>,
    /// When something may next become deliverable (a delayed message ready,
    /// or a visibility ending), if anything is waiting; the long poll sleeps
    /// until then rather than polling.
    pub next_wake_ms: Option<u64>,
    pub events: Events,
}

/// Per-receipt answers of an ack, plus what the sweep did.
pub type AckResults = (Vec<std::result::Result<(), ReceiptError>>, Events);

/// The new ids of an enqueue, or the limit that refused it; plus what the
/// sweep did (an enqueue sweeps only when it would not fit).
pub type EnqueueResult = (std::result::Result<Vec<String>, Full>, Events);

/// Storage for queues. Every method is one atomic step against the backend.
pub trait QueueStore: Send + Sync + 'static {
    /// `"redis"` or `"embedded"`.
    fn backend(&self) -> &'static str;

    /// Whether state lives outside this process, so another node may serve a
    /// queue whose owner is down.
    fn shared(&self) -> bool;

    fn enqueue<'a>(
        &'a self,
        queue: &'a str,
        msgs: Vec<NewMessage>,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<EnqueueResult>>;

    fn dequeue<'a>(
        &'a self,
        queue: &'a str,
        max: usize,
        visibility_ms: u64,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<DequeueResult>>;

    fn ack<'a>(
        &'a self,
        queue: &'a str,
        receipts: Vec<String>,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<AckResults>>;

    fn nack<'a>(
        &'a self,
        queue: &'a str,
        receipt: &'a str,
        delay_ms: u64,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<(Result<NackOutcome, ReceiptError>, Events)>>;

    fn extend<'a>(
        &'a self,
        queue: &'a str,
        receipt: &'a str,
        visibility_ms: u64,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<(Result<u64, ReceiptError>, Events)>>;

    fn stats<'a>(
        &'a self,
        queue: &'a str,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<(QueueStats, Events)>>;

    fn dead_letters<'a>(
        &'a self,
        queue: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<DeadLetter>>>;

    fn redrive<'a>(
        &'a self,
        queue: &'a str,
        ids: Option<Vec<Seq>>,
        limit: usize,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Vec<String>>>;

    /// `None` resets the queue to the service default.
    fn set_max_attempts<'a>(
        &'a self,
        queue: &'a str,
        max_attempts: Option<u32>,
    ) -> BoxFuture<'a, Result<()>>;

    /// Every queue that was ever enqueued to.
    fn queues(&self) -> BoxFuture<'_, Result<Vec<String>>>;

    /// Ok when the store can serve right now.
    fn ping(&self) -> BoxFuture<'_, Result<()>>;

    /// What this node stores across all queues, for stores that enforce
    /// the per-node limits (embedded); `None` for Redis, where the node
    /// stores nothing.
    fn node_usage(&self) -> Option<Usage>;
}
