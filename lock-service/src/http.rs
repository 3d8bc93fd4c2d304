//! HTTP handlers of the lock service: the client API of the design, plus
//! health, cluster view, stats and metrics. Requests and answers are the
//! `api` crate's wire types; each request is validated once, where it turns
//! into its replicated command (`TryFrom<api::AcquireRequest> for
//! table::Acquire`, …), and outcomes map to answers here.

use std::sync::Arc;
use std::time::Duration;

use api::limits::{self, lock as lim, Invalid, MAX_NAME_CHARS, MAX_REQUEST_ID_CHARS};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use common::metrics::{Metrics, MetricsRegistry};
use common::{ApiError, ApiJson};
use raft_core::RaftNode;
use serde::Deserialize;
use serde_json::json;

use crate::error::Error;
use crate::events::Events;
use crate::machine::{LockMachine, Waiters};
use crate::metrics::LockMetrics;
use crate::table::{self, Command, Mode, Outcome};

pub use api::limits::lock::{DEFAULT_TTL_MS, MAX_TTL_MS, MAX_WAIT_MS, MIN_TTL_MS};
/// Client request bodies are small; anything larger is a mistake.
pub const BODY_LIMIT: usize = 64 * 1024;
/// After its wait should have ended, how long a handler waits for the
/// replicated timeout before withdrawing the request itself.
const SETTLE_GRACE: Duration = Duration::from_millis(1_000);

/// Shared state of the HTTP layer.
#[derive(Clone)]
pub struct AppState {
    pub node: RaftNode<LockMachine>,
    pub waiters: Arc<Waiters>,
    pub metrics: Metrics,
    domain: Arc<LockMetrics>,
    /// Stamped on every command this node proposes (see `table::Limits`).
    limits: table::Limits,
    /// This node's ring of recent events (`GET /api/events`).
    events: Arc<Events>,
}

impl AppState {
    pub fn new(node: RaftNode<LockMachine>, waiters: Arc<Waiters>, limits: table::Limits) -> Self {
        let mut reg = MetricsRegistry::default();
        let domain = Arc::new(LockMetrics::register(&mut reg, &node));
        domain.spawn_leader_watch(&node);
        Self {
            node,
            waiters,
            metrics: Metrics::new(reg),
            domain,
            limits,
            events: Arc::default(),
        }
    }

    /// Serve `events` on `GET /api/events` (the ring the state machine and
    /// the leader watch record into).
    pub fn with_events(mut self, events: Arc<Events>) -> Self {
        self.events = events;
        self
    }
}

/// The client and operations routes (the Raft internal routes, the
/// fallbacks, the body limit and the request metrics are added by
/// [`crate::Service::start`]).
pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/api/lock/acquire", post(acquire))
        .route("/api/lock/release", post(release))
        .route("/api/lock/renew", post(renew))
        .route("/api/lock/{resource}", get(inspect))
        .route("/api/locks", get(list))
        .route("/api/events", get(events))
        .route("/health", get(health))
        .route("/cluster", get(cluster))
        .route("/stats", get(stats))
        .route("/metrics", get(metrics))
        .with_state(state)
}

impl From<api::LockMode> for Mode {
    fn from(m: api::LockMode) -> Self {
        match m {
            api::LockMode::Exclusive => Mode::Exclusive,
            api::LockMode::Shared => Mode::Shared,
        }
    }
}

impl From<Mode> for api::LockMode {
    fn from(m: Mode) -> Self {
        match m {
            Mode::Exclusive => api::LockMode::Exclusive,
            Mode::Shared => api::LockMode::Shared,
        }
    }
}

fn grant_body(g: table::Grant) -> api::LockGrant {
    api::LockGrant {
        granted: true,
        resource: g.resource,
        owner: g.owner,
        mode: g.mode.into(),
        token: g.token,
        expires_at_ms: g.expires_at_ms,
    }
}

/// Whether a request's answer needs only the short memory: the node makes
/// its id (the client sent none, so only this node's own retries repeat
/// it), or the client retries only briefly (`retry_window_ms`).
fn short_memory(request_id: Option<&str>, retry_window_ms: Option<u64>) -> Result<bool, Invalid> {
    if let Some(w) = retry_window_ms {
        limits::range("retry_window_ms", w, 0, lim::MAX_RETRY_WINDOW_MS)?;
    }
    Ok(request_id.is_none() || retry_window_ms.is_some_and(|w| w <= lim::SHORT_RETRY_WINDOW_MS))
}

fn check_names(resource: &str, owner: &str, request_id: Option<&str>) -> Result<(), Invalid> {
    limits::path_name("resource", resource, MAX_NAME_CHARS)?;
    limits::name("owner", owner, MAX_NAME_CHARS)?;
    if let Some(rid) = request_id {
        limits::name("request_id", rid, MAX_REQUEST_ID_CHARS)?;
    }
    Ok(())
}

/// The one validation of an acquire. Without a client `request_id` the node
/// makes one, so its own retries (leader change mid-write) stay idempotent.
impl TryFrom<api::AcquireRequest> for table::Acquire {
    type Error = Invalid;

    fn try_from(req: api::AcquireRequest) -> Result<Self, Invalid> {
        check_names(&req.resource, &req.owner, req.request_id.as_deref())?;
        let ttl_ms = req.ttl_ms.unwrap_or(DEFAULT_TTL_MS);
        let wait_ms = req.wait_ms.unwrap_or(0);
        limits::range("ttl_ms", ttl_ms, lim::MIN_TTL_MS, lim::MAX_TTL_MS)?;
        limits::range("wait_ms", wait_ms, 0, lim::MAX_WAIT_MS)?;
        Ok(table::Acquire {
            resource: req.resource,
            owner: req.owner,
            mode: req.mode.unwrap_or_default().into(),
            ttl_ms,
            wait_ms,
            short_memory: short_memory(req.request_id.as_deref(), req.retry_window_ms)?,
            request_id: req.request_id.unwrap_or_else(new_request_id),
            limits: None,
        })
    }
}

/// The one validation of a release.
impl TryFrom<api::ReleaseRequest> for table::Release {
    type Error = Invalid;

    fn try_from(req: api::ReleaseRequest) -> Result<Self, Invalid> {
        check_names(&req.resource, &req.owner, req.request_id.as_deref())?;
        Ok(table::Release {
            resource: req.resource,
            owner: req.owner,
            token: req.token,
            short_memory: short_memory(req.request_id.as_deref(), req.retry_window_ms)?,
            request_id: Some(req.request_id.unwrap_or_else(new_request_id)),
            limits: None,
        })
    }
}

/// The one validation of a renew.
impl TryFrom<api::RenewRequest> for table::Renew {
    type Error = Invalid;

    fn try_from(req: api::RenewRequest) -> Result<Self, Invalid> {
        check_names(&req.resource, &req.owner, req.request_id.as_deref())?;
        let ttl_ms = req.ttl_ms.unwrap_or(DEFAULT_TTL_MS);
        limits::range("ttl_ms", ttl_ms, lim::MIN_TTL_MS, lim::MAX_TTL_MS)?;
        Ok(table::Renew {
            resource: req.resource,
            owner: req.owner,
            token: req.token,
            ttl_ms,
            short_memory: short_memory(req.request_id.as_deref(), req.retry_window_ms)?,
            request_id: Some(req.request_id.unwrap_or_else(new_request_id)),
            limits: None,
        })
    }
}

fn new_request_id() -> String {
    use rand::Rng;
    format!("srv-{:032x}", rand::thread_rng().gen::<u128>())
}

async fn acquire(
    State(app): State<AppState>,
    ApiJson(req): ApiJson<api::AcquireRequest>,
) -> Result<Json<api::LockGrant>, ApiError> {
    let mut acquire = table::Acquire::try_from(req)?;
    acquire.limits = Some(app.limits);
    let (owner, request_id, wait_ms) = (
        acquire.owner.clone(),
        acquire.request_id.clone(),
        acquire.wait_ms,
    );
    let applied = app
        .node
        .write(Command::Acquire(acquire))
        .await
        .map_err(Error::from)?;
    let outcome = match applied.outcome {
        Outcome::Queued { wait_id, .. } => {
            settle(&app, wait_id, &owner, &request_id, wait_ms).await?
        }
        other => other,
    };
    grant_or_error(outcome).map(Json).map_err(ApiError::from)
}

/// Wait for a queued request's settlement, published by the apply that
/// decides it. If it does not come in time (leader gone, no tick), withdraw
/// the request through the log; the answer to that is the final word.
async fn settle(
    app: &AppState,
    wait_id: u64,
    owner: &str,
    request_id: &str,
    wait_ms: u64,
) -> Result<Outcome, Error> {
    let queued_at = std::time::Instant::now();
    let (ticket, rx) = app.waiters.wait_for(wait_id);
    let mut guard = CancelOnDrop {
        app: Some(app.clone()),
        wait_id,
        ticket,
        owner: owner.to_string(),
        request_id: request_id.to_string(),
    };
    let limit = Duration::from_millis(wait_ms) + SETTLE_GRACE;
    let outcome = match tokio::time::timeout(limit, rx).await {
        Ok(Ok(outcome)) => outcome,
        _ => {
            app.waiters.forget(wait_id, ticket);
            let cancel = Command::Cancel(table::Cancel {
                owner: owner.to_string(),
                request_id: request_id.to_string(),
            });
            app.node.write(cancel).await?.outcome
        }
    };
    guard.app = None;
    if matches!(outcome, Outcome::Granted(_)) {
        app.domain.observe_wait(queued_at.elapsed());
    }
    Ok(outcome)
}

/// If the client goes away while its request waits, withdraw the request so
/// it is not granted to nobody.
struct CancelOnDrop {
    app: Option<AppState>,
    wait_id: u64,
    ticket: u64,
    owner: String,
    request_id: String,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let Some(app) = self.app.take() else {
            return;
        };
        app.waiters.forget(self.wait_id, self.ticket);
        let cancel = Command::Cancel(table::Cancel {
            owner: std::mem::take(&mut self.owner),
            request_id: std::mem::take(&mut self.request_id),
        });
        tokio::spawn(async move {
            if let Err(e) = app.node.write(cancel).await {
                tracing::warn!(error = %e, "could not withdraw an abandoned wait");
            }
        });
    }
}

fn grant_or_error(outcome: Outcome) -> Result<api::LockGrant, Error> {
    match outcome {
        Outcome::Granted(g) => Ok(grant_body(g)),
        Outcome::Held { holders } => Err(Error::LockHeld { holders }),
        Outcome::Deadlock { cycle } => Err(Error::Deadlock { cycle }),
        Outcome::WaitTimeout => Err(Error::WaitTimeout),
        Outcome::AlreadyHeld { token } => Err(Error::AlreadyHeld { token }),
        Outcome::AlreadyWaiting { .. } => Err(Error::AlreadyWaiting),
        Outcome::RequestIdReused => Err(Error::RequestIdReused),
        Outcome::CapacityExceeded { limit } => Err(Error::CapacityExceeded { limit }),
        other => Err(Error::Internal(format!("unexpected outcome {other:?}"))),
    }
}

async fn release(
    State(app): State<AppState>,
    ApiJson(req): ApiJson<api::ReleaseRequest>,
) -> Result<Json<api::ReleaseResponse>, ApiError> {
    let mut release = table::Release::try_from(req)?;
    release.limits = Some(app.limits);
    let answer = api::ReleaseResponse {
        released: true,
        resource: release.resource.clone(),
        owner: release.owner.clone(),
        token: release.token,
    };
    match app
        .node
        .write(Command::Release(release))
        .await
        .map_err(Error::from)?
        .outcome
    {
        Outcome::Released => Ok(Json(answer)),
        other => Err(hold_error(other).into()),
    }
}

async fn renew(
    State(app): State<AppState>,
    ApiJson(req): ApiJson<api::RenewRequest>,
) -> Result<Json<api::RenewResponse>, ApiError> {
    let mut renew = table::Renew::try_from(req)?;
    renew.limits = Some(app.limits);
    let (resource, owner, token) = (renew.resource.clone(), renew.owner.clone(), renew.token);
    match app
        .node
        .write(Command::Renew(renew))
        .await
        .map_err(Error::from)?
        .outcome
    {
        Outcome::Renewed { expires_at_ms } => Ok(Json(api::RenewResponse {
            expires_at_ms,
            resource: Some(resource),
            owner: Some(owner),
            token: Some(token),
        })),
        other => Err(hold_error(other).into()),
    }
}

fn hold_error(outcome: Outcome) -> Error {
    match outcome {
        Outcome::NotHeld => Error::NotHeld,
        Outcome::TokenMismatch => Error::TokenMismatch,
        Outcome::OwnerMismatch => Error::OwnerMismatch,
        Outcome::RequestIdReused => Error::RequestIdReused,
        other => Error::Internal(format!("unexpected outcome {other:?}")),
    }
}

#[derive(Debug, Deserialize)]
pub struct ReadParams {
    pub consistency: Option<String>,
}

async fn inspect(
    State(app): State<AppState>,
    Path(resource): Path<String>,
    params: Result<Query<ReadParams>, QueryRejection>,
) -> Result<Json<api::LockState>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::invalid(e.body_text()))?;
    limits::path_name("resource", &resource, MAX_NAME_CHARS)?;
    read_barrier(&app, params.consistency.as_deref()).await?;
    let (view, clock) = app.node.read(|m, clock| (m.table.view(&resource), clock));
    Ok(Json(lock_state(view, Some(clock))))
}

/// The read index of a linearizable read (the default), or nothing for
/// `consistency=stale`, which reads this node's state as it is.
async fn read_barrier(app: &AppState, consistency: Option<&str>) -> Result<(), ApiError> {
    match consistency {
        None | Some("linearizable") => app.node.read_barrier().await.map_err(Error::from)?,
        Some("stale") => {}
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "`consistency` must be `linearizable` or `stale`, got `{other}`"
            )))
        }
    }
    Ok(())
}

/// `GET /api/locks?prefix=&after=&limit=&consistency=`: one page of the
/// held and waited-for resources in name order, read like a single lock
/// (linearizable unless `consistency=stale`).
async fn list(
    State(app): State<AppState>,
    params: Result<Query<api::ListQuery>, QueryRejection>,
) -> Result<Json<api::LockList>, ApiError> {
    let Query(q) = params.map_err(|e| ApiError::invalid(e.body_text()))?;
    let page = limits::page(q.prefix.as_deref(), q.after.as_deref(), q.limit)?;
    read_barrier(&app, q.consistency.as_deref()).await?;
    let ((views, more), clock) = app.node.read(|m, clock| {
        let listed = m
            .table
            .list(&page.prefix, page.after.as_deref(), page.limit);
        (listed, clock)
    });
    let next = more
        .then(|| views.last().map(|v| v.resource.clone()))
        .flatten();
    Ok(Json(api::LockList {
        locks: views.into_iter().map(|v| lock_state(v, None)).collect(),
        next,
        clock_ms: Some(clock),
    }))
}

/// `GET /api/events?limit=`: this node's newest events, newest first.
async fn events(
    State(app): State<AppState>,
    params: Result<Query<api::EventQuery>, QueryRejection>,
) -> Result<Json<api::EventList>, ApiError> {
    let Query(q) = params.map_err(|e| ApiError::invalid(e.body_text()))?;
    let limit = limits::event_limit(q.limit)?;
    Ok(Json(api::EventList {
        events: app.events.newest(limit),
        unavailable: Vec::new(),
    }))
}

/// A resource's holders and waiters as the API shows them.
fn lock_state(view: table::ResourceView, clock_ms: Option<u64>) -> api::LockState {
    let holders: Vec<api::LockHolder> = view
        .holders
        .into_iter()
        .map(|h| api::LockHolder {
            owner: h.owner,
            mode: h.mode.into(),
            token: h.token,
            acquired_at_ms: Some(h.acquired_at_ms),
            expires_at_ms: h.expires_at_ms,
        })
        .collect();
    let waiters: Vec<api::LockWaiter> = view
        .waiters
        .into_iter()
        .map(|w| api::LockWaiter {
            owner: w.owner,
            mode: w.mode.into(),
            wait_id: Some(w.wait_id),
            enqueued_at_ms: Some(w.enqueued_at_ms),
            deadline_ms: Some(w.deadline_ms),
        })
        .collect();
    api::LockState {
        resource: view.resource,
        held: !holders.is_empty(),
        holders,
        waiters,
        clock_ms,
    }
}

async fn health(State(app): State<AppState>) -> Response {
    let s = app.node.status();
    if s.leader_id.is_some() {
        Json(json!({
            "status": "ok",
            "id": s.id,
            "state": s.state,
            "leader_id": s.leader_id,
            "term": s.term,
        }))
        .into_response()
    } else {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_leader",
            format!("node {} knows no leader (term {})", s.id, s.term),
        )
        .into_response()
    }
}

async fn cluster(State(app): State<AppState>) -> Json<raft_core::Status> {
    Json(app.node.status())
}

async fn stats(State(app): State<AppState>) -> Json<serde_json::Value> {
    let (counters, sizes, last_token, placed, remembered) = app.node.read(|m, _| {
        let t = &m.table;
        let (counters, sizes) = (t.counters(), t.sizes());
        (
            counters,
            sizes,
            t.last_token(),
            t.placed(),
            t.remembered_count(),
        )
    });
    Json(json!({
        "resources": sizes.0,
        "holds": sizes.1,
        "waiters": sizes.2,
        "limits": {
            "locks": placed,
            "max_locks": app.limits.max_locks,
            "remembered": remembered,
            "max_remembered": app.limits.max_remembered,
        },
        "counters": counters,
        "last_token": last_token,
        "log": app.node.log_stats(),
        "raft": app.node.status(),
    }))
}

async fn metrics(State(app): State<AppState>) -> Response {
    app.domain.refresh(&app.node, app.limits);
    common::metrics::text_response(&app.metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_memory_for_node_made_ids_and_brief_retry_windows() {
        assert!(short_memory(None, None).unwrap());
        assert!(!short_memory(Some("r1"), None).unwrap());
        assert!(short_memory(Some("r1"), Some(0)).unwrap());
        assert!(short_memory(Some("r1"), Some(lim::SHORT_RETRY_WINDOW_MS)).unwrap());
        assert!(!short_memory(Some("r1"), Some(lim::SHORT_RETRY_WINDOW_MS + 1)).unwrap());
        assert!(!short_memory(Some("r1"), Some(lim::MAX_RETRY_WINDOW_MS)).unwrap());
        let err = short_memory(Some("r1"), Some(lim::MAX_RETRY_WINDOW_MS + 1)).unwrap_err();
        assert!(err.message.contains("retry_window_ms"), "{}", err.message);
    }
}
