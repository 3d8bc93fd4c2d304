//! The gateway's fan-out routes: calls answered by every node of a service
//! at once rather than by one chosen node.
//!
//! - `GET /api/queues`: every queue node lists the queues it owns; the
//!   pages are merged by name, each queue once (from its owner on the
//!   gateway's ring), cut to the page size;
//! - `GET /api/events`: every lock and queue node's ring of recent events,
//!   merged newest first, an event that several nodes recorded (a
//!   replicated deadlock, a leader change) once.
//!
//! Invariants: at most [`FAN_OUT_CONCURRENCY`] calls in flight per request,
//! each bounded by the backend timeout (and by the gateway's in-flight
//! limit per node); a node that fails or times out is named in the answer's
//! `unavailable` and the rest is answered, never a failure of the whole call.

use api::{Event, EventList, QueueList, QueueStats};
use axum::body::Bytes;
use axum::http::{Method, StatusCode};
use futures::StreamExt;
use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::state::{Gateway, Outbound, Reply, Service};

/// Most nodes asked at once by one fan-out request.
pub const FAN_OUT_CONCURRENCY: usize = 8;

/// Ask every `(service, node)` for `path_and_query`: each node's decoded
/// answer, or `None` when it failed, timed out or answered non-2xx.
async fn fan_out<T: DeserializeOwned>(
    gw: &Gateway,
    nodes: Vec<(Service, String)>,
    route: &'static str,
    path_and_query: &str,
) -> Vec<(String, Option<T>)> {
    let timeout = gw.settings().backend_timeout;
    futures::stream::iter(nodes)
        .map(|(svc, node)| async move {
            let out = Outbound {
                route,
                method: Method::GET,
                path_and_query,
                body: None,
            };
            let answer = match gw.call(svc, &node, &out, timeout).await {
                Ok(reply) if reply.status.is_success() => {
                    serde_json::from_slice::<T>(&reply.body).ok()
                }
                Ok(reply) => {
                    tracing::debug!(%node, status = %reply.status, route, "fan-out: node refused");
                    None
                }
                Err(e) => {
                    tracing::debug!(%node, error = ?e, route, "fan-out: node did not answer");
                    None
                }
            };
            (node, answer)
        })
        .buffer_unordered(FAN_OUT_CONCURRENCY)
        .collect()
        .await
}

/// A JSON answer made by the gateway.
fn json_reply<T: serde::Serialize>(value: &T) -> Result<Reply, Error> {
    let body = serde_json::to_vec(value).map_err(|e| Error::InvalidInput(e.to_string()))?;
    Ok(Reply {
        status: StatusCode::OK,
        content_type: None,
        retry_after: None,
        body: Bytes::from(body),
        backend: String::new(),
    })
}

/// `GET /api/queues`: every queue node's page, merged.
pub async fn queues(
    gw: &Gateway,
    page: &api::limits::Page,
    path_and_query: &str,
) -> Result<Reply, Error> {
    gw.count_request(Service::Queue);
    let members = gw.members(Service::Queue);
    if members.is_empty() {
        gw.count_error(Service::Queue);
        return Err(Error::NoBackends { service: "queue" });
    }
    let nodes = members
        .iter()
        .map(|m| (Service::Queue, m.clone()))
        .collect();
    let answers: Vec<(String, Option<QueueList>)> =
        fan_out(gw, nodes, "/api/queues", path_and_query).await;
    let ring = gw.ring(Service::Queue);
    let list = merge_queues(answers, page.limit, |q| ring.owner(q).map(str::to_string));
    json_reply(&list)
}

/// Merge the nodes' pages: sorted by name, each queue once (the copy from
/// `owner(queue)` when that node sent one, else the first), at most
/// `limit`, and no further than the first `next` of a node that had more;
/// `next` when any node had more or the merge was cut.
pub fn merge_queues(
    answers: Vec<(String, Option<QueueList>)>,
    limit: usize,
    owner: impl Fn(&str) -> Option<String>,
) -> QueueList {
    let mut unavailable = Vec::new();
    // A node with more names gave its first `limit`: past its last, the
    // merge knows nothing, so the page ends there at the latest.
    let mut cutoff: Option<String> = None;
    let mut by_name: std::collections::BTreeMap<String, QueueStats> = Default::default();
    for (node, answer) in answers {
        let Some(list) = answer else {
            unavailable.push(node);
            continue;
        };
        if let Some(next) = list.next {
            if cutoff.as_ref().is_none_or(|c| next < *c) {
                cutoff = Some(next);
            }
        }
        for q in list.queues {
            let from_owner = q.node.is_some() && q.node == owner(&q.queue);
            match by_name.get(&q.queue) {
                Some(_) if !from_owner => {}
                _ => {
                    by_name.insert(q.queue.clone(), q);
                }
            }
        }
    }
    let known = by_name.len();
    let mut queues: Vec<QueueStats> = by_name
        .into_values()
        .filter(|q| cutoff.as_ref().is_none_or(|c| q.queue <= *c))
        .collect();
    let more = cutoff.is_some() || known > limit;
    queues.truncate(limit);
    unavailable.sort();
    QueueList {
        next: if more {
            queues.last().map(|q| q.queue.clone())
        } else {
            None
        },
        queues,
        unavailable,
    }
}

/// `GET /api/events`: every lock and queue node's ring, merged.
pub async fn events(gw: &Gateway, limit: usize) -> Result<Reply, Error> {
    let mut nodes: Vec<(Service, String)> = Vec::new();
    for svc in [Service::Lock, Service::Queue] {
        nodes.extend(gw.members(svc).iter().map(|m| (svc, m.clone())));
    }
    let path = format!("/api/events?limit={limit}");
    let answers: Vec<(String, Option<EventList>)> = fan_out(gw, nodes, "/api/events", &path).await;
    let mut unavailable = Vec::new();
    let mut lists: Vec<Vec<Event>> = Vec::new();
    for (node, answer) in answers {
        match answer {
            Some(list) => lists.push(list.events),
            None => unavailable.push(node),
        }
    }
    unavailable.sort();
    json_reply(&EventList {
        events: api::events::merge(lists, limit),
        unavailable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(name: &str, node: &str, ready: u64) -> QueueStats {
        QueueStats {
            queue: name.into(),
            node: Some(node.into()),
            ready,
            ..Default::default()
        }
    }

    #[test]
    fn queues_are_merged_by_name_once_from_their_owner() {
        let a = QueueList {
            queues: vec![q("a1", "A", 1), q("b1", "A", 0), q("c1", "A", 3)],
            next: None,
            unavailable: vec![],
        };
        let b = QueueList {
            queues: vec![q("b1", "B", 2), q("b2", "B", 4)],
            next: Some("b2".into()),
            unavailable: vec![],
        };
        let owner = |name: &str| Some(if name.starts_with('b') { "B" } else { "A" }.to_string());
        let answers = vec![
            ("A".to_string(), Some(a)),
            ("B".to_string(), Some(b)),
            ("C".to_string(), None),
        ];
        let merged = merge_queues(answers.clone(), 10, owner);
        let got: Vec<(&str, u64)> = merged
            .queues
            .iter()
            .map(|q| (q.queue.as_str(), q.ready))
            .collect();
        // B has more after b2, so the page stops there (c1 comes next time).
        assert_eq!(got, vec![("a1", 1), ("b1", 2), ("b2", 4)]);
        assert_eq!(merged.unavailable, vec!["C".to_string()]);
        assert_eq!(merged.next.as_deref(), Some("b2"));
        let cut = merge_queues(answers, 2, owner);
        assert_eq!(cut.queues.len(), 2);
        assert_eq!(cut.next.as_deref(), Some("b1"));
    }
}
