//! Queue routing: a queue lives on its owner in the shared ring
//! (`common::Ring` over the current queue members, the same ring every queue
//! node computes), so the gateway sends each call straight there.
//!
//! When the owner does not answer (connection refused/reset), the call goes to
//! the next owner clockwise — where the queue nodes themselves move a dead
//! node's queues (with Redis every node sees the same state). A retry after a
//! request was sent but its answer lost may repeat an enqueue or a dequeue;
//! that is within the queue's at-least-once contract. Timeouts are not
//! retried (the first node may still be working on it).

use std::time::Duration;

use serde_json::Value;

use crate::error::Error;
use crate::state::{CallError, Gateway, Outbound, Reply, Service};

/// Parse a queue write body: require an object with a valid `queue` name.
/// Returns the name and the body's `wait_ms` (long poll).
pub fn queue_of(body: &[u8]) -> Result<(String, u64), Error> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| Error::MalformedJson(e.to_string()))?;
    let obj = value
        .as_object()
        .ok_or_else(|| Error::InvalidField("request body must be a JSON object".into()))?;
    let queue = match obj.get("queue") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(Error::InvalidField("`queue` must be a string".into())),
        None => return Err(Error::InvalidField("missing field `queue`".into())),
    };
    check_name(&queue)?;
    let wait_ms = obj
        .get("wait_ms")
        .and_then(crate::state::as_whole_ms)
        .unwrap_or(0);
    Ok((queue, wait_ms))
}

/// The contract's name rules (non-empty, bounded, printable, not `.`/`..`).
pub fn check_name(queue: &str) -> Result<(), Error> {
    api::limits::path_name("queue", queue, api::limits::MAX_NAME_CHARS)
        .map_err(|e| Error::InvalidInput(e.message))
}

/// The nodes to try for `queue`: its owner, then the next owners clockwise;
/// nodes that just failed go last.
pub fn candidates(gw: &Gateway, queue: &str) -> Vec<String> {
    let ring = gw.ring(Service::Queue);
    let owners: Vec<String> = ring
        .owners(queue, ring.members().len())
        .into_iter()
        .map(str::to_string)
        .collect();
    gw.healthy_first(owners)
}

/// Forward one queue call to the owner of `queue`, failing over on
/// connection errors.
pub async fn forward(
    gw: &Gateway,
    out: Outbound<'_>,
    queue: &str,
    wait_ms: u64,
) -> Result<Reply, Error> {
    gw.count_request(Service::Queue);
    let res = forward_inner(gw, &out, queue, wait_ms).await;
    if res.is_err() {
        gw.count_error(Service::Queue);
    }
    res
}

async fn forward_inner(
    gw: &Gateway,
    out: &Outbound<'_>,
    queue: &str,
    wait_ms: u64,
) -> Result<Reply, Error> {
    let order = candidates(gw, queue);
    if order.is_empty() {
        return Err(Error::NoBackends { service: "queue" });
    }
    let timeout = gw.settings().backend_timeout + Duration::from_millis(wait_ms);
    let mut last = None;
    for (i, node) in order.iter().enumerate() {
        if i > 0 {
            gw.count_retry(Service::Queue);
        }
        match gw.call(Service::Queue, node, out, timeout).await {
            Ok(reply) => return Ok(reply),
            Err(CallError::Unreachable(reason)) => {
                tracing::debug!(%node, %queue, %reason, "queue node unreachable; trying next owner");
                let e = CallError::Unreachable(reason);
                last = Some(e.into_error("queue", node, timeout));
            }
            // Slow or saturated: the next owner would only forward to it.
            Err(e) => return Err(e.into_error("queue", node, timeout)),
        }
    }
    Err(last.unwrap_or(Error::NoBackends { service: "queue" }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_come_from_the_body() {
        assert_eq!(
            queue_of(br#"{"queue":"orders","payload":1,"wait_ms":100}"#).unwrap(),
            ("orders".to_string(), 100)
        );
        let cases: &[(&[u8], &str)] = &[
            (b"nope", "malformed_json"),
            (b"[]", "invalid_field"),
            (br#"{"payload":1}"#, "invalid_field"),
            (br#"{"queue":7}"#, "invalid_field"),
            (br#"{"queue":""}"#, "invalid_input"),
            (br#"{"queue":"a\u0001b"}"#, "invalid_input"),
        ];
        for (body, code) in cases {
            assert_eq!(
                queue_of(body).unwrap_err().to_api().code,
                *code,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let long = format!(
            r#"{{"queue":"{}"}}"#,
            "q".repeat(api::limits::MAX_NAME_CHARS + 1)
        );
        assert_eq!(
            queue_of(long.as_bytes()).unwrap_err().to_api().code,
            "invalid_input"
        );
    }
}
