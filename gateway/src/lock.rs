//! Lock routing: follow the Raft leader, retry across leader changes.
//!
//! Every lock node serves every client route (followers forward writes), so
//! any node is a correct target; the leader is merely the cheapest. The
//! gateway remembers the leader (learned from `GET /cluster` polls and from
//! the `leader_addr` of 503 answers) and sends there first.
//!
//! On a 503 (`no_leader`, `unavailable`: an election is running or the
//! answering node cannot reach the leader), a connection error or a timeout,
//! the call is retried on another node — the reported leader if there is a new
//! one, else the next node in order — with small exponential backoff, until the
//! retry budget (`--lock-retry-ms`, ~3 s) runs out. Retrying is safe because
//! every write carries a `request_id` (the gateway fills one in when the
//! client gave none) and the lock service answers a repeated
//! `(owner, request_id)` with its first answer: a retried acquire never
//! grants twice.
//!
//! Any other answer (2xx, 4xx such as 409 `lock_held`) is final and passed
//! through unchanged.
//!
//! Everything about following the leader lives here: the remembered leader
//! (`Leader`, with its `/stats` count and Prometheus families), the order
//! of candidates, the retry loop and the background poll. The quarantine of
//! nodes that just failed is shared with the other services' routing and
//! stays in [`crate::state`]: a quarantined leader is not asked first, and a
//! leader that fails is forgotten.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::StatusCode;
use common::metrics::MetricsRegistry;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use serde_json::Value;
use tokio::time::Instant;

use crate::error::Error;
use crate::state::{CallError, Gateway, Outbound, Reply, Service};

/// First pause between lock attempts; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_millis(250);
/// Hard cap on attempts per call, whatever the time budget.
const MAX_ATTEMPTS: usize = 64;

/// The lock leader the gateway remembers (learned from polls and from 503
/// answers), and how often it changed.
pub(crate) struct Leader {
    addr: Mutex<Option<String>>,
    /// Times a new leader was remembered (`/stats`).
    changes: AtomicU64,
    changes_metric: Counter,
    known: Gauge,
}

impl Leader {
    /// No leader known yet; registers the leader's Prometheus families.
    pub(crate) fn new(registry: &mut MetricsRegistry) -> Self {
        let leader = Self {
            addr: Mutex::new(None),
            changes: AtomicU64::new(0),
            changes_metric: Counter::default(),
            known: Gauge::default(),
        };
        registry.register(
            "gateway_lock_leader_changes",
            "Times the remembered lock leader changed",
            leader.changes_metric.clone(),
        );
        registry.register(
            "gateway_lock_leader_known",
            "1 when the gateway knows a lock leader",
            leader.known.clone(),
        );
        leader
    }

    /// Times a new leader was remembered since start.
    pub(crate) fn changes(&self) -> u64 {
        self.changes.load(Ordering::Relaxed)
    }
}

impl Gateway {
    /// The remembered lock leader.
    pub fn leader(&self) -> Option<String> {
        self.0
            .leader
            .addr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Remember (or forget) the lock leader.
    pub fn set_leader(&self, leader: Option<String>) {
        let l = &self.0.leader;
        let mut cur = l.addr.lock().unwrap_or_else(|e| e.into_inner());
        if *cur != leader {
            if leader.is_some() {
                l.changes.fetch_add(1, Ordering::Relaxed);
                l.changes_metric.inc();
                tracing::info!(leader = ?leader, previous = ?*cur, "lock leader changed");
            }
            l.known.set(leader.is_some() as i64);
            *cur = leader;
        }
    }
}

/// How long the gateway may repeat a request id it made: its retry window
/// and one backend call; `None` when that is longer than the short memory
/// the lock service offers for it.
pub fn retry_window_ms(settings: &crate::config::Settings) -> Option<u64> {
    let window = (settings.lock_retry + settings.backend_timeout).as_millis() as u64;
    (window <= api::limits::lock::SHORT_RETRY_WINDOW_MS).then_some(window)
}

/// Parse a lock write body, require an object, and fill in `request_id`
/// when the client gave none. Returns the body to send and its `wait_ms`.
///
/// An id the gateway makes is repeated only by its own retries, which end
/// within `retry_window_ms` (`--lock-retry-ms` plus one backend call):
/// said with the id, so the lock service remembers the answer that long
/// rather than the 10 minutes a client's own id gets (`None`: the window
/// is too long for that, and the default memory applies).
pub fn prepare_write(body: &[u8], retry_window_ms: Option<u64>) -> Result<(Bytes, u64), Error> {
    let mut value: Value =
        serde_json::from_slice(body).map_err(|e| Error::MalformedJson(e.to_string()))?;
    let obj = value
        .as_object_mut()
        .ok_or_else(|| Error::InvalidField("request body must be a JSON object".into()))?;
    match obj.get("request_id") {
        None | Some(Value::Null) => {
            obj.insert(
                "request_id".into(),
                Value::String(uuid::Uuid::new_v4().to_string()),
            );
            if let Some(w) = retry_window_ms {
                obj.entry("retry_window_ms").or_insert(Value::from(w));
            }
        }
        Some(Value::String(s)) if !s.is_empty() => {}
        Some(_) => {
            return Err(Error::InvalidField(
                "`request_id` must be a non-empty string".into(),
            ))
        }
    }
    let wait_ms = obj
        .get("wait_ms")
        .and_then(crate::state::as_whole_ms)
        .unwrap_or(0);
    let bytes = serde_json::to_vec(&value).map_err(|e| Error::InvalidInput(e.to_string()))?;
    Ok((Bytes::from(bytes), wait_ms))
}

/// The order in which to try lock nodes: the remembered leader first (unless
/// quarantined), then the others, rotating from `start`, quarantined last.
pub fn candidates(gw: &Gateway, start: usize) -> Vec<String> {
    let members = gw.members(Service::Lock);
    let mut order: Vec<String> = Vec::with_capacity(members.len() + 1);
    if let Some(leader) = gw.leader() {
        if !gw.is_quarantined(&leader) {
            order.push(leader);
        }
    }
    let n = members.len();
    for i in 0..n {
        let m = &members[(start + i) % n];
        if !order.contains(m) {
            order.push(m.clone());
        }
    }
    gw.healthy_first(order)
}

/// Forward one lock call (any method) with leader following and retries.
pub async fn forward(gw: &Gateway, out: Outbound<'_>, wait_ms: u64) -> Result<Reply, Error> {
    gw.count_request(Service::Lock);
    let res = forward_inner(gw, &out, wait_ms).await;
    if res.is_err() {
        gw.count_error(Service::Lock);
    }
    res
}

async fn forward_inner(gw: &Gateway, out: &Outbound<'_>, wait_ms: u64) -> Result<Reply, Error> {
    if gw.members(Service::Lock).is_empty() {
        return Err(Error::NoBackends { service: "lock" });
    }
    let settings = gw.settings();
    let timeout = settings.backend_timeout + Duration::from_millis(wait_ms);
    let deadline = Instant::now() + settings.lock_retry;
    let mut backoff = FIRST_BACKOFF;
    let mut rotate = gw.0.rr.fetch_add(1, Ordering::Relaxed);
    let mut last_err: Option<Error> = None;
    for attempt in 0..MAX_ATTEMPTS {
        if attempt > 0 {
            gw.count_retry(Service::Lock);
        }
        let order = candidates(gw, rotate);
        let Some(target) = order.first().cloned() else {
            break;
        };
        let res = gw.call(Service::Lock, &target, out, timeout).await;
        match res {
            Ok(reply) if reply.status == StatusCode::SERVICE_UNAVAILABLE => {
                match reply.error_field("leader_addr") {
                    Some(l) if l != target && !gw.is_quarantined(&l) => gw.set_leader(Some(l)),
                    _ => {
                        // This node cannot serve right now; don't ask it first again.
                        if gw.leader().as_deref() == Some(target.as_str()) {
                            gw.set_leader(None);
                        }
                        gw.quarantine(&target);
                        rotate = rotate.wrapping_add(1);
                    }
                }
                if Instant::now() + backoff >= deadline {
                    return Ok(reply); // pass the service's own 503 through
                }
                last_err = None;
            }
            Ok(reply) => return Ok(reply),
            // The node is alive but saturated: retrying elsewhere would
            // only be forwarded back to it (or pass the load around).
            Err(e @ CallError::Shed { .. }) => return Err(e.into_error("lock", &target, timeout)),
            Err(e) => {
                if gw.leader().as_deref() == Some(target.as_str()) {
                    gw.set_leader(None);
                }
                rotate = rotate.wrapping_add(1);
                last_err = Some(e.into_error("lock", &target, timeout));
                if Instant::now() + backoff >= deadline {
                    break;
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    Err(last_err.unwrap_or(Error::Unavailable {
        service: "lock",
        backend: String::new(),
        reason: "no lock node could serve the request in time".into(),
    }))
}

/// What one lock node says about the cluster (its `GET /cluster`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeReport {
    pub term: Option<u64>,
    pub leader_id: Option<u64>,
    pub leader_addr: Option<String>,
}

impl NodeReport {
    pub fn from_json(v: &Value) -> Self {
        Self {
            term: v.get("term").and_then(Value::as_u64),
            leader_id: v.get("leader_id").and_then(Value::as_u64),
            leader_addr: v
                .get("leader_addr")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        }
    }
}

/// The leader the reports agree on: the one reported at the highest term.
pub fn pick_leader(reports: &[NodeReport]) -> Option<&NodeReport> {
    reports
        .iter()
        .filter(|r| r.leader_addr.is_some())
        .max_by_key(|r| r.term.unwrap_or(0))
}

/// Ask every lock node who leads and remember the answer. Returns the raw
/// `/cluster` documents per node (None when a node did not answer).
pub async fn refresh_leader(gw: &Gateway) -> Vec<(String, Option<Value>)> {
    let members = gw.members(Service::Lock);
    let probes = members.iter().map(|m| async move {
        let doc = match gw.probe(m, "/cluster").await {
            Ok((s, v)) if s.is_success() => Some(v),
            _ => None,
        };
        (m.clone(), doc)
    });
    let docs: Vec<(String, Option<Value>)> = futures::future::join_all(probes).await;
    let reports: Vec<NodeReport> = docs
        .iter()
        .filter_map(|(_, d)| d.as_ref().map(NodeReport::from_json))
        .collect();
    if let Some(best) = pick_leader(&reports) {
        if let Some(addr) = &best.leader_addr {
            if !gw.is_quarantined(addr) {
                gw.set_leader(Some(addr.clone()));
            }
        }
    } else if !reports.is_empty() {
        // Nodes answered and none knows a leader: an election is running.
        gw.set_leader(None);
    }
    docs
}

/// Background task: keep the remembered leader fresh.
pub async fn poll_leader(gw: Gateway) {
    let period = gw.settings().leader_poll;
    loop {
        refresh_leader(&gw).await;
        tokio::time::sleep(period).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepare_write_fills_request_id_only_when_missing() {
        let (b, wait) = prepare_write(
            br#"{"resource":"r","owner":"o","wait_ms":250}"#,
            Some(8_000),
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(wait, 250);
        let id = v["request_id"].as_str().unwrap();
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
        assert_eq!(v["resource"], "r");
        // The gateway's own id is said to be retried only briefly...
        assert_eq!(v["retry_window_ms"], 8_000);

        // ...a client's id keeps the memory the client asked for.
        let (b, _) = prepare_write(
            br#"{"resource":"r","owner":"o","request_id":"mine"}"#,
            Some(8_000),
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["request_id"], "mine");
        assert!(v.get("retry_window_ms").is_none(), "{v}");

        let (b, _) = prepare_write(br#"{"resource":"r","request_id":null}"#, None).unwrap();
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert!(v["request_id"].is_string());
        assert!(v.get("retry_window_ms").is_none(), "{v}");

        // The window is --lock-retry-ms plus one backend call, if short enough.
        let mut settings = crate::config::Settings::default();
        assert_eq!(retry_window_ms(&settings), Some(8_000));
        settings.lock_retry = std::time::Duration::from_secs(60);
        assert_eq!(retry_window_ms(&settings), None);
    }

    #[test]
    fn prepare_write_rejects_bad_bodies() {
        let cases: &[(&[u8], &str)] = &[
            (b"{not json", "malformed_json"),
            (b"", "malformed_json"),
            (b"[1,2]", "invalid_field"),
            (b"\"s\"", "invalid_field"),
            (br#"{"request_id":5}"#, "invalid_field"),
            (br#"{"request_id":""}"#, "invalid_field"),
        ];
        for (body, code) in cases {
            let err = prepare_write(body, None).unwrap_err();
            assert_eq!(
                err.to_api().code,
                *code,
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn leader_is_taken_from_the_highest_term() {
        let reports = vec![
            NodeReport {
                term: Some(3),
                leader_id: Some(1),
                leader_addr: Some("a".into()),
            },
            NodeReport {
                term: Some(4),
                leader_id: Some(2),
                leader_addr: Some("b".into()),
            },
            NodeReport {
                term: Some(5),
                leader_id: None,
                leader_addr: None,
            },
        ];
        assert_eq!(
            pick_leader(&reports).unwrap().leader_addr.as_deref(),
            Some("b")
        );
        assert!(pick_leader(&reports[2..]).is_none());
        let parsed = NodeReport::from_json(&serde_json::json!({
            "id": 1, "leader_id": 2, "leader_addr": "127.0.0.1:7002", "term": 3
        }));
        assert_eq!(parsed.leader_addr.as_deref(), Some("127.0.0.1:7002"));
        assert_eq!(parsed.term, Some(3));
        let none =
            NodeReport::from_json(&serde_json::json!({"leader_id": null, "leader_addr": null}));
        assert_eq!(none, NodeReport::default());
    }
}
