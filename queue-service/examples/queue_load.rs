//! Load loop: enqueue → dequeue → ack cycles per second through one queue
//! node, at several client counts.
//!
//! Each client owns a queue and repeats: enqueue one message, dequeue it,
//! ack it (three HTTP calls, each fully durable per the backend). By default
//! the node runs in this process on 127.0.0.1; `--target` points at a
//! running node instead.
//!
//! ```text
//! cargo run --release -p queue-service --example queue_load -- \
//!     --backend embedded --clients 1,16 --duration-secs 10 --runs 3
//! cargo run --release -p queue-service --example queue_load -- \
//!     --backend redis --redis-url redis://127.0.0.1:6390/ --clients 1,16
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use serde_json::{json, Value};

#[derive(Parser, Debug)]
struct Args {
    /// `embedded` or `redis` (for the in-process node).
    #[arg(long, default_value = "embedded")]
    backend: String,
    /// Redis URL for `--backend redis`.
    #[arg(long)]
    redis_url: Option<String>,
    /// Base URL of a running node; unset: start one in this process.
    #[arg(long)]
    target: Option<String>,
    /// Comma-separated client counts.
    #[arg(long, default_value = "1,16")]
    clients: String,
    /// Length of each measured run.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Runs per client count (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 100)]
    payload_bytes: usize,
}

struct RunResult {
    cycles: u64,
    errors: u64,
    secs: f64,
    hist: Histogram<u64>,
}

async fn client_loop(
    http: reqwest::Client,
    base: String,
    queue: String,
    payload: Value,
    stop: Arc<AtomicBool>,
) -> RunResult {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let (mut cycles, mut errors) = (0u64, 0u64);
    let start = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        let ok = async {
            let r = http
                .post(format!("{base}/api/queue/enqueue"))
                .json(&json!({"queue": queue, "payload": payload}))
                .send()
                .await
                .ok()?;
            if r.status().as_u16() != 201 {
                return None;
            }
            let r = http
                .post(format!("{base}/api/queue/dequeue"))
                .json(&json!({"queue": queue, "max": 1, "visibility_ms": 30000}))
                .send()
                .await
                .ok()?;
            let v: Value = r.json().await.ok()?;
            let receipt = v["messages"][0]["receipt"].as_str()?.to_string();
            let r = http
                .post(format!("{base}/api/queue/ack"))
                .json(&json!({"queue": queue, "receipt": receipt}))
                .send()
                .await
                .ok()?;
            (r.status().as_u16() == 200).then_some(())
        }
        .await;
        match ok {
            Some(()) => {
                cycles += 1;
                let _ = hist.record(t.elapsed().as_micros().max(1) as u64);
            }
            None => errors += 1,
        }
    }
    RunResult {
        cycles,
        errors,
        secs: start.elapsed().as_secs_f64(),
        hist,
    }
}

async fn one_run(args: &Args, base: &str, clients: usize, run: usize) -> (f64, u64, u64, u64) {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients * 2)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let payload = json!("x".repeat(args.payload_bytes));
    let stop = Arc::new(AtomicBool::new(false));
    let tag = rand::random::<u32>();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            tokio::spawn(client_loop(
                http.clone(),
                base.to_string(),
                format!("load-{tag:08x}-{run}-{c}"),
                payload.clone(),
                stop.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(args.duration_secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = 0u64;
    let mut errors = 0u64;
    let mut secs: f64 = 0.0;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    for t in tasks {
        let r = t.await.unwrap();
        total += r.cycles;
        errors += r.errors;
        secs = secs.max(r.secs);
        hist.add(&r.hist).unwrap();
    }
    let rate = total as f64 / secs;
    (
        rate,
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.99),
        errors,
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut _dir = None;
    let (base, shutdown) = match &args.target {
        Some(t) => (t.trim_end_matches('/').to_string(), None),
        None => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?.to_string();
            let mut config = queue_service::Config::for_listen(addr.clone());
            match args.backend.as_str() {
                "embedded" => {
                    let d = tempfile::tempdir()?;
                    config.data_dir = Some(d.path().to_path_buf());
                    _dir = Some(d);
                }
                "redis" => {
                    config.redis_url = Some(
                        args.redis_url
                            .clone()
                            .ok_or_else(|| anyhow::anyhow!("--backend redis needs --redis-url"))?,
                    );
                }
                other => anyhow::bail!("unknown backend {other:?}"),
            }
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            tokio::spawn(queue_service::run(config, listener, async move {
                let _ = rx.await;
            }));
            (format!("http://{addr}"), Some(tx))
        }
    };
    let counts: Vec<usize> = args
        .clients
        .split(',')
        .map(|c| c.trim().parse())
        .collect::<Result<_, _>>()?;
    println!(
        "target {base} backend {} duration {}s runs {} payload {} B",
        args.target
            .as_deref()
            .map(|_| "remote")
            .unwrap_or(&args.backend),
        args.duration_secs,
        args.runs,
        args.payload_bytes
    );
    for clients in counts {
        let mut rates = Vec::new();
        for run in 0..args.runs {
            let (rate, p50, p99, errors) = one_run(&args, &base, clients, run).await;
            println!(
                "clients {clients:>3} run {run}: {rate:>9.1} cycles/s  cycle p50 {:.2} ms p99 {:.2} ms  errors {errors}",
                p50 as f64 / 1000.0,
                p99 as f64 / 1000.0
            );
            rates.push(rate);
        }
        rates.sort_by(|a, b| a.total_cmp(b));
        println!(
            "clients {clients:>3} MEDIAN: {:.1} cycles/s",
            rates[rates.len() / 2]
        );
    }
    if let Some(tx) = shutdown {
        let _ = tx.send(());
    }
    Ok(())
}
