//! Measures what the gateway's hop costs: the same call made straight to a
//! service node and through the gateway, in the same run, on this machine.
//!
//! Setup (all on 127.0.0.1, release binaries from this workspace's
//! target/release): one `cache-service` node and one `gateway` process in
//! front of it. The call is `GET /api/cache/get?key=…` on a key cached on
//! that node — the cheapest call in the system, so the gateway's share of
//! the time is as large as it gets (a worst case for the overhead ratio).
//! Both paths use the typed `client::Client` with keep-alive connections.
//!
//! Per run: a latency phase (sequential calls, alternating direct/gateway
//! in blocks so drift hits both alike; p50/p99 from HdrHistogram) and a
//! throughput phase (`--concurrency` workers, a fixed number of calls each
//! way). Bounded by call counts; prints each run and the medians.
//!
//! ```text
//! cargo build --release -p cache-service -p gateway
//! cargo run --release -p gateway --example gateway_hop -- --runs 3
//! ```

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use client::{CacheSetRequest, Client};
use hdrhistogram::Histogram;

/// Sequential calls per path per run in the latency phase.
const LATENCY_CALLS: usize = 3_000;
/// Calls per path per run in the throughput phase.
const THROUGHPUT_CALLS: usize = 12_000;
/// Calls before measuring (connection set-up, caches warm).
const WARMUP_CALLS: usize = 300;

struct Args {
    runs: usize,
    concurrency: usize,
}

fn args() -> Args {
    let mut a = Args {
        runs: 3,
        concurrency: 16,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let val = argv.get(i + 1).and_then(|v| v.parse().ok());
        match (argv[i].as_str(), val) {
            ("--runs", Some(v)) => a.runs = v,
            ("--concurrency", Some(v)) => a.concurrency = v,
            _ => {
                eprintln!("usage: gateway_hop [--runs N] [--concurrency N]");
                std::process::exit(2);
            }
        }
        i += 2;
    }
    a.runs = a.runs.clamp(1, 10);
    a.concurrency = a.concurrency.clamp(1, 256);
    a
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn bin(name: &str) -> PathBuf {
    // target/release/examples/gateway_hop -> target/release/<name>
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(|p| p.parent()).expect("target dir");
    let path = dir.join(name);
    if !path.exists() {
        eprintln!(
            "{} missing: run `cargo build --release -p cache-service -p gateway` first",
            path.display()
        );
        std::process::exit(1);
    }
    path
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

async fn wait_ok(url: &str) {
    let http = reqwest::Client::new();
    for _ in 0..200 {
        if let Ok(r) = http.get(url).send().await {
            if r.status().as_u16() < 500 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} never answered");
}

async fn sequential(c: &Client, key: &str, n: usize, h: &mut Histogram<u64>) {
    for _ in 0..n {
        let t = Instant::now();
        c.cache_get(key).await.unwrap().expect("hit");
        h.record(t.elapsed().as_micros() as u64).unwrap();
    }
}

/// Calls per second with `workers` concurrent callers sharing `total` calls.
async fn throughput(c: &Client, key: &str, total: usize, workers: usize) -> f64 {
    let start = Instant::now();
    let per = total / workers;
    let key: Arc<str> = key.into();
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let c = c.clone();
            let key = key.clone();
            tokio::spawn(async move {
                for _ in 0..per {
                    c.cache_get(&key).await.unwrap().expect("hit");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    (per * workers) as f64 / start.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

#[derive(Debug, Clone, Copy)]
struct Run {
    direct_p50: f64,
    direct_p99: f64,
    gw_p50: f64,
    gw_p99: f64,
    direct_rps: f64,
    gw_rps: f64,
}

#[tokio::main]
async fn main() {
    let a = args();
    let cache_addr = free_addr();
    let gw_addr = free_addr();
    let _cache = Proc(
        Command::new(bin("cache-service"))
            .args(["--listen", &cache_addr, "--peers", &cache_addr])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("start cache-service"),
    );
    let unused = free_addr();
    let _gw = Proc(
        Command::new(bin("gateway"))
            .args([
                "--listen",
                &gw_addr,
                "--cache-nodes",
                &cache_addr,
                "--lock-nodes",
                &unused,
                "--queue-nodes",
                &unused,
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("start gateway"),
    );
    wait_ok(&format!("http://{cache_addr}/health")).await;
    wait_ok(&format!("http://{gw_addr}/stats")).await;

    let direct = Client::new(cache_addr.clone()).unwrap();
    let via_gw = Client::new(gw_addr.clone()).unwrap();
    let key = "bench-hot-key";
    direct
        .cache_set(&CacheSetRequest {
            key: key.into(),
            value: serde_json::json!({"payload": "x".repeat(64)}),
            ttl_ms: None,
        })
        .await
        .unwrap();
    let mut warm = Histogram::<u64>::new(3).unwrap();
    sequential(&direct, key, WARMUP_CALLS, &mut warm).await;
    sequential(&via_gw, key, WARMUP_CALLS, &mut warm).await;

    println!(
        "gateway hop: GET /api/cache/get (cache hit), {LATENCY_CALLS} sequential calls and \
         {THROUGHPUT_CALLS} calls at concurrency {} per path per run",
        a.concurrency
    );
    println!(
        "{:>4} {:>12} {:>12} {:>12} {:>12} {:>12} {:>12} {:>7}",
        "run", "direct p50", "direct p99", "gw p50", "gw p99", "direct rps", "gw rps", "ratio"
    );
    let mut runs = Vec::new();
    for r in 0..a.runs {
        let mut hd = Histogram::<u64>::new(3).unwrap();
        let mut hg = Histogram::<u64>::new(3).unwrap();
        let block = 100;
        for _ in 0..LATENCY_CALLS / block {
            sequential(&direct, key, block, &mut hd).await;
            sequential(&via_gw, key, block, &mut hg).await;
        }
        let (direct_rps, gw_rps) = if r % 2 == 0 {
            let d = throughput(&direct, key, THROUGHPUT_CALLS, a.concurrency).await;
            let g = throughput(&via_gw, key, THROUGHPUT_CALLS, a.concurrency).await;
            (d, g)
        } else {
            let g = throughput(&via_gw, key, THROUGHPUT_CALLS, a.concurrency).await;
            let d = throughput(&direct, key, THROUGHPUT_CALLS, a.concurrency).await;
            (d, g)
        };
        let run = Run {
            direct_p50: hd.value_at_quantile(0.5) as f64,
            direct_p99: hd.value_at_quantile(0.99) as f64,
            gw_p50: hg.value_at_quantile(0.5) as f64,
            gw_p99: hg.value_at_quantile(0.99) as f64,
            direct_rps,
            gw_rps,
        };
        println!(
            "{:>4} {:>10}us {:>10}us {:>10}us {:>10}us {:>12.0} {:>12.0} {:>7.2}",
            r + 1,
            run.direct_p50,
            run.direct_p99,
            run.gw_p50,
            run.gw_p99,
            run.direct_rps,
            run.gw_rps,
            run.gw_rps / run.direct_rps
        );
        runs.push(run);
    }
    let m = |f: fn(&Run) -> f64| median(runs.iter().map(f).collect());
    let (dp50, dp99, gp50, gp99) = (
        m(|r| r.direct_p50),
        m(|r| r.direct_p99),
        m(|r| r.gw_p50),
        m(|r| r.gw_p99),
    );
    let (drps, grps) = (m(|r| r.direct_rps), m(|r| r.gw_rps));
    println!("median of {} runs:", runs.len());
    println!("  latency direct  p50 {dp50:.0} us  p99 {dp99:.0} us");
    println!("  latency gateway p50 {gp50:.0} us  p99 {gp99:.0} us");
    println!(
        "  added by the hop (median of per-run differences) p50 {:.0} us  p99 {:.0} us",
        median(runs.iter().map(|r| r.gw_p50 - r.direct_p50).collect()),
        median(runs.iter().map(|r| r.gw_p99 - r.direct_p99).collect())
    );
    println!(
        "  throughput direct {drps:.0}/s  gateway {grps:.0}/s  ratio {:.2}",
        median(runs.iter().map(|r| r.gw_rps / r.direct_rps).collect())
    );
}
