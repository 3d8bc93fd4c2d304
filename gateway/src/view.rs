//! The gateway's own views of its backends: `/health`, `/cluster`, `/stats`.
//!
//! Health and cluster views are live: each request probes every backend node
//! concurrently with a short timeout ([`crate::state::PROBE_TIMEOUT`]), so
//! they are never staler than the request and cost at most one timeout.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use api::types::{
    CacheClusterView, CachePeer, ClusterView, GatewayStats, HealthReport, LockClusterView,
    LockNodeView, NodeStatus, QueueClusterView, ServiceHealth, ServiceStats,
};
use futures::future::join_all;
use serde_json::Value;

use crate::lock::{pick_leader, refresh_leader, NodeReport};
use crate::state::{Gateway, Service};

/// `/health` of every node of a service.
async fn node_health(gw: &Gateway, svc: Service) -> Vec<NodeStatus> {
    let members = gw.members(svc);
    join_all(members.iter().map(|m| async move {
        match gw.probe(m, "/health").await {
            Ok((s, _)) if s.is_success() => NodeStatus {
                addr: m.clone(),
                healthy: true,
                error: None,
            },
            Ok((s, body)) => NodeStatus {
                addr: m.clone(),
                healthy: false,
                error: Some(format!(
                    "health {}{}",
                    s.as_u16(),
                    body.pointer("/error/message")
                        .and_then(Value::as_str)
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default()
                )),
            },
            Err(e) => NodeStatus {
                addr: m.clone(),
                healthy: false,
                error: Some(e),
            },
        }
    }))
    .await
}

fn any_healthy(svc: &str, nodes: Vec<NodeStatus>) -> ServiceHealth {
    let ok = nodes.iter().any(|n| n.healthy);
    let reason = if nodes.is_empty() {
        Some(format!("no {svc} nodes are known"))
    } else if !ok {
        Some(format!("no healthy {svc} node"))
    } else {
        None
    };
    ServiceHealth { ok, reason, nodes }
}

async fn lock_view(gw: &Gateway) -> (LockClusterView, Vec<NodeStatus>) {
    let (docs, health) = tokio::join!(refresh_leader(gw), node_health(gw, Service::Lock));
    let reports: Vec<(String, NodeReport, Value)> = docs
        .iter()
        .filter_map(|(addr, d)| {
            d.as_ref()
                .map(|d| (addr.clone(), NodeReport::from_json(d), d.clone()))
        })
        .collect();
    let only: Vec<NodeReport> = reports.iter().map(|(_, r, _)| r.clone()).collect();
    let best = pick_leader(&only).cloned();
    let members: BTreeMap<String, String> = best
        .as_ref()
        .and_then(|b| reports.iter().find(|(_, r, _)| r == b))
        .or_else(|| reports.first())
        .and_then(|(_, _, d)| d.get("members").and_then(Value::as_object).cloned())
        .map(|m| {
            m.into_iter()
                .map(|(k, v)| {
                    (
                        k,
                        v.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| v.to_string()),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let nodes = docs
        .iter()
        .map(|(addr, d)| match d {
            Some(d) => LockNodeView {
                addr: addr.clone(),
                reachable: true,
                id: d.get("id").and_then(Value::as_u64),
                state: d.get("state").and_then(Value::as_str).map(str::to_string),
                term: d.get("term").and_then(Value::as_u64),
                leader_id: d.get("leader_id").and_then(Value::as_u64),
                last_log_index: d.get("last_log_index").and_then(Value::as_u64),
                applied_index: d.get("applied_index").and_then(Value::as_u64),
            },
            None => LockNodeView {
                addr: addr.clone(),
                reachable: false,
                ..Default::default()
            },
        })
        .collect();
    let view = LockClusterView {
        leader_id: best.as_ref().and_then(|b| b.leader_id),
        leader_addr: best.as_ref().and_then(|b| b.leader_addr.clone()),
        term: reports.iter().filter_map(|(_, r, _)| r.term).max(),
        members,
        nodes,
    };
    (view, health)
}

async fn cache_peers(gw: &Gateway) -> Vec<CachePeer> {
    let members = gw.members(Service::Cache);
    let docs = join_all(members.iter().map(|m| gw.probe(m, "/cluster"))).await;
    let mut peers: BTreeMap<String, bool> = BTreeMap::new();
    for (status, doc) in docs.into_iter().flatten() {
        if !status.is_success() {
            continue;
        }
        for p in doc
            .get("peers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(addr) = p.get("addr").and_then(Value::as_str) {
                let alive = p.get("alive").and_then(Value::as_bool).unwrap_or(false);
                *peers.entry(addr.to_string()).or_insert(false) |= alive;
            }
        }
    }
    peers
        .into_iter()
        .map(|(addr, alive)| CachePeer { addr, alive })
        .collect()
}

/// `/health`: (ok, report). OK only when the lock cluster has a leader and a
/// healthy node, and the queue and cache services each have a healthy node.
pub async fn health(gw: &Gateway) -> (bool, HealthReport) {
    let ((lock_cluster, lock_nodes), queue_nodes, cache_nodes) = tokio::join!(
        lock_view(gw),
        node_health(gw, Service::Queue),
        node_health(gw, Service::Cache)
    );
    let mut lock = any_healthy("lock", lock_nodes);
    if lock.ok && lock_cluster.leader_addr.is_none() {
        lock.ok = false;
        lock.reason = Some("the lock cluster has no leader".into());
    }
    let queue = any_healthy("queue", queue_nodes);
    let cache = any_healthy("cache", cache_nodes);
    let down: Vec<String> = [("lock", &lock), ("queue", &queue), ("cache", &cache)]
        .iter()
        .filter(|(_, h)| !h.ok)
        .map(|(n, _)| n.to_string())
        .collect();
    let ok = down.is_empty();
    (
        ok,
        HealthReport {
            status: if ok { "ok" } else { "degraded" }.into(),
            down,
            lock,
            queue,
            cache,
        },
    )
}

/// `/cluster`.
pub async fn cluster(gw: &Gateway) -> ClusterView {
    let ((lock, _), queue_nodes, cache_nodes, peers) = tokio::join!(
        lock_view(gw),
        node_health(gw, Service::Queue),
        node_health(gw, Service::Cache),
        cache_peers(gw)
    );
    ClusterView {
        lock,
        queue: QueueClusterView {
            members: gw.ring(Service::Queue).members().to_vec(),
            nodes: queue_nodes,
        },
        cache: CacheClusterView {
            members: gw.members(Service::Cache).to_vec(),
            peers,
            nodes: cache_nodes,
        },
    }
}

fn service_stats(gw: &Gateway, svc: Service) -> ServiceStats {
    let c = gw.counters(svc);
    ServiceStats {
        requests: c.requests.load(Ordering::Relaxed),
        errors: c.errors.load(Ordering::Relaxed),
        retries: c.retries.load(Ordering::Relaxed),
        members: gw.members(svc).to_vec(),
    }
}

/// `/stats`: the gateway's own counters (no backend calls).
pub fn stats(gw: &Gateway) -> GatewayStats {
    GatewayStats {
        uptime_ms: gw.0.started.elapsed().as_millis() as u64,
        rejected: gw.0.rejected.load(Ordering::Relaxed),
        lock_leader: gw.leader(),
        leader_changes: gw.0.leader.changes(),
        lock: service_stats(gw, Service::Lock),
        queue: service_stats(gw, Service::Queue),
        cache: service_stats(gw, Service::Cache),
        max_in_flight_per_backend: gw.settings().max_in_flight as u64,
        in_flight: gw.in_flight(),
        shed: gw.0.shed.load(Ordering::Relaxed),
    }
}
