//! Measures what the gateway's hop costs: the same call made straight to a
//! service node and through the gateway, in the same run, on this machine.
//!
//! Setup (all on 127.0.0.1, release binaries from this workspace's
//! target/release) and the call measured, by `--op`:
//! - `cache` (default): one `cache-service` node; `GET /api/cache/get?key=…`
//!   on a key cached on that node — the cheapest call in the system, so the
//!   gateway's share of the time is as large as it gets (the worst case);
//! - `lock`: three `lock-service` nodes; an acquire + release pair (two
//!   replicated, fsynced writes) sent to the leader directly vs through the
//!   gateway, each worker on its own resource.
//!
//! One `gateway` process sits in front. Both paths use the typed
//! `client::Client` with keep-alive connections.
//!
//! Per run (calls before measuring warm up connections and caches): a latency phase (sequential calls, alternating direct/gateway
//! in blocks so drift hits both alike; p50/p99 from HdrHistogram) and a
//! throughput phase (`--concurrency` workers, a fixed number of calls each
//! way). Bounded by call counts; prints each run and the medians.
//!
//! ```text
//! cargo build --release -p cache-service -p lock-service -p gateway --examples
//! target/release/examples/gateway_hop --runs 3
//! target/release/examples/gateway_hop --runs 3 --op lock
//! ```

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use client::{AcquireRequest, CacheSetRequest, Client, ReleaseRequest};
use hdrhistogram::Histogram;

/// Sequential calls per path per run in the latency phase.
const LATENCY_CALLS: usize = 3_000;
/// Calls per path per run in the throughput phase.
const THROUGHPUT_CALLS: usize = 12_000;

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Cache,
    Lock,
}

struct Args {
    runs: usize,
    concurrency: usize,
    op: Op,
}

fn args() -> Args {
    let mut a = Args {
        runs: 3,
        concurrency: 16,
        op: Op::Cache,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let val = argv.get(i + 1).and_then(|v| v.parse().ok());
        match (argv[i].as_str(), val, argv.get(i + 1).map(String::as_str)) {
            ("--runs", Some(v), _) => a.runs = v,
            ("--concurrency", Some(v), _) => a.concurrency = v,
            ("--op", _, Some("cache")) => a.op = Op::Cache,
            ("--op", _, Some("lock")) => a.op = Op::Lock,
            _ => {
                eprintln!("usage: gateway_hop [--runs N] [--concurrency N] [--op cache|lock]");
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

/// One measured call: a cache hit, or a lock acquire + release on the
/// worker's own resource.
async fn call(c: &Client, op: Op, key: &str, worker: usize) {
    match op {
        Op::Cache => {
            c.cache_get(key).await.unwrap().expect("hit");
        }
        Op::Lock => {
            let resource = format!("bench-{worker}");
            let owner = format!("bench-owner-{worker}");
            let g = c
                .acquire(&AcquireRequest {
                    resource: resource.clone(),
                    owner: owner.clone(),
                    ttl_ms: Some(10_000),
                    ..Default::default()
                })
                .await
                .unwrap();
            c.release(&ReleaseRequest {
                resource,
                owner,
                token: g.token,
                request_id: None,
            })
            .await
            .unwrap();
        }
    }
}

async fn sequential(c: &Client, op: Op, key: &str, n: usize, h: &mut Histogram<u64>) {
    for _ in 0..n {
        let t = Instant::now();
        call(c, op, key, 0).await;
        h.record(t.elapsed().as_micros() as u64).unwrap();
    }
}

/// Calls per second with `workers` concurrent callers sharing `total` calls.
async fn throughput(c: &Client, op: Op, key: &str, total: usize, workers: usize) -> f64 {
    let start = Instant::now();
    let per = total / workers;
    let key: Arc<str> = key.into();
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let c = c.clone();
            let key = key.clone();
            tokio::spawn(async move {
                for _ in 0..per {
                    call(&c, op, &key, w).await;
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
    let gw_addr = free_addr();
    let unused = free_addr();
    let tmp = std::env::temp_dir().join(format!("gateway-hop-{}", std::process::id()));
    let mut procs = Vec::new();
    let (backend, gw_flags) = match a.op {
        Op::Cache => {
            let cache_addr = free_addr();
            procs.push(Proc(
                Command::new(bin("cache-service"))
                    .args(["--listen", &cache_addr, "--peers", &cache_addr])
                    .env("RUST_LOG", "warn")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("start cache-service"),
            ));
            wait_ok(&format!("http://{cache_addr}/health")).await;
            let flags = vec![
                "--cache-nodes".to_string(),
                cache_addr.clone(),
                "--lock-nodes".into(),
                unused.clone(),
            ];
            (cache_addr, flags)
        }
        Op::Lock => {
            let dir = tmp.clone();
            let addrs: Vec<String> = (0..3).map(|_| free_addr()).collect();
            let peers = addrs
                .iter()
                .enumerate()
                .map(|(i, a)| format!("{}={a}", i + 1))
                .collect::<Vec<_>>()
                .join(",");
            for (i, addr) in addrs.iter().enumerate() {
                procs.push(Proc(
                    Command::new(bin("lock-service"))
                        .args([
                            "--id",
                            &(i + 1).to_string(),
                            "--listen",
                            addr,
                            "--peers",
                            &peers,
                        ])
                        .arg("--data-dir")
                        .arg(dir.join(format!("n{}", i + 1)))
                        .env("RUST_LOG", "warn")
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .expect("start lock-service"),
                ));
            }
            for addr in &addrs {
                wait_ok(&format!("http://{addr}/health")).await;
            }
            let status: serde_json::Value = reqwest::get(format!("http://{}/cluster", addrs[0]))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let leader = status["leader_addr"].as_str().expect("leader").to_string();
            let flags = vec![
                "--lock-nodes".to_string(),
                addrs.join(","),
                "--cache-nodes".into(),
                unused.clone(),
            ];
            (leader, flags)
        }
    };
    procs.push(Proc(
        Command::new(bin("gateway"))
            .args(["--listen", &gw_addr, "--queue-nodes", &unused])
            .args(&gw_flags)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start gateway"),
    ));
    wait_ok(&format!("http://{gw_addr}/stats")).await;

    let direct = Client::new(backend.clone()).unwrap();
    let via_gw = Client::new(gw_addr.clone()).unwrap();
    let key = "bench-hot-key";
    if a.op == Op::Cache {
        direct
            .cache_set(&CacheSetRequest {
                key: key.into(),
                value: serde_json::json!({"payload": "x".repeat(64)}),
                ttl_ms: None,
            })
            .await
            .unwrap();
    }
    let (latency_calls, throughput_calls) = match a.op {
        Op::Cache => (LATENCY_CALLS, THROUGHPUT_CALLS),
        // Each lock call is two fsynced Raft writes: fewer calls, same bound.
        Op::Lock => (LATENCY_CALLS / 10, THROUGHPUT_CALLS / 10),
    };
    let mut warm = Histogram::<u64>::new(3).unwrap();
    sequential(&direct, a.op, key, latency_calls / 10, &mut warm).await;
    sequential(&via_gw, a.op, key, latency_calls / 10, &mut warm).await;

    println!(
        "gateway hop: {}, {latency_calls} sequential calls and {throughput_calls} calls at \
         concurrency {} per path per run",
        match a.op {
            Op::Cache => "GET /api/cache/get (cache hit)",
            Op::Lock => "lock acquire + release (to the leader)",
        },
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
        let block = latency_calls / 30;
        for _ in 0..30 {
            sequential(&direct, a.op, key, block, &mut hd).await;
            sequential(&via_gw, a.op, key, block, &mut hg).await;
        }
        let (direct_rps, gw_rps) = if r % 2 == 0 {
            let d = throughput(&direct, a.op, key, throughput_calls, a.concurrency).await;
            let g = throughput(&via_gw, a.op, key, throughput_calls, a.concurrency).await;
            (d, g)
        } else {
            let g = throughput(&via_gw, a.op, key, throughput_calls, a.concurrency).await;
            let d = throughput(&direct, a.op, key, throughput_calls, a.concurrency).await;
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
    drop(procs);
    let _ = std::fs::remove_dir_all(&tmp);
}
