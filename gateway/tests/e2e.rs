//! End-to-end through the gateway against the REAL service binaries on
//! 127.0.0.1 (lock-service ×3, queue-service with a throwaway redis-server,
//! cache-service), driven with the typed `client` crate:
//! - every route, every answer shape, bad input of every kind → 4xx JSON;
//! - the documented routes all exist against real backends, tokens guard them;
//! - the lock leader killed mid-run: clients see no error, only a delay;
//! - a queue node added, killed and removed: every queue still served;
//! - the list routes and event rings through the gateway binary: held and
//!   waited-for locks, queues spread over several nodes, pages that neither
//!   skip nor repeat, a deadlock and a leader change in `GET /api/events`.

mod harness;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client::{
    AcquireRequest, CacheSetRequest, Client, DequeueRequest, EnqueueRequest, EventKind,
    ExtendRequest, ListQuery, LockGrant, LockMode, NackRequest, NewMessage, QueueConfig,
    RedriveRequest, ReleaseRequest, RenewRequest,
};
use gateway::{Service, Settings};
use harness::*;
use serde_json::{json, Value};

async fn wait_healthy(c: &Client, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let h = c.health().await.unwrap();
        if h.status == "ok" {
            return;
        }
        assert!(Instant::now() < deadline, "gateway never healthy: {h:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn acquire(resource: &str, owner: &str) -> AcquireRequest {
    AcquireRequest {
        resource: resource.into(),
        owner: owner.into(),
        ttl_ms: Some(10_000),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_through_the_gateway_against_real_services() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start(dir.path()).await;
    let locks = lock_cluster(dir.path(), 3).await;
    let queues = queue_cluster(dir.path(), 2, &redis.url).await;
    let caches = cache_cluster(dir.path(), 2).await;
    let gw = Gw::start(
        Settings::default(),
        addrs(&locks),
        addrs(&queues),
        addrs(&caches),
    )
    .await;
    let c = gw.client();
    wait_healthy(&c, Duration::from_secs(15)).await;

    // ---- gateway views
    let cluster = c.cluster().await.unwrap();
    let leader = cluster.lock.leader_addr.clone().expect("a lock leader");
    assert!(addrs(&locks).contains(&leader), "{cluster:?}");
    assert_eq!(cluster.lock.members.len(), 3, "{cluster:?}");
    assert!(cluster.lock.term.unwrap_or(0) >= 1);
    assert_eq!(cluster.queue.members, sorted(addrs(&queues)));
    assert!(cluster.queue.nodes.iter().all(|n| n.healthy));
    assert_eq!(cluster.cache.members, sorted(addrs(&caches)));
    assert_eq!(cluster.cache.peers.len(), 2, "{cluster:?}");
    assert!(cluster.cache.peers.iter().all(|p| p.alive), "{cluster:?}");

    // ---- locks
    let res = "e2e/orders 1"; // a '/' and a space: path encoding is kept
    let grant = c.acquire(&acquire(res, "alice")).await.unwrap();
    assert!(grant.granted && grant.token > 0);
    assert_eq!(grant.mode, LockMode::Exclusive);
    let held = c.acquire(&acquire(res, "bob")).await.unwrap_err();
    assert_eq!(held.code(), Some("lock_held"), "{held}");
    assert_eq!(held.status(), Some(409));
    let state = c.lock_state(res).await.unwrap();
    assert_eq!(state.holders.len(), 1);
    assert_eq!(state.holders[0].owner, "alice");
    assert_eq!(state.holders[0].token, grant.token);
    let stale = c.lock_state_stale(res).await.unwrap();
    assert_eq!(stale.resource, res);
    let renewed = c
        .renew(&RenewRequest {
            resource: res.into(),
            owner: "alice".into(),
            token: grant.token,
            ttl_ms: Some(20_000),
            request_id: None,
            retry_window_ms: None,
        })
        .await
        .unwrap();
    assert!(renewed.expires_at_ms >= grant.expires_at_ms);
    let not_yours = c
        .release(&ReleaseRequest {
            resource: res.into(),
            owner: "bob".into(),
            token: grant.token,
            request_id: None,
            retry_window_ms: None,
        })
        .await
        .unwrap_err();
    assert_eq!(not_yours.status(), Some(409), "{not_yours}");
    let rel = ReleaseRequest {
        resource: res.into(),
        owner: "alice".into(),
        token: grant.token,
        request_id: None,
        retry_window_ms: None,
    };
    assert!(c.release(&rel).await.unwrap().released);
    let again = c.release(&rel).await.unwrap_err();
    assert_eq!(again.status(), Some(404), "{again}");
    // Shared holds coexist; a retried acquire (same request id) is one grant.
    let mut s1 = acquire("e2e-shared", "r1");
    s1.mode = Some(LockMode::Shared);
    s1.request_id = Some("retry-me".into());
    let g1 = c.acquire(&s1).await.unwrap();
    let g1_again = c.acquire(&s1).await.unwrap();
    assert_eq!(g1.token, g1_again.token, "same request id, same answer");
    let mut s2 = acquire("e2e-shared", "r2");
    s2.mode = Some(LockMode::Shared);
    c.acquire(&s2).await.unwrap();
    assert_eq!(c.lock_state("e2e-shared").await.unwrap().holders.len(), 2);
    // Blocking acquire: granted once the holder releases.
    let first = c.acquire(&acquire("e2e-wait", "w1")).await.unwrap();
    let c2 = c.clone();
    let waiter = tokio::spawn(async move {
        let mut r = acquire("e2e-wait", "w2");
        r.wait_ms = Some(5_000);
        c2.acquire(&r).await
    });
    // Release only once w2 is queued: otherwise w2 could simply arrive after
    // the release and the hand-off would go untested.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !c
        .lock_state("e2e-wait")
        .await
        .unwrap()
        .waiters
        .iter()
        .any(|w| w.owner == "w2")
    {
        assert!(Instant::now() < deadline, "w2 never queued");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    c.release(&ReleaseRequest {
        resource: "e2e-wait".into(),
        owner: "w1".into(),
        token: first.token,
        request_id: None,
        retry_window_ms: None,
    })
    .await
    .unwrap();
    let second = waiter.await.unwrap().unwrap();
    assert!(second.token > first.token, "fencing tokens grow");
    // The guard keeps a short lease alive.
    let mut g = acquire("e2e-guard", "keeper");
    g.ttl_ms = Some(1_500);
    let guard = c.lock(g).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    assert!(guard.is_held(), "{:?}", guard.status());
    assert_eq!(
        c.lock_state("e2e-guard").await.unwrap().holders[0].owner,
        "keeper"
    );
    guard.release().await.unwrap();
    assert!(c.lock_state("e2e-guard").await.unwrap().holders.is_empty());

    // ---- queues
    let q = "e2e-jobs";
    let id = c.enqueue_one(q, json!({"n": 1})).await.unwrap();
    assert!(!id.is_empty());
    let batch = c
        .enqueue(&EnqueueRequest {
            queue: q.into(),
            messages: Some(
                (2..5)
                    .map(|n| NewMessage {
                        payload: json!({ "n": n }).into(),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(batch.ids.unwrap().len(), 3);
    assert_eq!(c.queue_stats(q).await.unwrap().ready, 4);
    let msgs = c
        .dequeue(&DequeueRequest {
            queue: q.into(),
            max: Some(10),
            visibility_ms: Some(10_000),
            wait_ms: None,
        })
        .await
        .unwrap();
    assert_eq!(msgs.len(), 4);
    assert_eq!(msgs[0].payload, json!({"n": 1}));
    assert_eq!(msgs[0].attempts, 1);
    assert_eq!(c.ack(q, &msgs[0].receipt).await.unwrap().acked, 1);
    let stale_ack = c.ack(q, &msgs[0].receipt).await.unwrap_err();
    assert!(
        matches!(stale_ack.status(), Some(404) | Some(409)),
        "{stale_ack}"
    );
    let nacked = c
        .nack(&NackRequest {
            queue: q.into(),
            receipt: msgs[1].receipt.clone(),
            delay_ms: None,
        })
        .await
        .unwrap();
    assert_eq!(nacked.outcome, "requeued");
    let ext = c
        .extend(&ExtendRequest {
            queue: q.into(),
            receipt: msgs[2].receipt.clone(),
            visibility_ms: 20_000,
        })
        .await
        .unwrap();
    assert!(ext.visible_until_ms > 0);
    let st = c.queue_stats(q).await.unwrap();
    assert_eq!((st.ready, st.in_flight), (1, 2), "{st:?}");
    // Long poll: a message enqueued while dequeue waits is delivered.
    let c3 = c.clone();
    let poll = tokio::spawn(async move {
        c3.dequeue(&DequeueRequest {
            queue: "e2e-poll".into(),
            wait_ms: Some(5_000),
            ..Default::default()
        })
        .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    c.enqueue_one("e2e-poll", json!("late")).await.unwrap();
    let got = poll.await.unwrap().unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].payload, json!("late"));
    // Dead letters and redrive.
    let dq = "e2e-dlq";
    let cfg = c
        .configure_queue(&QueueConfig {
            queue: dq.into(),
            max_attempts: Some(1),
        })
        .await
        .unwrap();
    assert_eq!(cfg.max_attempts, Some(1));
    c.enqueue_one(dq, json!("poison")).await.unwrap();
    let m = c
        .dequeue(&DequeueRequest {
            queue: dq.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let out = c
        .nack(&NackRequest {
            queue: dq.into(),
            receipt: m[0].receipt.clone(),
            delay_ms: None,
        })
        .await
        .unwrap();
    assert_eq!(out.outcome, "dead_lettered");
    let dead = c.dead_letters(dq, Some(10)).await.unwrap();
    assert_eq!(dead.messages.len(), 1);
    assert_eq!(dead.messages[0].payload, json!("poison"));
    let redriven = c
        .redrive(&RedriveRequest {
            queue: dq.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(redriven.redriven.len(), 1);
    assert_eq!(c.queue_stats(dq).await.unwrap().ready, 1);

    // ---- cache: the same key cached on both nodes, kept coherent
    let nodes = addrs(&caches);
    let on = |i: usize| {
        Client::builder(gw.addr.clone())
            .cache_node(nodes[i].clone())
            .build()
            .unwrap()
    };
    let (a, b) = (on(0), on(1));
    let set = a
        .cache_set(&CacheSetRequest {
            key: "e2e-k".into(),
            value: json!({"v": 1}),
            ttl_ms: None,
        })
        .await
        .unwrap();
    assert!(set.version > client::CacheVersion::default());
    assert_eq!(
        b.cache_get("e2e-k").await.unwrap().unwrap().value,
        json!({"v": 1})
    );
    assert_eq!(
        a.cache_get("e2e-k").await.unwrap().unwrap().value,
        json!({"v": 1})
    );
    b.cache_set(&CacheSetRequest {
        key: "e2e-k".into(),
        value: json!({"v": 2}),
        ttl_ms: Some(60_000),
    })
    .await
    .unwrap();
    assert_eq!(
        a.cache_get("e2e-k").await.unwrap().unwrap().value,
        json!({"v": 2}),
        "a write through one node is seen through the other"
    );
    let line = a.cache_line("e2e-k").await.unwrap();
    assert!(line.is_object() || line.is_array(), "{line}");
    let cstats = b.cache_stats().await.unwrap();
    assert!(cstats.is_object(), "{cstats}");
    let sticky = Client::builder(gw.addr.clone())
        .client_id("sticky-1")
        .build()
        .unwrap();
    assert!(sticky.cache_get("e2e-k").await.unwrap().is_some());
    assert!(a.cache_delete("e2e-k").await.unwrap().deleted);
    assert!(b.cache_get("e2e-k").await.unwrap().is_none());
    // ?node= names a node too; an unknown node is refused.
    let r = reqwest::get(gw.url(&format!("/api/cache/get?key=nope&node={}", nodes[1])))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = reqwest::get(gw.url("/api/cache/get?key=nope&node=127.0.0.1:1"))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // ---- gateway counters and metrics
    let stats = c.stats().await.unwrap();
    assert!(stats.lock.requests >= 10 && stats.queue.requests >= 10 && stats.cache.requests >= 5);
    assert_eq!(stats.lock.errors, 0);
    let metrics = c.metrics().await.unwrap();
    assert!(
        metrics.contains(&format!("backend=\"{leader}\"")),
        "{metrics}"
    );
    assert!(metrics.contains("gateway_backend_request_duration_seconds_bucket"));

    // ---- every documented route answers against the real services
    let doc = c.openapi().await.unwrap();
    let http = reqwest::Client::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let concrete = path
            .replace("{resource}", "doc-res")
            .replace("{queue}", "doc-q");
        for method in item.as_object().unwrap().keys() {
            let body = json!({"resource": "doc-res", "owner": "doc", "queue": "doc-q",
                "key": "doc-k", "value": 1, "payload": 1, "token": 1, "ttl_ms": 1000,
                "receipt": "x", "visibility_ms": 1000});
            let resp = http
                .request(
                    method.to_uppercase().parse().unwrap(),
                    gw.url(&format!("{concrete}?key=doc-k")),
                )
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap();
            assert!(
                status < 500 && status != 405,
                "{method} {path}: {status} {text}"
            );
            if status == 404 {
                // Only domain 404s (no such key / not held), never "no route".
                assert!(!text.contains("no route for"), "{method} {path}: {text}");
            }
        }
    }

    // ---- bad input of every kind: 4xx JSON from the gateway or the service
    let long = "x".repeat(300);
    let cases: Vec<(&str, String, Option<String>)> = vec![
        ("POST", "/api/lock/acquire".into(), Some("{nope".into())),
        (
            "POST",
            "/api/lock/acquire".into(),
            Some(r#"{"owner":"o"}"#.into()),
        ),
        (
            "POST",
            "/api/lock/acquire".into(),
            Some(r#"{"resource":"","owner":"o"}"#.into()),
        ),
        (
            "POST",
            "/api/lock/acquire".into(),
            Some(format!(r#"{{"resource":"{long}","owner":"o"}}"#)),
        ),
        (
            "POST",
            "/api/lock/acquire".into(),
            Some(r#"{"resource":"r\u0007","owner":"o"}"#.into()),
        ),
        (
            "POST",
            "/api/lock/acquire".into(),
            Some(r#"{"resource":"r","owner":"o","ttl_ms":0}"#.into()),
        ),
        (
            "POST",
            "/api/lock/acquire".into(),
            Some(r#"{"resource":"r","owner":"o","ttl_ms":999999999999999}"#.into()),
        ),
        (
            "POST",
            "/api/lock/acquire".into(),
            Some(r#"{"resource":"r","owner":"o","ttl_ms":-5}"#.into()),
        ),
        (
            "POST",
            "/api/lock/acquire".into(),
            Some(r#"{"resource":"r","owner":"o","mode":"sideways"}"#.into()),
        ),
        (
            "POST",
            "/api/lock/acquire".into(),
            Some(r#"{"resource":"r","owner":"o","wait_ms":99999999999}"#.into()),
        ),
        (
            "POST",
            "/api/lock/renew".into(),
            Some(r#"{"resource":"r","owner":"o","token":"abc","ttl_ms":1000}"#.into()),
        ),
        (
            "POST",
            "/api/lock/release".into(),
            Some(r#"{"resource":"r","owner":"o","token":123456789}"#.into()),
        ),
        ("GET", "/api/lock/r?consistency=bogus".into(), None),
        (
            "POST",
            "/api/queue/enqueue".into(),
            Some(r#"{"queue":"q"}"#.into()),
        ),
        (
            "POST",
            "/api/queue/enqueue".into(),
            Some(r#"{"queue":"q","payload":1,"delay_ms":-1}"#.into()),
        ),
        (
            "POST",
            "/api/queue/enqueue".into(),
            Some(r#"{"queue":"q","messages":[]}"#.into()),
        ),
        (
            "POST",
            "/api/queue/enqueue".into(),
            Some(format!(r#"{{"queue":"{long}","payload":1}}"#)),
        ),
        (
            "POST",
            "/api/queue/dequeue".into(),
            Some(r#"{"queue":"q","max":0}"#.into()),
        ),
        (
            "POST",
            "/api/queue/dequeue".into(),
            Some(r#"{"queue":"q","visibility_ms":0}"#.into()),
        ),
        (
            "POST",
            "/api/queue/ack".into(),
            Some(r#"{"queue":"q","receipt":"garbage"}"#.into()),
        ),
        (
            "POST",
            "/api/queue/ack".into(),
            Some(r#"{"queue":"q"}"#.into()),
        ),
        (
            "POST",
            "/api/queue/nack".into(),
            Some(r#"{"queue":"q"}"#.into()),
        ),
        (
            "POST",
            "/api/queue/extend".into(),
            Some(r#"{"queue":"q","receipt":"x"}"#.into()),
        ),
        ("GET", format!("/api/queue/{long}"), None),
        ("GET", "/api/queue/q/dead?limit=0".into(), None),
        (
            "POST",
            "/api/cache/set".into(),
            Some(r#"{"key":"k"}"#.into()),
        ),
        (
            "POST",
            "/api/cache/set".into(),
            Some(r#"{"key":"","value":1}"#.into()),
        ),
        (
            "POST",
            "/api/cache/set".into(),
            Some(r#"{"key":"k","value":1,"ttl_ms":0}"#.into()),
        ),
        ("POST", "/api/cache/set".into(), Some("not json".into())),
        ("GET", "/api/cache/get".into(), None),
        ("GET", format!("/api/cache/get?key={long}"), None),
        ("DELETE", "/api/cache/delete".into(), None),
        ("GET", "/api/cache/line".into(), None),
        ("GET", "/internal/raft/vote".into(), None),
        ("POST", "/internal/cache/home".into(), Some("{}".into())),
        ("PUT", "/api/lock/acquire".into(), Some("{}".into())),
        ("GET", "/no/such/route".into(), None),
    ];
    for (method, path, body) in cases {
        let mut req = http.request(method.parse().unwrap(), gw.url(&path));
        if let Some(b) = &body {
            req = req
                .header("content-type", "application/json")
                .body(b.clone());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        assert!(
            (400..500).contains(&status),
            "{method} {path} {body:?}: {status} {text}"
        );
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{method} {path}: non-JSON {status} {text}"));
        assert!(
            v["error"]["code"].is_string() && v["error"]["message"].is_string(),
            "{method} {path}: {text}"
        );
    }
    // An oversize body: 413 JSON.
    let resp = http
        .post(gw.url("/api/queue/enqueue"))
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"queue":"q","payload":"{}"}}"#,
            "x".repeat(1_100_000)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["code"],
        "body_too_large"
    );

    // ---- tokens: a second gateway over the same backends requires them
    let guarded = Gw::start(
        Settings {
            api_tokens: vec!["t0ken".into()],
            ..Settings::default()
        },
        addrs(&locks),
        addrs(&queues),
        addrs(&caches),
    )
    .await;
    let before = c.queue_stats("e2e-auth").await.unwrap().ready;
    for bad in [None, Some("wrong")] {
        let mut b = Client::builder(guarded.addr.clone());
        if let Some(t) = bad {
            b = b.token(t);
        }
        let e = b
            .build()
            .unwrap()
            .enqueue_one("e2e-auth", json!(1))
            .await
            .unwrap_err();
        assert_eq!(e.status(), Some(401), "{e}");
        assert_eq!(e.code(), Some("unauthorized"));
    }
    assert_eq!(
        c.queue_stats("e2e-auth").await.unwrap().ready,
        before,
        "nothing enqueued"
    );
    let ok = Client::builder(guarded.addr.clone())
        .token("t0ken")
        .build()
        .unwrap();
    ok.enqueue_one("e2e-auth", json!(1)).await.unwrap();
    assert_eq!(c.queue_stats("e2e-auth").await.unwrap().ready, before + 1);
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_leader_killed_mid_run_clients_see_only_a_delay() {
    let dir = tempfile::tempdir().unwrap();
    let mut locks = lock_cluster(dir.path(), 3).await;
    // A generous retry budget: on a loaded 2-core CI machine an election can
    // take longer than the 3 s default; the delay actually seen is asserted below.
    let settings = Settings {
        lock_retry: Duration::from_secs(10),
        ..Settings::default()
    };
    let gw = Gw::start(settings, addrs(&locks), vec![], vec![]).await;
    let c = gw.client();
    let leader = c.cluster().await.unwrap().lock.leader_addr.expect("leader");

    // A lease held across the failover by a renewing guard.
    let mut keep = acquire("failover-held", "keeper");
    keep.ttl_ms = Some(3_000);
    let guard = c.lock(keep).await.unwrap();
    let token = guard.token();

    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let slowest = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for w in 0..4 {
        let (c, stop, ops, errors, slowest) = (
            c.clone(),
            stop.clone(),
            ops.clone(),
            errors.clone(),
            slowest.clone(),
        );
        workers.push(tokio::spawn(async move {
            for i in 0..100_000u64 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let res = format!("failover-{w}");
                let start = Instant::now();
                let step = async {
                    let g = c.acquire(&acquire(&res, &format!("worker-{w}"))).await?;
                    c.release(&ReleaseRequest {
                        resource: res.clone(),
                        owner: format!("worker-{w}"),
                        token: g.token,
                        request_id: None,
                        retry_window_ms: None,
                    })
                    .await
                };
                if let Err(e) = step.await {
                    errors
                        .lock()
                        .unwrap()
                        .push(format!("worker {w} op {i}: {e}"));
                }
                slowest.fetch_max(start.elapsed().as_millis() as u64, Ordering::Relaxed);
                ops.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let before_kill = ops.load(Ordering::Relaxed);
    let idx = locks.iter().position(|p| p.addr == leader).unwrap();
    locks[idx].kill();
    let killed_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let after = ops.load(Ordering::Relaxed);
    let errors = errors.lock().unwrap().clone();
    assert!(errors.is_empty(), "clients saw errors: {errors:#?}");
    assert!(
        before_kill > 0 && after > before_kill + 4,
        "{before_kill} -> {after}"
    );
    let slowest = slowest.load(Ordering::Relaxed);
    assert!(slowest < 5_000, "slowest op {slowest} ms");

    // A new leader, the held lock survived with its token, the guard kept it.
    let cluster = c.cluster().await.unwrap();
    let new_leader = cluster.lock.leader_addr.expect("new leader");
    assert_ne!(new_leader, leader);
    assert!(guard.is_held(), "{:?}", guard.status());
    let state = c.lock_state("failover-held").await.unwrap();
    assert_eq!(state.holders[0].owner, "keeper");
    assert_eq!(state.holders[0].token, token);
    assert!(gw.gateway.leader().as_deref() == Some(new_leader.as_str()));
    let s = c.stats().await.unwrap();
    assert!(s.lock.retries > 0, "the failover needed retries: {s:?}");
    eprintln!(
        "failover: {before_kill} ops before kill, {after} total, slowest {slowest} ms, {} retries, {:?} since kill",
        s.lock.retries,
        killed_at.elapsed()
    );
    guard.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_node_added_and_removed_every_queue_still_served() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start(dir.path()).await;
    let mut nodes = queue_cluster(dir.path(), 2, &redis.url).await;
    let gw = Gw::start(Settings::default(), vec![], addrs(&nodes), vec![]).await;
    let c = gw.client();
    let queues: Vec<String> = (0..24).map(|i| format!("member-q{i}")).collect();

    async fn round(c: &Client, queues: &[String], tag: &str) {
        for (i, q) in queues.iter().enumerate() {
            c.enqueue_one(q, json!({"q": i, "tag": tag}))
                .await
                .unwrap_or_else(|e| panic!("enqueue {q} ({tag}): {e}"));
        }
        for (i, q) in queues.iter().enumerate() {
            let got = c
                .dequeue(&DequeueRequest {
                    queue: q.clone(),
                    max: Some(10),
                    ..Default::default()
                })
                .await
                .unwrap_or_else(|e| panic!("dequeue {q} ({tag}): {e}"));
            assert_eq!(got.len(), 1, "{q} ({tag}): {got:?}");
            assert_eq!(got[0].payload, json!({"q": i, "tag": tag}), "{q}");
            c.ack(q, &got[0].receipt).await.unwrap();
        }
    }

    round(&c, &queues, "two nodes").await;

    // Add a third node; the gateway's ring follows; its queues move to it.
    let third_addr = format!("127.0.0.1:{}", free_port());
    let mut all = addrs(&nodes);
    all.push(third_addr.clone());
    let mut third = queue_node(dir.path(), &third_addr, &all, &redis.url);
    third.wait_ready("/health", Duration::from_secs(20)).await;
    nodes.push(third);
    // Messages enqueued before the change are still there after it.
    for q in &queues {
        c.enqueue_one(q, json!("carried")).await.unwrap();
    }
    gw.members.set(Service::Queue, all.clone());
    let ring = common::Ring::new(all.clone());
    let moved = queues
        .iter()
        .filter(|q| ring.owner(q) == Some(third_addr.as_str()))
        .count();
    assert!(moved > 0, "some queues move to the new node");
    assert_eq!(
        c.cluster().await.unwrap().queue.members,
        sorted(all.clone())
    );
    for q in &queues {
        let got = c
            .dequeue(&DequeueRequest {
                queue: q.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(got.len(), 1, "{q} kept its message across the change");
        assert_eq!(got[0].payload, json!("carried"));
        c.ack(q, &got[0].receipt).await.unwrap();
    }
    round(&c, &queues, "three nodes").await;

    // A node dies while still listed: its queues fail over to the next owner.
    let victim = nodes.remove(0);
    let victim_addr = victim.addr.clone();
    drop(victim);
    round(&c, &queues, "one dead, still listed").await;

    // ...and once discovery drops it, the ring has two members again.
    let remaining: Vec<String> = all.into_iter().filter(|a| *a != victim_addr).collect();
    gw.members.set(Service::Queue, remaining.clone());
    round(&c, &queues, "removed").await;
    let stats = c.stats().await.unwrap();
    assert!(stats.queue.retries > 0, "failover happened: {stats:?}");
    assert_eq!(stats.queue.errors, 0, "{stats:?}");
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_binary_reads_flags_and_env() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let nowhere = format!("127.0.0.1:{}", free_port());
    let mut cmd = std::process::Command::new(bin("gateway"));
    cmd.args([
        "--listen",
        &addr,
        "--lock-nodes",
        &nowhere,
        "--queue-nodes",
        &nowhere,
    ])
    .env("CACHE_NODES", &nowhere)
    .env("API_TOKENS", "alpha, beta")
    .env("BODY_LIMIT_BYTES", "100");
    let mut gw = Proc::spawn("gateway", &addr, &mut cmd, dir.path());
    gw.wait_ready("/openapi.json", Duration::from_secs(20))
        .await;
    let http = reqwest::Client::new();
    let url = |p: &str| format!("http://{addr}{p}");
    // No backend is up: health says so, per service.
    let r = http.get(url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let h: Value = r.json().await.unwrap();
    assert_eq!(h["down"], json!(["lock", "queue", "cache"]));
    // Tokens from the environment.
    let r = http.get(url("/stats")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .get(url("/stats"))
        .bearer_auth("beta")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Body limit from the environment.
    let r = http
        .post(url("/api/queue/enqueue"))
        .bearer_auth("alpha")
        .body(format!(
            r#"{{"queue":"q","payload":"{}"}}"#,
            "x".repeat(200)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // A backend that is down: 503 JSON naming it.
    let r = http
        .post(url("/api/queue/enqueue"))
        .bearer_auth("alpha")
        .body(r#"{"queue":"q","payload":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "unavailable");
    assert_eq!(e["error"]["backend"], json!(nowhere));
    let r = http.get(url("/docs/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

/// Every page of a list route from the start, following `next` as `after`:
/// the names in order. Bounded: more pages than `max_pages` fails.
async fn all_pages<F, Fut>(limit: u64, max_pages: usize, mut page: F) -> Vec<String>
where
    F: FnMut(ListQuery) -> Fut,
    Fut: std::future::Future<Output = (Vec<String>, Option<String>)>,
{
    let mut names = Vec::new();
    let mut after = None;
    for _ in 0..max_pages {
        let (got, next) = page(ListQuery {
            after: after.clone(),
            limit: Some(limit),
            ..Default::default()
        })
        .await;
        assert!(
            !got.is_empty() && got.len() as u64 <= limit,
            "a page of 1 to {limit} after {after:?}: {got:?}"
        );
        if let Some(n) = &next {
            assert_eq!(Some(n), got.last(), "the cursor is the page's last name");
        }
        names.extend(got);
        match next {
            Some(n) => after = Some(n),
            None => return names,
        }
    }
    panic!("more than {max_pages} pages of {limit}: {names:?}");
}

/// Poll `check` until it yields a value (bounded).
async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Await a spawned call (bounded).
async fn joined<T>(what: &str, task: tokio::task::JoinHandle<T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within 30 s"))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_routes_and_event_rings_through_the_gateway_binary() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start(dir.path()).await;
    let mut locks = lock_cluster(dir.path(), 3).await;
    let queues = queue_cluster(dir.path(), 3, &redis.url).await;
    let caches = cache_cluster(dir.path(), 1).await;
    // The retry budget of the failover test: the leader is killed below.
    let gw = gateway_process(
        dir.path(),
        &addrs(&locks),
        &addrs(&queues),
        &addrs(&caches),
        &[("LOCK_RETRY_MS", "10000")],
    )
    .await;
    let c = Client::new(gw.addr.clone()).unwrap();
    let http = reqwest::Client::new();
    let url = |p: &str| format!("http://{}{p}", gw.addr);
    let hold = |resource: &str, owner: &str, mode: LockMode| AcquireRequest {
        resource: resource.into(),
        owner: owner.into(),
        mode: Some(mode),
        ttl_ms: Some(120_000),
        ..Default::default()
    };
    let release = |resource: &str, owner: &str, g: &LockGrant| ReleaseRequest {
        resource: resource.into(),
        owner: owner.into(),
        token: g.token,
        request_id: None,
        retry_window_ms: None,
    };
    let waiters_of = |resource: &'static str| {
        let c = c.clone();
        async move {
            c.lock_state(resource)
                .await
                .unwrap()
                .waiters
                .into_iter()
                .map(|w| w.owner)
                .collect::<Vec<_>>()
        }
    };

    // ---- GET /api/locks: one exclusive, one shared by two, one with two waiters
    let (excl, shared, queued) = ("e2e-list/a", "e2e-list/b", "e2e-list/c");
    let g_excl = c
        .acquire(&hold(excl, "alice", LockMode::Exclusive))
        .await
        .unwrap();
    let g_s1 = c
        .acquire(&hold(shared, "s1", LockMode::Shared))
        .await
        .unwrap();
    let g_s2 = c
        .acquire(&hold(shared, "s2", LockMode::Shared))
        .await
        .unwrap();
    let g_q = c
        .acquire(&hold(queued, "holder", LockMode::Exclusive))
        .await
        .unwrap();
    // Outside the prefix: never listed under it.
    c.acquire(&hold("e2e-lisz", "other", LockMode::Exclusive))
        .await
        .unwrap();
    let mut waiting = Vec::new();
    for (i, w) in ["w1", "w2"].into_iter().enumerate() {
        let c2 = c.clone();
        waiting.push(tokio::spawn(async move {
            let mut r = hold(queued, w, LockMode::Exclusive);
            r.wait_ms = Some(20_000);
            c2.acquire(&r).await
        }));
        // w2 only once w1 is queued: the order is then known.
        let want: Vec<String> = ["w1", "w2"][..=i].iter().map(|s| s.to_string()).collect();
        eventually(
            &format!("{w} queued on {queued}"),
            Duration::from_secs(10),
            || {
                let (want, now) = (want.clone(), waiters_of(queued));
                async move { (now.await == want).then_some(()) }
            },
        )
        .await;
    }
    let page = c
        .lock_list(&ListQuery {
            prefix: Some("e2e-list/".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let names: Vec<&str> = page.locks.iter().map(|l| l.resource.as_str()).collect();
    assert_eq!(names, [excl, shared, queued], "{page:?}");
    assert_eq!(page.next, None);
    let [a, b, q] = &page.locks[..] else {
        unreachable!()
    };
    assert!(a.held && b.held && q.held, "{page:?}");
    let holders = |l: &client::LockState| {
        l.holders
            .iter()
            .map(|h| (h.owner.clone(), h.mode, h.token))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        holders(a),
        [("alice".to_string(), LockMode::Exclusive, g_excl.token)]
    );
    assert!(a.waiters.is_empty());
    let mut shared_holders = holders(b);
    shared_holders.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        shared_holders,
        [
            ("s1".to_string(), LockMode::Shared, g_s1.token),
            ("s2".to_string(), LockMode::Shared, g_s2.token)
        ]
    );
    assert_eq!(
        holders(q),
        [("holder".to_string(), LockMode::Exclusive, g_q.token)]
    );
    let waiter_names: Vec<&str> = q.waiters.iter().map(|w| w.owner.as_str()).collect();
    assert_eq!(waiter_names, ["w1", "w2"], "waiters in arrival order");
    // Pages of one, following the cursor: each name once, in order.
    let paged = all_pages(1, 10, |mut lq| {
        lq.prefix = Some("e2e-list/".into());
        let c = c.clone();
        async move {
            let p = c.lock_list(&lq).await.unwrap();
            (p.locks.into_iter().map(|l| l.resource).collect(), p.next)
        }
    })
    .await;
    assert_eq!(paged, [excl, shared, queued]);
    // A stale read answers from some node's state, still only the prefix.
    let stale = c
        .lock_list(&ListQuery {
            prefix: Some("e2e-list/".into()),
            consistency: Some("stale".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        stale
            .locks
            .iter()
            .all(|l| l.resource.starts_with("e2e-list/")),
        "{stale:?}"
    );
    // The queue drains in order as holders release.
    c.release(&release(queued, "holder", &g_q)).await.unwrap();
    let w2_task = waiting.pop().unwrap();
    let g_w1 = joined("w1's acquire", waiting.pop().unwrap())
        .await
        .unwrap();
    assert!(g_w1.granted && g_w1.token > g_q.token);
    assert_eq!(waiters_of(queued).await, ["w2"]);
    c.release(&release(queued, "w1", &g_w1)).await.unwrap();
    let g_w2 = joined("w2's acquire", w2_task).await.unwrap();
    assert!(g_w2.token > g_w1.token);
    c.release(&release(queued, "w2", &g_w2)).await.unwrap();

    // ---- bad limits: 400 JSON on every list route
    for path in [
        "/api/locks?limit=0",
        "/api/locks?limit=1001",
        "/api/queues?limit=0",
        "/api/queues?limit=1001",
        "/api/events?limit=0",
        "/api/events?limit=1001",
    ] {
        let r = http.get(url(path)).send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert_eq!(status, 400, "{path}: {text}");
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{path}: non-JSON {status} {text}"));
        assert!(
            v["error"]["code"].is_string() && v["error"]["message"].is_string(),
            "{path}: {text}"
        );
    }

    // ---- GET /api/queues: queues spread over the three nodes, each listed once
    let ring = common::Ring::new(addrs(&queues));
    let qnames: Vec<String> = (0..12).map(|i| format!("e2e-listq/{i:02}")).collect();
    let owners: std::collections::BTreeSet<&str> =
        qnames.iter().filter_map(|q| ring.owner(q)).collect();
    assert!(
        owners.len() > 1,
        "the queues land on several nodes: {owners:?}"
    );
    for (i, q) in qnames.iter().enumerate() {
        c.enqueue(&EnqueueRequest {
            queue: q.clone(),
            messages: Some(
                (0..=i)
                    .map(|n| NewMessage {
                        payload: json!(n).into(),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    c.enqueue_one("e2e-listr", json!("outside the prefix"))
        .await
        .unwrap();
    let list = c
        .queue_list(&ListQuery {
            prefix: Some("e2e-listq/".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(list.unavailable.is_empty(), "{list:?}");
    assert_eq!(list.next, None);
    let listed: Vec<&str> = list.queues.iter().map(|q| q.queue.as_str()).collect();
    assert_eq!(listed, qnames, "each queue once, in name order");
    for (i, s) in list.queues.iter().enumerate() {
        assert_eq!(s.ready, i as u64 + 1, "{s:?}");
        assert_eq!(
            s.node.as_deref(),
            ring.owner(&s.queue),
            "from its owner: {s:?}"
        );
    }
    for limit in [1, 5] {
        let paged = all_pages(limit, 20, |mut lq| {
            lq.prefix = Some("e2e-listq/".into());
            let c = c.clone();
            async move {
                let p = c.queue_list(&lq).await.unwrap();
                assert!(p.unavailable.is_empty(), "{p:?}");
                (p.queues.into_iter().map(|q| q.queue).collect(), p.next)
            }
        })
        .await;
        assert_eq!(paged, qnames, "pages of {limit}");
    }

    // ---- a deadlock: A holds r1 and waits for r2, B holds r2 and waits for r1
    let (r1, r2) = ("e2e-dl/r1", "e2e-dl/r2");
    let g_a = c
        .acquire(&hold(r1, "dl-a", LockMode::Exclusive))
        .await
        .unwrap();
    let g_b = c
        .acquire(&hold(r2, "dl-b", LockMode::Exclusive))
        .await
        .unwrap();
    let wait_for = |resource: &'static str, owner: &'static str| {
        let c = c.clone();
        tokio::spawn(async move {
            let mut r = hold(resource, owner, LockMode::Exclusive);
            r.wait_ms = Some(20_000);
            c.acquire(&r).await
        })
    };
    let a_waits = wait_for(r2, "dl-a");
    eventually("dl-a queued on r2", Duration::from_secs(10), || {
        let now = waiters_of(r2);
        async move { (now.await == ["dl-a"]).then_some(()) }
    })
    .await;
    let b_waits = wait_for(r1, "dl-b");
    // One of the two is aborted at once; the other waits on.
    let (victim, survivor, survivor_task) = tokio::time::timeout(Duration::from_secs(30), async {
        let (mut a_waits, mut b_waits) = (a_waits, b_waits);
        tokio::select! {
            a = &mut a_waits => ("dl-a", a.unwrap(), "dl-b", b_waits),
            b = &mut b_waits => ("dl-b", b.unwrap(), "dl-a", a_waits),
        }
    })
    .await
    .map(|(victim, answer, survivor, task)| {
        let e = answer.expect_err("the first answer is the deadlock abort");
        assert_eq!(e.code(), Some("deadlock"), "{e}");
        assert_eq!(e.status(), Some(409), "{e}");
        (victim, survivor, task)
    })
    .expect("neither wait answered within 30 s: the deadlock went unbroken");
    // The victim gives up its hold; the survivor gets it.
    let (victim_res, victim_grant) = if victim == "dl-a" {
        (r1, &g_a)
    } else {
        (r2, &g_b)
    };
    c.release(&release(victim_res, victim, victim_grant))
        .await
        .unwrap();
    let won = joined("the survivor's acquire", survivor_task)
        .await
        .unwrap_or_else(|e| panic!("{survivor} after the victim released: {e}"));
    assert!(won.granted);
    let deadlock = eventually("a deadlock in /api/events", Duration::from_secs(10), || {
        let c = c.clone();
        async move {
            let events = c.events(Some(100)).await.unwrap();
            let found: Vec<_> = events
                .events
                .into_iter()
                .filter(|e| e.kind == EventKind::Deadlock)
                .collect();
            (!found.is_empty()).then_some(found)
        }
    })
    .await;
    assert_eq!(
        deadlock.len(),
        1,
        "listed once across replicas: {deadlock:?}"
    );
    let d = deadlock[0].deadlock.as_ref().expect("deadlock details");
    let mut cycle = d.cycle.clone();
    cycle.sort();
    assert_eq!(cycle, ["dl-a", "dl-b"], "{d:?}");
    assert_eq!(d.victim, victim, "{d:?}");
    assert_eq!(d.resource, if victim == "dl-a" { r2 } else { r1 }, "{d:?}");
    assert_eq!(d.edges.len(), 2, "{d:?}");
    assert_eq!(deadlock[0].service, "lock");

    // ---- the lock leader killed: a leader change in /api/events
    let before = c.cluster().await.unwrap().lock;
    let (old_leader, old_id, old_term) = (
        before.leader_addr.clone().expect("a leader"),
        before.leader_id.expect("a leader id"),
        before.term.expect("a term"),
    );
    let idx = locks.iter().position(|p| p.addr == old_leader).unwrap();
    locks[idx].kill();
    let new_id = eventually("a new lock leader", Duration::from_secs(30), || {
        let c = c.clone();
        let old = old_leader.clone();
        async move {
            let l = c.cluster().await.ok()?.lock;
            l.leader_addr.filter(|a| *a != old)?;
            l.leader_id
        }
    })
    .await;
    assert_ne!(new_id, old_id);
    let change = eventually(
        "the leader change in /api/events",
        Duration::from_secs(10),
        || {
            let c = c.clone();
            async move {
                let events = c.events(None).await.ok()?;
                let e = events.events.into_iter().find(|e| {
                    e.kind == EventKind::LeaderChange
                        && e.leader
                            .as_ref()
                            .is_some_and(|l| l.leader_id == Some(new_id) && l.term > old_term)
                })?;
                Some((e, events.unavailable))
            }
        },
    )
    .await;
    let (event, unavailable) = change;
    assert_eq!(event.service, "lock");
    assert_eq!(unavailable, [old_leader], "the killed node is named");
    // The table survived: the list, read from the new leader, still shows
    // the holds with their tokens.
    let after = c
        .lock_list(&ListQuery {
            prefix: Some("e2e-list/".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let names: Vec<&str> = after.locks.iter().map(|l| l.resource.as_str()).collect();
    assert_eq!(names, [excl, shared], "{after:?}");
    assert_eq!(after.locks[0].holders[0].token, g_excl.token);
    drop(gw);
    drop(redis);
}
