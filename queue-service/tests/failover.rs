//! Crash tests with real processes: a queue node killed (SIGKILL) while
//! messages are in flight, Redis killed and restarted with AOF
//! `appendfsync always`, and an embedded node killed and restarted. In every
//! case each message that got 201 is delivered afterwards and nothing acked
//! comes back.

mod support;

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Ring;
use serde_json::{json, Value};
use support::{free_port, Api, ProcNode, RedisServer};

fn queue_owned_by(peers: &[String], owner: &str) -> String {
    let ring = Ring::new(peers.iter().cloned());
    (0..10_000)
        .map(|i| format!("jobs-{i}"))
        .find(|q| ring.owner(q) == Some(owner))
        .unwrap()
}

fn ids_of(v: &Value) -> Vec<String> {
    v["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_str().unwrap().to_string())
        .collect()
}

/// Dequeue and ack until every id in `want` was seen or `limit` passes.
/// Returns every id seen (with repeats counted once) and the attempts seen.
///
/// It waits for the ids themselves, not for as many ids: a call that failed
/// for its client may still have been stored (Redis killed after its fsync,
/// before its reply), and such a message counted in place of a missing one
/// would end the drain early and make a delivered message look lost.
async fn drain(
    api: &Api,
    base: &str,
    q: &str,
    want: &BTreeSet<String>,
    limit: Duration,
) -> (BTreeSet<String>, Vec<u64>) {
    let mut seen = BTreeSet::new();
    let mut attempts = Vec::new();
    let deadline = Instant::now() + limit;
    while !want.is_subset(&seen) && Instant::now() < deadline {
        let (s, v) = api
            .post(
                base,
                "/api/queue/dequeue",
                json!({"queue": q, "max": 100, "wait_ms": 1000, "visibility_ms": 30000}),
            )
            .await;
        if s != 200 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        for m in v["messages"].as_array().unwrap() {
            seen.insert(m["id"].as_str().unwrap().to_string());
            attempts.push(m["attempts"].as_u64().unwrap());
            let (s, v) = api
                .post(
                    base,
                    "/api/queue/ack",
                    json!({"queue": q, "receipt": m["receipt"]}),
                )
                .await;
            assert_eq!(s, 200, "{v}");
        }
    }
    (seen, attempts)
}

#[tokio::test]
async fn killed_node_queues_are_served_by_the_next_owner_with_nothing_lost() {
    let redis = RedisServer::start();
    let addrs: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let mut nodes: Vec<ProcNode> = addrs
        .iter()
        .map(|a| ProcNode::spawn(a, &addrs, Some(&redis.url()), None))
        .collect();
    let q = queue_owned_by(&addrs, &addrs[0]);
    let api = Api::default();
    let batch: Vec<Value> = (0..20).map(|i| json!({"payload": i})).collect();
    let (s, v) = api
        .post(
            &nodes[1].base(),
            "/api/queue/enqueue",
            json!({"queue": q, "messages": batch}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let mut expected: HashSet<String> = ids_of(&v).into_iter().collect();
    // Five in flight with a consumer, two of them acked, through the owner.
    let (s, v) = api
        .post(
            &nodes[2].base(),
            "/api/queue/dequeue",
            json!({"queue": q, "max": 5, "visibility_ms": 1000}),
        )
        .await;
    assert_eq!(s, 200);
    let inflight = v["messages"].as_array().unwrap().clone();
    assert_eq!(inflight.len(), 5);
    for m in &inflight[..2] {
        let (s, _) = api
            .post(
                &nodes[1].base(),
                "/api/queue/ack",
                json!({"queue": q, "receipt": m["receipt"]}),
            )
            .await;
        assert_eq!(s, 200);
        expected.remove(m["id"].as_str().unwrap());
    }
    let acked: HashSet<String> = inflight[..2]
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    let (_, v) = api.get(&nodes[1].base(), &format!("/api/queue/{q}")).await;
    assert_eq!(v["node"], json!(addrs[0]));

    // The owner dies with three messages in flight.
    nodes[0].kill();

    let (s, v) = api
        .post(
            &nodes[1].base(),
            "/api/queue/enqueue",
            json!({"queue": q, "messages": [{"payload": "after"}]}),
        )
        .await;
    assert_eq!(s, 201, "served without the dead owner: {v}");
    expected.extend(ids_of(&v));
    let (_, v) = api.get(&nodes[2].base(), &format!("/api/queue/{q}")).await;
    assert_eq!(
        v["node"],
        json!(addrs[2]),
        "the surviving node serves it: {v}"
    );
    let expected: BTreeSet<String> = expected.into_iter().collect();
    let (seen, attempts) = drain(
        &api,
        &nodes[2].base(),
        &q,
        &expected,
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(seen, expected, "every un-acked message delivered");
    assert!(
        seen.is_disjoint(&acked.into_iter().collect()),
        "acked messages never return"
    );
    assert_eq!(
        attempts.iter().filter(|&&a| a == 2).count(),
        3,
        "the three in flight were redelivered"
    );
    let (_, v) = api.get(&nodes[1].base(), &format!("/api/queue/{q}")).await;
    assert_eq!(
        (v["ready"].as_u64(), v["in_flight"].as_u64()),
        (Some(0), Some(0)),
        "{v}"
    );
    let (_, st) = api.get(&nodes[1].base(), "/stats").await;
    assert!(
        st["counters"]["owner_fallbacks"].as_u64().unwrap() >= 1,
        "{st}"
    );
}

/// Ids that got 201 (with when), failed calls, the producer tasks.
type Producers = (
    Arc<Mutex<Vec<(Instant, String)>>>,
    Arc<Mutex<u64>>,
    Vec<tokio::task::JoinHandle<()>>,
);

/// Enqueue from `clients` tasks until `stop`; returns the ids that got 201
/// and how many calls failed.
fn spawn_producers(
    api: &Api,
    base: &str,
    q: &str,
    clients: usize,
    stop: Arc<AtomicBool>,
) -> Producers {
    let ok = Arc::new(Mutex::new(Vec::new()));
    let failed = Arc::new(Mutex::new(0u64));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (api, base, q, stop, ok, failed) = (
            api.clone(),
            base.to_string(),
            q.to_string(),
            stop.clone(),
            ok.clone(),
            failed.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) && i < 100_000 {
                i += 1;
                let r = api
                    .http
                    .post(format!("{base}/api/queue/enqueue"))
                    .json(&json!({"queue": q, "payload": {"c": c, "i": i}}))
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().as_u16() == 201 => {
                        let v: Value = r.json().await.unwrap();
                        ok.lock()
                            .unwrap()
                            .push((Instant::now(), v["id"].as_str().unwrap().to_string()));
                    }
                    _ => {
                        *failed.lock().unwrap() += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        }));
    }
    (ok, failed, tasks)
}

/// Until the producers have `n` acknowledged enqueues: a fault injected
/// after a fixed sleep would, on a slow machine, hit a node that had
/// acknowledged nothing yet, and there would be nothing to lose.
async fn wait_acked(ok: &Mutex<Vec<(Instant, String)>>, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while ok.lock().unwrap().len() < n {
        assert!(
            Instant::now() < deadline,
            "fewer than {n} enqueues acknowledged in 20 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_with_aof_always_keeps_every_201() {
    let mut redis = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let addr = format!("127.0.0.1:{}", free_port());
    let node = ProcNode::spawn(&addr, std::slice::from_ref(&addr), Some(&redis.url()), None);
    let api = Api::default();
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed, tasks) = spawn_producers(&api, &node.base(), "durable", 8, stop.clone());
    wait_acked(&ok, 200).await;
    redis.kill();
    let killed_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.restart();
    // Let producers see Redis again.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline
        && !ok
            .lock()
            .unwrap()
            .iter()
            .any(|(t, _)| *t > killed_at + Duration::from_millis(300))
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let acked: BTreeSet<String> = ok
        .lock()
        .unwrap()
        .iter()
        .map(|(_, id)| id.clone())
        .collect();
    assert!(
        ok.lock().unwrap().iter().any(|(t, _)| *t < killed_at),
        "some enqueued before the crash"
    );
    assert!(
        ok.lock()
            .unwrap()
            .iter()
            .any(|(t, _)| *t > killed_at + Duration::from_millis(300)),
        "the node recovers once Redis is back"
    );
    assert!(
        *failed.lock().unwrap() > 0,
        "calls during the outage failed instead of being acknowledged"
    );
    let (seen, _) = drain(
        &api,
        &node.base(),
        "durable",
        &acked,
        Duration::from_secs(30),
    )
    .await;
    let missing: Vec<&String> = acked.difference(&seen).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged messages lost: {:?} ({} stored whose call had failed)",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)],
        seen.difference(&acked).count()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_node_killed_keeps_every_201_and_in_flight_messages() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let peers = vec![addr.clone()];
    let mut node = ProcNode::spawn(&addr, &peers, None, Some(dir.path()));
    let api = Api::default();
    api.post(
        &node.base(),
        "/api/queue/enqueue",
        json!({"queue": "durable", "payload": "first"}),
    )
    .await;
    let (_, v) = api
        .post(
            &node.base(),
            "/api/queue/dequeue",
            json!({"queue": "durable", "visibility_ms": 60000}),
        )
        .await;
    let held = v["messages"][0].clone();
    assert_eq!(held["payload"], json!("first"));
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, _failed, tasks) = spawn_producers(&api, &node.base(), "durable", 8, stop.clone());
    wait_acked(&ok, 200).await;
    node.kill();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let acked: BTreeSet<String> = ok
        .lock()
        .unwrap()
        .iter()
        .map(|(_, id)| id.clone())
        .collect();
    assert!(!acked.is_empty());
    let node = ProcNode::spawn(&addr, &peers, None, Some(dir.path()));
    let api = Api::default();
    // The held delivery survived the crash: still in flight, its receipt live.
    let (_, v) = api.get(&node.base(), "/api/queue/durable").await;
    assert_eq!(v["in_flight"], json!(1), "{v}");
    let (s, v) = api
        .post(
            &node.base(),
            "/api/queue/ack",
            json!({"queue": "durable", "receipt": held["receipt"]}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (seen, _) = drain(
        &api,
        &node.base(),
        "durable",
        &acked,
        Duration::from_secs(30),
    )
    .await;
    let missing: Vec<&String> = acked.difference(&seen).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged messages lost",
        missing.len(),
        acked.len()
    );
    assert!(
        !seen.contains(held["id"].as_str().unwrap()),
        "the acked message never returns"
    );
}
