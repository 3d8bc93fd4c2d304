//! The coherence protocol over the network: one cache node's engine.
//!
//! It joins the pure cores ([`LineTable`], [`Directory`], [`Membership`]) to
//! the network ([`Peers`]) and the backing memory ([`Memory`]):
//! - client operations (`get`, `set`, `delete`) answer local hits (M, E, S)
//!   with no network call, and otherwise send one request to the key's home;
//! - as a home it runs one transaction per key at a time (a per-key async
//!   mutex), sending the transaction's forwards to holders in parallel and
//!   waiting for every reply before it grants;
//! - as a holder it obeys forwards: invalidations at once, downgrades as soon
//!   as the grant they refer to has landed;
//! - the heartbeat loop runs the failure detector ([`Membership`]) and the
//!   view agreement ([`Views`]); the ring of homes is built over the
//!   accepted view's live set, and when the view changes every line,
//!   directory entry and (home-memory) value whose home moved is dropped —
//!   everything, when this node may have missed a view in between;
//! - it acts (answers as a home, serves a cached line, sends a request) only
//!   while its view is confirmed by a majority ([`Views::authorized_until`]),
//!   and every request, forward and Redis write carries the view number: a
//!   home refuses a request routed by another view, a holder refuses a
//!   forward from an older view, Redis refuses a write from an older view.
//!
//! Why this is linearizable per key: one view is confirmed at a time, so a
//! key has one acting home at a time, and every transaction on
//! a key is serialized at its home; a write is granted only after every
//! other copy acknowledged its invalidation, and takes effect when the
//! writer installs its line (a downgrade that reaches the writer earlier
//! waits for that); a read miss takes effect at the home's grant, and the
//! fill is installed only if no invalidation newer than the grant already
//! arrived (epochs), so no node ever serves a copy older than a completed
//! write. Under write-back memory holds no value while a line is exclusive
//! (see [`crate::directory`]), so losing an owner or a home loses the value
//! (reads miss) but never brings back an older one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use common::Ring;
use futures::future::join_all;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::directory::{Directory, MemoryOp, WritePolicy};
use crate::error::{Error, Result};
use crate::line::{Evictions, LineTable, Lookup, Surrender};
use crate::membership::{Change, Membership};
use crate::peer::{ForwardEnvelope, HomeEnvelope, LocalView, Peers, Ping};
use crate::protocol::{Data, Forward, ForwardReply, HomeReply, HomeRequest, LineState, NodeId};
use crate::store::Memory;
use crate::view::{Timing, Transition, ViewId, ViewInfo, Views};

/// A client operation re-routes when views disagree or a home is
/// unreachable for at most this many failure timeouts (plus a second)
/// before answering 503: long enough to ride out one view change
/// (detection, then settling).
const ROUTE_TIMEOUTS: u32 = 2;
/// Pause between such attempts.
const ROUTE_BACKOFF: Duration = Duration::from_millis(25);
/// Pause between retries of a forward to a peer that is not (yet) dead.
const FORWARD_RETRY: Duration = Duration::from_millis(20);
/// Attempts at delivering an eviction notice.
const PUT_ATTEMPTS: u32 = 3;

/// Tunables of one node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub me: NodeId,
    pub policy: WritePolicy,
    pub max_entries: usize,
    pub max_bytes: usize,
    pub heartbeat: Duration,
    pub failure_timeout: Duration,
    /// How long a downgrade waits for the grant it refers to.
    pub forward_wait: Duration,
    /// Bounds of the home memory (unused with Redis).
    pub memory_bounds: crate::store::Bounds,
}

/// Domain counters, exported both as JSON stats and Prometheus metrics.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub hits: Counter,
    pub misses: Counter,
    pub evictions: Counter,
    pub invalidations_sent: Counter,
    pub invalidations_received: Counter,
    pub write_backs: Counter,
    pub lines: Family<StateLabel, Gauge>,
    /// Home-memory entries evicted by its bounds (a delete).
    pub memory_evictions: Counter,
    pub memory_entries: Gauge,
    pub memory_bytes: Gauge,
    /// Accepted view changes.
    pub view_changes: Counter,
    /// 1 while this node's view is confirmed by a majority.
    pub view_confirmed: Gauge,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

impl Stats {
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "cache_hits",
            "Gets answered from this node's cache",
            self.hits.clone(),
        );
        r.register(
            "cache_misses",
            "Gets that went to the key's home",
            self.misses.clone(),
        );
        r.register(
            "cache_evictions",
            "Lines evicted by the LRU",
            self.evictions.clone(),
        );
        r.register(
            "cache_invalidations_sent",
            "Invalidations this node sent as a home",
            self.invalidations_sent.clone(),
        );
        r.register(
            "cache_invalidations_received",
            "Invalidations this node received",
            self.invalidations_received.clone(),
        );
        r.register(
            "cache_write_backs",
            "Dirty values written to the backing memory",
            self.write_backs.clone(),
        );
        r.register(
            "cache_lines",
            "Lines held per MESI state",
            self.lines.clone(),
        );
        r.register(
            "cache_memory_evictions",
            "Home-memory entries evicted (deleted) by the memory bounds",
            self.memory_evictions.clone(),
        );
        r.register(
            "cache_memory_entries",
            "Entries in this node's home memory",
            self.memory_entries.clone(),
        );
        r.register(
            "cache_memory_bytes",
            "Bytes of keys and values in this node's home memory",
            self.memory_bytes.clone(),
        );
        r.register(
            "cache_view_changes",
            "Membership views this node accepted",
            self.view_changes.clone(),
        );
        r.register(
            "cache_view_confirmed",
            "1 while a majority confirms this node's view (it may serve)",
            self.view_confirmed.clone(),
        );
    }
}

/// The accepted view: its number, who is in it and the ring of homes over
/// them (id 0: none yet).
#[derive(Debug)]
pub struct View {
    pub id: ViewId,
    pub live: Vec<NodeId>,
    pub ring: Ring,
    pub generation: u64,
}

struct Inner {
    cfg: NodeConfig,
    incarnation: u64,
    lines: Mutex<LineTable>,
    dir: Mutex<Directory>,
    key_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    memory: Memory,
    peers: Peers,
    view: RwLock<Arc<View>>,
    membership: Mutex<Membership>,
    views: Mutex<Views>,
    /// Monotonic ms until which the view is confirmed (0: not confirmed).
    authorized_until: AtomicU64,
    /// Bumped whenever a fill lands or a request ends: wakes waiting
    /// downgrades.
    fills: watch::Sender<u64>,
    stats: Stats,
    started: Instant,
}

/// A cache node; cheap to clone.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("me", &self.inner.cfg.me)
            .finish()
    }
}

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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Node {
    pub fn new(cfg: NodeConfig, memory: Memory, peers: Peers, members: &[NodeId]) -> Self {
        let memory_evictions = memory.evictions().clone();
        let mut membership =
            Membership::new(cfg.me.clone(), cfg.failure_timeout.as_millis() as u64);
        membership.set_members(members, 0);
        let timeout_ms = cfg.failure_timeout.as_millis() as u64;
        let mut views = Views::new(
            cfg.me.clone(),
            Timing::from_failure_timeout(timeout_ms, cfg.heartbeat.as_millis() as u64),
            0,
        );
        views.set_configured(members);
        let view = View {
            id: 0,
            ring: Ring::new(Vec::<String>::new()),
            live: Vec::new(),
            generation: 0,
        };
        let inner = Inner {
            lines: Mutex::new(LineTable::new(cfg.max_entries, cfg.max_bytes)),
            dir: Mutex::new(Directory::new(cfg.policy)),
            key_locks: Mutex::new(HashMap::new()),
            memory,
            peers,
            view: RwLock::new(Arc::new(view)),
            membership: Mutex::new(membership),
            views: Mutex::new(views),
            authorized_until: AtomicU64::new(0),
            fills: watch::channel(0).0,
            stats: Stats {
                memory_evictions,
                ..Stats::default()
            },
            started: Instant::now(),
            incarnation: rand::random::<u64>() >> 1,
            cfg,
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    pub fn me(&self) -> &str {
        &self.inner.cfg.me
    }

    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    pub fn peers(&self) -> &Peers {
        &self.inner.peers
    }

    pub fn memory(&self) -> &Memory {
        &self.inner.memory
    }

    pub fn policy(&self) -> WritePolicy {
        self.inner.cfg.policy
    }

    pub fn view(&self) -> Arc<View> {
        self.inner
            .view
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether this node's view is confirmed by a majority right now.
    pub fn authorized(&self) -> bool {
        self.authorized_at(self.mono_ms())
    }

    /// [`Node::authorized`] at monotonic time `mono_ms` (one clock read per
    /// hit).
    fn authorized_at(&self, mono_ms: u64) -> bool {
        mono_ms < self.inner.authorized_until.load(Ordering::Acquire)
    }

    /// How long a client operation keeps re-routing before answering 503.
    fn route_deadline(&self) -> Instant {
        Instant::now() + self.inner.cfg.failure_timeout * ROUTE_TIMEOUTS + Duration::from_secs(1)
    }

    fn now_ms(&self) -> u64 {
        common::now_ms()
    }

    // ----- client operations -------------------------------------------

    /// Read `key`: `(data, hit)`; `data` is `None` when the key has no value.
    pub async fn get(&self, key: &str) -> Result<(Option<Data>, bool)> {
        let mut counted = false;
        let deadline = self.route_deadline();
        loop {
            let (now, mono) = (self.now_ms(), self.mono_ms());
            let hit = lock(&self.inner.lines).lookup_if(key, now, |h| {
                self.authorized_at(mono) && self.lease_ok(h, mono)
            });
            if let Lookup::Hit(_, data) = hit {
                self.inner.stats.hits.inc();
                return Ok((data, true));
            }
            if !counted {
                self.inner.stats.misses.inc();
                counted = true;
            }
            match self.request(key, HomeRequest::GetS).await {
                Ok(HomeReply::Line { data, .. }) => return Ok((Some(data), false)),
                Ok(_) => return Ok((None, false)),
                Err(e) => self.backoff(deadline, e).await?,
            }
        }
    }

    /// Write `key`; returns the new value's version.
    pub async fn set(
        &self,
        key: &str,
        value: serde_json::Value,
        ttl_ms: Option<u64>,
    ) -> Result<crate::protocol::Version> {
        let expires_at_ms = ttl_ms.map(|t| self.now_ms().saturating_add(t));
        if self.inner.cfg.policy == WritePolicy::WriteBack {
            let mono = self.mono_ms();
            let local =
                lock(&self.inner.lines).write_owned_if(key, value.clone(), expires_at_ms, |h| {
                    self.authorized_at(mono) && self.lease_ok(h, mono)
                });
            if let Some((version, ev)) = local {
                self.after_evictions(ev);
                return Ok(version);
            }
        }
        let deadline = self.route_deadline();
        loop {
            let req = HomeRequest::GetM {
                value: value.clone(),
                expires_at_ms,
            };
            match self.request(key, req).await {
                Ok(HomeReply::Line { data, .. }) => return Ok(data.version),
                Ok(other) => {
                    return Err(Error::Unavailable(format!(
                        "unexpected home reply {other:?}"
                    )))
                }
                Err(e) => self.backoff(deadline, e).await?,
            }
        }
    }

    /// Delete `key` everywhere.
    pub async fn delete(&self, key: &str) -> Result<()> {
        let deadline = self.route_deadline();
        loop {
            match self.request(key, HomeRequest::Delete).await {
                Ok(_) => return Ok(()),
                Err(e) => self.backoff(deadline, e).await?,
            }
        }
    }

    /// Retry routing errors (views disagree, home unreachable, no confirmed
    /// view) after a pause until `deadline`; give up on anything else.
    async fn backoff(&self, deadline: Instant, e: Error) -> Result<()> {
        match e {
            Error::NotHome { .. } | Error::StaleView { .. } | Error::Unavailable(_)
                if Instant::now() + ROUTE_BACKOFF < deadline =>
            {
                tracing::debug!(error = %e, "retrying at the key's home");
                tokio::time::sleep(ROUTE_BACKOFF).await;
                Ok(())
            }
            Error::NotHome { .. } | Error::StaleView { .. } => Err(Error::Unavailable(format!(
                "no home in a confirmed view answered for this key in time ({e})"
            ))),
            e => Err(e),
        }
    }

    /// Send one request to the key's home and apply the reply locally.
    async fn request(&self, key: &str, req: HomeRequest) -> Result<HomeReply> {
        if !self.authorized() {
            return Err(Error::Unavailable(
                "this node's membership view is not confirmed by a majority of the cache nodes"
                    .into(),
            ));
        }
        let view = self.view();
        let home = view.ring.owner(key).unwrap_or(self.me()).to_string();
        lock(&self.inner.lines).begin_request(key);
        let res = self.to_home(&home, key, view.id, req).await;
        let mut ev = Evictions::default();
        {
            let mut lines = lock(&self.inner.lines);
            match &res {
                Ok(HomeReply::Line { state, epoch, data }) => {
                    // A grant from another view is answered but not cached
                    // (the view is read under the lines lock: a view change
                    // after this drops whatever it must).
                    if self.view().id == view.id {
                        ev = lines.install(key, *state, *epoch, data.clone(), &home).1;
                    } else {
                        lines.invalidate(key, *epoch, false);
                    }
                }
                Ok(HomeReply::Absent { epoch }) => {
                    lines.invalidate(key, *epoch, false);
                }
                _ => {}
            }
            lines.end_request(key);
        }
        self.inner.fills.send_modify(|n| *n += 1);
        self.after_evictions(ev);
        res
    }

    async fn to_home(
        &self,
        home: &str,
        key: &str,
        view: ViewId,
        request: HomeRequest,
    ) -> Result<HomeReply> {
        if home == self.me() {
            self.handle_home(self.me().to_string(), key, view, request)
                .await
        } else {
            let env = HomeEnvelope {
                key: key.to_string(),
                from: self.me().to_string(),
                view,
                request,
            };
            self.inner.peers.home(home, &env).await
        }
    }

    fn after_evictions(&self, ev: Evictions) {
        if ev.count == 0 {
            return;
        }
        self.inner.stats.evictions.inc_by(ev.count as u64);
        for e in ev.puts {
            let node = self.clone();
            tokio::spawn(async move {
                let epoch = e.line.grant_epoch;
                // Under write-back memory holds nothing while a line is
                // exclusive, so a clean E line is written back too.
                let data = (e.line.state == LineState::M
                    || node.policy() == WritePolicy::WriteBack)
                    .then(|| e.line.data.clone());
                for _ in 0..PUT_ATTEMPTS {
                    let req = HomeRequest::Put {
                        epoch,
                        data: data.clone(),
                    };
                    let view = node.view().id;
                    match node.to_home(&e.line.home, &e.key, view, req).await {
                        Ok(_) => break,
                        Err(err) => {
                            tracing::debug!(key = %e.key, error = %err, "eviction notice failed");
                            tokio::time::sleep(FORWARD_RETRY).await;
                        }
                    }
                }
                lock(&node.inner.lines).put_done(&e.key, epoch);
            });
        }
    }

    // ----- the home --------------------------------------------------------

    /// Run one transaction on `key` for `from`, as its home.
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

    /// Deliver a forward, retrying until the peer answers or is declared
    /// dead (a dead node holds nothing: its answer is an empty ack).
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

    // ----- a holder --------------------------------------------------------

    /// Obey a forward from a key's home acting in `view`; refuse one from
    /// a view older than this node's (its home may have been deposed).
    pub async fn handle_forward(
        &self,
        key: &str,
        view: ViewId,
        fwd: Forward,
    ) -> Result<ForwardReply> {
        let mine = self.view().id;
        if view < mine {
            return Err(Error::StaleView { mine, theirs: view });
        }
        Ok(self.obey(key, fwd).await)
    }

    async fn obey(&self, key: &str, fwd: Forward) -> ForwardReply {
        match fwd {
            Forward::Invalidate { epoch, force } => {
                self.inner.stats.invalidations_received.inc();
                lock(&self.inner.lines).invalidate(key, epoch, force);
                ForwardReply::ack()
            }
            Forward::Downgrade { epoch } | Forward::Recall { epoch } => {
                let recall = matches!(fwd, Forward::Recall { .. });
                let deadline = Instant::now() + self.inner.cfg.forward_wait;
                let mut fills = self.inner.fills.subscribe();
                loop {
                    fills.borrow_and_update();
                    let answer = lock(&self.inner.lines).surrender(key, epoch, recall);
                    match answer {
                        Surrender::Data { data, dirty } => {
                            return ForwardReply {
                                data: Some(data),
                                dirty,
                            }
                        }
                        Surrender::Nothing => return ForwardReply::ack(),
                        Surrender::Wait => {
                            let left = deadline.saturating_duration_since(Instant::now());
                            if left.is_zero()
                                || tokio::time::timeout(left, fills.changed()).await.is_err()
                            {
                                tracing::warn!(key, epoch, "grant never arrived; answering empty");
                                lock(&self.inner.lines).give_up(key, epoch);
                                return ForwardReply::ack();
                            }
                        }
                    }
                }
            }
        }
    }

    /// This node's own state for `key` (and its directory entry if home).
    pub fn local_view(&self, key: &str) -> LocalView {
        let line = lock(&self.inner.lines).peek(key).cloned();
        let directory = lock(&self.inner.dir)
            .entry(key)
            .map(|e| serde_json::to_value(e).unwrap_or_default());
        LocalView {
            node: self.me().to_string(),
            state: line
                .as_ref()
                .map_or(LineState::I, |l| l.state)
                .as_str()
                .to_string(),
            version: line.as_ref().map(|l| l.data.version),
            grant_epoch: line.as_ref().map(|l| l.grant_epoch),
            directory,
        }
    }

    /// Every node's view of `key`, for `GET /api/cache/line`.
    pub async fn line_everywhere(&self, key: &str) -> serde_json::Value {
        let view = self.view();
        let members: Vec<(NodeId, bool)> = {
            let m = lock(&self.inner.membership);
            let mut v: Vec<(NodeId, bool)> = m
                .peers()
                .iter()
                .map(|(id, p)| (id.clone(), p.alive))
                .collect();
            v.push((self.me().to_string(), true));
            v.sort();
            v
        };
        let home = view.ring.owner(key).unwrap_or(self.me()).to_string();
        let asks = members.iter().map(|(id, alive)| async move {
            let local = if id == self.me() {
                Ok(self.local_view(key))
            } else if *alive {
                self.inner.peers.local(id, key).await
            } else {
                Err(Error::Unavailable("dead".into()))
            };
            (id.clone(), *alive, local)
        });
        let mut nodes = Vec::new();
        let mut directory = serde_json::Value::Null;
        for (id, alive, local) in join_all(asks).await {
            match local {
                Ok(v) => {
                    if id == home {
                        directory = v.directory.clone().unwrap_or_default();
                    }
                    nodes.push(serde_json::json!({
                        "node": id, "alive": alive, "state": v.state,
                        "version": v.version, "grant_epoch": v.grant_epoch,
                    }));
                }
                Err(_) => nodes.push(serde_json::json!({
                    "node": id, "alive": false, "state": "I",
                })),
            }
        }
        serde_json::json!({ "key": key, "home": home, "directory": directory, "nodes": nodes })
    }

    /// Counters and line census as JSON.
    pub fn stats_json(&self) -> serde_json::Value {
        let census = lock(&self.inner.lines).census();
        let s = &self.inner.stats;
        for (state, n) in [("M", census.m), ("E", census.e), ("S", census.s)] {
            s.lines
                .get_or_create(&StateLabel {
                    state: state.into(),
                })
                .set(n as i64);
        }
        let (mem_entries, mem_bytes) = self.inner.memory.local_usage();
        s.memory_entries.set(mem_entries as i64);
        s.memory_bytes.set(mem_bytes as i64);
        let view = self.view();
        let (hits, misses) = (s.hits.get(), s.misses.get());
        let total = hits + misses;
        serde_json::json!({
            "node": self.me(),
            "hits": hits,
            "misses": misses,
            "hit_rate": if total == 0 { 0.0 } else { hits as f64 / total as f64 },
            "evictions": s.evictions.get(),
            "invalidations_sent": s.invalidations_sent.get(),
            "invalidations_received": s.invalidations_received.get(),
            "write_backs": s.write_backs.get(),
            "lines": { "M": census.m, "E": census.e, "S": census.s },
            "entries": census.entries,
            "bytes": census.bytes,
            "max_entries": self.inner.cfg.max_entries,
            "max_bytes": self.inner.cfg.max_bytes,
            "directory_entries": lock(&self.inner.dir).len(),
            "memory_backend": self.inner.memory.backend(),
            "memory_local_entries": mem_entries,
            "memory_local_bytes": mem_bytes,
            "max_memory_entries": self.inner.cfg.memory_bounds.max_entries,
            "max_memory_bytes": self.inner.cfg.memory_bounds.max_bytes,
            "memory_evictions": s.memory_evictions.get(),
            "write_policy": self.inner.cfg.policy,
            "view_generation": view.generation,
            "view": view.id,
            "view_confirmed": self.authorized(),
            "view_changes": s.view_changes.get(),
        })
    }

    /// Peers and whether they are considered up, for `GET /cluster`.
    pub fn peers_json(&self) -> Vec<serde_json::Value> {
        let m = lock(&self.inner.membership);
        let mut v = vec![serde_json::json!({"addr": self.me(), "alive": true})];
        for (id, p) in m.peers() {
            v.push(serde_json::json!({"addr": id, "alive": p.alive}));
        }
        v
    }

    // ----- failure detection and views -------------------------------------

    /// Whether this node may serve lines homed on `home` (see
    /// [`Membership::lease_valid`]).
    fn lease_ok(&self, home: &str, mono_ms: u64) -> bool {
        lock(&self.inner.membership).lease_valid(home, mono_ms)
    }

    fn mono_ms(&self) -> u64 {
        self.inner.started.elapsed().as_millis() as u64
    }

    pub fn ping_reply(&self) -> Ping {
        let report = lock(&self.inner.views).report(self.mono_ms());
        let suspects = lock(&self.inner.membership)
            .peers()
            .iter()
            .filter(|(_, p)| !p.alive)
            .map(|(id, _)| id.clone())
            .collect();
        Ping {
            node: self.me().to_string(),
            incarnation: self.inner.incarnation,
            view: report,
            suspects,
        }
    }

    /// A peer pinged us: it is alive, and we adopt its view if newer (its
    /// report does not count towards confirmation: we do not know when it
    /// was made).
    pub fn observe_ping(&self, from: &Ping) {
        let now = self.mono_ms();
        let change = lock(&self.inner.membership).observe(&from.node, from.incarnation, now);
        self.apply_change(change);
        if let Some(r) = &from.view {
            let configured = lock(&self.inner.views).configured().contains(&from.node);
            if configured {
                self.with_views(|v, now| {
                    v.observe_suspects(&from.node, &from.suspects);
                    v.offer(&r.view, now)
                });
            }
        }
    }

    /// Adopt a new configured member list (discovery).
    pub fn set_members(&self, members: &[NodeId]) {
        let now = self.mono_ms();
        let change = lock(&self.inner.membership).set_members(members, now);
        self.apply_change(change);
        self.with_views(|v, _| {
            v.set_configured(members);
            None
        });
    }

    /// One heartbeat round: ping every configured peer, declare the silent
    /// ones dead, count the views they report, and propose a view when the
    /// failure detector disagrees with the accepted one.
    pub async fn heartbeat_round(&self) {
        let peers: Vec<NodeId> = lock(&self.inner.membership)
            .peers()
            .keys()
            .cloned()
            .collect();
        let me = self.ping_reply();
        let sent = self.mono_ms();
        let pings = peers.iter().map(|p| {
            let me = me.clone();
            async move { (p, self.inner.peers.ping(p, &me).await) }
        });
        for (peer, res) in join_all(pings).await {
            match res {
                Ok(reply) if &reply.node == peer => {
                    let now = self.mono_ms();
                    let change = lock(&self.inner.membership).observe_reply(
                        peer,
                        reply.incarnation,
                        sent,
                        now,
                    );
                    self.apply_change(change);
                    self.with_views(|v, now| {
                        v.observe_suspects(peer, &reply.suspects);
                        v.observe_reply(peer, reply.view.as_ref(), sent, now)
                    });
                }
                _ => {}
            }
        }
        let now = self.mono_ms();
        let change = lock(&self.inner.membership).tick(now);
        self.apply_change(change);
        let live = lock(&self.inner.membership).live();
        let wall = self.now_ms();
        self.with_views(|v, now| {
            let p = v.proposal(&live, now, wall)?;
            tracing::info!(view = p.id, live = ?p.live, "proposing a cache membership view");
            v.offer(&p, now)
        });
    }

    /// Run `f` on the views, then apply the transition it returns (if any)
    /// and refresh the confirmation deadline, all under the views lock so
    /// that deadlines and transitions are published in order.
    fn with_views(&self, f: impl FnOnce(&mut Views, u64) -> Option<Transition>) {
        let mut views = lock(&self.inner.views);
        let now = self.mono_ms();
        let t = f(&mut views, now);
        if let Some(t) = t {
            self.inner.authorized_until.store(0, Ordering::Release);
            self.apply_transition(t);
        }
        let until = views.authorized_until(self.mono_ms());
        self.inner.authorized_until.store(until, Ordering::Release);
        self.inner.stats.view_confirmed.set(i64::from(until > now));
    }

    /// A peer restarted (new incarnation): it holds nothing any more. Died
    /// and revived peers change nothing here: only an accepted view moves
    /// homes.
    fn apply_change(&self, change: Change) {
        if change.restarted.is_empty() {
            return;
        }
        tracing::info!(restarted = ?change.restarted, "cache peer restarted");
        lock(&self.inner.lines).retain(|_, line| !change.restarted.contains(&line.home));
        let mut dir = lock(&self.inner.dir);
        for g in &change.restarted {
            dir.forget_node(g);
        }
    }

    /// Adopt a new view: rebuild the ring and drop whatever lost its home
    /// (everything, if a view may have been missed in between).
    fn apply_transition(&self, t: Transition) {
        let continuous = t.continuous();
        tracing::info!(
            from = t.from.as_ref().map(|v| v.id),
            to = t.to.id,
            live = ?t.to.live,
            continuous,
            "cache membership view accepted"
        );
        self.inner.stats.view_changes.inc();
        let ViewInfo { id, live } = t.to;
        let ring = Ring::new(live.clone());
        let old = self.view();
        let view = View {
            id,
            live: live.clone(),
            ring,
            generation: old.generation + 1,
        };
        let view = Arc::new(view);
        // The view first, then the lines: an install that read the old
        // view under the lines lock is dropped below if it must be.
        *self.inner.view.write().unwrap_or_else(|e| e.into_inner()) = view.clone();
        let me = self.me().to_string();
        // Kept: what a continuous change leaves in place, on a node that is
        // still in the view (one left out was declared dead: its homes
        // forgot its copies, and its keys have other homes).
        let stays = continuous && live.contains(&me);
        let keep = |key: &str, home: &str| {
            stays && live.iter().any(|n| n == home) && view.ring.owner(key) == Some(home)
        };
        lock(&self.inner.lines).retain(|key, line| keep(key, &line.home));
        {
            let mut dir = lock(&self.inner.dir);
            if continuous {
                let gone: Vec<NodeId> = old
                    .live
                    .iter()
                    .filter(|n| !live.contains(n))
                    .cloned()
                    .collect();
                for g in &gone {
                    dir.forget_node(g);
                }
            }
            dir.retain(|key| keep(key, &me));
        }
        self.inner.memory.retain_local(|key| keep(key, &me));
    }

    /// Accepted view, confirmation and configured members, for `/cluster`.
    pub fn view_json(&self) -> serde_json::Value {
        let views = lock(&self.inner.views);
        let view = self.view();
        serde_json::json!({
            "id": view.id,
            "live": view.live,
            "confirmed": self.authorized(),
            "configured": views.configured(),
            "quorum": views.quorum(),
            "generation": view.generation,
        })
    }

    pub fn heartbeat_interval(&self) -> Duration {
        self.inner.cfg.heartbeat
    }
}
