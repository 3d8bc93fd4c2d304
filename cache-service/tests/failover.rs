//! Failure detection with real processes: a node killed with SIGKILL is
//! dropped by the others after the detection timeout, keys homed on it get
//! a new home, and reads everywhere return fresh data; a node that comes back
//! starts empty and takes its keys back.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ::common::port::free_port;
use client::Client as CacheClient;
use common::wait_until;
use serde_json::json;

const HEARTBEAT_MS: &str = "100";
/// Long enough that a loaded machine does not suspect live nodes (which
/// would move homes mid-test), short enough to keep the test quick.
const FAILURE_TIMEOUT_MS: &str = "1500";

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(addr: &str, peers: &str, extra: &[&str]) -> Proc {
    let child = Command::new(env!("CARGO_BIN_EXE_cache-service"))
        .args(["--listen", addr, "--peers", peers])
        .args([
            "--heartbeat-ms",
            HEARTBEAT_MS,
            "--failure-timeout-ms",
            FAILURE_TIMEOUT_MS,
        ])
        .args(extra)
        .env("CLUSTER_TOKEN", "proc-token")
        .env("RUST_LOG", "warn")
        .env_remove("REDIS_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn cache-service");
    Proc(child)
}

async fn alive_in_view(client: &CacheClient, addr: &str) -> Option<bool> {
    let c = client.get_json(&["cluster"]).await.ok()?;
    c["peers"]
        .as_array()?
        .iter()
        .find(|p| p["addr"] == addr)
        .and_then(|p| p["alive"].as_bool())
}

async fn start(addrs: &[String], extra: &[&str]) -> Vec<Option<Proc>> {
    let peers = addrs.join(",");
    let procs: Vec<Option<Proc>> = addrs
        .iter()
        .map(|a| Some(spawn(a, &peers, extra)))
        .collect();
    for a in addrs {
        let c = common::cache_client(a);
        common::wait_confirmed(&c, addrs, Duration::from_secs(30)).await;
    }
    procs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_node_is_dropped_and_a_returning_node_starts_empty() {
    let addrs: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let mut procs = start(&addrs, &[]).await;
    let clients: Vec<CacheClient> = addrs.iter().map(|a| common::cache_client(a)).collect();
    let (a, b, c) = (&clients[0], &clients[1], &clients[2]);

    // k lives on B; other keys live elsewhere.
    let ring = ::common::Ring::new(addrs.clone());
    let k = (0..10_000)
        .map(|n| format!("fo-{n}"))
        .find(|k| ring.owner(k) == Some(addrs[1].as_str()))
        .unwrap();
    let other = (0..10_000)
        .map(|n| format!("other-{n}"))
        .find(|k| ring.owner(k) == Some(addrs[0].as_str()))
        .unwrap();
    a.cache_put(&k, json!(1), None).await.unwrap();
    assert_eq!(c.cache_get(&k).await.unwrap().unwrap().value, json!(1));
    c.cache_put(&other, json!("kept"), None).await.unwrap();
    assert_eq!(
        b.cache_get(&other).await.unwrap().unwrap().value,
        json!("kept")
    );

    // Kill B for real.
    procs[1].take();

    // After the detection timeout, A and C drop B.
    for cl in [a, c] {
        wait_until("B declared dead", Duration::from_secs(10), || async {
            alive_in_view(cl, &addrs[1]).await == Some(false)
        })
        .await;
    }
    // Homes move with the next view, confirmed by A and C (a majority).
    let survivors = [addrs[0].clone(), addrs[2].clone()];
    for cl in [a, c] {
        common::wait_confirmed(cl, &survivors, Duration::from_secs(15)).await;
    }
    // k has a new home among the living, and writes/reads work and are fresh.
    let line = a.cache_line(&k).await.unwrap();
    assert_ne!(line["home"], addrs[1].as_str(), "{line}");
    a.cache_put(&k, json!(2), None).await.unwrap();
    assert_eq!(c.cache_get(&k).await.unwrap().unwrap().value, json!(2));
    c.cache_put(&k, json!(3), None).await.unwrap();
    assert_eq!(a.cache_get(&k).await.unwrap().unwrap().value, json!(3));
    // Keys homed on survivors kept their values.
    assert_eq!(
        c.cache_get(&other).await.unwrap().unwrap().value,
        json!("kept")
    );
    let line = c.cache_line(&k).await.unwrap();
    let b_row = line["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == addrs[1].as_str())
        .unwrap()
        .clone();
    assert_eq!(b_row["alive"], false, "{line}");

    // B comes back (same address, new process): empty, and taken back in.
    procs[1] = Some(spawn(&addrs[1], &addrs.join(","), &[]));
    for cl in [a, c] {
        wait_until("B alive again", Duration::from_secs(10), || async {
            alive_in_view(cl, &addrs[1]).await == Some(true)
        })
        .await;
    }
    for cl in &clients {
        common::wait_confirmed(cl, &addrs, Duration::from_secs(15)).await;
    }
    let stats = b.cache_stats().await.unwrap();
    assert_eq!(stats["entries"], 0, "{stats}");
    assert_eq!(stats["directory_entries"], 0, "{stats}");
    // Its keys are home on it again; whatever a read returns, every node
    // agrees, and new writes are seen everywhere.
    b.cache_put(&k, json!(4), None).await.unwrap();
    for cl in &clients {
        assert_eq!(cl.cache_get(&k).await.unwrap().unwrap().value, json!(4));
    }
    assert_eq!(a.cache_line(&k).await.unwrap()["home"], addrs[1].as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn write_through_with_redis_loses_nothing_when_a_node_dies() {
    let redis = common::Redis::start().await;
    let addrs: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let mut procs = start(
        &addrs,
        &["--redis-url", &redis.url, "--write-policy", "write-through"],
    )
    .await;
    let clients: Vec<CacheClient> = addrs.iter().map(|a| common::cache_client(a)).collect();
    let keys: Vec<String> = (0..30).map(|i| format!("wt-{i}")).collect();
    for (i, k) in keys.iter().enumerate() {
        clients[i % 3].cache_put(k, json!(i), None).await.unwrap();
    }
    procs[2].take();
    for cl in &clients[..2] {
        wait_until("C declared dead", Duration::from_secs(10), || async {
            alive_in_view(cl, &addrs[2]).await == Some(false)
        })
        .await;
        common::wait_confirmed(cl, &addrs[..2], Duration::from_secs(15)).await;
    }
    for (i, k) in keys.iter().enumerate() {
        for cl in &clients[..2] {
            assert_eq!(
                cl.cache_get(k).await.unwrap().unwrap().value,
                json!(i),
                "{k}"
            );
        }
    }
}
