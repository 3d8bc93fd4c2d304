//! Load loop for the lock service: starts its own three-node cluster of
//! `lock-service` processes (fsync on, as in production) in a temp dir and
//! measures
//!
//! - `pairs`: uncontended acquire+release pairs per second, each client on
//!   its own resources, requests sent to the leader (as the gateway does);
//! - `handoff`: contended hand-offs per second on one resource, and the
//!   release → next grant latency;
//! - `failover`: time from SIGKILL of the leader to the first write that
//!   succeeds again (each round restarts the killed node).
//!
//! Every loop is bounded by `--seconds` (or `--rounds`). Numbers go to
//! stdout as one JSON object per run. `--runs N` repeats the scenario and
//! ends with a summary line of medians; `--baseline-bin PATH` runs another
//! build of `lock-service` alternately with this one (same invocation, same
//! machine noise) and reports the ratio of the medians.
//!
//! Build and run: `cargo build --release -p lock-service --examples` then
//! `target/release/examples/lock_load --scenario pairs --clients 16`
//! (scripts/bench-lock.sh runs the whole set with repeats).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{json, Value};

struct Args {
    scenario: String,
    clients: usize,
    seconds: u64,
    rounds: usize,
    bin: PathBuf,
    /// Extra flags for every node, e.g. tuned Raft timing.
    node_args: Vec<String>,
    runs: usize,
    baseline: Option<PathBuf>,
}

fn parse_args() -> Args {
    let mut a = Args {
        scenario: "pairs".into(),
        clients: 16,
        seconds: 10,
        rounds: 5,
        bin: std::env::current_exe()
            .ok()
            .and_then(|p| p.parent()?.parent().map(|d| d.join("lock-service")))
            .unwrap_or_else(|| PathBuf::from("target/release/lock-service")),
        node_args: Vec::new(),
        runs: 1,
        baseline: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let val = it.next().unwrap_or_default();
        match flag.as_str() {
            "--scenario" => a.scenario = val,
            "--clients" => a.clients = val.parse().expect("--clients N"),
            "--seconds" => a.seconds = val.parse().expect("--seconds N"),
            "--rounds" => a.rounds = val.parse().expect("--rounds N"),
            "--bin" => a.bin = PathBuf::from(val),
            "--node-args" => a.node_args = val.split_whitespace().map(String::from).collect(),
            "--runs" => a.runs = val.parse().expect("--runs N"),
            "--baseline-bin" => a.baseline = Some(PathBuf::from(val)),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

struct Cluster {
    ports: BTreeMap<u64, u16>,
    procs: BTreeMap<u64, Child>,
    dir: tempfile::TempDir,
    bin: PathBuf,
    node_args: Vec<String>,
    http: reqwest::Client,
}

impl Cluster {
    async fn start(args: &Args) -> Self {
        let bin = args.bin.clone();
        let ports = (1..=3)
            .map(|id| {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                (id, l.local_addr().unwrap().port())
            })
            .collect();
        let mut c = Cluster {
            ports,
            procs: BTreeMap::new(),
            dir: tempfile::tempdir().unwrap(),
            bin,
            node_args: args.node_args.clone(),
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .tcp_nodelay(true)
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
        };
        for id in 1..=3 {
            c.spawn(id);
        }
        c.leader(None).await;
        c
    }

    fn spawn(&mut self, id: u64) {
        let peers = self
            .ports
            .iter()
            .map(|(i, p)| format!("{i}=127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let child = Command::new(&self.bin)
            .args(["--id", &id.to_string()])
            .args(["--listen", &format!("127.0.0.1:{}", self.ports[&id])])
            .args(["--peers", &peers])
            .args([
                "--data-dir",
                self.dir.path().join(format!("n{id}")).to_str().unwrap(),
            ])
            .args(&self.node_args)
            .env("RUST_LOG", "error")
            // Three nodes share this machine's cores, as with run-local.sh
            // (a `--worker-threads` in --node-args overrides it).
            .env("WORKER_THREADS", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.bin.display()));
        self.procs.insert(id, child);
    }

    fn kill(&mut self, id: u64) {
        if let Some(mut c) = self.procs.remove(&id) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn addr(&self, id: u64) -> String {
        format!("127.0.0.1:{}", self.ports[&id])
    }

    /// Raft log write counters of every node (entries, fsyncs, appends).
    async fn log_stats(&self) -> Value {
        let mut out = serde_json::Map::new();
        for id in self.procs.keys() {
            let url = format!("http://{}/stats", self.addr(*id));
            if let Ok(r) = self.http.get(url).send().await {
                if let Ok(v) = r.json::<Value>().await {
                    let log = &v["log"];
                    let per = log["entries"].as_f64().unwrap_or(0.0)
                        / log["fsyncs"].as_f64().unwrap_or(1.0).max(1.0);
                    out.insert(
                        id.to_string(),
                        json!({"entries": log["entries"], "fsyncs": log["fsyncs"],
                               "entries_per_fsync": per, "mean_write_ms": log["mean_write_ms"],
                               "max_entries_per_fsync": log["max_entries_per_fsync"]}),
                    );
                }
            }
        }
        Value::Object(out)
    }

    async fn leader(&self, not: Option<u64>) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            for id in self.procs.keys() {
                let url = format!("http://{}/cluster", self.addr(*id));
                if let Ok(r) = self.http.get(url).send().await {
                    if let Ok(v) = r.json::<Value>().await {
                        if let Some(l) = v["leader_id"].as_u64() {
                            if Some(l) != not && self.procs.contains_key(&l) {
                                return l;
                            }
                        }
                    }
                }
            }
            assert!(Instant::now() < deadline, "no leader");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, mut c) in std::mem::take(&mut self.procs) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn post(
    http: &reqwest::Client,
    addr: &str,
    path: &str,
    body: &Value,
) -> Result<(u16, Value), String> {
    let r = http
        .post(format!("http://{addr}{path}"))
        .json(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let s = r.status().as_u16();
    Ok((s, r.json().await.map_err(|e| e.to_string())?))
}

fn pct(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

async fn pairs(args: &Args) -> Value {
    let c = Cluster::start(args).await;
    let leader = c.addr(c.leader(None).await);
    let stop = Instant::now() + Duration::from_secs(args.seconds);
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new(3).unwrap()));
    let mut tasks = Vec::new();
    for client in 0..args.clients {
        let (http, leader, hist) = (c.http.clone(), leader.clone(), hist.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < stop {
                n += 1;
                let t0 = Instant::now();
                let owner = format!("c{client}");
                let res = format!("r-{client}-{}", n % 64);
                let (s, g) = post(
                    &http,
                    &leader,
                    "/api/lock/acquire",
                    &json!({"resource": res, "owner": owner}),
                )
                .await
                .unwrap();
                assert_eq!(s, 200, "{g}");
                let body = json!({"resource": res, "owner": owner, "token": g["token"]});
                let (s, v) = post(&http, &leader, "/api/lock/release", &body)
                    .await
                    .unwrap();
                assert_eq!(s, 200, "{v}");
                hist.lock()
                    .unwrap()
                    .record(t0.elapsed().as_micros() as u64)
                    .unwrap();
            }
            n
        }));
    }
    let started = Instant::now();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    let (p50, p99) = {
        let h = hist.lock().unwrap();
        (pct(&h, 0.5), pct(&h, 0.99))
    };
    json!({"scenario": "pairs", "clients": args.clients, "pairs": total,
           "pairs_per_s": total as f64 / secs,
           "pair_ms_p50": p50, "pair_ms_p99": p99,
           "log": c.log_stats().await})
}

async fn handoff(args: &Args) -> Value {
    let c = Cluster::start(args).await;
    let leader = c.addr(c.leader(None).await);
    let stop = Instant::now() + Duration::from_secs(args.seconds);
    let base = Instant::now();
    // token → when its holder's release completed / when it was granted.
    let released = Arc::new(Mutex::new(BTreeMap::<u64, u64>::new()));
    let granted = Arc::new(Mutex::new(BTreeMap::<u64, u64>::new()));
    let mut tasks = Vec::new();
    for client in 0..args.clients {
        let (http, leader) = (c.http.clone(), leader.clone());
        let (released, granted) = (released.clone(), granted.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < stop {
                n += 1;
                let owner = format!("c{client}");
                let body = json!({"resource": "hot", "owner": owner, "wait_ms": 20_000,
                                  "request_id": format!("{owner}-{n}")});
                let (s, g) = post(&http, &leader, "/api/lock/acquire", &body)
                    .await
                    .unwrap();
                assert_eq!(s, 200, "{g}");
                let token = g["token"].as_u64().unwrap();
                granted
                    .lock()
                    .unwrap()
                    .insert(token, base.elapsed().as_micros() as u64);
                let body = json!({"resource": "hot", "owner": owner, "token": token});
                let (s, v) = post(&http, &leader, "/api/lock/release", &body)
                    .await
                    .unwrap();
                assert_eq!(s, 200, "{v}");
                released
                    .lock()
                    .unwrap()
                    .insert(token, base.elapsed().as_micros() as u64);
            }
        }));
    }
    let started = Instant::now();
    for t in tasks {
        t.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    let (count, h) = {
        let granted = granted.lock().unwrap();
        let released = released.lock().unwrap();
        let mut h = Histogram::<u64>::new(3).unwrap();
        for (token, at) in granted.iter() {
            if let Some(rel) = released.get(&(token - 1)) {
                // A grant can be applied before the releaser hears "released".
                h.record(at.saturating_sub(*rel)).unwrap();
            }
        }
        (granted.len(), h)
    };
    json!({"scenario": "handoff", "clients": args.clients, "handoffs": count,
           "handoffs_per_s": count as f64 / secs,
           "release_to_grant_ms_p50": pct(&h, 0.5), "release_to_grant_ms_p99": pct(&h, 0.99),
           "log": c.log_stats().await})
}

async fn failover(args: &Args) -> Value {
    let mut c = Cluster::start(args).await;
    let mut gaps = Vec::new();
    for round in 0..args.rounds {
        let leader = c.leader(None).await;
        let survivors: Vec<String> = (1..=3)
            .filter(|i| *i != leader)
            .map(|i| c.addr(i))
            .collect();
        // Warm the connections to the survivors, then kill the leader.
        for s in &survivors {
            let _ = c.http.get(format!("http://{s}/health")).send().await;
        }
        c.kill(leader);
        let killed = Instant::now();
        let mut n = 0u64;
        let gap = loop {
            n += 1;
            let body = json!({"resource": format!("f{round}-{n}"), "owner": "probe", "ttl_ms": 1_000,
                              "request_id": format!("f{round}-{n}")});
            let addr = &survivors[(n as usize) % 2];
            match post(&c.http, addr, "/api/lock/acquire", &body).await {
                Ok((200, _)) => break killed.elapsed(),
                _ => {
                    assert!(
                        killed.elapsed() < Duration::from_secs(10),
                        "writes never resumed"
                    );
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        };
        gaps.push(gap.as_secs_f64() * 1000.0);
        c.spawn(leader);
        tokio::time::sleep(Duration::from_millis(1_000)).await;
    }
    let mut sorted = gaps.clone();
    sorted.sort_by(f64::total_cmp);
    json!({"scenario": "failover", "rounds": args.rounds, "node_args": args.node_args, "resume_ms": gaps,
           "resume_ms_median": sorted[sorted.len() / 2]})
}

/// The number a scenario is judged by, and whether larger is better.
fn headline(scenario: &str) -> (&'static str, bool) {
    match scenario {
        "pairs" => ("pairs_per_s", true),
        "handoff" => ("handoffs_per_s", true),
        _ => ("resume_ms_median", false),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let mut args = parse_args();
    let (metric, higher_is_better) = headline(&args.scenario);
    let mut builds = vec![("this", args.bin.clone())];
    if let Some(base) = args.baseline.clone() {
        builds.push(("baseline", base));
    }
    let mut seen: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for run in 0..args.runs {
        // Alternate the order so neither build always runs on a warmer machine.
        let mut order = builds.clone();
        if run % 2 == 1 {
            order.reverse();
        }
        for (label, bin) in order {
            args.bin = bin;
            let mut out = match args.scenario.as_str() {
                "pairs" => pairs(&args).await,
                "handoff" => handoff(&args).await,
                "failover" => failover(&args).await,
                other => panic!("unknown scenario {other} (pairs|handoff|failover)"),
            };
            out["build"] = json!(label);
            println!("{out}");
            if let Some(v) = out[metric].as_f64() {
                seen.entry(label).or_default().push(v);
            }
        }
    }
    if args.runs > 1 || builds.len() > 1 {
        let medians: BTreeMap<&str, f64> = seen.into_iter().map(|(k, v)| (k, median(v))).collect();
        let ratio = match (medians.get("this"), medians.get("baseline")) {
            (Some(t), Some(b)) if *b > 0.0 => json!(t / b),
            _ => Value::Null,
        };
        println!(
            "{}",
            json!({"summary": args.scenario, "clients": args.clients, "runs": args.runs,
                   "node_args": args.node_args, "metric": metric,
                   "higher_is_better": higher_is_better,
                   "median": medians, "ratio_this_to_baseline": ratio})
        );
    }
}
