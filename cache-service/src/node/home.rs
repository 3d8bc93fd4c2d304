//! The node as a key's home: one directory transaction per key at a time,
//! its forwards sent to the holders in parallel, its memory step, and the
//! grant.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::future::join_all;

use super::{lock, Node, FORWARD_RETRY};
use crate::directory::{Directory, MemoryOp};
use crate::error::{Error, Result};
use crate::peer::ForwardEnvelope;
use crate::protocol::{Forward, ForwardReply, HomeReply, HomeRequest, NodeId};
use crate::view::ViewId;

/// A home transaction between `begin` and `finish`: dropped armed (the
/// transaction was cancelled or failed on the way), it drops the key's
/// directory entry, so the next transaction starts with a full sweep
/// instead of finding the key busy for good.
struct InFlight<'a> {
    dir: &'a Mutex<Directory>,
    key: &'a str,
    armed: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.armed {
            lock(self.dir).remove(self.key);
        }
    }
}

impl Node {
    /// Run one transaction on `key` for `from`, as its home, in view
    /// `view` (the one the requester routed by).
    pub async fn handle_home(
        &self,
        from: NodeId,
        key: &str,
        view: ViewId,
        request: HomeRequest,
    ) -> Result<HomeReply> {
        let v = self.view();
        if v.id != view {
            return Err(Error::StaleView {
                mine: v.id,
                theirs: view,
            });
        }
        if !self.authorized() {
            return Err(Error::Unavailable(
                "this node's membership view is not confirmed by a majority of the cache nodes"
                    .into(),
            ));
        }
        let home = v.ring.owner(key).unwrap_or(self.me()).to_string();
        if home != self.me() {
            return Err(Error::NotHome { home });
        }
        let key_lock = self.key_lock(key);
        let reply = {
            let _guard = key_lock.lock().await;
            self.transact(&from, key, view, request).await
        };
        drop(key_lock);
        self.release_key_lock(key);
        reply
    }

    /// Whether this node still acts as a home in `view`; when not, the
    /// transaction on `key` is abandoned and its directory entry dropped
    /// (what it recorded may be out of date in the new view).
    fn still_home(&self, key: &str, view: ViewId) -> Result<()> {
        if self.view().id == view && self.authorized() {
            return Ok(());
        }
        lock(&self.inner.dir).remove(key);
        Err(Error::Unavailable(
            "the membership view changed during the transaction".into(),
        ))
    }

    async fn transact(
        &self,
        from: &str,
        key: &str,
        view: ViewId,
        request: HomeRequest,
    ) -> Result<HomeReply> {
        let now = self.now_ms();
        if let HomeRequest::Put { epoch, data } = request {
            let op = lock(&self.inner.dir).put(key, from, epoch, data, now);
            self.still_home(key, view)?;
            self.apply_memory(key, &op, view).await?;
            return Ok(HomeReply::PutAck);
        }
        let live = self.view().live.clone();
        let (plan, first_touch) = {
            let mut dir = lock(&self.inner.dir);
            let first_touch = dir.entry(key).is_none();
            let plan = dir
                .begin(key, from, &request, &live, now)
                .map_err(|e| Error::Unavailable(e.to_string()))?;
            (plan, first_touch)
        };
        // From here the key has a transaction in flight. If this future is
        // dropped before it ends (the caller's request was cancelled: a
        // gateway timeout while Redis was down), nothing else would ever
        // end it, and every later transaction on the key would answer
        // "already in flight" (seen for ~35 s after a Redis restart in the
        // chaos suite, seed 214 with --redis).
        let mut in_flight = InFlight {
            dir: &self.inner.dir,
            key,
            armed: true,
        };
        let sends = plan.forwards.into_iter().map(|(node, fwd)| async move {
            let r = self.send_forward(&node, key, view, fwd).await;
            (node, r)
        });
        let mut replies = Vec::new();
        for (node, r) in join_all(sends).await {
            match r {
                Ok(reply) => replies.push((node, reply)),
                Err(e) => {
                    let mut dir = lock(&self.inner.dir);
                    if first_touch {
                        // The sweep of every node did not complete: the
                        // next transaction must sweep again.
                        dir.remove(key);
                    } else {
                        dir.abort(key);
                    }
                    return Err(e);
                }
            }
        }
        let needs_memory = lock(&self.inner.dir).needs_memory(key, &replies);
        let mem = if needs_memory {
            match self.inner.memory.get(key, self.now_ms(), view).await {
                Ok(m) => m,
                Err(e) => {
                    lock(&self.inner.dir).abort(key);
                    return Err(e);
                }
            }
        } else {
            None
        };
        self.still_home(key, view)?;
        let outcome = lock(&self.inner.dir)
            .finish(key, &replies, mem, self.now_ms())
            .map_err(|e| Error::Unavailable(e.to_string()))?;
        in_flight.armed = false;
        let applied = if matches!(request, HomeRequest::GetS) {
            self.apply_memory(key, &outcome.memory, view).await
        } else {
            // Write-through writes and deletes are not write-backs.
            self.inner.memory.apply(key, &outcome.memory, view).await
        };
        if let Err(e) = applied {
            // The grant is not sent; the directory may list a holder that
            // never got it, which only costs a spare forward later. Memory
            // may hold an older value than an owner it lists: drop the
            // entry so the next transaction starts with a full sweep.
            lock(&self.inner.dir).remove(key);
            return Err(e);
        }
        self.still_home(key, view)?;
        Ok(outcome.reply)
    }

    async fn apply_memory(&self, key: &str, op: &MemoryOp, view: ViewId) -> Result<()> {
        if matches!(op, MemoryOp::Write(_)) {
            self.inner.stats.write_backs.inc();
        }
        self.inner.memory.apply(key, op, view).await
    }

    fn key_lock(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.inner.key_locks)
            .entry(key.to_string())
            .or_default()
            .clone()
    }

    fn release_key_lock(&self, key: &str) {
        let mut locks = lock(&self.inner.key_locks);
        if locks.get(key).is_some_and(|l| Arc::strong_count(l) == 1) {
            locks.remove(key);
        }
    }

    /// Deliver a forward, retrying until the peer answers, the view changes
    /// (a node that left the view holds nothing any more, but the
    /// transaction is abandoned: it was planned in the old view) or the
    /// deadline passes.
    async fn send_forward(
        &self,
        node: &str,
        key: &str,
        view: ViewId,
        fwd: Forward,
    ) -> Result<ForwardReply> {
        if matches!(fwd, Forward::Invalidate { .. }) {
            self.inner.stats.invalidations_sent.inc();
        }
        if node == self.me() {
            return self.handle_forward(key, view, fwd).await;
        }
        let env = ForwardEnvelope {
            key: key.to_string(),
            from: self.me().to_string(),
            view,
            forward: fwd,
        };
        let deadline =
            Instant::now() + self.inner.cfg.failure_timeout * 2 + self.inner.cfg.forward_wait;
        loop {
            match self.inner.peers.forward(node, &env).await {
                Ok(r) => return Ok(r),
                Err(e) => {
                    if self.view().id != view || Instant::now() >= deadline {
                        return Err(e);
                    }
                    tokio::time::sleep(FORWARD_RETRY).await;
                }
            }
        }
    }
}
