//! `chaos`: start the whole system as real processes, run client workloads
//! while a seeded nemesis injects faults, record the history, and check it.
//!
//! ```text
//! chaos --seed 7 --time 60 [--workload lock|queue|cache|all] [--redis]
//!       [--faults kill-lock-leader,slow-disk,…] [--out DIR] [--bins DIR]
//! chaos --check DIR/history.jsonl      # check a kept history again
//! ```
//! Exit status: 0 when every checker passed, 1 on a violation, 2 when the
//! run itself could not be carried out. The run's directory keeps the
//! history, every node's log and data, and `report.json`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chaos::check::{self, Report};
use chaos::history::{self, Outcome, Recorder};
use chaos::nemesis::{self, FaultKind, Schedule};
use chaos::system::{Kind, Options, System};
use chaos::workload::{self, FencedRegister, Run, LOCKS, QUEUES};
use clap::Parser;
use serde_json::{json, Value};

#[derive(Parser, Debug)]
#[command(about = "Fault injection and consistency checking for distributed-sync")]
struct Args {
    /// Seed of the fault schedule and the clients' choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seconds of workload under faults.
    #[arg(long, default_value_t = 60)]
    time: u64,
    /// Which workloads run: lock, queue, cache or all.
    #[arg(long, default_value = "all")]
    workload: String,
    /// Keep queue and cache state in a Redis server (started here).
    #[arg(long)]
    redis: bool,
    /// Run the lock nodes on 127.0.0.1 instead of in network namespaces
    /// (which need root); leaves out the partition faults.
    #[arg(long)]
    no_netns: bool,
    /// Comma-separated fault kinds (default: every kind that fits the
    /// workloads): kill-lock-leader, kill-lock-follower, pause-lock-node,
    /// slow-disk, failing-disk, full-disk, kill-queue-node,
    /// kill-cache-node, pause-cache-node, kill-redis, partition-leader,
    /// partition-split, partition-one-way.
    #[arg(long)]
    faults: Option<String>,
    /// Run directory (default: run/chaos/seed-N).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Directory of the service binaries (default: next to this one).
    #[arg(long)]
    bins: Option<PathBuf>,
    /// Only check this history file and print the report.
    #[arg(long)]
    check: Option<PathBuf>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chaos: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("chaos: the run could not be carried out: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The workloads selected by `--workload`.
fn selected(workload: &str) -> anyhow::Result<Vec<&'static str>> {
    Ok(match workload {
        "all" => vec!["lock", "queue", "cache"],
        "lock" => vec!["lock"],
        "queue" => vec!["queue"],
        "cache" => vec!["cache"],
        other => anyhow::bail!("unknown workload {other:?} (lock, queue, cache or all)"),
    })
}

async fn run(args: Args) -> anyhow::Result<bool> {
    if let Some(path) = &args.check {
        let ops = history::load(path)?;
        let reports = check::check_all(&ops);
        print_reports(&reports);
        return Ok(reports.iter().all(|r| r.valid));
    }
    let workloads = selected(&args.workload)?;
    let kinds: Vec<FaultKind> = match &args.faults {
        Some(list) => list
            .split(',')
            .map(|s| {
                FaultKind::parse(s.trim()).ok_or_else(|| anyhow::anyhow!("unknown fault {s:?}"))
            })
            .collect::<anyhow::Result<_>>()?,
        None => FaultKind::ALL
            .into_iter()
            .filter(|k| workloads.contains(&k.workload()))
            .filter(|k| args.redis || *k != FaultKind::KillRedis)
            .filter(|k| !args.no_netns || !k.is_partition())
            .collect(),
    };
    anyhow::ensure!(
        !args.no_netns || !kinds.iter().any(|k| k.is_partition()),
        "partitions need the lock nodes in namespaces (leave out --no-netns)"
    );
    anyhow::ensure!(
        args.redis || !kinds.contains(&FaultKind::KillRedis),
        "kill-redis needs --redis"
    );
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from("run/chaos").join(format!(
            "seed-{}-{}{}",
            args.seed,
            args.workload,
            if args.redis { "-redis" } else { "" }
        ))
    });
    if out.exists() {
        std::fs::remove_dir_all(&out)?;
    }
    std::fs::create_dir_all(&out)?;
    let bins = match &args.bins {
        Some(b) => b.clone(),
        None => std::env::current_exe()?
            .parent()
            .map(PathBuf::from)
            .ok_or_else(|| anyhow::anyhow!("no directory for the binaries"))?,
    };
    eprintln!(
        "chaos: seed {}, {} s, workloads {:?}, {} faults, run dir {}",
        args.seed,
        args.time,
        workloads,
        if args.redis { "redis" } else { "embedded" },
        out.display()
    );
    let sys = System::start(Options {
        bins,
        dir: out.clone(),
        redis: args.redis,
        netns: !args.no_netns,
        disk_shim: true,
        // Nodes sharing a machine's cores do better on one runtime thread
        // (lock-service --worker-threads; run-local.sh does the same).
        lock_worker_threads: Some(1),
    })
    .await?;
    let gateway = sys.gateway_url();
    let cache_nodes: Vec<String> = sys
        .names(Kind::Cache)
        .iter()
        .map(|n| sys.nodes[n].addr.clone())
        .collect();
    let sys = tokio::sync::Mutex::new(sys);
    let rec = Recorder::to_file(&out.join("history.jsonl"))?;
    let started = Instant::now();
    let run = Run {
        rec: rec.clone(),
        deadline: started + Duration::from_secs(args.time),
        seed: args.seed,
    };
    let mut clients = Vec::new();
    if workloads.contains(&"lock") {
        let register = FencedRegister::default();
        for i in 0..5 {
            let c = workload::client(&gateway, None)?;
            clients.push(tokio::spawn(workload::lock_client(
                run.clone(),
                i,
                c,
                register.clone(),
            )));
        }
    }
    if workloads.contains(&"queue") {
        let next = Arc::new(AtomicU64::new(1));
        for i in 0..2 {
            let c = workload::client(&gateway, None)?;
            clients.push(tokio::spawn(workload::queue_producer(
                run.clone(),
                i,
                c,
                next.clone(),
            )));
        }
        for i in 0..3 {
            let c = workload::client(&gateway, None)?;
            clients.push(tokio::spawn(workload::queue_consumer(run.clone(), i, c)));
        }
    }
    if workloads.contains(&"cache") {
        let next = Arc::new(
            (0..workload::KEYS.len())
                .map(|_| AtomicU64::new(1))
                .collect(),
        );
        for i in 0..6 {
            let node = cache_nodes[i % cache_nodes.len()].clone();
            let c = workload::client(&gateway, Some(&node))?;
            clients.push(tokio::spawn(workload::cache_client(
                run.clone(),
                i,
                c,
                node,
                Arc::clone(&next),
            )));
        }
    }
    let schedule = Schedule {
        seed: args.seed,
        kinds,
        calm: (Duration::from_millis(1_000), Duration::from_millis(2_000)),
        length: (Duration::from_millis(800), Duration::from_millis(2_500)),
    };
    let until = tokio::time::Instant::now() + Duration::from_secs(args.time);
    let faults = nemesis::run(&sys, &rec, &schedule, until).await?;
    for c in clients {
        c.await?;
    }
    // The end state, after everything healed.
    let mut sys = sys.into_inner();
    sys.wait_healthy(Duration::from_secs(60)).await?;
    if workloads.contains(&"lock") {
        final_lock_states(&sys, &rec).await?;
    }
    if workloads.contains(&"queue") {
        let c = workload::client(&gateway, None)?;
        for q in QUEUES {
            workload::queue_drain(&rec, &c, q).await;
        }
    }
    rec.flush();
    sys.stop();
    let ops = rec.ops();
    let reports = check::check_all(&ops);
    let summary = summarize(
        &ops,
        &schedule.kinds,
        &faults,
        &reports,
        &args,
        started.elapsed(),
    );
    if let Some(never) = summary["totals"]["faults_never_injected"].as_array() {
        if !never.is_empty() {
            eprintln!("chaos: not injected in this run (too short?): {never:?}");
        }
    }
    std::fs::write(
        out.join("report.json"),
        serde_json::to_vec_pretty(&summary)?,
    )?;
    print_reports(&reports);
    println!("{}", serde_json::to_string(&summary["totals"])?);
    let valid = reports.iter().all(|r| r.valid);
    eprintln!(
        "chaos: {} — history, logs and report in {}",
        if valid {
            "no violation"
        } else {
            "VIOLATIONS FOUND"
        },
        out.display()
    );
    Ok(valid)
}

/// Record what every lock node itself holds for each resource, once all
/// have applied the same log (read twice around the reads to be sure).
async fn final_lock_states(sys: &System, rec: &Recorder) -> anyhow::Result<()> {
    let nodes = sys.names(Kind::Lock);
    let applied = |v: &Value| (v["applied_index"].as_u64(), v["last_log_index"].as_u64());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut before = Vec::new();
        for n in &nodes {
            before.push(applied(&sys.get_json(n, "/cluster").await?));
        }
        let settled = before
            .iter()
            .all(|a| a.0.is_some() && *a == before[0] && a.0 == a.1);
        if settled {
            let mut states = Vec::new();
            for n in &nodes {
                let mut resources = serde_json::Map::new();
                for r in LOCKS {
                    let v = sys
                        .get_json(n, &format!("/api/lock/{r}?consistency=stale"))
                        .await?;
                    let holders: Vec<Value> = v["holders"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .iter()
                        .map(|h| json!([h["owner"], h["mode"], h["token"]]))
                        .collect();
                    resources.insert(r.to_string(), json!(holders));
                }
                states.push((n.clone(), resources));
            }
            let mut after = Vec::new();
            for n in &nodes {
                after.push(applied(&sys.get_json(n, "/cluster").await?));
            }
            if after == before {
                for (n, resources) in states {
                    let p = rec.invoke("final", "lock", "final_state", json!({ "node": n }));
                    rec.complete(p, Outcome::Ok, json!({ "resources": resources }));
                }
                return Ok(());
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the lock nodes never settled on one applied index: {before:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn print_reports(reports: &[Report]) {
    for r in reports {
        let status = if r.valid { "ok" } else { "VIOLATED" };
        println!("{:<14} {status:<9} {}", r.checker, r.stats);
        for v in r.violations.iter().take(20) {
            println!("    - {v}");
        }
        if r.violations.len() > 20 {
            println!("    … {} more", r.violations.len() - 20);
        }
    }
}

fn summarize(
    ops: &[history::Op],
    kinds: &[FaultKind],
    faults: &[(FaultKind, String)],
    reports: &[Report],
    args: &Args,
    took: Duration,
) -> Value {
    let mut by_workload = serde_json::Map::new();
    for op in ops.iter().filter(|o| !o.is_fault()) {
        let e = by_workload
            .entry(op.workload.clone())
            .or_insert_with(|| json!({"ok": 0, "fail": 0, "unknown": 0}));
        let k = match op.outcome {
            Outcome::Ok => "ok",
            Outcome::Fail => "fail",
            Outcome::Unknown => "unknown",
        };
        e[k] = json!(e[k].as_u64().unwrap_or(0) + 1);
    }
    let mut by_kind = serde_json::Map::new();
    for (k, _) in faults {
        let e = by_kind.entry(k.name().to_string()).or_insert(json!(0));
        *e = json!(e.as_u64().unwrap_or(0) + 1);
    }
    let never: Vec<&str> = kinds
        .iter()
        .filter(|k| !faults.iter().any(|(f, _)| f == *k))
        .map(|k| k.name())
        .collect();
    let violations: serde_json::Map<String, Value> = reports
        .iter()
        .map(|r| (r.checker.clone(), json!(r.violations.len())))
        .collect();
    json!({
        "totals": {
            "seed": args.seed,
            "seconds": args.time,
            "workload": args.workload,
            "redis": args.redis,
            "took_s": took.as_secs(),
            "operations": by_workload,
            "faults": by_kind,
            "faults_never_injected": never,
            "violations": violations,
        },
        "faults": faults.iter().map(|(k, t)| json!([k.name(), t])).collect::<Vec<_>>(),
        "reports": reports,
    })
}
