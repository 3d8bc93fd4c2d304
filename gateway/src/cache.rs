//! Cache routing: which cache node a client talks to.
//!
//! The coherent cache only shows its worth when the same key is cached on
//! several nodes, so the gateway spreads clients instead of hashing keys:
//! 1. the node the client names (`X-Cache-Node` header, else `?node=`),
//!    which must be one of the current members — no failover, the client
//!    asked for that node;
//! 2. else sticky per `X-Client-Id`: the id's owner on a ring over the cache
//!    members (a member change moves only the clients that it must), with
//!    failover to the next node on a connection error;
//! 3. else round-robin, also failing over.
//!
//! The `node` query parameter is the gateway's, so it is removed before the
//! call is forwarded.

use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method};

use crate::error::Error;
use crate::state::{CallError, Gateway, Outbound, Reply, Service};

/// Header naming the cache node.
pub const CACHE_NODE_HEADER: &str = "x-cache-node";
/// Header carrying a sticky client identity.
pub const CLIENT_ID_HEADER: &str = "x-client-id";

/// How the target was chosen (for failover rules).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// The client named it: that node only.
    Named(String),
    /// Sticky or round-robin: these nodes in order.
    Spread(Vec<String>),
}

/// Pick the node(s) for one request. Pure: `ring` is over the current cache
/// members, `rr` the round-robin ticket for this request.
pub fn choose(
    ring: &common::Ring,
    named: Option<&str>,
    client_id: Option<&str>,
    rr: usize,
) -> Result<Choice, Error> {
    let members = ring.members();
    if let Some(node) = named {
        if members.iter().any(|m| m == node) {
            return Ok(Choice::Named(node.to_string()));
        }
        return Err(Error::UnknownNode {
            node: node.to_string(),
            known: members.to_vec(),
        });
    }
    if members.is_empty() {
        return Err(Error::NoBackends { service: "cache" });
    }
    if let Some(id) = client_id.filter(|s| !s.is_empty()) {
        return Ok(Choice::Spread(
            ring.owners(id, members.len())
                .into_iter()
                .map(str::to_string)
                .collect(),
        ));
    }
    let n = members.len();
    Ok(Choice::Spread(
        (0..n).map(|i| members[(rr + i) % n].clone()).collect(),
    ))
}

/// Every node the client named: the `X-Cache-Node` header first, then each
/// `node` query parameter. An empty value is a name too (of no member), so
/// what the document lists as the only choices is what is accepted.
pub fn named_nodes(headers: &HeaderMap, query: Option<&str>) -> Vec<String> {
    let mut named = Vec::new();
    if let Some(v) = headers.get(CACHE_NODE_HEADER) {
        named.push(v.to_str().unwrap_or_default().trim().to_string());
    }
    // Most calls name no node: skip parsing the query then.
    if let Some(q) = query.filter(|q| q.contains("node=")) {
        named.extend(
            url_pairs(q)
                .into_iter()
                .filter(|(k, _)| k == "node")
                .map(|(_, v)| v),
        );
    }
    named
}

/// The node to go to among those named: the first that is not a member
/// (so [`choose`] refuses it), else the first (the header wins).
pub fn named_node(ring: &common::Ring, named: &[String]) -> Option<String> {
    let members = ring.members();
    named
        .iter()
        .find(|n| !members.contains(n))
        .or(named.first())
        .cloned()
}

/// `path?query` with the gateway's own `node` parameter removed (other
/// parameters are kept byte for byte).
pub fn strip_node_param(path: &str, query: Option<&str>) -> String {
    let Some(q) = query else {
        return path.to_string();
    };
    let kept: Vec<&str> = q
        .split('&')
        .filter(|p| !p.is_empty())
        .filter(|p| p.split('=').next() != Some("node"))
        .collect();
    if kept.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", kept.join("&"))
    }
}

fn url_pairs(q: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(q.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Forward one cache call to the chosen node.
pub async fn forward(
    gw: &Gateway,
    route: &'static str,
    method: Method,
    headers: &HeaderMap,
    path: &str,
    query: Option<&str>,
    body: Option<Bytes>,
) -> Result<Reply, Error> {
    let ring = gw.ring(Service::Cache);
    let named = named_node(&ring, &named_nodes(headers, query));
    let client_id = headers.get(CLIENT_ID_HEADER).and_then(|v| v.to_str().ok());
    let rr = gw.0.rr.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let choice = choose(&ring, named.as_deref(), client_id, rr)?;
    gw.count_request(Service::Cache);
    let pq = strip_node_param(path, query);
    let out = Outbound {
        route,
        method,
        path_and_query: &pq,
        body,
    };
    let order = match choice {
        Choice::Named(n) => vec![n],
        Choice::Spread(nodes) => gw.healthy_first(nodes),
    };
    let timeout: Duration = gw.settings().backend_timeout;
    let mut last = None;
    for (i, node) in order.iter().enumerate() {
        if i > 0 {
            gw.count_retry(Service::Cache);
        }
        match gw.call(Service::Cache, node, &out, timeout).await {
            Ok(reply) => return Ok(reply),
            // A slow or saturated node: another would be asked the same
            // of, and the client hears at once.
            Err(e @ (CallError::Timeout | CallError::Shed { .. })) => {
                last = Some(e.into_error("cache", node, timeout));
                break;
            }
            Err(e) => last = Some(e.into_error("cache", node, timeout)),
        }
    }
    gw.count_error(Service::Cache);
    Err(last.unwrap_or(Error::NoBackends { service: "cache" }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members() -> common::Ring {
        common::Ring::new(vec![
            "10.0.0.1:7201".to_string(),
            "10.0.0.2:7201".to_string(),
            "10.0.0.3:7201".to_string(),
        ])
    }

    #[test]
    fn named_node_wins_and_must_be_known() {
        let m = members();
        assert_eq!(
            choose(&m, Some("10.0.0.2:7201"), Some("c1"), 0).unwrap(),
            Choice::Named("10.0.0.2:7201".into())
        );
        let err = choose(&m, Some("10.9.9.9:1"), None, 0).unwrap_err();
        let api = err.to_api();
        assert_eq!(api.code, "unknown_node");
        assert_eq!(api.status, 400);
    }

    #[test]
    fn client_id_is_sticky_and_spreads() {
        let m = members();
        let first = |id: &str, rr| match choose(&m, None, Some(id), rr).unwrap() {
            Choice::Spread(v) => v[0].clone(),
            other => panic!("{other:?}"),
        };
        for id in ["alice", "bob", "carol"] {
            assert_eq!(first(id, 0), first(id, 7), "{id} moved with rr");
        }
        let distinct: std::collections::HashSet<String> =
            (0..60).map(|i| first(&format!("client-{i}"), 0)).collect();
        assert_eq!(distinct.len(), 3, "sticky ids use every node");
    }

    #[test]
    fn round_robin_without_identity() {
        let m = members();
        let firsts: Vec<String> = (0..6)
            .map(|rr| match choose(&m, None, None, rr).unwrap() {
                Choice::Spread(v) => {
                    assert_eq!(v.len(), 3);
                    v[0].clone()
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(firsts[0], firsts[3]);
        assert_ne!(firsts[0], firsts[1]);
        assert_ne!(firsts[1], firsts[2]);
        assert_eq!(
            choose(&common::Ring::new(Vec::<String>::new()), None, None, 0)
                .unwrap_err()
                .to_api()
                .code,
            "unavailable"
        );
    }

    #[test]
    fn node_param_is_read_and_stripped() {
        let h = HeaderMap::new();
        assert_eq!(
            named_nodes(&h, Some("key=a&node=10.0.0.1%3A7201")),
            vec!["10.0.0.1:7201".to_string()]
        );
        let mut h2 = HeaderMap::new();
        h2.insert(CACHE_NODE_HEADER, "10.0.0.3:7201".parse().unwrap());
        let named = named_nodes(&h2, Some("node=x"));
        assert_eq!(named, vec!["10.0.0.3:7201".to_string(), "x".into()]);
        assert!(named_nodes(&h, Some("key=a")).is_empty());
        assert_eq!(named_nodes(&h, Some("node=")), vec![String::new()]);
        // The header wins among members; any non-member named is refused.
        let ring = common::Ring::new(vec!["10.0.0.1:7201".to_string(), "10.0.0.3:7201".into()]);
        assert_eq!(named_node(&ring, &named), Some("x".into()));
        let both = named_nodes(&h2, Some("node=10.0.0.1%3A7201"));
        assert_eq!(named_node(&ring, &both), Some("10.0.0.3:7201".into()));
        assert_eq!(named_node(&ring, &[]), None);
        assert_eq!(
            strip_node_param("/api/cache/get", Some("key=a%20b&node=n1")),
            "/api/cache/get?key=a%20b"
        );
        assert_eq!(
            strip_node_param("/api/cache/stats", Some("node=n1")),
            "/api/cache/stats"
        );
        assert_eq!(strip_node_param("/api/cache/get", None), "/api/cache/get");
        assert_eq!(
            strip_node_param("/api/cache/get", Some("nodes=1&key=k")),
            "/api/cache/get?nodes=1&key=k"
        );
    }
}
