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

use std::collections::BTreeSet;

use api::limits::Page;
use futures::future::BoxFuture;
use futures::FutureExt;

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

    /// One page of queue names for `GET /api/queues`: the first
    /// `page.limit` names (sorted) that start with `page.prefix`, sort
    /// after `page.after` and that `keep` accepts (the queues this node
    /// owns), and whether more follow. By default over [`Self::queues`].
    fn queue_page<'a>(
        &'a self,
        page: &'a Page,
        keep: &'a (dyn Fn(&str) -> bool + Send + Sync),
    ) -> BoxFuture<'a, Result<(Vec<String>, bool)>> {
        async move {
            let mut window = PageWindow::new(page);
            for name in self.queues().await? {
                window.offer(name, keep);
            }
            Ok(window.finish())
        }
        .boxed()
    }

    /// Ok when the store can serve right now.
    fn ping(&self) -> BoxFuture<'_, Result<()>>;

    /// What this node stores across all queues, for stores that enforce
    /// the per-node limits (embedded); `None` for Redis, where the node
    /// stores nothing.
    fn node_usage(&self) -> Option<Usage>;
}

/// The smallest `limit + 1` names offered that belong on a page: memory
/// bounded by the page whatever the number of queues, so a store can
/// walk its names in steps (Redis `SSCAN`) and offer each.
#[derive(Debug)]
pub struct PageWindow<'a> {
    page: &'a Page,
    names: BTreeSet<String>,
}

impl<'a> PageWindow<'a> {
    pub fn new(page: &'a Page) -> Self {
        Self {
            page,
            names: BTreeSet::new(),
        }
    }

    /// Consider `name` for the page.
    pub fn offer(&mut self, name: String, keep: &(dyn Fn(&str) -> bool + Send + Sync)) {
        let p = self.page;
        if !name.starts_with(&p.prefix)
            || p.after.as_deref().is_some_and(|a| name.as_str() <= a)
            || self.names.contains(&name)
        {
            return;
        }
        // Cheap test first: a name past a full window's last is not wanted.
        if self.names.len() > p.limit && self.names.last().is_some_and(|l| &name > l) {
            return;
        }
        if !keep(&name) {
            return;
        }
        self.names.insert(name);
        if self.names.len() > p.limit + 1 {
            self.names.pop_last();
        }
    }

    /// The page's names, sorted, and whether more follow.
    pub fn finish(self) -> (Vec<String>, bool) {
        let mut names: Vec<String> = self.names.into_iter().collect();
        let more = names.len() > self.page.limit;
        names.truncate(self.page.limit);
        (names, more)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_keeps_the_first_names_after_the_cursor_with_the_prefix() {
        let page = api::limits::page(Some("q"), Some("q2"), Some(2)).unwrap();
        let mut w = PageWindow::new(&page);
        let keep = |n: &str| n != "q4";
        for n in ["q9", "q1", "q2", "x", "q4", "q3", "q5", "q3", "q7"] {
            w.offer(n.to_string(), &keep);
        }
        assert_eq!(w.finish(), (vec!["q3".to_string(), "q5".to_string()], true));
        let page = api::limits::page(None, None, Some(5)).unwrap();
        let mut w = PageWindow::new(&page);
        for n in ["b", "a"] {
            w.offer(n.to_string(), &|_| true);
        }
        assert_eq!(w.finish(), (vec!["a".to_string(), "b".to_string()], false));
    }
}
