//! The gateway's shared state and its one way of talking to a backend.
//!
//! - [`Backends`]: the live member list of each service (from
//!   `common::discovery`, or a plain watch channel in tests);
//! - [`Gateway`]: settings, the keep-alive connections to the backends
//!   ([`crate::upstream`]), rings cached per member list, a short
//!   quarantine of nodes that just failed (every service's routing tries
//!   them last), the calls in flight per backend, and the counters behind
//!   `/stats` and `/metrics`; the remembered lock leader is lock routing's
//!   own ([`crate::lock`]);
//! - [`Gateway::call`]: one bounded backend call, timed and counted per
//!   service, route and backend.
//!
//! Invariants:
//! - the client's `Authorization` header is never forwarded (API tokens are
//!   not cluster tokens), and no route under `/internal/` is ever called;
//! - a quarantined node is tried last, not never: a quarantine only reorders.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use common::discovery::Members;
use common::metrics::{Metrics, MetricsRegistry};
use common::Ring;
use tokio::sync::watch;

use crate::config::Settings;
use crate::error::Error;
use crate::lock::Leader;
use crate::metrics::{Families, NodeLabels, ReasonLabels, ServiceLabels};
use crate::upstream::Upstream;

/// How long a node that failed to answer is tried last.
pub const QUARANTINE: Duration = Duration::from_millis(1_000);

/// Timeout of the gateway's own probes (`/health`, `/cluster`, leader poll).
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(1_000);

/// A sorted member list as published by discovery.
pub type MemberList = Arc<Vec<String>>;

/// One call to forward: the route template (for metrics), the method, the
/// client's path and query (forwarded unchanged) and the body to send.
#[derive(Debug, Clone)]
pub struct Outbound<'a> {
    pub route: &'static str,
    pub method: Method,
    pub path_and_query: &'a str,
    pub body: Option<Bytes>,
}

/// The three backend services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    Lock,
    Queue,
    Cache,
}

impl Service {
    pub fn as_str(self) -> &'static str {
        match self {
            Service::Lock => "lock",
            Service::Queue => "queue",
            Service::Cache => "cache",
        }
    }
}

/// A live, sorted member list per service.
#[derive(Debug, Clone)]
pub struct Backends {
    pub lock: watch::Receiver<MemberList>,
    pub queue: watch::Receiver<MemberList>,
    pub cache: watch::Receiver<MemberList>,
}

impl Backends {
    /// From discovery handles (DNS names keep being re-resolved).
    pub fn from_members(lock: &Members, queue: &Members, cache: &Members) -> Self {
        Self {
            lock: lock.watch(),
            queue: queue.watch(),
            cache: cache.watch(),
        }
    }

    /// Fixed lists; returns the senders so a test can change membership.
    pub fn channels(
        lock: Vec<String>,
        queue: Vec<String>,
        cache: Vec<String>,
    ) -> (Self, BackendSenders) {
        fn ch(mut v: Vec<String>) -> (watch::Sender<MemberList>, watch::Receiver<MemberList>) {
            v.sort();
            v.dedup();
            watch::channel(Arc::new(v))
        }
        let (lt, lr) = ch(lock);
        let (qt, qr) = ch(queue);
        let (ct, cr) = ch(cache);
        (
            Self {
                lock: lr,
                queue: qr,
                cache: cr,
            },
            BackendSenders {
                lock: lt,
                queue: qt,
                cache: ct,
            },
        )
    }

    fn of(&self, svc: Service) -> MemberList {
        match svc {
            Service::Lock => self.lock.borrow().clone(),
            Service::Queue => self.queue.borrow().clone(),
            Service::Cache => self.cache.borrow().clone(),
        }
    }
}

/// Test handle to change the member lists of a [`Backends`] made by
/// [`Backends::channels`].
#[derive(Debug)]
pub struct BackendSenders {
    pub lock: watch::Sender<MemberList>,
    pub queue: watch::Sender<MemberList>,
    pub cache: watch::Sender<MemberList>,
}

impl BackendSenders {
    /// Replace one service's member list.
    pub fn set(&self, svc: Service, mut members: Vec<String>) {
        members.sort();
        members.dedup();
        let tx = match svc {
            Service::Lock => &self.lock,
            Service::Queue => &self.queue,
            Service::Cache => &self.cache,
        };
        tx.send_replace(Arc::new(members));
    }
}

/// A backend's answer, passed to the client unchanged.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub content_type: Option<HeaderValue>,
    /// A backend's `Retry-After` (on its 429s and 503s), passed on.
    pub retry_after: Option<HeaderValue>,
    pub body: Bytes,
    pub backend: String,
}

impl Reply {
    /// The `error.code` of a JSON error body, if any.
    pub fn error_code(&self) -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        v.get("error")?.get("code")?.as_str().map(str::to_string)
    }

    /// `error.<field>` of a JSON error body as a string, if any.
    pub fn error_field(&self, field: &str) -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        v.get("error")?.get(field)?.as_str().map(str::to_string)
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let mut resp = (self.status, self.body).into_response();
        let ct = self
            .content_type
            .unwrap_or_else(|| HeaderValue::from_static("application/json"));
        resp.headers_mut()
            .insert(axum::http::header::CONTENT_TYPE, ct);
        if let Some(ra) = self.retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, ra);
        }
        resp
    }
}

/// Why a backend call produced no answer.
#[derive(Debug, Clone)]
pub enum CallError {
    /// Connection refused/reset or the answer broke off.
    Unreachable(String),
    /// No full answer within the timeout.
    Timeout,
    /// Not sent: the backend already had this many calls in flight.
    Shed { limit: usize },
}

impl CallError {
    /// The client's answer when a call to `backend` of `service` failed
    /// this way (`timeout` is what it was given).
    pub fn into_error(self, service: &'static str, backend: &str, timeout: Duration) -> Error {
        let backend = backend.to_string();
        match self {
            CallError::Timeout => Error::BackendTimeout {
                service,
                backend,
                timeout_ms: timeout.as_millis() as u64,
            },
            CallError::Unreachable(reason) => Error::Unavailable {
                service,
                backend,
                reason,
            },
            CallError::Shed { limit } => Error::Overloaded {
                service,
                backend,
                limit,
            },
        }
    }
}

/// One call's place in its backend's in-flight count, given back on drop
/// (also when the call is cancelled or times out).
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Plain counters behind `/stats` (the same events also go to Prometheus).
#[derive(Debug, Default)]
pub struct ServiceCounters {
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    pub retries: AtomicU64,
}

pub(crate) struct Inner {
    pub settings: Settings,
    pub backends: Backends,
    upstream: Upstream,
    pub metrics: Metrics,
    families: Families,
    pub started: Instant,
    pub(crate) leader: Leader,
    rings: Mutex<HashMap<Service, (MemberList, Arc<Ring>)>>,
    quarantine: Mutex<HashMap<String, Instant>>,
    pub rr: AtomicUsize,
    pub lock_counters: ServiceCounters,
    pub queue_counters: ServiceCounters,
    pub cache_counters: ServiceCounters,
    pub rejected: AtomicU64,
    /// Calls outstanding per backend node, for `--max-in-flight`. A read
    /// lock on the hot path; the write lock only the first time a node is
    /// called.
    in_flight: RwLock<HashMap<String, Arc<AtomicUsize>>>,
    pub shed: AtomicU64,
}

/// Cheap to clone: everything lives behind one `Arc`.
#[derive(Clone)]
pub struct Gateway(pub(crate) Arc<Inner>);

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("settings", &self.0.settings)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    pub fn new(settings: Settings, backends: Backends) -> anyhow::Result<Self> {
        let mut registry = MetricsRegistry::default();
        let families = Families::register(&mut registry);
        let leader = Leader::new(&mut registry);
        let metrics = Metrics::new(registry);
        Ok(Self(Arc::new(Inner {
            settings,
            backends,
            upstream: Upstream::default(),
            metrics,
            families,
            started: Instant::now(),
            leader,
            rings: Mutex::new(HashMap::new()),
            quarantine: Mutex::new(HashMap::new()),
            rr: AtomicUsize::new(0),
            lock_counters: ServiceCounters::default(),
            queue_counters: ServiceCounters::default(),
            cache_counters: ServiceCounters::default(),
            rejected: AtomicU64::new(0),
            in_flight: RwLock::new(HashMap::new()),
            shed: AtomicU64::new(0),
        })))
    }

    pub fn settings(&self) -> &Settings {
        &self.0.settings
    }

    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    /// Current members of a service.
    pub fn members(&self, svc: Service) -> MemberList {
        self.0.backends.of(svc)
    }

    /// The ring over a service's current members, rebuilt only when the
    /// member list changed.
    pub fn ring(&self, svc: Service) -> Arc<Ring> {
        let members = self.members(svc);
        let mut rings = self.0.rings.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((m, r)) = rings.get(&svc) {
            if Arc::ptr_eq(m, &members) || **m == *members {
                return r.clone();
            }
        }
        let ring = Arc::new(Ring::new(members.iter().cloned()));
        rings.insert(svc, (members, ring.clone()));
        ring
    }

    pub(crate) fn counters(&self, svc: Service) -> &ServiceCounters {
        match svc {
            Service::Lock => &self.0.lock_counters,
            Service::Queue => &self.0.queue_counters,
            Service::Cache => &self.0.cache_counters,
        }
    }

    /// Put a node that failed to answer at the back of the line for a while.
    pub fn quarantine(&self, node: &str) {
        self.0
            .quarantine
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node.to_string(), Instant::now() + QUARANTINE);
    }

    pub fn is_quarantined(&self, node: &str) -> bool {
        let mut q = self.0.quarantine.lock().unwrap_or_else(|e| e.into_inner());
        match q.get(node) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                q.remove(node);
                false
            }
            None => false,
        }
    }

    /// `candidates` with quarantined nodes moved to the end (order kept otherwise).
    pub fn healthy_first(&self, candidates: Vec<String>) -> Vec<String> {
        let (ok, bad): (Vec<String>, Vec<String>) = candidates
            .into_iter()
            .partition(|n| !self.is_quarantined(n));
        ok.into_iter().chain(bad).collect()
    }

    pub(crate) fn count_retry(&self, svc: Service) {
        self.counters(svc).retries.fetch_add(1, Ordering::Relaxed);
        self.0
            .families
            .retries
            .get_or_create(&ServiceLabels {
                service: svc.as_str(),
            })
            .inc();
    }

    pub(crate) fn count_request(&self, svc: Service) {
        self.counters(svc).requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_error(&self, svc: Service) {
        self.counters(svc).errors.fetch_add(1, Ordering::Relaxed);
        self.0
            .families
            .gateway_errors
            .get_or_create(&ServiceLabels {
                service: svc.as_str(),
            })
            .inc();
    }

    pub(crate) fn count_rejected(&self, reason: &'static str) {
        self.0.rejected.fetch_add(1, Ordering::Relaxed);
        self.0
            .families
            .rejected
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// One backend call: `out.method` `http://{backend}{out.path_and_query}`
    /// with the optional JSON body, bounded by `timeout`, timed and counted.
    pub async fn call(
        &self,
        svc: Service,
        backend: &str,
        out: &Outbound<'_>,
        timeout: Duration,
    ) -> Result<Reply, CallError> {
        debug_assert!(!out.path_and_query.starts_with("/internal"));
        let route = out.route;
        let start = Instant::now();
        let res = match self.admit(backend) {
            Ok(_slot) => {
                self.send(
                    backend,
                    out.method.clone(),
                    out.path_and_query,
                    out.body.clone(),
                    timeout,
                )
                .await
            }
            Err(shed) => {
                self.0.shed.fetch_add(1, Ordering::Relaxed);
                self.count_rejected("backend_in_flight_limit");
                return Err(shed);
            }
        };
        let outcome = match &res {
            Ok(r) => r.status.as_str(),
            Err(CallError::Timeout) => "timeout",
            Err(CallError::Unreachable(_)) => "unreachable",
            Err(CallError::Shed { .. }) => "shed",
        };
        self.0.families.observe_backend(
            svc.as_str(),
            route,
            backend,
            outcome,
            start.elapsed().as_secs_f64(),
        );
        if res.is_err() {
            self.quarantine(backend);
        }
        res
    }

    /// A place among `backend`'s calls in flight, or [`CallError::Shed`]
    /// when it has `--max-in-flight` already: a node that is behind gets
    /// no deeper queue from the gateway, and the client hears so at once.
    fn admit(&self, backend: &str) -> Result<InFlight, CallError> {
        let limit = self.0.settings.max_in_flight;
        let known = self
            .0
            .in_flight
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(backend)
            .cloned();
        let count = known.unwrap_or_else(|| {
            let mut map = self.0.in_flight.write().unwrap_or_else(|e| e.into_inner());
            map.entry(backend.to_string()).or_default().clone()
        });
        if count.fetch_add(1, Ordering::AcqRel) >= limit {
            count.fetch_sub(1, Ordering::AcqRel);
            return Err(CallError::Shed { limit });
        }
        Ok(InFlight(count))
    }

    /// Bring the gauges up to date (at scrape time, not on every call).
    pub fn refresh_metrics(&self) {
        let f = &self.0.families;
        for svc in [Service::Lock, Service::Queue, Service::Cache] {
            f.members
                .get_or_create(&ServiceLabels {
                    service: svc.as_str(),
                })
                .set(self.members(svc).len() as i64);
        }
        f.max_in_flight.set(self.0.settings.max_in_flight as i64);
        let map = self.0.in_flight.read().unwrap_or_else(|e| e.into_inner());
        for (node, n) in map.iter() {
            f.in_flight
                .get_or_create(&NodeLabels {
                    backend: node.clone(),
                })
                .set(n.load(Ordering::Relaxed) as i64);
        }
    }

    /// Calls outstanding per backend node (those with any).
    pub fn in_flight(&self) -> BTreeMap<String, u64> {
        self.0
            .in_flight
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(node, n)| (node.clone(), n.load(Ordering::Relaxed) as u64))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// One HTTP/1.1 exchange on a pooled connection, the whole answer read
    /// within `timeout`.
    async fn send(
        &self,
        backend: &str,
        method: Method,
        path_and_query: &str,
        body: Option<Bytes>,
        timeout: Duration,
    ) -> Result<Reply, CallError> {
        let exchange = self
            .0
            .upstream
            .exchange(backend, &method, path_and_query, body.as_deref());
        let answer = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| CallError::Timeout)?
            .map_err(CallError::Unreachable)?;
        Ok(Reply {
            status: answer.status,
            content_type: answer.content_type,
            retry_after: answer.retry_after,
            body: answer.body,
            backend: backend.to_string(),
        })
    }

    /// GET a small JSON document from a backend for the gateway's own views.
    pub async fn probe(
        &self,
        backend: &str,
        path: &str,
    ) -> Result<(StatusCode, serde_json::Value), String> {
        let reply = self
            .send(backend, Method::GET, path, None, PROBE_TIMEOUT)
            .await
            .map_err(|e| match e {
                CallError::Unreachable(reason) => reason,
                CallError::Timeout => format!("no answer within {PROBE_TIMEOUT:?}"),
                CallError::Shed { limit } => format!("{limit} calls in flight"),
            })?;
        let value = serde_json::from_slice(&reply.body).unwrap_or(serde_json::Value::Null);
        Ok((reply.status, value))
    }
}

/// A JSON number of milliseconds as the services read it: an integer, or a
/// number with no fraction (`6778.0`; JSON Schema's `integer`).
pub fn as_whole_ms(v: &serde_json::Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| f.fract() == 0.0 && (0.0..1e18).contains(f))
            .map(|f| f as u64)
    })
}
