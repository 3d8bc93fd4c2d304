//! The storage limits end to end, on real `queue-service` processes with
//! small limits set by flag (and, after a restart, by environment): each
//! limit refuses with 429 `queue_full`, a `Retry-After` header and the
//! limit's numbers; what was stored before is intact and still dequeues and
//! acks; an ack makes room; `/stats` and `/metrics` show limits and use.
//! On the embedded store a SIGKILLed node restarts over its data and keeps
//! enforcing; on Redis the per-queue limits hold whichever node serves the
//! queue, and a forwarding node relays the `Retry-After`.
//!
//! The delivery-level cases (what counts, sweeping expired messages, raised
//! limits after a reopen) are in `testscripts/limits.txt`.

mod support;

use common::Ring;
use serde_json::{json, Value};
use support::{free_port, Api, ProcNode, RedisServer};

/// Enqueue `payloads` as one batch; the status, Retry-After and body.
async fn enqueue(
    api: &Api,
    base: &str,
    queue: &str,
    payloads: &[Value],
) -> (u16, Option<String>, Value) {
    let messages: Vec<Value> = payloads.iter().map(|p| json!({ "payload": p })).collect();
    api.post_with_retry_after(
        base,
        "/api/queue/enqueue",
        json!({ "queue": queue, "messages": messages }),
    )
    .await
}

/// Assert a 429 `queue_full` refusal by `limit` with these numbers.
fn assert_full(
    (status, retry_after, v): &(u16, Option<String>, Value),
    limit: &str,
    max: u64,
    current: u64,
    adding: u64,
) {
    assert_eq!(*status, 429, "{v}");
    assert_eq!(retry_after.as_deref(), Some("1"), "{v}");
    let e = &v["error"];
    assert_eq!(e["code"], json!("queue_full"), "{v}");
    assert_eq!(e["limit"], json!(limit), "{v}");
    assert_eq!(
        (
            e["max"].as_u64(),
            e["current"].as_u64(),
            e["adding"].as_u64()
        ),
        (Some(max), Some(current), Some(adding)),
        "{v}"
    );
    let message = e["message"].as_str().unwrap();
    let (scope, resource) = limit.split_once('_').unwrap();
    assert!(
        message.contains(&format!("{scope} limit of {max} ")) && message.contains(resource),
        "the message should name the {scope} {resource} limit and its value: {message}"
    );
}

fn assert_created(r: &(u16, Option<String>, Value)) {
    assert_eq!(r.0, 201, "{}", r.2);
    assert_eq!(r.1, None, "only a refusal carries Retry-After");
}

/// Dequeue up to `max` (visible again after 30 s); (payload, receipt) pairs.
async fn dequeue(api: &Api, base: &str, queue: &str, max: u64) -> Vec<(Value, String)> {
    let (s, v) = api
        .post(
            base,
            "/api/queue/dequeue",
            json!({ "queue": queue, "max": max, "visibility_ms": 30000 }),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["payload"].clone(),
                m["receipt"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

async fn ack(api: &Api, base: &str, queue: &str, receipt: &str) {
    let (s, v) = api
        .post(
            base,
            "/api/queue/ack",
            json!({ "queue": queue, "receipt": receipt }),
        )
        .await;
    assert_eq!(s, 200, "{v}");
}

/// A payload whose JSON text is `n` bytes (a string of `n - 2` letters).
fn bytes(n: usize) -> Value {
    json!("x".repeat(n - 2))
}

/// Wait until the node answers `/health` (the embedded store loads after
/// the listener is bound). Connection errors are waited out too: after a
/// restart on the same address the client's pooled connection to the
/// killed process fails once.
async fn healthy(api: &Api, base: &str) {
    for _ in 0..150 {
        let answer = api.http.get(format!("{base}/health")).send().await;
        if answer.is_ok_and(|r| r.status() == 200) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{base} did not become healthy within 15 s");
}

#[tokio::test]
async fn embedded_node_refuses_over_each_limit_and_keeps_enforcing_after_restart() {
    let api = Api::default();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("node");
    let addr = format!("127.0.0.1:{}", free_port());
    let peers = [addr.clone()];
    let flags = [
        "--max-queue-messages",
        "3",
        "--max-queue-bytes",
        "30",
        "--max-node-messages",
        "5",
        "--max-node-bytes",
        "40",
    ];
    let mut node = ProcNode::spawn_with(&addr, &peers, None, Some(&dir), &flags, &[]);
    let base = node.base();
    healthy(&api, &base).await;

    // Queue messages: three fit, a fourth does not.
    let three = [bytes(10), bytes(10), bytes(10)];
    assert_created(&enqueue(&api, &base, "q1", &three).await);
    assert_full(
        &enqueue(&api, &base, "q1", &[json!(1)]).await,
        "queue_messages",
        3,
        3,
        1,
    );
    // Queue bytes: one message larger than the queue's byte limit.
    assert_full(
        &enqueue(&api, &base, "q2", &[bytes(31)]).await,
        "queue_bytes",
        30,
        0,
        31,
    );
    // Node messages: 3 + 2 fill the node; one more in a third queue does not fit.
    assert_created(&enqueue(&api, &base, "q2", &[json!(1), json!(2)]).await);
    assert_full(
        &enqueue(&api, &base, "q3", &[json!(3)]).await,
        "node_messages",
        5,
        5,
        1,
    );
    // What was stored is intact: the first message of q1 dequeues as sent,
    // and acking it frees one message and 10 bytes on the node.
    let got = dequeue(&api, &base, "q1", 1).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, bytes(10));
    ack(&api, &base, "q1", &got[0].1).await;
    // Node bytes: 20 + 2 stored, 20 more would be 42 > 40.
    assert_full(
        &enqueue(&api, &base, "q3", &[bytes(20)]).await,
        "node_bytes",
        40,
        22,
        20,
    );
    assert_created(&enqueue(&api, &base, "q3", &[json!(3)]).await);

    let (s, stats) = api.get(&base, "/stats").await;
    assert_eq!(s, 200);
    let limits = &stats["limits"];
    assert_eq!(limits["queue"]["max_messages"], json!(3), "{stats}");
    assert_eq!(limits["queue"]["max_bytes"], json!(30), "{stats}");
    assert_eq!(
        limits["node"],
        json!({"enforced": true, "max_messages": 5, "max_bytes": 40, "messages": 5, "bytes": 23}),
        "{stats}"
    );
    assert_eq!(
        limits["refused"],
        json!({"queue_messages": 1, "queue_bytes": 1, "node_messages": 1, "node_bytes": 1}),
        "{stats}"
    );
    let (_, metrics) = api.get_text(&base, "/metrics").await;
    for want in [
        "queue_limit_messages{scope=\"queue\"} 3",
        "queue_limit_bytes{scope=\"queue\"} 30",
        "queue_limit_messages{scope=\"node\"} 5",
        "queue_limit_bytes{scope=\"node\"} 40",
        "queue_stored_messages{scope=\"node\"} 5",
        "queue_stored_bytes{scope=\"node\"} 23",
        "queue_full_refusals_total{limit=\"node_bytes\"} 1",
    ] {
        assert!(metrics.contains(want), "missing {want:?} in\n{metrics}");
    }

    // SIGKILL and restart over the same data, the limits now given by
    // environment: everything loads and the node is still full.
    node.kill();
    let envs = [
        ("MAX_QUEUE_MESSAGES", "3"),
        ("MAX_QUEUE_BYTES", "30"),
        ("MAX_NODE_MESSAGES", "5"),
        ("MAX_NODE_BYTES", "40"),
    ];
    let node = ProcNode::spawn_with(&addr, &peers, None, Some(&dir), &[], &envs);
    let base = node.base();
    healthy(&api, &base).await;
    assert_full(
        &enqueue(&api, &base, "q4", &[json!(4)]).await,
        "node_messages",
        5,
        5,
        1,
    );
    let (_, stats) = api.get(&base, "/stats").await;
    assert_eq!(stats["limits"]["node"]["messages"], json!(5), "{stats}");
    // q2's messages came back; acking them makes room again.
    let got = dequeue(&api, &base, "q2", 10).await;
    assert_eq!(
        got.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>(),
        vec![json!(1), json!(2)]
    );
    for (_, receipt) in &got {
        ack(&api, &base, "q2", receipt).await;
    }
    assert_created(&enqueue(&api, &base, "q4", &[json!(4), json!(5)]).await);
}

#[tokio::test]
async fn redis_queue_limits_hold_through_any_node_and_the_retry_after_is_relayed() {
    let api = Api::default();
    let redis = RedisServer::start();
    let addrs: Vec<String> = (0..2)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let flags = [
        "--max-queue-messages",
        "2",
        "--max-queue-bytes",
        "100",
        // Not applied with Redis: were they, the third message below would
        // already be refused by the node's limit.
        "--max-node-messages",
        "1",
    ];
    let nodes: Vec<ProcNode> = addrs
        .iter()
        .map(|a| ProcNode::spawn_with(a, &addrs, Some(&redis.url()), None, &flags, &[]))
        .collect();
    for n in &nodes {
        healthy(&api, &n.base()).await;
    }
    let ring = Ring::new(addrs.iter().cloned());
    let queue = (0..1000)
        .map(|i| format!("jobs-{i}"))
        .find(|q| ring.owner(q) == Some(addrs[0].as_str()))
        .unwrap();
    let (owner, other) = (nodes[0].base(), nodes[1].base());

    // Through the node that does not own the queue: forwarded, and the
    // owner's 429 comes back with its Retry-After.
    assert_created(&enqueue(&api, &other, &queue, &[json!("a"), json!("b")]).await);
    assert_full(
        &enqueue(&api, &other, &queue, &[json!("c")]).await,
        "queue_messages",
        2,
        2,
        1,
    );
    assert_full(
        &enqueue(&api, &owner, &queue, &[json!("c")]).await,
        "queue_messages",
        2,
        2,
        1,
    );
    // The stored messages are intact; an ack makes room for one.
    let got = dequeue(&api, &other, &queue, 10).await;
    assert_eq!(
        got.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>(),
        vec![json!("a"), json!("b")]
    );
    ack(&api, &other, &queue, &got[0].1).await;
    assert_created(&enqueue(&api, &other, &queue, &[json!("c")]).await);
    assert_full(
        &enqueue(&api, &owner, &queue, &[json!("d")]).await,
        "queue_messages",
        2,
        2,
        1,
    );
    // Bytes, on another queue (either node serves it).
    assert_created(&enqueue(&api, &owner, "bytes", &[bytes(60)]).await);
    assert_full(
        &enqueue(&api, &owner, "bytes", &[bytes(41)]).await,
        "queue_bytes",
        100,
        60,
        41,
    );
    assert_created(&enqueue(&api, &owner, "bytes", &[bytes(40)]).await);

    let (_, stats) = api.get(&owner, "/stats").await;
    assert_eq!(stats["limits"]["node"]["enforced"], json!(false), "{stats}");
    assert_eq!(
        stats["limits"]["queue"]["max_messages"],
        json!(2),
        "{stats}"
    );
    let (_, metrics) = api.get_text(&owner, "/metrics").await;
    assert!(
        metrics.contains("queue_limit_messages{scope=\"queue\"} 2"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("queue_limit_messages{scope=\"node\"}"),
        "a limit the store does not enforce is not published:\n{metrics}"
    );
}
