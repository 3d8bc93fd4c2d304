//! Several in-process nodes on 127.0.0.1: placement and forwarding, long
//! polls woken by enqueues and by delayed messages, redelivery after a
//! consumer crash, and re-placement when a fourth node joins.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Ring;
use serde_json::json;
use support::{bind_n, embedded_store, redis_store, start_node, Api, InProcNode, TestStore};

async fn cluster_embedded(n: usize) -> (Vec<InProcNode>, Vec<TestStore>) {
    let listeners = bind_n(n).await;
    let peers: Vec<String> = listeners
        .iter()
        .map(|l| l.local_addr().unwrap().to_string())
        .collect();
    let mut nodes = Vec::new();
    let mut stores = Vec::new();
    for l in listeners {
        let t = embedded_store(5);
        nodes.push(start_node(l, &peers, t.store.clone()).await);
        stores.push(t);
    }
    (nodes, stores)
}

/// A queue name owned by `owner` under `peers`.
fn queue_owned_by(peers: &[String], owner: &str) -> String {
    let ring = Ring::new(peers.iter().cloned());
    (0..10_000)
        .map(|i| format!("q-{i}"))
        .find(|q| ring.owner(q) == Some(owner))
        .unwrap()
}

#[tokio::test]
async fn non_owners_forward_to_the_owner() {
    let (nodes, _stores) = cluster_embedded(3).await;
    let peers: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let q = queue_owned_by(&peers, &nodes[0].addr);
    let api = Api::default();
    let (s, v) = api
        .post(
            &nodes[1].base(),
            "/api/queue/enqueue",
            json!({"queue": q, "payload": "hi"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = api
        .post(&nodes[2].base(), "/api/queue/dequeue", json!({"queue": q}))
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["messages"][0]["payload"], json!("hi"));
    let r = v["messages"][0]["receipt"].as_str().unwrap().to_string();
    let (_, v) = api.get(&nodes[1].base(), &format!("/api/queue/{q}")).await;
    assert_eq!(v["node"], json!(nodes[0].addr), "served by the owner");
    assert_eq!(v["in_flight"], json!(1));
    // Only the owner's store holds the queue.
    let (_, st) = api.get(&nodes[0].base(), "/stats").await;
    assert_eq!(st["counters"]["enqueued"], json!(1));
    let (_, st) = api.get(&nodes[1].base(), "/stats").await;
    assert_eq!(st["counters"]["enqueued"], json!(0));
    assert!(st["counters"]["forwarded"].as_u64().unwrap() >= 2);
    // Errors are relayed unchanged.
    let (s, v) = api
        .post(
            &nodes[2].base(),
            "/api/queue/ack",
            json!({"queue": q, "receipt": r}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = api
        .post(
            &nodes[1].base(),
            "/api/queue/ack",
            json!({"queue": q, "receipt": r}),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (404, Some("message_not_found"))
    );
}

#[tokio::test]
async fn embedded_owner_down_is_503_with_the_owner() {
    let (nodes, _stores) = cluster_embedded(3).await;
    let peers: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let q = queue_owned_by(&peers, &nodes[0].addr);
    nodes[0].abort();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let api = Api::default();
    let (s, v) = api
        .post(
            &nodes[1].base(),
            "/api/queue/enqueue",
            json!({"queue": q, "payload": 1}),
        )
        .await;
    assert_eq!(s, 503, "{v}");
    assert_eq!(v["error"]["code"], json!("owner_unavailable"));
    assert_eq!(v["error"]["owner"], json!(nodes[0].addr));
}

#[tokio::test]
async fn long_poll_is_woken_by_an_enqueue_through_another_node() {
    let (nodes, _stores) = cluster_embedded(2).await;
    let peers: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let q = queue_owned_by(&peers, &nodes[0].addr);
    let api = Api::default();
    let start = Instant::now();
    let (a, b, q2) = (api.clone(), nodes[1].base(), q.clone());
    let poll = tokio::spawn(async move {
        a.post(
            &b,
            "/api/queue/dequeue",
            json!({"queue": q2, "wait_ms": 10_000}),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (s, _) = api
        .post(
            &nodes[1].base(),
            "/api/queue/enqueue",
            json!({"queue": q, "payload": 7}),
        )
        .await;
    assert_eq!(s, 201);
    let (s, v) = poll.await.unwrap();
    let took = start.elapsed();
    assert_eq!(s, 200);
    assert_eq!(v["messages"][0]["payload"], json!(7));
    // Woken by the enqueue, not by the end of its 10 s wait.
    assert!(took < Duration::from_secs(8), "woken after {took:?}");
    // An empty long poll returns empty after its wait.
    let start = Instant::now();
    let (s, v) = api
        .post(
            &nodes[0].base(),
            "/api/queue/dequeue",
            json!({"queue": "empty", "wait_ms": 300}),
        )
        .await;
    assert_eq!((s, v["messages"].as_array().map(Vec::len)), (200, Some(0)));
    assert!(start.elapsed() >= Duration::from_millis(290));
}

#[tokio::test]
async fn long_poll_wakes_when_a_delayed_message_is_due() {
    let (nodes, _stores) = cluster_embedded(1).await;
    let api = Api::default();
    let base = nodes[0].base();
    // The message is due 400 ms after the node took it, so at least 400 ms
    // after this instant, however slow the enqueue's answer is.
    let before_enqueue = Instant::now();
    api.post(
        &base,
        "/api/queue/enqueue",
        json!({"queue": "d", "payload": 1, "delay_ms": 400}),
    )
    .await;
    let start = Instant::now();
    let (s, v) = api
        .post(
            &base,
            "/api/queue/dequeue",
            json!({"queue": "d", "wait_ms": 10_000}),
        )
        .await;
    let took = start.elapsed();
    assert_eq!(s, 200);
    assert_eq!(v["messages"].as_array().unwrap().len(), 1);
    // Not before it is due (the node's clock is in whole milliseconds)...
    let since_enqueue = before_enqueue.elapsed();
    assert!(
        since_enqueue >= Duration::from_millis(398),
        "{since_enqueue:?}"
    );
    // ...and woken at the due time, not by the 1 s re-check (which would
    // answer 1 s after the dequeue started) nor at the end of the wait.
    assert!(took < Duration::from_millis(950), "{took:?}");
}

async fn crashed_consumer(t: TestStore) {
    let listeners = bind_n(1).await;
    let peers = vec![listeners[0].local_addr().unwrap().to_string()];
    let node = start_node(
        listeners.into_iter().next().unwrap(),
        &peers,
        t.store.clone(),
    )
    .await;
    let api = Api::default();
    let base = node.base();
    api.post(
        &base,
        "/api/queue/enqueue",
        json!({"queue": "w", "payload": "job"}),
    )
    .await;
    let (_, v) = api
        .post(
            &base,
            "/api/queue/dequeue",
            json!({"queue": "w", "visibility_ms": 300}),
        )
        .await;
    let first = v["messages"][0].clone();
    // The consumer crashes: no ack. Another consumer long-polls and gets it
    // when the visibility ends.
    let start = Instant::now();
    let (_, v) = api
        .post(
            &base,
            "/api/queue/dequeue",
            json!({"queue": "w", "wait_ms": 5000}),
        )
        .await;
    let second = v["messages"][0].clone();
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(second["id"], first["id"]);
    assert_eq!(second["attempts"], json!(2));
    let (s, v) = api
        .post(
            &base,
            "/api/queue/ack",
            json!({"queue": "w", "receipt": first["receipt"]}),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("stale_receipt"))
    );
    let (s, _) = api
        .post(
            &base,
            "/api/queue/ack",
            json!({"queue": "w", "receipt": second["receipt"]}),
        )
        .await;
    assert_eq!(s, 200);
    let (_, st) = api.get(&base, "/stats").await;
    assert_eq!(st["counters"]["redelivered"], json!(1));
}

#[tokio::test]
async fn crashed_consumer_gets_redelivery_embedded() {
    crashed_consumer(embedded_store(5)).await;
}

#[tokio::test]
async fn crashed_consumer_gets_redelivery_redis() {
    crashed_consumer(redis_store(5)).await;
}

/// Adding a fourth node moves about a quarter of the queues, all of them to
/// the new node, and (Redis backend) every message stays reachable.
#[tokio::test]
async fn fourth_node_takes_about_a_quarter_of_queues() {
    let redis = redis_store(5);
    let url = redis.redis.as_ref().unwrap().url();
    let store = |_: usize| -> Arc<dyn queue_service::store::QueueStore> {
        Arc::new(
            queue_service::store::redis::RedisStore::new(
                &url,
                5,
                queue_service::limit::Limits::QUEUE_DEFAULT,
            )
            .unwrap(),
        )
    };
    let listeners = bind_n(4).await;
    let addrs: Vec<String> = listeners
        .iter()
        .map(|l| l.local_addr().unwrap().to_string())
        .collect();
    let mut listeners = listeners.into_iter();
    let three = addrs[..3].to_vec();
    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(start_node(listeners.next().unwrap(), &three, store(i)).await);
    }
    let api = Api::default();
    let queues: Vec<String> = (0..200).map(|i| format!("rebalance-{i}")).collect();
    let mut before = HashMap::new();
    for (i, q) in queues.iter().enumerate() {
        let base = nodes[i % 3].base();
        let (s, _) = api
            .post(
                &base,
                "/api/queue/enqueue",
                json!({"queue": q, "payload": i}),
            )
            .await;
        assert_eq!(s, 201);
        let (_, v) = api.get(&base, &format!("/api/queue/{q}")).await;
        before.insert(q.clone(), v["node"].as_str().unwrap().to_string());
    }
    // Restart the three with four members, and start the fourth.
    for n in &nodes {
        n.abort();
    }
    drop(nodes);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut nodes = Vec::new();
    for (i, addr) in addrs[..3].iter().enumerate() {
        let l = tokio::net::TcpListener::bind(addr).await.unwrap();
        nodes.push(start_node(l, &addrs, store(i)).await);
    }
    nodes.push(start_node(listeners.next().unwrap(), &addrs, store(3)).await);
    let api = Api::default();
    let mut moved = 0;
    for (i, q) in queues.iter().enumerate() {
        let (_, v) = api
            .get(&nodes[i % 4].base(), &format!("/api/queue/{q}"))
            .await;
        let now = v["node"].as_str().unwrap();
        assert_eq!(v["ready"], json!(1), "{q}: {v}");
        if now != before[q] {
            moved += 1;
            assert_eq!(now, addrs[3], "{q} moved between old nodes");
        }
    }
    let share = moved as f64 / queues.len() as f64;
    assert!((0.15..0.35).contains(&share), "moved share {share}");
}
