//! Three real nodes over HTTP on 127.0.0.1: reads and writes through
//! different nodes see the newest value, and `/api/cache/line` shows the
//! MESI states the protocol promises. Run with home memory and with Redis.

mod common;

use std::time::Duration;

use cache_service::directory::WritePolicy;
use common::{Cluster, Opts, Redis};
use serde_json::{json, Value};

fn states(line: &Value, addrs: &[String]) -> String {
    addrs
        .iter()
        .map(|a| {
            line["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|n| n["node"] == a.as_str())
                .map_or("?".to_string(), |n| {
                    n["state"].as_str().unwrap().to_string()
                })
        })
        .collect()
}

async fn write_read_everywhere(c: &Cluster, policy: WritePolicy) {
    let [a, b, cc] = [&c.clients[0], &c.clients[1], &c.clients[2]];
    let key = "user:42";
    let m = if policy == WritePolicy::WriteBack {
        "M"
    } else {
        "E"
    };

    a.cache_put(key, json!({"name": "ada", "n": 1}), None)
        .await
        .unwrap();
    assert_eq!(
        states(&a.cache_line(key).await.unwrap(), &c.addrs),
        format!("{m}II")
    );

    let got = b.cache_get(key).await.unwrap().unwrap();
    assert_eq!(got.value, json!({"name": "ada", "n": 1}));
    assert!(!got.hit, "first read on B is a miss");
    assert_eq!(states(&b.cache_line(key).await.unwrap(), &c.addrs), "SSI");

    let got = cc.cache_get(key).await.unwrap().unwrap();
    assert_eq!(got.value["n"], 1);
    assert_eq!(states(&cc.cache_line(key).await.unwrap(), &c.addrs), "SSS");
    // Now every node hits locally.
    for cl in &c.clients {
        assert!(cl.cache_get(key).await.unwrap().unwrap().hit);
    }

    cc.cache_put(key, json!({"name": "ada", "n": 2}), None)
        .await
        .unwrap();
    let line = a.cache_line(key).await.unwrap();
    assert_eq!(states(&line, &c.addrs), format!("II{m}"), "{line}");
    assert_eq!(line["directory"]["holders"]["state"], "exclusive");
    assert_eq!(line["directory"]["holders"]["owner"], c.addrs[2].as_str());

    for cl in &c.clients {
        assert_eq!(cl.cache_get(key).await.unwrap().unwrap().value["n"], 2);
    }
    assert_eq!(states(&b.cache_line(key).await.unwrap(), &c.addrs), "SSS");

    // A read miss with nobody else holding the key gets E.
    cc.cache_delete(key).await.unwrap();
    assert_eq!(states(&a.cache_line(key).await.unwrap(), &c.addrs), "III");
    for cl in &c.clients {
        assert!(cl.cache_get(key).await.unwrap().is_none());
    }
    a.cache_put(key, json!(3), None).await.unwrap();
    // Push the value to memory by reading elsewhere, then let A's copy go.
    b.cache_get(key).await.unwrap();
    // Write on A from S: B is invalidated.
    a.cache_put(key, json!(4), None).await.unwrap();
    assert_eq!(
        states(&a.cache_line(key).await.unwrap(), &c.addrs),
        format!("{m}II")
    );
    // Write hit on E (write-back: silently to M).
    let k2 = "solo";
    a.cache_put(k2, json!(1), None).await.unwrap();
    cc.cache_get(k2).await.unwrap();
    cc.cache_delete(k2).await.unwrap();
    a.cache_put(k2, json!(5), None).await.unwrap();
    b.cache_get(k2).await.unwrap(); // A: S, B: S; memory holds 5
    a.cache_put(k2, json!(6), None).await.unwrap(); // A: M/E, B: I
    b.cache_get(k2).await.unwrap(); // both S
    a.cache_put(k2, json!(7), None).await.unwrap();
    b.cache_get(k2).await.unwrap();

    let stats = c.clients[0].cache_stats().await.unwrap();
    assert!(stats["hits"].as_u64().unwrap() >= 1, "{stats}");
    let sent: u64 = {
        let mut n = 0;
        for cl in &c.clients {
            n += cl.cache_stats().await.unwrap()["invalidations_sent"]
                .as_u64()
                .unwrap();
        }
        n
    };
    assert!(sent >= 3, "invalidations were sent: {sent}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_home_memory_write_back() {
    let c = Cluster::start(Opts::default()).await;
    write_read_everywhere(&c, WritePolicy::WriteBack).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_home_memory_write_through() {
    let c = Cluster::start(Opts {
        policy: WritePolicy::WriteThrough,
        ..Opts::default()
    })
    .await;
    write_read_everywhere(&c, WritePolicy::WriteThrough).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_with_redis_memory() {
    let redis = Redis::start().await;
    let c = Cluster::start(Opts {
        redis_url: Some(redis.url.clone()),
        ..Opts::default()
    })
    .await;
    write_read_everywhere(&c, WritePolicy::WriteBack).await;
    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let in_redis = || {
        let mut conn = conn.clone();
        async move {
            redis::cmd("GET")
                .arg("dsync:cache:user:42")
                .query_async::<Option<String>>(&mut conn)
                .await
                .unwrap()
        }
    };
    // While a node holds the key in M, Redis holds nothing for it: a crash
    // of the owner must not leave an older value behind.
    c.clients[0]
        .cache_put("user:42", json!({"n": 9}), None)
        .await
        .unwrap();
    assert_eq!(in_redis().await, None, "memory empty while a line is M");
    // A read on another node downgrades the owner, which writes back.
    let got = c.clients[1].cache_get("user:42").await.unwrap().unwrap();
    assert_eq!(got.value, json!({"n": 9}));
    let raw = in_redis().await.expect("value written back to redis");
    assert!(raw.contains("9"), "{raw}");
    conn = client.get_multiplexed_async_connection().await.unwrap();
    let fence: String = redis::cmd("GET")
        .arg(cache_service::store::REDIS_FENCE_KEY)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(fence.len(), 20, "the view fence is set: {fence}");
    let h = reqwest::get(format!("http://{}/health", c.addrs[0]))
        .await
        .unwrap();
    assert_eq!(h.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn evictions_write_back_and_values_survive() {
    // Two lines per node: writes of many keys evict M lines, which must be
    // written back so every value stays readable from every node.
    let c = Cluster::start(Opts {
        max_entries: 2,
        ..Opts::default()
    })
    .await;
    for i in 0..20 {
        c.clients[i % 3]
            .cache_put(&format!("k{i}"), json!(i), None)
            .await
            .unwrap();
    }
    for i in 0..20 {
        for cl in &c.clients {
            let got = cl.cache_get(&format!("k{i}")).await.unwrap();
            assert_eq!(got.map(|g| g.value), Some(json!(i)), "k{i}");
        }
    }
    let mut evictions = 0;
    let mut write_backs = 0;
    for cl in &c.clients {
        let s = cl.cache_stats().await.unwrap();
        evictions += s["evictions"].as_u64().unwrap();
        write_backs += s["write_backs"].as_u64().unwrap();
        assert!(s["entries"].as_u64().unwrap() <= 2, "{s}");
    }
    assert!(
        evictions > 0 && write_backs > 0,
        "{evictions} {write_backs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ttl_is_coherent_across_nodes() {
    let c = Cluster::start(Opts::default()).await;
    // A TTL long enough that the first read lands inside it on a loaded
    // machine; the expiry is counted from when the set returned (the
    // latest the node can have started the TTL).
    c.clients[0]
        .cache_put("t", json!(1), Some(1_500))
        .await
        .unwrap();
    let set_done = std::time::Instant::now();
    assert!(c.clients[1].cache_get("t").await.unwrap().is_some());
    let expired = set_done + Duration::from_millis(1_600);
    tokio::time::sleep(expired.saturating_duration_since(std::time::Instant::now())).await;
    for cl in &c.clients {
        assert!(cl.cache_get("t").await.unwrap().is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn home_memory_is_bounded_and_an_evicted_value_reads_as_a_miss() {
    // Write-through puts every value in its home's memory; two entries fit.
    let c = Cluster::start(Opts {
        policy: WritePolicy::WriteThrough,
        max_memory_entries: 2,
        max_entries: 1,
        ..Opts::default()
    })
    .await;
    // Distinct keys, all homed on node 0, written through node 1.
    let ring = ::common::Ring::new(c.addrs.clone());
    let keys: Vec<String> = (0..1000)
        .map(|i| format!("bound-{i}"))
        .filter(|k| ring.owner(k) == Some(c.addrs[0].as_str()))
        .take(6)
        .collect();
    assert_eq!(keys.len(), 6);
    for (i, k) in keys.iter().enumerate() {
        c.clients[1].cache_put(k, json!(i), None).await.unwrap();
    }
    let s = c.clients[0].cache_stats().await.unwrap();
    assert_eq!(s["memory_local_entries"], 2, "{s}");
    assert_eq!(s["max_memory_entries"], 2, "{s}");
    assert!(s["memory_evictions"].as_u64().unwrap() >= 4, "{s}");
    // Node 2 holds nothing: the oldest keys miss (their memory entry was
    // evicted and node 1 keeps one line); every answer is the value written
    // or a miss, never anything else.
    let mut misses = 0;
    for (i, k) in keys.iter().enumerate() {
        match c.clients[2].cache_get(k).await.unwrap() {
            None => misses += 1,
            Some(g) => assert_eq!(g.value, json!(i), "{k}"),
        }
    }
    assert!(misses >= 3, "evicted values miss ({misses})");
    let m = reqwest::get(format!("http://{}/metrics", c.addrs[0]))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(m.contains("cache_memory_evictions_total"), "{m}");
    assert!(m.contains("cache_memory_entries 2"), "{m}");
}
