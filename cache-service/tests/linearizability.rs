//! Many concurrent clients on all three nodes read, write and delete a few
//! keys; every operation's call time, return time and result is recorded and
//! each key's history is checked with a register linearizability checker.
//! Written values are unique, so every read is attributable.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_service::directory::WritePolicy;
use common::lincheck::{check, Event, Op};
use common::{Cluster, Opts, Redis};
use rand::{Rng, SeedableRng};
use serde_json::json;

const KEYS: usize = 3;
const CLIENTS_PER_NODE: usize = 4;
const OPS_PER_CLIENT: usize = 80;

async fn run_history(c: &Cluster, keys: usize, seed: u64) -> Vec<Vec<Event>> {
    let start = Instant::now();
    let keys: Arc<Vec<String>> = Arc::new((0..keys).map(|i| format!("lin-{seed}-{i}")).collect());
    let mut tasks = Vec::new();
    for (node, client) in c.clients.iter().enumerate() {
        for j in 0..CLIENTS_PER_NODE {
            let client = client.clone();
            let keys = keys.clone();
            let id = node * CLIENTS_PER_NODE + j;
            tasks.push(tokio::spawn(async move {
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed * 1000 + id as u64);
                let mut out: Vec<(usize, Event)> = Vec::new();
                for n in 0..OPS_PER_CLIENT {
                    let k = rng.gen_range(0..keys.len());
                    let key = &keys[k];
                    let dice = rng.gen_range(0..100);
                    let call = start.elapsed().as_nanos() as u64;
                    let op = if dice < 55 {
                        let got = client.cache_get(key).await.expect("get");
                        Op::Read(got.map(|g| g.value.as_u64().expect("u64 value")))
                    } else if dice < 95 {
                        let v = (id as u64) * 1_000_000 + n as u64 + 1;
                        client.cache_put(key, json!(v), None).await.expect("set");
                        Op::Write(v)
                    } else {
                        client.cache_delete(key).await.expect("delete");
                        Op::Delete
                    };
                    let ret = start.elapsed().as_nanos() as u64;
                    out.push((
                        k,
                        Event {
                            client: id,
                            call,
                            ret,
                            op,
                        },
                    ));
                }
                out
            }));
        }
    }
    let mut per_key: Vec<Vec<Event>> = vec![Vec::new(); keys.len()];
    for t in tasks {
        for (k, e) in t.await.unwrap() {
            per_key[k].push(e);
        }
    }
    per_key
}

async fn linearizable(opts: Opts, keys: usize, seed: u64) {
    // The promise holds while nodes are up: a generous failure timeout keeps
    // a loaded test machine from suspecting a live node, and the check below
    // makes sure no membership change happened during the run.
    let c = Cluster::start(Opts {
        failure_timeout_ms: 5_000,
        ..opts
    })
    .await;
    let mut views = Vec::new();
    for cl in &c.clients {
        views.push(common::view_id(cl).await);
    }
    let started = Instant::now();
    let histories = run_history(&c, keys, seed).await;
    let ran = started.elapsed();
    for (cl, v) in c.clients.iter().zip(&views) {
        assert_eq!(
            common::view_id(cl).await,
            *v,
            "a node saw a membership change"
        );
    }
    for (k, h) in histories.iter().enumerate() {
        assert!(h.len() >= 50, "key {k} got {} ops", h.len());
        let t = Instant::now();
        let ok = check(h);
        if !ok {
            let mut sorted = h.clone();
            sorted.sort_by_key(|e| e.call);
            let text: String = sorted
                .iter()
                .map(|e| format!("{:>12} {:>12} c{:<2} {:?}\n", e.call, e.ret, e.client, e.op))
                .collect();
            let path = std::env::temp_dir().join(format!("cache-lin-{seed}-{k}.txt"));
            let _ = std::fs::write(&path, text);
            eprintln!("history written to {}", path.display());
        }
        assert!(
            ok,
            "history of key {k} ({} ops) is not linearizable:\n{:#?}",
            h.len(),
            h
        );
        assert!(t.elapsed() < Duration::from_secs(30), "checker too slow");
    }
    let mut hits = 0;
    let mut inv = 0;
    for cl in &c.clients {
        let s = cl.cache_stats().await.unwrap();
        hits += s["hits"].as_u64().unwrap();
        inv += s["invalidations_sent"].as_u64().unwrap();
    }
    eprintln!(
        "{} ops on {keys} keys in {ran:?}; {hits} local hits, {inv} invalidations",
        histories.iter().map(Vec::len).sum::<usize>()
    );
    assert!(hits > 0, "some reads were local hits");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_clients_on_three_nodes_are_linearizable() {
    linearizable(Opts::default(), KEYS, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn linearizable_under_evictions() {
    // One line per node and more keys than that: every fill evicts, so
    // write-backs and eviction notices race with downgrades.
    linearizable(
        Opts {
            max_entries: 1,
            ..Opts::default()
        },
        KEYS,
        2,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn linearizable_write_through() {
    linearizable(
        Opts {
            policy: WritePolicy::WriteThrough,
            ..Opts::default()
        },
        KEYS,
        3,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn linearizable_with_redis_memory() {
    let redis = Redis::start().await;
    linearizable(
        Opts {
            redis_url: Some(redis.url.clone()),
            max_entries: 2,
            ..Opts::default()
        },
        KEYS,
        4,
    )
    .await;
}
