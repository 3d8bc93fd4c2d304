//! HTTP handlers of the lock service: the client API of the design, plus
//! health, cluster view, stats and metrics. Handlers validate, turn the
//! request into a replicated command, and map the outcome to a response.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use common::metrics::{Metrics, MetricsRegistry};
use common::validate::{self, MAX_NAME_BYTES};
use common::{ApiError, ApiJson};
use raft_core::RaftNode;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::Error;
use crate::machine::{LockMachine, Waiters};
use crate::metrics::LockMetrics;
use crate::table::{self, Command, Mode, Outcome, Token};

/// Default lease when the client gives none.
pub const DEFAULT_TTL_MS: u64 = 30_000;
/// Shortest lease: below this, network jitter alone would expire holds.
pub const MIN_TTL_MS: u64 = 100;
/// Longest lease (one day): longer means a crashed client blocks for days.
pub const MAX_TTL_MS: u64 = 86_400_000;
/// Longest blocking wait on an acquire.
pub const MAX_WAIT_MS: u64 = 300_000;
/// Longest client-chosen request id.
pub const MAX_REQUEST_ID_BYTES: usize = 128;
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
}

impl AppState {
    pub fn new(node: RaftNode<LockMachine>, waiters: Arc<Waiters>) -> Self {
        let mut reg = MetricsRegistry::default();
        let domain = Arc::new(LockMetrics::register(&mut reg));
        domain.spawn_leader_watch(&node);
        Self {
            node,
            waiters,
            metrics: Metrics::new(reg),
            domain,
        }
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
        .route("/health", get(health))
        .route("/cluster", get(cluster))
        .route("/stats", get(stats))
        .route("/metrics", get(metrics))
        .with_state(state)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcquireRequest {
    pub resource: String,
    pub owner: String,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default = "default_ttl")]
    pub ttl_ms: u64,
    #[serde(default)]
    pub wait_ms: u64,
    pub request_id: Option<String>,
}

fn default_ttl() -> u64 {
    DEFAULT_TTL_MS
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    pub resource: String,
    pub owner: String,
    pub token: Token,
    pub request_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    pub resource: String,
    pub owner: String,
    pub token: Token,
    #[serde(default = "default_ttl")]
    pub ttl_ms: u64,
    pub request_id: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct GrantBody {
    pub granted: bool,
    pub resource: String,
    pub owner: String,
    pub mode: Mode,
    pub token: Token,
    pub expires_at_ms: u64,
}

impl From<table::Grant> for GrantBody {
    fn from(g: table::Grant) -> Self {
        Self {
            granted: true,
            resource: g.resource,
            owner: g.owner,
            mode: g.mode,
            token: g.token,
            expires_at_ms: g.expires_at_ms,
        }
    }
}

fn check_names(resource: &str, owner: &str, request_id: Option<&str>) -> Result<(), ApiError> {
    validate::name("resource", resource, MAX_NAME_BYTES)?;
    validate::name("owner", owner, MAX_NAME_BYTES)?;
    if let Some(rid) = request_id {
        validate::name("request_id", rid, MAX_REQUEST_ID_BYTES)?;
    }
    Ok(())
}

fn new_request_id() -> String {
    use rand::Rng;
    format!("srv-{:032x}", rand::thread_rng().gen::<u128>())
}

async fn acquire(
    State(app): State<AppState>,
    ApiJson(req): ApiJson<AcquireRequest>,
) -> Result<Json<GrantBody>, ApiError> {
    check_names(&req.resource, &req.owner, req.request_id.as_deref())?;
    validate::range("ttl_ms", req.ttl_ms, MIN_TTL_MS, MAX_TTL_MS)?;
    validate::range("wait_ms", req.wait_ms, 0, MAX_WAIT_MS)?;
    // A server-side id makes our own retries (leader change mid-write)
    // idempotent even when the client sent none.
    let node_made_id = req.request_id.is_none();
    let request_id = req.request_id.unwrap_or_else(new_request_id);
    let cmd = Command::Acquire(table::Acquire {
        resource: req.resource,
        owner: req.owner.clone(),
        mode: req.mode,
        ttl_ms: req.ttl_ms,
        wait_ms: req.wait_ms,
        request_id: request_id.clone(),
        node_made_id,
    });
    let applied = app.node.write(cmd).await.map_err(Error::from)?;
    let outcome = match applied.outcome {
        Outcome::Queued { wait_id, .. } => {
            settle(&app, wait_id, &req.owner, &request_id, req.wait_ms).await?
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

fn grant_or_error(outcome: Outcome) -> Result<GrantBody, Error> {
    match outcome {
        Outcome::Granted(g) => Ok(g.into()),
        Outcome::Held { holders } => Err(Error::LockHeld { holders }),
        Outcome::Deadlock { cycle } => Err(Error::Deadlock { cycle }),
        Outcome::WaitTimeout => Err(Error::WaitTimeout),
        Outcome::AlreadyHeld { token } => Err(Error::AlreadyHeld { token }),
        Outcome::AlreadyWaiting { .. } => Err(Error::AlreadyWaiting),
        Outcome::RequestIdReused => Err(Error::RequestIdReused),
        other => Err(Error::Internal(format!("unexpected outcome {other:?}"))),
    }
}

async fn release(
    State(app): State<AppState>,
    ApiJson(req): ApiJson<ReleaseRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_names(&req.resource, &req.owner, req.request_id.as_deref())?;
    let cmd = Command::Release(table::Release {
        resource: req.resource.clone(),
        owner: req.owner.clone(),
        token: req.token,
        node_made_id: req.request_id.is_none(),
        request_id: Some(req.request_id.unwrap_or_else(new_request_id)),
    });
    match app.node.write(cmd).await.map_err(Error::from)?.outcome {
        Outcome::Released => Ok(Json(json!({
            "released": true,
            "resource": req.resource,
            "owner": req.owner,
            "token": req.token,
        }))),
        other => Err(hold_error(other).into()),
    }
}

async fn renew(
    State(app): State<AppState>,
    ApiJson(req): ApiJson<RenewRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_names(&req.resource, &req.owner, req.request_id.as_deref())?;
    validate::range("ttl_ms", req.ttl_ms, MIN_TTL_MS, MAX_TTL_MS)?;
    let cmd = Command::Renew(table::Renew {
        resource: req.resource.clone(),
        owner: req.owner.clone(),
        token: req.token,
        ttl_ms: req.ttl_ms,
        node_made_id: req.request_id.is_none(),
        request_id: Some(req.request_id.unwrap_or_else(new_request_id)),
    });
    match app.node.write(cmd).await.map_err(Error::from)?.outcome {
        Outcome::Renewed { expires_at_ms } => Ok(Json(json!({
            "resource": req.resource,
            "owner": req.owner,
            "token": req.token,
            "expires_at_ms": expires_at_ms,
        }))),
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

#[derive(Debug, Serialize)]
struct HolderView {
    owner: String,
    mode: Mode,
    token: Token,
    acquired_at_ms: u64,
    expires_at_ms: u64,
}

#[derive(Debug, Serialize)]
struct WaiterView {
    owner: String,
    mode: Mode,
    wait_id: u64,
    enqueued_at_ms: u64,
    deadline_ms: u64,
}

async fn inspect(
    State(app): State<AppState>,
    Path(resource): Path<String>,
    Query(params): Query<ReadParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    validate::name("resource", &resource, MAX_NAME_BYTES)?;
    match params.consistency.as_deref() {
        None | Some("linearizable") => app.node.read_barrier().await.map_err(Error::from)?,
        Some("stale") => {}
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "`consistency` must be `linearizable` or `stale`, got `{other}`"
            )))
        }
    }
    let (view, clock) = app.node.read(|m, clock| (m.table.view(&resource), clock));
    let holders: Vec<HolderView> = view
        .holders
        .into_iter()
        .map(|h| HolderView {
            owner: h.owner,
            mode: h.mode,
            token: h.token,
            acquired_at_ms: h.acquired_at_ms,
            expires_at_ms: h.expires_at_ms,
        })
        .collect();
    let waiters: Vec<WaiterView> = view
        .waiters
        .into_iter()
        .map(|w| WaiterView {
            owner: w.owner,
            mode: w.mode,
            wait_id: w.wait_id,
            enqueued_at_ms: w.enqueued_at_ms,
            deadline_ms: w.deadline_ms,
        })
        .collect();
    Ok(Json(json!({
        "resource": view.resource,
        "held": !holders.is_empty(),
        "holders": holders,
        "waiters": waiters,
        "clock_ms": clock,
    })))
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
    let (counters, sizes, last_token) = app
        .node
        .read(|m, _| (m.table.counters(), m.table.sizes(), m.table.last_token()));
    Json(json!({
        "resources": sizes.0,
        "holds": sizes.1,
        "waiters": sizes.2,
        "counters": counters,
        "last_token": last_token,
        "log": app.node.log_stats(),
        "raft": app.node.status(),
    }))
}

async fn metrics(State(app): State<AppState>) -> Response {
    app.domain.refresh(&app.node);
    common::metrics::text_response(&app.metrics)
}
