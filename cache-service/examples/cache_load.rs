//! Load tool: local-hit and miss latency (p50/p99) and gets per second at 16
//! concurrent clients against one cache node.
//!
//! By default it starts its own three-node cluster in this process (home
//! memory, write-back) on 127.0.0.1; `--addrs a,b,c` targets running nodes
//! instead (client load goes to the first one).
//!
//! ```text
//! cargo run --release -p cache-service --example cache_load -- [--secs 5] [--samples 2000] [--clients 16]
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_service::Config;
use client::Client as CacheClient;
use hdrhistogram::Histogram;
use serde_json::json;

struct Args {
    addrs: Option<Vec<String>>,
    secs: u64,
    samples: usize,
    clients: usize,
}

fn args() -> Args {
    let mut a = Args {
        addrs: None,
        secs: 5,
        samples: 2000,
        clients: 16,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < v.len() {
        let val = v.get(i + 1).cloned().unwrap_or_default();
        match v[i].as_str() {
            "--addrs" => a.addrs = Some(val.split(',').map(str::to_string).collect()),
            "--secs" => a.secs = val.parse().expect("--secs N"),
            "--samples" => a.samples = val.parse().expect("--samples N"),
            "--clients" => a.clients = val.parse().expect("--clients N"),
            other => panic!("unknown flag {other}"),
        }
        i += 2;
    }
    a.secs = a.secs.clamp(1, 60);
    a.samples = a.samples.clamp(10, 100_000);
    a.clients = a.clients.clamp(1, 256);
    a
}

async fn start_cluster() -> Vec<String> {
    let mut ls = Vec::new();
    for _ in 0..3 {
        ls.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let addrs: Vec<String> = ls
        .iter()
        .map(|l| l.local_addr().unwrap().to_string())
        .collect();
    for (l, a) in ls.into_iter().zip(&addrs) {
        let mut cfg = Config::for_test(a, &addrs);
        cfg.heartbeat_ms = 200;
        cfg.failure_timeout_ms = 5000;
        tokio::spawn(cache_service::run(cfg, l, std::future::pending()));
    }
    // Wait until every node serves: its membership view is confirmed by a
    // majority (one failure timeout after the view is agreed).
    for a in &addrs {
        let c = CacheClient::builder(a.as_str())
            .timeout(Duration::from_secs(15))
            .build()
            .expect("client builds");
        for _ in 0..3000 {
            if c.get_json(&["cluster"])
                .await
                .is_ok_and(|v| v["view"]["confirmed"] == true)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    addrs
}

fn us(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64
}

#[tokio::main]
async fn main() {
    let args = args();
    let addrs = match &args.addrs {
        Some(a) => a.clone(),
        None => start_cluster().await,
    };
    assert!(addrs.len() >= 2, "need at least two nodes");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .tcp_nodelay(true)
        .build()
        .unwrap();
    let a = CacheClient::builder(addrs[0].as_str())
        .http_client(http.clone())
        .build()
        .expect("client builds");
    let b = CacheClient::builder(addrs[1].as_str())
        .http_client(http.clone())
        .build()
        .expect("client builds");
    let c = CacheClient::builder(addrs.get(2).unwrap_or(&addrs[1]).as_str())
        .http_client(http.clone())
        .build()
        .expect("client builds");
    let run = std::process::id();

    // Misses. Keys written on B (B holds them in M); A's first read is a
    // miss whose home fetches the value from B (downgrade); C's first read
    // then is a miss served by the home from memory (B and A hold S).
    let keys: Vec<String> = (0..args.samples)
        .map(|i| format!("load-{run}-m{i}"))
        .collect();
    for k in &keys {
        b.cache_put(k, json!({"v": k}), None).await.unwrap();
    }
    let mut miss_downgrade = Histogram::<u64>::new(3).unwrap();
    for k in &keys {
        let t = Instant::now();
        let g = a.cache_get(k).await.unwrap().unwrap();
        miss_downgrade
            .record(t.elapsed().as_micros() as u64)
            .unwrap();
        assert!(!g.hit);
    }
    let mut miss_memory = Histogram::<u64>::new(3).unwrap();
    for k in &keys {
        let t = Instant::now();
        let g = c.cache_get(k).await.unwrap().unwrap();
        miss_memory.record(t.elapsed().as_micros() as u64).unwrap();
        assert!(!g.hit);
    }
    // Local hits: A now holds every key in S.
    let mut hit = Histogram::<u64>::new(3).unwrap();
    for k in &keys {
        let t = Instant::now();
        let g = a.cache_get(k).await.unwrap().unwrap();
        hit.record(t.elapsed().as_micros() as u64).unwrap();
        assert!(g.hit);
    }

    // Throughput: `clients` concurrent clients doing gets of hot keys on A.
    let hot: Arc<Vec<String>> = Arc::new(keys.iter().take(1000).cloned().collect());
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let t0 = Instant::now();
    for i in 0..args.clients {
        let (a, hot, stop, done) = (a.clone(), hot.clone(), stop.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = i;
            while !stop.load(Ordering::Relaxed) {
                a.cache_get(&hot[n % hot.len()]).await.unwrap();
                done.fetch_add(1, Ordering::Relaxed);
                n += 7;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(args.secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let gets_per_s = done.load(Ordering::Relaxed) as f64 / elapsed;

    // The cache itself, without HTTP: a local hit through `Node::get`.
    let mut cfg = Config::for_test("127.0.0.1:1", &[]);
    cfg.heartbeat_ms = 10;
    cfg.failure_timeout_ms = 100;
    let (state, _members) = cache_service::build(&cfg, "127.0.0.1:1".into())
        .await
        .unwrap();
    // A node of one confirms its own view once settled (and, having no
    // peers, stays confirmed): drive its heartbeats until then only, so
    // that the loop below measures the hit path alone.
    let node = state.node.clone();
    let beats = tokio::spawn(async move {
        loop {
            node.heartbeat_round().await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    while !state.node.authorized() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    beats.abort();
    state.node.set("hot", json!({"v": 1}), None).await.unwrap();
    const IN_PROCESS_GETS: u32 = 200_000;
    let t = Instant::now();
    for _ in 0..IN_PROCESS_GETS {
        let (d, hit) = state.node.get("hot").await.unwrap();
        assert!(hit && d.is_some());
    }
    let node_hit_ns = t.elapsed().as_nanos() as f64 / f64::from(IN_PROCESS_GETS);
    let stats = a.cache_stats().await.unwrap();
    println!(
        "{}",
        json!({
            "samples": args.samples,
            "hit_us": {"p50": us(&hit, 0.5), "p99": us(&hit, 0.99)},
            "miss_downgrade_us": {"p50": us(&miss_downgrade, 0.5), "p99": us(&miss_downgrade, 0.99)},
            "miss_memory_us": {"p50": us(&miss_memory, 0.5), "p99": us(&miss_memory, 0.99)},
            "clients": args.clients,
            "secs": args.secs,
            "gets_per_s": gets_per_s.round(),
            "node_hit_rate": stats["hit_rate"],
            "in_process_hit_ns": node_hit_ns.round(),
        })
    );
}
