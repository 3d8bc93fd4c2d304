//! The coherence protocol over the network: one cache node's engine.
//!
//! It joins the pure cores ([`LineTable`], [`Directory`], [`Membership`]) to
//! the network ([`Peers`]) and the backing memory ([`Memory`]). One node
//! plays every role of the directory protocol, each in its own file (one
//! `impl Node` block per role):
//! - `requester.rs`, the client operations (`get`, `set`, `delete`): local
//!   hits (M, E, S) are answered with no network call; otherwise one
//!   request goes to the key's home (`route_to_home`, the one loop
//!   that re-routes across view changes), and the grant is installed; lines
//!   the LRU evicts are reported to their homes;
//! - `home.rs`, the home: one transaction per key at a time (a per-key
//!   async mutex), sending the transaction's forwards to holders in
//!   parallel and waiting for every reply before it grants;
//! - `holder.rs`, a holder: it obeys forwards, invalidations at once,
//!   downgrades as soon as the grant they refer to has landed;
//! - `heartbeat.rs`: the heartbeat loop runs the failure detector
//!   ([`Membership`]) and the view agreement ([`Views`]); the ring of homes
//!   is built over the accepted view's live set, and when the view changes
//!   every line, directory entry and (home-memory) value whose home moved is
//!   dropped — everything, when this node may have missed a view in between;
//! - `report.rs`: what the node tells operators (`/api/cache/line`, stats,
//!   `/cluster`); the counters themselves are [`crate::metrics::Stats`].
//!
//! It acts (answers as a home, serves a cached line, sends a request) only
//! while its view is confirmed by a majority ([`Views::authorized_until`]),
//! and every request, forward and Redis write carries the view number: a
//! home refuses a request routed by another view, a holder refuses a
//! forward from an older view, Redis refuses a write from an older view.
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

mod heartbeat;
mod holder;
mod home;
mod report;
mod requester;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use common::Ring;
use tokio::sync::watch;

use crate::directory::{Directory, WritePolicy};
use crate::line::LineTable;
use crate::membership::Membership;
use crate::metrics::Stats;
use crate::peer::Peers;
use crate::protocol::NodeId;
use crate::store::Memory;
use crate::view::{Timing, ViewId, Views};

/// Pause between retries of a forward to a peer that is not (yet) dead.
const FORWARD_RETRY: Duration = Duration::from_millis(20);

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

/// The accepted view: its number, who is in it and the ring of homes over
/// them (id 0: none yet).
#[derive(Debug)]
pub struct View {
    pub id: ViewId,
    pub live: Vec<NodeId>,
    pub ring: Ring,
    pub generation: u64,
}

/// The state every role shares.
struct Inner {
    cfg: NodeConfig,
    /// Tells peers that this node restarted (and so holds nothing).
    incarnation: u64,
    /// This node's cached lines: installed as a requester, surrendered as a
    /// holder.
    lines: Mutex<LineTable>,
    /// The directory of the keys this node is home to.
    dir: Mutex<Directory>,
    /// One async mutex per key with a home transaction running or waiting.
    key_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    memory: Memory,
    peers: Peers,
    /// The accepted view; replaced (never edited) by the heartbeat.
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

    /// Whether this node may serve lines homed on `home` (see
    /// [`Membership::lease_valid`]).
    fn lease_ok(&self, home: &str, mono_ms: u64) -> bool {
        lock(&self.inner.membership).lease_valid(home, mono_ms)
    }

    fn now_ms(&self) -> u64 {
        common::now_ms()
    }

    fn mono_ms(&self) -> u64 {
        self.inner.started.elapsed().as_millis() as u64
    }
}
