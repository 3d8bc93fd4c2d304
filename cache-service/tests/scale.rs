//! Scaling the cache up and down with real processes and Redis (as
//! `docker compose up --scale cache-service=4` does): across a fourth node
//! joining and leaving, no node ever answers an older value after a newer
//! write was acknowledged; a miss is allowed where a key's home moved (a
//! home move drops the lines of the keys it moves, and under write-back an
//! exclusive holder's line is the key's only value), and while the views
//! stand still every acknowledged write reads back through every node.
//!
//! Membership as compose sees it is discovered by DNS; here every node is
//! configured with all four addresses and the fourth is down at first, so
//! the views go {A,B,C} -> {A,B,C,D} -> {A,B,C} as it starts and is killed:
//! the same view changes and home moves as a DNS-discovered join.

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ::common::port::free_port;
use client::Client as CacheClient;
use serde_json::{json, Value};

const HEARTBEAT_MS: &str = "100";
const FAILURE_TIMEOUT_MS: &str = "1500";
/// Generous: a view change takes about two failure timeouts.
const READ_BOUND: Duration = Duration::from_secs(20);
const ROUNDS: usize = 3;
const KEYS: usize = 24;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(addr: &str, peers: &str, redis: &str) -> Proc {
    let child = Command::new(env!("CARGO_BIN_EXE_cache-service"))
        .args(["--listen", addr, "--peers", peers, "--redis-url", redis])
        .args([
            "--heartbeat-ms",
            HEARTBEAT_MS,
            "--failure-timeout-ms",
            FAILURE_TIMEOUT_MS,
        ])
        .env("CLUSTER_TOKEN", "scale-token")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn cache-service");
    Proc(child)
}

/// Write `value` through `client`, retrying 503s (a view change in
/// progress) until acknowledged.
async fn set(client: &CacheClient, key: &str, value: &Value) {
    let deadline = Instant::now() + READ_BOUND;
    loop {
        match client.cache_put(key, value.clone(), None).await {
            Ok(_) => return,
            Err(e) => {
                assert!(Instant::now() < deadline, "set {key}={value}: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Read `key` through `client` until it answers `want` (a miss or a 503 is
/// retried up to [`READ_BOUND`]; any other value fails at once). With
/// `may_be_lost`, a miss is an answer too (the key's home moved, or its
/// owner was killed, since it was written).
async fn reads(client: &CacheClient, node: &str, key: &str, want: &Value, may_be_lost: bool) {
    let deadline = Instant::now() + READ_BOUND;
    loop {
        let last = match client.cache_get(key).await {
            Ok(Some(v)) => {
                assert_eq!(&v.value, want, "{key} through {node}: an older value");
                return;
            }
            Ok(None) if may_be_lost => return,
            Ok(None) => "404 not_found".to_string(),
            Err(e) => e.to_string(),
        };
        assert!(
            Instant::now() < deadline,
            "{key}={want} not readable through {node} within {READ_BOUND:?} (last: {last})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_joining_and_leaving_never_brings_back_an_older_value() {
    let redis = common::Redis::start().await;
    let addrs: Vec<String> = (0..4)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let peers = addrs.join(",");
    let old = &addrs[..3];
    let mut procs: Vec<Option<Proc>> = old
        .iter()
        .map(|a| Some(spawn(a, &peers, &redis.url)))
        .collect();
    procs.push(None);
    let clients: Vec<CacheClient> = addrs.iter().map(|a| common::cache_client(a)).collect();
    for c in &clients[..3] {
        common::wait_confirmed(c, old, Duration::from_secs(30)).await;
    }
    // key -> (latest value, index of the node it was written through)
    let mut latest: BTreeMap<String, (Value, usize)> = BTreeMap::new();
    for round in 0..ROUNDS {
        // Writes through the three old nodes while the fourth is down: each
        // writer holds its keys in M (write-back: memory holds nothing).
        for k in 0..KEYS {
            let key = format!("scale-{k}");
            let value = json!(round * 1000 + k);
            let n = k % 3;
            set(&clients[n], &key, &value).await;
            reads(&clients[n], &addrs[n], &key, &value, false).await;
            latest.insert(key, (value, n));
        }
        // The fourth node joins; writes race the view change too.
        procs[3] = Some(spawn(&addrs[3], &peers, &redis.url));
        for k in 0..KEYS / 2 {
            let key = format!("race-{k}");
            let value = json!(round * 1000 + k);
            let n = k % 3;
            set(&clients[n], &key, &value).await;
            latest.insert(key, (value, n));
        }
        for c in &clients {
            common::wait_confirmed(c, &addrs, Duration::from_secs(30)).await;
        }
        // Keys whose home moved to the new node may be gone; none older.
        for (key, (value, _)) in &latest {
            for (m, c) in clients.iter().enumerate() {
                reads(c, &addrs[m], key, value, true).await;
            }
        }
        // Each node (the new one too) writes, every node reads.
        for k in 0..KEYS {
            let key = format!("scale-{k}");
            let value = json!(round * 1000 + 500 + k);
            let n = k % 4;
            set(&clients[n], &key, &value).await;
            for (m, c) in clients.iter().enumerate() {
                reads(c, &addrs[m], &key, &value, false).await;
            }
            latest.insert(key, (value, n));
        }
        // Write again through the writers so they hold M once more, then
        // the fourth node is killed: keys move back to the old nodes.
        for (key, (value, n)) in latest.iter_mut() {
            *value = json!(format!("{round}-{key}-last"));
            set(&clients[*n], key, value).await;
        }
        procs[3].take();
        for c in &clients[..3] {
            common::wait_confirmed(c, old, Duration::from_secs(30)).await;
        }
        for (key, (value, _)) in &latest {
            // Keys homed on the killed node, or held only by it, may be
            // gone (a miss); none older.
            for (m, c) in clients[..3].iter().enumerate() {
                reads(c, &addrs[m], key, value, true).await;
            }
        }
        // Start the next round from values the three nodes hold.
        latest.retain(|_, (_, n)| *n != 3);
    }
}
