//! The lock table: the pure, deterministic core of the lock service.
//!
//! It is the Raft state machine's state. Commands come in with the log index
//! and the leader's clock (`now`); out come the command's own outcome and the
//! outcomes of other requests it settled (a waiter granted by a release, a
//! waiter aborted to break a deadlock). No I/O, no clock reads, no
//! randomness: every replica that applies the same log holds the same table
//! and gives the same answers.
//!
//! Rules:
//! - Shared holds coexist; an exclusive hold is alone.
//! - Each resource has a FIFO queue. A new request is granted at once only
//!   if the queue is empty and it is compatible with the holders; otherwise
//!   it queues (or is refused when `wait_ms` is 0). Grants go from the head
//!   while compatible, so a waiting exclusive request is never overtaken by
//!   shared requests that came after it.
//! - Every command first advances time: holds whose lease ended are dropped
//!   (expiry), waiters whose wait ended are answered `wait_timeout` and
//!   leave the queue, then queues are granted again. The leader proposes a
//!   `Tick` at the next deadline so this happens without client traffic.
//! - Fencing tokens come from one counter that grows with every grant; it is
//!   replicated state, so it keeps growing across leader changes and
//!   restarts.
//! - After any change to the queues or holders, the wait-for graph is
//!   checked; each cycle is broken by aborting its youngest waiting request
//!   (the largest wait id), which is answered `deadlock` with the cycle.
//! - A request carries `(owner, request_id)`; applying it again returns the
//!   first answer, updated to its final state (a queued request that was
//!   granted since answers with its grant). Entries are forgotten
//!   [`REQUEST_MEMORY_MS`] after they were made, or
//!   [`NODE_ID_MEMORY_MS`] (plus the wait) when the id was made by the node
//!   that took the call: only that node's own retries can repeat such an id.
//! - Limits enter through the log like time does: the node that takes a
//!   call stamps its configured [`Limits`] on the command, so every replica
//!   refuses or forgets alike. A new acquire that would take the locks held
//!   plus waiters past `max_locks` is refused (`capacity_exceeded`) and not
//!   remembered (it changed nothing, so a retry may apply it later); past
//!   `max_remembered` answers, the ones due to be forgotten soonest go
//!   first, except those of requests still waiting (bounded by `max_locks`),
//!   which a withdrawal must still find.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::deadlock::{self, Graph};

pub type Owner = String;
pub type Token = u64;
pub type WaitId = u64;

/// How long the answer to a request id is remembered for retries. Longer
/// than the longest wait, so a waiter's entry outlives the wait.
pub const REQUEST_MEMORY_MS: u64 = 10 * 60 * 1000;

/// How long the answer to a node-made request id is remembered after its
/// wait (if any) ends. A node repeats a write only within raft-core's retry
/// window (3 s, plus one forward timeout of 2 s), so 30 s covers every
/// repeat with room for clock skew between successive leaders. Keeping
/// these for [`REQUEST_MEMORY_MS`] made the table, and every snapshot, grow
/// by one answer per call for ten minutes: 8 s into a 16-client load run
/// the snapshot was already 36 MB.
pub const NODE_ID_MEMORY_MS: u64 = 30 * 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Exclusive,
    Shared,
}

impl Mode {
    fn compatible(self, other: Mode) -> bool {
        self == Mode::Shared && other == Mode::Shared
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub owner: Owner,
    pub mode: Mode,
    pub token: Token,
    pub acquired_at_ms: u64,
    pub expires_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiter {
    pub wait_id: WaitId,
    pub owner: Owner,
    pub mode: Mode,
    pub ttl_ms: u64,
    pub request_id: String,
    pub enqueued_at_ms: u64,
    pub deadline_ms: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Resource {
    holders: Vec<Hold>,
    queue: VecDeque<Waiter>,
}

impl Resource {
    fn is_empty(&self) -> bool {
        self.holders.is_empty() && self.queue.is_empty()
    }

    fn admits(&self, mode: Mode) -> bool {
        self.holders.iter().all(|h| mode.compatible(h.mode))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acquire {
    pub resource: String,
    pub owner: Owner,
    pub mode: Mode,
    pub ttl_ms: u64,
    pub wait_ms: u64,
    pub request_id: String,
    /// Only retries within [`NODE_ID_MEMORY_MS`] can repeat `request_id`:
    /// the node made it (the client sent none), or the client said it
    /// retries only that briefly (`retry_window_ms`). Its answer is
    /// remembered that long (plus the wait). Named as entries in the log
    /// have it.
    #[serde(rename = "node_made_id", default, skip_serializing_if = "is_false")]
    pub short_memory: bool,
    /// The taking node's limits (none in entries from before limits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub resource: String,
    pub owner: Owner,
    pub token: Token,
    pub request_id: Option<String>,
    /// Only retries within [`NODE_ID_MEMORY_MS`] can repeat `request_id`:
    /// the node made it (the client sent none), or the client said it
    /// retries only that briefly (`retry_window_ms`). Its answer is
    /// remembered that long (plus the wait). Named as entries in the log
    /// have it.
    #[serde(rename = "node_made_id", default, skip_serializing_if = "is_false")]
    pub short_memory: bool,
    /// The taking node's limits (none in entries from before limits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Renew {
    pub resource: String,
    pub owner: Owner,
    pub token: Token,
    pub ttl_ms: u64,
    pub request_id: Option<String>,
    /// Only retries within [`NODE_ID_MEMORY_MS`] can repeat `request_id`:
    /// the node made it (the client sent none), or the client said it
    /// retries only that briefly (`retry_window_ms`). Its answer is
    /// remembered that long (plus the wait). Named as entries in the log
    /// have it.
    #[serde(rename = "node_made_id", default, skip_serializing_if = "is_false")]
    pub short_memory: bool,
    /// The taking node's limits (none in entries from before limits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The memory bounds the node that took a call stamped on its command. In
/// the command, not in the table, so a node's configuration can change
/// without replicas disagreeing: each applies exactly what the log says.
/// Entries written before limits existed carry none and are unbounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Most locks held plus requests waiting, over all resources.
    pub max_locks: u64,
    /// Most remembered answers (see [`REQUEST_MEMORY_MS`]).
    pub max_remembered: u64,
}

/// How long an answer is remembered: see [`REQUEST_MEMORY_MS`] and
/// [`NODE_ID_MEMORY_MS`]. A queued request's entry outlives its wait, so
/// whatever settles the wait finds it.
fn memory_ms(short_memory: bool, wait_ms: u64) -> u64 {
    if short_memory {
        NODE_ID_MEMORY_MS + wait_ms
    } else {
        REQUEST_MEMORY_MS
    }
}

/// Withdraw a queued request whose caller stopped waiting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancel {
    pub owner: Owner,
    pub request_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    Acquire(Acquire),
    Release(Release),
    Renew(Renew),
    Cancel(Cancel),
    /// Advance time only (proposed by the leader at deadlines).
    Tick,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub resource: String,
    pub owner: Owner,
    pub mode: Mode,
    pub token: Token,
    pub expires_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Granted(Grant),
    Queued {
        wait_id: WaitId,
        resource: String,
    },
    Held {
        holders: Vec<Hold>,
    },
    Deadlock {
        cycle: Vec<Owner>,
    },
    WaitTimeout,
    Released,
    Renewed {
        expires_at_ms: u64,
    },
    NotHeld,
    TokenMismatch,
    OwnerMismatch,
    AlreadyHeld {
        token: Token,
    },
    AlreadyWaiting {
        wait_id: WaitId,
    },
    /// The `(owner, request_id)` answered a different request (another
    /// command, resource, mode or token); nothing was done.
    RequestIdReused,
    /// The locks held plus waiters are at `limit`; nothing was done.
    CapacityExceeded {
        limit: u64,
    },
    UnknownRequest,
    Ticked,
}

/// The result of applying one command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub outcome: Outcome,
    /// Other waiting requests settled by this command.
    pub settled: Vec<(WaitId, Outcome)>,
    /// Deadlocks this command's apply broke (for the event ring; not
    /// sent between nodes).
    #[serde(skip)]
    pub deadlocks: Vec<deadlock::Abort>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Remembered {
    outcome: Outcome,
    forget_at_ms: u64,
    /// [`Request::fingerprint`] of the request answered; 0 in snapshots
    /// from before it was kept, which matches any request.
    #[serde(default, skip_serializing_if = "is_zero")]
    request: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What makes two requests with one `(owner, request_id)` the same request:
/// a retry repeats them all; a different value means the id was reused.
enum Request<'a> {
    Acquire { resource: &'a str, mode: Mode },
    Release { resource: &'a str, token: Token },
    Renew { resource: &'a str, token: Token },
}

impl Request<'_> {
    /// FNV-1a over the fields: stable across builds and platforms, since
    /// it is kept in snapshots and every replica must compute the same.
    fn fingerprint(&self) -> u64 {
        let (kind, resource, detail) = match self {
            Request::Acquire { resource, mode } => {
                let mode = match mode {
                    Mode::Exclusive => 1,
                    Mode::Shared => 2,
                };
                (1u8, resource, mode)
            }
            Request::Release { resource, token } => (2, resource, *token),
            Request::Renew { resource, token } => (3, resource, *token),
        };
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let bytes = std::iter::once(kind)
            .chain(resource.bytes())
            .chain(std::iter::once(0xff))
            .chain(detail.to_le_bytes());
        for b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h.max(1)
    }
}

/// Counters kept in the replicated state (so every replica reports alike).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub grants: u64,
    /// Grants to a request that waited in the queue (a hand-off: after a
    /// release, an expiry or a withdrawal ahead of it); part of `grants`.
    /// Absent from snapshots taken before it was counted: 0.
    #[serde(default)]
    pub handoffs: u64,
    pub releases: u64,
    pub expirations: u64,
    pub wait_timeouts: u64,
    pub deadlocks: u64,
}

/// What `GET /api/lock/{resource}` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceView {
    pub resource: String,
    pub holders: Vec<Hold>,
    pub waiters: Vec<Waiter>,
}

/// For each wait-for edge, the waiting requests (wait id, resource) behind it.
type EdgeCauses = BTreeMap<(Owner, Owner), Vec<(WaitId, String)>>;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LockTable {
    resources: BTreeMap<String, Resource>,
    /// Time → resources with a lease or wait ending then. Exact: an entry
    /// leaves when its hold or waiter does (a snapshot from before this was
    /// kept exact may hold stale ones; visiting those is a no-op).
    deadlines: BTreeMap<u64, BTreeSet<String>>,
    /// Resources with a non-empty queue (the wait-for graph's sources).
    contended: BTreeSet<String>,
    /// Remembered answers, by owner and request id. Under load these are
    /// nearly all of the table (hundreds of thousands), so they live in
    /// persistent maps, which share their nodes between copies: a snapshot
    /// copies the table in O(1) under the state lock and serializes it
    /// elsewhere (see `machine.rs`). While that copy lives, the first change
    /// to a node copies the node; with `Arc`ed ids and answers that copy is
    /// reference counts, not allocations. Same JSON as the `BTreeMap`s they
    /// replaced, so older snapshots load. Hash maps, not ordered ones:
    /// nothing walks them in order (the `forget` set gives the order), and
    /// a lookup in an ordered map of request ids, which share long
    /// prefixes, was a binary search of string compares on every command
    /// (`memcmp` was the largest single item of a member's profile).
    requests: imbl::HashMap<Owner, imbl::HashMap<Arc<str>, Arc<Remembered>>>,
    /// (forget at, owner, request id), one per remembered answer, in time
    /// order (memories differ in length, so insertion order is not).
    forget: imbl::OrdSet<(u64, Arc<str>, Arc<str>)>,
    next_token: Token,
    counters: Counters,
    /// Holds plus waiters over all resources, kept in step with them so the
    /// `max_locks` check is O(1). Not in snapshots: [`LockTable::recount`]
    /// derives it after a load.
    #[serde(skip)]
    placed: u64,
    /// Deadlocks broken during the current apply, handed out with its
    /// [`Applied`] (always empty between applies).
    #[serde(skip)]
    aborts: Vec<deadlock::Abort>,
}

impl LockTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Apply one command at log `index` with the leader's clock `now`.
    pub fn apply(&mut self, cmd: Command, index: u64, now: u64) -> Applied {
        let mut settled = Vec::new();
        self.advance(now, &mut settled);
        self.forget_old(now);
        let outcome = match cmd {
            Command::Acquire(a) => self.acquire(a, index, now, &mut settled),
            Command::Release(r) => self.release(r, now, &mut settled),
            Command::Renew(r) => self.renew(r, now),
            Command::Cancel(c) => self.cancel(c, now, &mut settled),
            Command::Tick => Outcome::Ticked,
        };
        let mut deadlocks = std::mem::take(&mut self.aborts);
        for abort in &mut deadlocks {
            abort.index = index;
        }
        Applied {
            outcome,
            settled,
            deadlocks,
        }
    }

    /// The earliest time at which a lease or wait ends, if any.
    pub fn next_deadline(&self) -> Option<u64> {
        self.deadlines.keys().next().copied()
    }

    pub fn view(&self, resource: &str) -> ResourceView {
        let r = self.resources.get(resource);
        ResourceView {
            resource: resource.to_string(),
            holders: r.map(|r| r.holders.clone()).unwrap_or_default(),
            waiters: r
                .map(|r| r.queue.iter().cloned().collect())
                .unwrap_or_default(),
        }
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// (resources, holds, waiters) right now.
    pub fn sizes(&self) -> (usize, usize, usize) {
        let holds = self.resources.values().map(|r| r.holders.len()).sum();
        let waiters = self.resources.values().map(|r| r.queue.len()).sum();
        (self.resources.len(), holds, waiters)
    }

    /// The last token handed out (0 before the first grant).
    pub fn last_token(&self) -> Token {
        self.next_token
    }

    /// Locks held plus requests waiting: what `max_locks` bounds.
    pub fn placed(&self) -> u64 {
        self.placed
    }

    /// Answers remembered for retries: what `max_remembered` bounds.
    pub fn remembered_count(&self) -> usize {
        self.forget.len()
    }

    /// The table as loaded from a snapshot, with the counts that are not
    /// kept in it derived again.
    pub fn recounted(mut self) -> Self {
        let (_, holds, waiters) = self.sizes();
        self.placed = (holds + waiters) as u64;
        self
    }

    fn remembered(&self, owner: &str, request_id: &str) -> Option<&Remembered> {
        self.requests
            .get(owner)
            .and_then(|m| m.get(request_id))
            .map(|r| &**r)
    }

    /// The answer to a retry of `request`, or [`Outcome::RequestIdReused`]
    /// when its id answered something else; `None` for a new request.
    fn replay(&self, owner: &str, request_id: &str, request: &Request) -> Option<Outcome> {
        let r = self.remembered(owner, request_id)?;
        Some(if r.request == 0 || r.request == request.fingerprint() {
            r.outcome.clone()
        } else {
            Outcome::RequestIdReused
        })
    }

    /// Remember the answer to a new request for `memory_ms`; a request
    /// already remembered (a retry) keeps its entry. Past `limits`'
    /// `max_remembered`, older answers make room.
    #[allow(clippy::too_many_arguments)]
    fn remember(
        &mut self,
        owner: &str,
        request_id: &str,
        request: &Request,
        outcome: Outcome,
        now: u64,
        memory_ms: u64,
        limits: Option<Limits>,
    ) {
        if matches!(outcome, Outcome::CapacityExceeded { .. }) {
            // Nothing was done: a retry may be applied once there is room.
            return;
        }
        let m = self.requests.entry(owner.to_string()).or_default();
        if m.contains_key(request_id) {
            return;
        }
        let forget_at_ms = now + memory_ms;
        let request_id: Arc<str> = request_id.into();
        m.insert(
            request_id.clone(),
            Arc::new(Remembered {
                outcome,
                forget_at_ms,
                request: request.fingerprint(),
            }),
        );
        self.forget.insert((forget_at_ms, owner.into(), request_id));
        if let Some(l) = limits {
            self.bound_remembered(l.max_remembered);
        }
    }

    /// Forget answers until at most `max` are left, those due to be
    /// forgotten soonest first. A waiting request's answer stays: its
    /// withdrawal (`Cancel`) and its settlement look it up, and waiters are
    /// bounded by `max_locks` anyway. A retry of a forgotten request is
    /// applied as a new one (see the crate README).
    fn bound_remembered(&mut self, max: u64) {
        let over = (self.forget.len() as u64).saturating_sub(max);
        if over == 0 {
            return;
        }
        let victims: Vec<(u64, Arc<str>, Arc<str>)> = self
            .forget
            .iter()
            .filter(|(_, owner, rid)| {
                !matches!(
                    self.remembered(owner, rid).map(|r| &r.outcome),
                    Some(Outcome::Queued { .. })
                )
            })
            .take(over as usize)
            .cloned()
            .collect();
        for victim in victims {
            self.forget.remove(&victim);
            self.drop_remembered(&victim.1, &victim.2);
        }
    }

    fn drop_remembered(&mut self, owner: &str, request_id: &str) {
        if let Some(m) = self.requests.get_mut(owner) {
            m.remove(request_id);
            if m.is_empty() {
                self.requests.remove(owner);
            }
        }
    }

    /// A queued request settled: its remembered answer becomes the final
    /// one, keeping its forget time (which is past the wait's end).
    fn settle_remembered(&mut self, owner: &str, request_id: &str, outcome: Outcome) {
        if let Some(r) = self
            .requests
            .get_mut(owner)
            .and_then(|m| m.get_mut(request_id))
        {
            Arc::make_mut(r).outcome = outcome;
        }
    }

    fn forget_old(&mut self, now: u64) {
        while self.forget.get_min().is_some_and(|(at, _, _)| *at <= now) {
            let Some((_, owner, rid)) = self.forget.remove_min() else {
                break;
            };
            self.drop_remembered(&owner, &rid);
        }
    }

    /// `n` holds or waiters left. Saturating: a miscount must not panic
    /// every replica at the same index (the goldenscripts check the count).
    fn unplace(&mut self, n: u64) {
        debug_assert!(self.placed >= n, "placed {} < {n}", self.placed);
        self.placed = self.placed.saturating_sub(n);
    }

    fn add_deadline(&mut self, at: u64, resource: &str) {
        self.deadlines
            .entry(at)
            .or_default()
            .insert(resource.to_string());
    }

    /// A hold or waiter of `resource` with something due at `at` is gone:
    /// drop the deadline unless another one there is due then too. Keeps
    /// the index exact, so the leader never proposes a `Tick` for a lease
    /// that was released or renewed or a wait that ended early (a stale
    /// deadline per released lock had the ticker proposing empty ticks
    /// for a whole TTL after a burst of traffic).
    fn drop_deadline(&mut self, at: u64, resource: &str) {
        let still_due = self.resources.get(resource).is_some_and(|r| {
            r.holders.iter().any(|h| h.expires_at_ms == at)
                || r.queue.iter().any(|w| w.deadline_ms == at)
        });
        if still_due {
            return;
        }
        if let Some(names) = self.deadlines.get_mut(&at) {
            names.remove(resource);
            if names.is_empty() {
                self.deadlines.remove(&at);
            }
        }
    }

    /// Drop ended leases and waits, then grant and re-check deadlocks.
    fn advance(&mut self, now: u64, settled: &mut Vec<(WaitId, Outcome)>) {
        let mut due = BTreeSet::new();
        while let Some(entry) = self.deadlines.first_entry() {
            if *entry.key() > now {
                break;
            }
            due.extend(entry.remove());
        }
        if due.is_empty() {
            return;
        }
        for name in &due {
            let Some(r) = self.resources.get_mut(name) else {
                continue;
            };
            let before = r.holders.len();
            r.holders.retain(|h| h.expires_at_ms > now);
            let expired = (before - r.holders.len()) as u64;
            self.counters.expirations += expired;
            self.unplace(expired);
            self.grant_from_queue(name, now, settled);
        }
        self.break_deadlocks(now, settled);
    }

    /// Answer waiters whose wait ended, then grant from the head of the
    /// queue while compatible. Removes the resource when it is empty.
    fn grant_from_queue(&mut self, name: &str, now: u64, settled: &mut Vec<(WaitId, Outcome)>) {
        let Some(r) = self.resources.get_mut(name) else {
            return;
        };
        let mut timed_out = Vec::new();
        r.queue.retain(|w| {
            if w.deadline_ms <= now {
                timed_out.push(w.clone());
                false
            } else {
                true
            }
        });
        let mut granted = Vec::new();
        while let Some(head) = r.queue.front() {
            if !r.admits(head.mode) {
                break;
            }
            let Some(w) = r.queue.pop_front() else {
                break;
            };
            self.next_token += 1;
            let hold = Hold {
                owner: w.owner.clone(),
                mode: w.mode,
                token: self.next_token,
                acquired_at_ms: now,
                expires_at_ms: now + w.ttl_ms,
            };
            r.holders.push(hold.clone());
            granted.push((w, hold));
        }
        let queue_empty = r.queue.is_empty();
        let empty = r.is_empty();
        if queue_empty {
            self.contended.remove(name);
        }
        if empty {
            self.resources.remove(name);
        }
        self.unplace(timed_out.len() as u64);
        for w in timed_out {
            self.counters.wait_timeouts += 1;
            self.settle_remembered(&w.owner, &w.request_id, Outcome::WaitTimeout);
            settled.push((w.wait_id, Outcome::WaitTimeout));
        }
        for (w, hold) in granted {
            self.counters.grants += 1;
            self.counters.handoffs += 1;
            self.add_deadline(hold.expires_at_ms, name);
            self.drop_deadline(w.deadline_ms, name);
            let outcome = Outcome::Granted(Grant {
                resource: name.to_string(),
                owner: hold.owner,
                mode: hold.mode,
                token: hold.token,
                expires_at_ms: hold.expires_at_ms,
            });
            self.settle_remembered(&w.owner, &w.request_id, outcome.clone());
            settled.push((w.wait_id, outcome));
        }
    }

    /// The wait-for graph, with the waiters behind each edge.
    fn wait_for_graph(&self) -> (Graph, EdgeCauses) {
        let mut graph = Graph::new();
        let mut why = EdgeCauses::new();
        for name in &self.contended {
            let Some(r) = self.resources.get(name) else {
                continue;
            };
            for (i, w) in r.queue.iter().enumerate() {
                let blockers = r
                    .holders
                    .iter()
                    .filter(|h| !w.mode.compatible(h.mode))
                    .map(|h| &h.owner)
                    .chain(
                        r.queue
                            .iter()
                            .take(i)
                            .filter(|a| !w.mode.compatible(a.mode))
                            .map(|a| &a.owner),
                    );
                for b in blockers {
                    if *b == w.owner {
                        continue;
                    }
                    graph.entry(w.owner.clone()).or_default().insert(b.clone());
                    why.entry((w.owner.clone(), b.clone()))
                        .or_default()
                        .push((w.wait_id, name.clone()));
                }
            }
        }
        (graph, why)
    }

    /// Whether the wait-for graph can hold a cycle at all, without building
    /// it. Every edge lives in one contended resource and points from a
    /// waiter to an owner placed before it there, so the edges of one
    /// resource are acyclic; a cycle needs an owner that is placed (holding
    /// or waiting) in two contended resources. With none, there is nothing
    /// to search: this keeps the common case (many waiters, each waiting for
    /// one thing) linear, with no graph built.
    fn may_deadlock(&self) -> bool {
        let mut seen: HashMap<&str, &str> = HashMap::new();
        for name in &self.contended {
            let Some(r) = self.resources.get(name) else {
                continue;
            };
            let owners = r.holders.iter().map(|h| h.owner.as_str());
            for owner in owners.chain(r.queue.iter().map(|w| w.owner.as_str())) {
                if *seen.entry(owner).or_insert(name.as_str()) != name.as_str() {
                    return true;
                }
            }
        }
        false
    }

    /// Abort the youngest waiter of each cycle until none is left.
    fn break_deadlocks(&mut self, now: u64, settled: &mut Vec<(WaitId, Outcome)>) {
        loop {
            if !self.may_deadlock() {
                return;
            }
            let (graph, why) = self.wait_for_graph();
            let Some(cycle) = deadlock::find_cycle(&graph) else {
                return;
            };
            let victim = (0..cycle.len())
                .flat_map(|i| {
                    let edge = (cycle[i].clone(), cycle[(i + 1) % cycle.len()].clone());
                    why.get(&edge).cloned().unwrap_or_default()
                })
                .max_by_key(|(id, _)| *id);
            let Some((wait_id, resource)) = victim else {
                return;
            };
            let Some(r) = self.resources.get_mut(&resource) else {
                return;
            };
            let Some(pos) = r.queue.iter().position(|w| w.wait_id == wait_id) else {
                return;
            };
            let Some(w) = r.queue.remove(pos) else {
                return;
            };
            self.unplace(1);
            self.drop_deadline(w.deadline_ms, &resource);
            self.counters.deadlocks += 1;
            let edges = (0..cycle.len())
                .map(|i| {
                    let edge = (cycle[i].clone(), cycle[(i + 1) % cycle.len()].clone());
                    let mut on: Vec<String> = why
                        .get(&edge)
                        .into_iter()
                        .flatten()
                        .map(|(_, r)| r.clone())
                        .collect();
                    on.sort();
                    on.dedup();
                    (edge.0, edge.1, on)
                })
                .collect();
            self.aborts.push(deadlock::Abort {
                cycle: cycle.clone(),
                edges,
                victim: w.owner.clone(),
                resource: resource.clone(),
                wait_id,
                at_ms: now,
                index: 0,
            });
            let outcome = Outcome::Deadlock {
                cycle: cycle.clone(),
            };
            self.settle_remembered(&w.owner, &w.request_id, outcome.clone());
            settled.push((wait_id, outcome));
            self.grant_from_queue(&resource, now, settled);
        }
    }

    fn acquire(
        &mut self,
        a: Acquire,
        index: u64,
        now: u64,
        settled: &mut Vec<(WaitId, Outcome)>,
    ) -> Outcome {
        let request = Request::Acquire {
            resource: &a.resource,
            mode: a.mode,
        };
        if let Some(prev) = self.replay(&a.owner, &a.request_id, &request) {
            return prev;
        }
        let full = a
            .limits
            .map(|l| l.max_locks)
            .filter(|max| self.placed >= *max);
        let r = self.resources.entry(a.resource.clone()).or_default();
        let grantable = r.queue.is_empty() && r.admits(a.mode);
        let outcome = if let Some(h) = r.holders.iter().find(|h| h.owner == a.owner) {
            Outcome::AlreadyHeld { token: h.token }
        } else if let Some(w) = r.queue.iter().find(|w| w.owner == a.owner) {
            Outcome::AlreadyWaiting { wait_id: w.wait_id }
        } else if let Some(limit) = full.filter(|_| grantable || a.wait_ms > 0) {
            // Only a request that would hold or wait is refused: one that
            // is answered `lock_held` at once places nothing.
            Outcome::CapacityExceeded { limit }
        } else if grantable {
            self.placed += 1;
            self.next_token += 1;
            let hold = Hold {
                owner: a.owner.clone(),
                mode: a.mode,
                token: self.next_token,
                acquired_at_ms: now,
                expires_at_ms: now + a.ttl_ms,
            };
            r.holders.push(hold.clone());
            self.counters.grants += 1;
            self.add_deadline(hold.expires_at_ms, &a.resource);
            Outcome::Granted(Grant {
                resource: a.resource.clone(),
                owner: a.owner.clone(),
                mode: a.mode,
                token: hold.token,
                expires_at_ms: hold.expires_at_ms,
            })
        } else if a.wait_ms == 0 {
            Outcome::Held {
                holders: r.holders.clone(),
            }
        } else {
            let deadline_ms = now + a.wait_ms;
            self.placed += 1;
            r.queue.push_back(Waiter {
                wait_id: index,
                owner: a.owner.clone(),
                mode: a.mode,
                ttl_ms: a.ttl_ms,
                request_id: a.request_id.clone(),
                enqueued_at_ms: now,
                deadline_ms,
            });
            self.contended.insert(a.resource.clone());
            self.add_deadline(deadline_ms, &a.resource);
            self.remember(
                &a.owner,
                &a.request_id,
                &request,
                Outcome::Queued {
                    wait_id: index,
                    resource: a.resource.clone(),
                },
                now,
                memory_ms(a.short_memory, a.wait_ms),
                a.limits,
            );
            self.break_deadlocks(now, settled);
            // If this very request was the victim, answer with its fate.
            if let Some(pos) = settled.iter().position(|(id, _)| *id == index) {
                let (_, fate) = settled.remove(pos);
                return fate;
            }
            return Outcome::Queued {
                wait_id: index,
                resource: a.resource,
            };
        };
        if self
            .resources
            .get(&a.resource)
            .is_some_and(Resource::is_empty)
        {
            self.resources.remove(&a.resource);
        }
        self.remember(
            &a.owner,
            &a.request_id,
            &request,
            outcome.clone(),
            now,
            memory_ms(a.short_memory, 0),
            a.limits,
        );
        outcome
    }

    /// Find `owner`'s hold with `token`, or say why not.
    fn find_hold(&mut self, resource: &str, owner: &str, token: Token) -> Result<usize, Outcome> {
        let Some(r) = self.resources.get(resource) else {
            return Err(Outcome::NotHeld);
        };
        if let Some(i) = r
            .holders
            .iter()
            .position(|h| h.owner == owner && h.token == token)
        {
            return Ok(i);
        }
        if r.holders.iter().any(|h| h.owner == owner) {
            return Err(Outcome::TokenMismatch);
        }
        if r.holders.iter().any(|h| h.token == token) {
            return Err(Outcome::OwnerMismatch);
        }
        Err(Outcome::NotHeld)
    }

    fn release(&mut self, rel: Release, now: u64, settled: &mut Vec<(WaitId, Outcome)>) -> Outcome {
        let request = Request::Release {
            resource: &rel.resource,
            token: rel.token,
        };
        if let Some(rid) = &rel.request_id {
            if let Some(prev) = self.replay(&rel.owner, rid, &request) {
                return prev;
            }
        }
        let outcome = match self.find_hold(&rel.resource, &rel.owner, rel.token) {
            Ok(i) => {
                if let Some(r) = self.resources.get_mut(&rel.resource) {
                    let hold = r.holders.remove(i);
                    self.unplace(1);
                    self.drop_deadline(hold.expires_at_ms, &rel.resource);
                }
                self.counters.releases += 1;
                self.grant_from_queue(&rel.resource, now, settled);
                self.break_deadlocks(now, settled);
                Outcome::Released
            }
            Err(why) => why,
        };
        if let Some(rid) = &rel.request_id {
            self.remember(
                &rel.owner,
                rid,
                &request,
                outcome.clone(),
                now,
                memory_ms(rel.short_memory, 0),
                rel.limits,
            );
        }
        outcome
    }

    fn renew(&mut self, ren: Renew, now: u64) -> Outcome {
        let request = Request::Renew {
            resource: &ren.resource,
            token: ren.token,
        };
        if let Some(rid) = &ren.request_id {
            if let Some(prev) = self.replay(&ren.owner, rid, &request) {
                return prev;
            }
        }
        let outcome = match self.find_hold(&ren.resource, &ren.owner, ren.token) {
            Ok(i) => {
                let expires_at_ms = now + ren.ttl_ms;
                if let Some(r) = self.resources.get_mut(&ren.resource) {
                    let was = std::mem::replace(&mut r.holders[i].expires_at_ms, expires_at_ms);
                    self.drop_deadline(was, &ren.resource);
                }
                self.add_deadline(expires_at_ms, &ren.resource);
                Outcome::Renewed { expires_at_ms }
            }
            Err(why) => why,
        };
        if let Some(rid) = &ren.request_id {
            self.remember(
                &ren.owner,
                rid,
                &request,
                outcome.clone(),
                now,
                memory_ms(ren.short_memory, 0),
                ren.limits,
            );
        }
        outcome
    }

    fn cancel(&mut self, c: Cancel, now: u64, settled: &mut Vec<(WaitId, Outcome)>) -> Outcome {
        let Some(prev) = self
            .remembered(&c.owner, &c.request_id)
            .map(|r| r.outcome.clone())
        else {
            return Outcome::UnknownRequest;
        };
        let Outcome::Queued { wait_id, resource } = prev else {
            // Already settled (granted, timed out, aborted): that is the answer.
            return prev;
        };
        if let Some(r) = self.resources.get_mut(&resource) {
            if let Some(pos) = r.queue.iter().position(|w| w.wait_id == wait_id) {
                if let Some(w) = r.queue.remove(pos) {
                    self.unplace(1);
                    self.drop_deadline(w.deadline_ms, &resource);
                }
            }
        }
        self.counters.wait_timeouts += 1;
        self.settle_remembered(&c.owner, &c.request_id, Outcome::WaitTimeout);
        // Other handlers of this request (a retry on another connection or
        // node) learn it now, not when their own wait runs out.
        settled.push((wait_id, Outcome::WaitTimeout));
        // Removing a waiter can let the ones behind it go.
        self.grant_from_queue(&resource, now, settled);
        self.break_deadlocks(now, settled);
        Outcome::WaitTimeout
    }
}

mod list;

#[cfg(test)]
mod tests;
