//! One queue node: placement on the ring, forwarding to owners, long polls,
//! the depth refresh of its metrics, the pages of `GET /api/queues` and
//! the ring of recent events (`GET /api/events`: dead-lettering and
//! redrives, the newest 256, in memory). The HTTP handlers (`http.rs`) call
//! into this.
//!
//! Placement: the owner of a queue is `common::Ring::owner(queue)` over the
//! current member list (static addresses or re-resolved DNS names, via
//! `common::discovery`). A node asked about a queue it does not own forwards
//! the request to the owner over HTTP (marked with [`FORWARDED_HEADER`], so
//! the owner serves it without forwarding again) and relays the answer.
//!
//! When the owner cannot be reached:
//! - connection refused / unreachable (the request certainly did not
//!   arrive): with the Redis backend this node serves the queue itself —
//!   the state is in Redis and every step is an atomic script, so two nodes
//!   serving one queue cannot lose or double-ack a message; with the
//!   embedded backend it answers 503 `owner_unavailable` (the queue's data
//!   is on the owner's disk);
//! - timeout after sending: 503 `owner_unavailable` on either backend,
//!   because the owner may have applied the request and repeating it here
//!   could enqueue twice.
//!
//! Long polls wait on a per-queue `tokio::sync::Notify` that enqueue, nack
//! and redrive on this node fire, and otherwise sleep until the store's
//! `next_wake_ms` (a delayed message becoming ready, a visibility ending),
//! capped at [`LONG_POLL_RECHECK`] in case another node (during a membership
//! change) enqueued to the same queue. There is no tight polling.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api::events::EventRing;
use api::EventKind;
use common::discovery::Members;
use common::{now_ms, Ring};
use futures::{StreamExt, TryStreamExt};
use tokio::sync::Notify;

use crate::delivery::{Delivery, Events, QueueStats};
use crate::error::{Error, Result};
use crate::limit::{Limits, StoreLimits, Usage};
use crate::metrics::QueueMetrics;
use crate::store::QueueStore;

/// Header a node sets on a request it forwards to the queue's owner.
pub const FORWARDED_HEADER: &str = "x-queue-forwarded-by";
/// Longest a long poll sleeps without re-checking the store, for enqueues
/// that reached the queue through another node.
pub const LONG_POLL_RECHECK: Duration = Duration::from_secs(1);
/// Shortest sleep between two checks of one long poll.
const MIN_POLL_SLEEP: Duration = Duration::from_millis(5);
/// After a connection to an owner fails, how long it is treated as down
/// without trying again (so, on a network where connects to a dead host
/// hang until the timeout, only one request per period pays that).
pub const OWNER_DOWN_BACKOFF: Duration = Duration::from_secs(2);
/// How often the depth gauges are recomputed.
pub const DEPTH_REFRESH: Duration = Duration::from_secs(5);
/// Most queues summed into the depth gauges per refresh.
const DEPTH_MAX_QUEUES: usize = 10_000;
/// Queues whose counts one `GET /api/queues` page reads at a time (each
/// is one store step: a Lua script on Redis).
const LIST_CONCURRENCY: usize = 8;
/// Most message ids a redrive event keeps.
const EVENT_IDS: usize = 100;

/// An owner's answer to a forwarded request, as this node relays it.
#[derive(Debug)]
pub struct Relayed {
    pub status: u16,
    /// Kept so a client learns when to retry a full queue whichever node
    /// it asked.
    pub retry_after: Option<reqwest::header::HeaderValue>,
    pub body: bytes::Bytes,
}

/// Where a request for a queue should be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Local,
    Forward(String),
}

pub struct Node {
    pub advertise: String,
    pub members: Members,
    ring: Mutex<(Arc<Vec<String>>, Arc<Ring>)>,
    pub store: Arc<dyn QueueStore>,
    pub metrics: QueueMetrics,
    notifiers: Mutex<HashMap<String, Arc<Notify>>>,
    /// Owners whose connection failed, until when they count as down.
    down: Mutex<HashMap<String, Instant>>,
    pub http: reqwest::Client,
    pub token: common::server::ClusterToken,
    pub forward_timeout: Duration,
    /// The limits the store was opened with.
    pub limits: StoreLimits,
    /// The owned queue nearest its limits at the last depth refresh.
    fullest: Mutex<Option<(String, Usage)>>,
    /// Recent dead-letterings and redrives (`GET /api/events`).
    pub events: EventRing,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("advertise", &self.advertise)
            .finish()
    }
}

impl Node {
    pub fn new(
        advertise: String,
        members: Members,
        store: Arc<dyn QueueStore>,
        metrics: QueueMetrics,
        token: common::server::ClusterToken,
        forward_timeout: Duration,
        limits: StoreLimits,
    ) -> Self {
        let cur = members.current();
        let ring = Arc::new(Ring::new(cur.iter().cloned()));
        let http = reqwest::Client::builder()
            .connect_timeout(forward_timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        let node_limits = store.node_usage().map(|_| limits.node);
        metrics.set_limits(limits.queue, node_limits);
        Self {
            advertise,
            members,
            ring: Mutex::new((cur, ring)),
            store,
            metrics,
            notifiers: Mutex::new(HashMap::new()),
            down: Mutex::new(HashMap::new()),
            http,
            token,
            forward_timeout,
            limits,
            fullest: Mutex::new(None),
            events: EventRing::default(),
        }
    }

    /// Count what a store step did to `queue` (expiries, dead letters), and
    /// keep dead-lettering in the event ring.
    pub fn record(&self, queue: &str, events: Events) {
        self.metrics.record(events);
        if events.dead_lettered > 0 {
            self.push_event(EventKind::DeadLettered, queue, events.dead_lettered, &[]);
        }
    }

    /// Keep a redrive of `ids` from `queue` in the event ring.
    pub fn redriven(&self, queue: &str, ids: &[String]) {
        if !ids.is_empty() {
            self.push_event(EventKind::Redrive, queue, ids.len() as u64, ids);
        }
    }

    fn push_event(&self, kind: EventKind, queue: &str, count: u64, ids: &[String]) {
        let what = match kind {
            EventKind::Redrive => "redriven to ready",
            _ => "dead-lettered",
        };
        self.events.push(api::Event {
            at_ms: now_ms(),
            service: "queue".into(),
            node: self.advertise.clone(),
            kind,
            summary: format!("{count} message(s) of {queue} {what}"),
            key: None,
            deadlock: None,
            leader: None,
            queue: Some(api::QueueEvent {
                queue: queue.to_string(),
                count,
                ids: ids.iter().take(EVENT_IDS).cloned().collect(),
            }),
        });
    }

    /// One page of the queues this node owns on its ring (sorted by name,
    /// after `page.after`, starting with `page.prefix`) with their counts,
    /// and whether more follow. The store walks its names in bounded steps
    /// ([`QueueStore::queue_page`]); the counts are read
    /// a few queues at a time (`LIST_CONCURRENCY`).
    pub async fn list(&self, page: &api::limits::Page) -> Result<(Vec<api::QueueStats>, bool)> {
        let owned = |q: &str| self.route(q, false) == Route::Local;
        let (names, more) = self
            .timed("list", self.store.queue_page(page, &owned))
            .await?;
        let stats = futures::stream::iter(names.into_iter().map(|q| async move {
            let (s, ev) = self.timed("stats", self.store.stats(&q, now_ms())).await?;
            self.record(&q, ev);
            Ok::<_, crate::Error>(api::QueueStats {
                node: Some(self.advertise.clone()),
                ready: s.ready,
                delayed: s.delayed,
                in_flight: s.in_flight,
                dead_lettered: s.dead_lettered,
                expired_total: s.expired_total,
                queue: q,
            })
        }))
        .buffered(LIST_CONCURRENCY)
        .try_collect()
        .await?;
        Ok((stats, more))
    }

    /// The per-node limits, if the store enforces them (embedded only).
    pub fn node_limits(&self) -> Option<Limits> {
        self.store.node_usage().map(|_| self.limits.node)
    }

    /// What the node stores (embedded store; `None` with Redis), with its
    /// gauges brought up to date.
    pub fn node_usage(&self) -> Option<Usage> {
        let u = self.store.node_usage()?;
        self.metrics.set_stored("node", u);
        Some(u)
    }

    /// The owned queue nearest its limits at the last depth refresh.
    pub fn fullest_queue(&self) -> Option<(String, Usage)> {
        self.fullest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The ring over the current members (rebuilt when they change).
    pub fn ring(&self) -> Arc<Ring> {
        let cur = self.members.current();
        let mut cached = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        if !Arc::ptr_eq(&cached.0, &cur) {
            let ring = Arc::new(Ring::new(cur.iter().cloned()));
            *cached = (cur, ring);
        }
        cached.1.clone()
    }

    /// Who serves `queue`: this node when it owns it, when the member list
    /// is empty, or when the request was already forwarded once.
    pub fn route(&self, queue: &str, forwarded: bool) -> Route {
        if forwarded {
            return Route::Local;
        }
        match self.ring().owner(queue) {
            Some(owner) if owner != self.advertise => Route::Forward(owner.to_string()),
            _ => Route::Local,
        }
    }

    /// Time one storage call into the latency histogram.
    pub async fn timed<T>(
        &self,
        op: &'static str,
        f: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let start = Instant::now();
        let out = f.await;
        self.metrics.observe_storage(op, start.elapsed());
        out
    }

    fn notifier(&self, queue: &str) -> Arc<Notify> {
        let mut map = self.notifiers.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(queue.to_string()).or_default().clone()
    }

    /// Drop the notifier of a queue nobody waits on any more.
    fn release_notifier(&self, queue: &str, n: Arc<Notify>) {
        let mut map = self.notifiers.lock().unwrap_or_else(|e| e.into_inner());
        // One reference in the map, one here: no other waiter.
        if Arc::strong_count(&n) == 2 {
            map.remove(queue);
        }
    }

    /// Wake this node's long polls on `queue`.
    pub fn wake(&self, queue: &str) {
        let n = self
            .notifiers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(queue)
            .cloned();
        if let Some(n) = n {
            n.notify_waiters();
        }
    }

    /// Dequeue, waiting up to `wait` for something to arrive.
    pub async fn dequeue(
        &self,
        queue: &str,
        max: usize,
        visibility_ms: u64,
        wait: Duration,
    ) -> Result<Vec<Delivery>> {
        let deadline = tokio::time::Instant::now() + wait;
        let notify = self.notifier(queue);
        let out = async {
            loop {
                let notified = notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let res = self
                    .timed(
                        "dequeue",
                        self.store.dequeue(queue, max, visibility_ms, now_ms()),
                    )
                    .await?;
                self.record(queue, res.events);
                let now = tokio::time::Instant::now();
                if !res.deliveries.is_empty() || now >= deadline {
                    let n = res.deliveries.len() as u64;
                    self.metrics.delivered.inc_by(n);
                    self.metrics
                        .redelivered
                        .inc_by(res.deliveries.iter().filter(|d| d.attempts > 1).count() as u64);
                    return Ok(res.deliveries);
                }
                let mut until = deadline.min(now + LONG_POLL_RECHECK);
                if let Some(wake) = res.next_wake_ms {
                    let in_ms = Duration::from_millis(wake.saturating_sub(now_ms()));
                    until = until.min(now + in_ms.max(MIN_POLL_SLEEP));
                }
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep_until(until) => {}
                }
            }
        }
        .await;
        self.release_notifier(queue, notify);
        out
    }

    /// Recompute the depth gauges over the queues this node owns, and find
    /// the one nearest its limits.
    pub async fn refresh_depth(&self) -> Result<QueueStats> {
        let queues = self.store.queues().await?;
        let mut sum = QueueStats::default();
        let mut fullest: Option<(f64, &String, Usage)> = None;
        let limits = self.limits.queue;
        for q in queues.iter().take(DEPTH_MAX_QUEUES) {
            if self.route(q, false) != Route::Local {
                continue;
            }
            let (s, ev) = self.timed("stats", self.store.stats(q, now_ms())).await?;
            self.record(q, ev);
            let usage = Usage {
                messages: s.messages(),
                bytes: s.bytes,
            };
            let fill = (usage.messages as f64 / limits.max_messages as f64)
                .max(usage.bytes as f64 / limits.max_bytes as f64);
            if fullest.as_ref().is_none_or(|(f, _, _)| fill > *f) {
                fullest = Some((fill, q, usage));
            }
            sum.ready += s.ready;
            sum.delayed += s.delayed;
            sum.in_flight += s.in_flight;
            sum.dead_lettered += s.dead_lettered;
            sum.expired_total += s.expired_total;
            sum.bytes += s.bytes;
        }
        self.metrics.set_depth(&sum);
        let fullest = fullest.map(|(_, q, u)| (q.clone(), u));
        self.metrics.set_stored(
            "fullest_queue",
            fullest.as_ref().map(|(_, u)| *u).unwrap_or_default(),
        );
        *self.fullest.lock().unwrap_or_else(|e| e.into_inner()) = fullest;
        self.node_usage();
        Ok(sum)
    }

    /// The owner is known down: serve here when the store is shared, else
    /// refuse.
    fn owner_down(&self, owner: &str, reason: String) -> Result<Option<Relayed>> {
        if self.store.shared() {
            self.metrics.owner_fallbacks.inc();
            Ok(None)
        } else {
            Err(Error::OwnerUnavailable {
                owner: owner.to_string(),
                reason,
            })
        }
    }

    /// Forward a request to `owner`. `Ok(None)` means "serve it here"
    /// (owner refused the connection and the store is shared).
    pub async fn forward(
        &self,
        owner: &str,
        method: reqwest::Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
        extra_timeout: Duration,
    ) -> Result<Option<Relayed>> {
        let down_until = self
            .down
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(owner)
            .copied();
        if down_until.is_some_and(|t| t > Instant::now()) {
            return self.owner_down(owner, "unreachable moments ago".into());
        }
        let url = format!("http://{owner}{path_and_query}");
        let mut req = self
            .http
            .request(method, &url)
            .header(FORWARDED_HEADER, &self.advertise)
            .timeout(self.forward_timeout + extra_timeout);
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b);
        }
        req = self.token.apply(req);
        self.metrics.forwarded.inc();
        let sent = async {
            let resp = req.send().await?;
            let status = resp.status().as_u16();
            let retry_after = resp.headers().get(reqwest::header::RETRY_AFTER).cloned();
            let body = resp.bytes().await?;
            Ok::<_, reqwest::Error>(Relayed {
                status,
                retry_after,
                body,
            })
        }
        .await;
        match sent {
            Ok(r) => {
                self.down
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(owner);
                Ok(Some(r))
            }
            Err(e) if e.is_connect() => {
                tracing::warn!(%owner, error = %e, "queue owner unreachable");
                self.down
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(owner.to_string(), Instant::now() + OWNER_DOWN_BACKOFF);
                self.owner_down(owner, e.to_string())
            }
            Err(e) => Err(Error::OwnerUnavailable {
                owner: owner.to_string(),
                reason: if e.is_timeout() {
                    "timed out; the request may or may not have been applied".into()
                } else {
                    e.to_string()
                },
            }),
        }
    }
}
