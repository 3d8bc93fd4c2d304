//! `bench`: the per-service benchmarks. It starts the whole system as real
//! processes on 127.0.0.1 (release binaries, the same set-up as
//! `scripts/run-local.sh`, through the fault suite's process harness with no
//! faults), runs each case `--runs` times, and writes the results
//! ([`report`]) into `--out`.
//!
//! - [`load`]: the closed/open loop engine and its histograms;
//! - [`scenario`]: the scenarios, one file per service;
//! - [`baseline`]: etcd, Redis and nginx doing the same work, run in the
//!   same invocation for the ratios;
//! - [`report`]: JSON, CSV and the markdown summary;
//! - [`charts`]: the same as SVG and PNG charts;
//! - [`soak`]: the long runs, `soak` (steady load for minutes: does memory,
//!   do descriptors or p99 drift?) and `storm` (load that only adds, against
//!   smaller limits: are they answered, does memory level off?), sampling
//!   every node's memory and descriptors ([`probe`]) as they go.
//!
//! ```text
//! cargo build --release --bins
//! target/release/bench lock queue --runs 3 --seconds 10 --out bench-results/now
//! target/release/bench soak --soak-minutes 20 --out bench-results/soak
//! target/release/bench storm --storm-minutes 3 --out bench-results/storm
//! ```
//! (`scripts/bench.sh` does both and names the directory by the time.)

mod baseline;
mod charts;
mod load;
mod probe;
mod report;
mod scenario;
mod soak;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chaos::system::{Options, System};
use clap::Parser;

use crate::load::Plan;
use crate::report::Run;
use crate::scenario::{Case, Via, SERVICES};
use crate::soak::Scenario;

/// `Run::system` of the `--compare-bins` build.
const OTHER_BUILD: &str = "other-build";
/// Seconds of a soak and of a storm in `--smoke`: they run, nothing more.
const SMOKE_LONG_SECONDS: f64 = 4.0;

/// Per-service benchmarks of distributed-sync.
#[derive(Debug, Parser)]
#[command(name = "bench")]
struct Args {
    /// Services to benchmark: lock, queue, cache, gateway, or all (those
    /// four); and the long runs, soak and storm (never part of all, which
    /// with --smoke runs a few seconds of each too).
    #[arg(required = true)]
    services: Vec<String>,
    /// Only the scenarios named (e.g. `pairs`, `hop`); all when unset.
    #[arg(long)]
    scenario: Vec<String>,
    /// Only calls made this way (all ways when unset).
    #[arg(long)]
    via: Option<Via>,
    /// Measured seconds of each run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Seconds of load before each run's measurement starts.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// An open loop at this many calls per second (at most `--in-flight`
    /// outstanding) instead of each case's closed-loop clients.
    #[arg(long)]
    rate: Option<f64>,
    /// Calls outstanding at most in the open loop.
    #[arg(long, default_value_t = 256)]
    in_flight: usize,
    /// Runs of each case (the summary takes their median).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// At most this many recorded calls in one run.
    #[arg(long, default_value_t = 5_000_000)]
    max_ops: u64,
    /// The queue scenarios' stores: embedded, redis, or both.
    #[arg(long, default_value = "both")]
    store: String,
    /// Where the service binaries are (default: next to this one).
    #[arg(long)]
    bins: Option<PathBuf>,
    /// Another build's binaries (e.g. an older commit's target/release):
    /// every case of ours also runs on it, right after ours, and the
    /// summary gives ours over it (`other-build`).
    #[arg(long)]
    compare_bins: Option<PathBuf>,
    /// The output directory (results; logs and data of the system under
    /// `<out>/system-<store>`).
    #[arg(long, default_value = "bench-results/latest")]
    out: PathBuf,
    /// A quick pass over every case (1 s runs, one each; with all, a few
    /// seconds of soak and storm too): proves the scenarios run, measures
    /// nothing worth keeping.
    #[arg(long)]
    smoke: bool,
    /// soak: minutes of load after the warm-up (fractions work: 0.1 is 6 s).
    #[arg(long, default_value_t = 20.0)]
    soak_minutes: f64,
    /// soak: operations per second, in turn a lock acquire + release, a
    /// queue enqueue + dequeue + ack, a cache set + get (about 2.3 calls
    /// each); a few hundred leave a 2-core machine mostly idle.
    #[arg(long, default_value_t = 300.0)]
    soak_rate: f64,
    /// soak: seconds of load before the first sample (start-up allocations,
    /// pools and caches filling up are not drift).
    #[arg(long, default_value_t = 30.0)]
    soak_warmup: f64,
    /// storm: minutes of load after the warm-up (`--warmup`).
    #[arg(long, default_value_t = 3.0)]
    storm_minutes: f64,
    /// storm: calls per second (default: ten times --soak-rate).
    #[arg(long)]
    storm_rate: Option<f64>,
    /// soak and storm: seconds between samples of every node's memory and
    /// descriptors (and the load's slices).
    #[arg(long, default_value_t = 5.0)]
    sample_seconds: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.smoke {
        args.seconds = 1;
        args.warmup = 0.2;
        args.runs = 1;
        args.soak_minutes = SMOKE_LONG_SECONDS / 60.0;
        // A third of the real rate: a debug build on a small CI machine
        // keeps up, so the smoke shows the calls succeed, not a backlog.
        args.soak_rate /= 3.0;
        args.soak_warmup = 1.0;
        args.storm_minutes = SMOKE_LONG_SECONDS / 60.0;
        args.sample_seconds = 1.0;
    }
    let mut services: Vec<&'static str> = Vec::new();
    let mut long: Vec<Scenario> = Vec::new();
    for s in &args.services {
        if s == "all" {
            services.extend(SERVICES);
            if args.smoke {
                long.extend(Scenario::ALL);
            }
        } else if let Some(known) = SERVICES.iter().find(|k| **k == s.as_str()) {
            services.push(known);
        } else if let Some(scenario) = Scenario::parse(s) {
            long.push(scenario);
        } else {
            anyhow::bail!("unknown service {s:?}; one of {SERVICES:?}, all, soak or storm");
        }
    }
    // Each once, in the order first named.
    let mut seen = std::collections::BTreeSet::new();
    services.retain(|s| seen.insert(*s));
    let mut seen = Vec::new();
    long.retain(|s| {
        let first = !seen.contains(s);
        seen.push(*s);
        first
    });
    let stores: Vec<&str> = match args.store.as_str() {
        "both" => vec!["embedded", "redis"],
        "embedded" => vec!["embedded"],
        "redis" => vec!["redis"],
        other => anyhow::bail!("--store {other:?}: embedded, redis or both"),
    };
    let bins = match &args.bins {
        Some(b) => b.clone(),
        None => std::env::current_exe()?
            .parent()
            .map(PathBuf::from)
            .ok_or_else(|| anyhow::anyhow!("no directory for this binary"))?,
    };
    let plan = Plan {
        mode: match args.rate {
            Some(rate) => load::Mode::Open {
                rate,
                max_in_flight: args.in_flight,
            },
            None => load::Mode::Closed { clients: 1 },
        },
        warmup: Duration::from_secs_f64(args.warmup),
        duration: Duration::from_secs(args.seconds),
        max_ops: args.max_ops,
        step: load::ONE_SECOND,
    };
    // The cases per store: the queue's on each store, the others once (on
    // the embedded set-up).
    let mut plan_by_store: Vec<(&str, Vec<Case>)> = Vec::new();
    for store in &stores {
        let cases: Vec<Case> = services
            .iter()
            .flat_map(|s| scenario::cases(s))
            // The queue's cases of ours on each store; everything else
            // (baselines included) once, in the first pass.
            .filter(|c| (c.service == "queue" && !c.is_baseline()) || *store == stores[0])
            .filter(|c| args.scenario.is_empty() || args.scenario.iter().any(|s| s == c.scenario))
            .filter(|c| args.via.is_none_or(|v| v == c.via))
            .collect();
        if !cases.is_empty() {
            plan_by_store.push((store, cases));
        }
    }
    let total: usize = plan_by_store.iter().map(|(_, c)| c.len()).sum::<usize>() * args.runs;
    anyhow::ensure!(total > 0 || services.is_empty(), "no case matches");
    let started = Instant::now();
    let mut runs: Vec<Run> = Vec::new();
    let mut done = 0;
    let mut baselines = baseline::Baselines::new(&args.out.join("baselines"));
    for (store, cases) in &plan_by_store {
        let dir = args.out.join(format!("system-{store}"));
        let _ = std::fs::remove_dir_all(&dir);
        eprintln!(
            "[bench] starting the system ({store} store) in {}",
            dir.display()
        );
        let options = |bins: &PathBuf, dir: PathBuf| Options {
            bins: bins.clone(),
            dir,
            redis: *store == "redis",
            netns: false,
            disk_shim: false,
            lock_worker_threads: Some(1),
        };
        let mut sys = System::start(options(&bins, dir)).await?;
        // Another build of ours, run right after ours in every case.
        let mut other = match &args.compare_bins {
            Some(other_bins) => {
                let dir = args.out.join(format!("system-{store}-other"));
                let _ = std::fs::remove_dir_all(&dir);
                Some(System::start(options(other_bins, dir)).await?)
            }
            None => None,
        };
        for case in cases {
            for run in 1..=args.runs {
                let mut measured = Vec::new();
                if case.is_baseline() {
                    if let Some(m) = baselines.run(&sys, case, plan).await? {
                        measured.push((case.system, m));
                    }
                } else {
                    // With another build, the two take turns going first, so
                    // drift over the invocation hits both alike.
                    let other_first = run % 2 == 0;
                    if let (true, Some(other)) = (other_first, other.as_mut()) {
                        measured.push((OTHER_BUILD, scenario::run(other, case, plan).await?));
                    }
                    measured.push((case.system, scenario::run(&mut sys, case, plan).await?));
                    if let (false, Some(other)) = (other_first, other.as_mut()) {
                        measured.push((OTHER_BUILD, scenario::run(other, case, plan).await?));
                    }
                }
                done += 1;
                for (system, m) in measured {
                    eprintln!(
                        "[bench {done}/{total} {:>4.0}s] {system} {} {} via {:?} clients {} ({store}) run {run}: {:.0} ops/s, p50 {} µs, p99 {} µs, {} errors",
                        started.elapsed().as_secs_f64(),
                        case.service,
                        case.scenario,
                        case.via,
                        case.clients,
                        m.ops_per_s,
                        m.p50_us,
                        m.p99_us,
                        m.error_count()
                    );
                    runs.push(Run {
                        system: system.into(),
                        service: case.service.into(),
                        scenario: case.scenario.into(),
                        via: case.via,
                        clients: case.clients,
                        store: if case.is_baseline() {
                            "-".to_string()
                        } else {
                            store.to_string()
                        },
                        run,
                        result: m,
                    });
                }
            }
        }
        if let Some(mut other) = other {
            other.stop();
        }
        sys.stop();
    }
    // The long runs, each on a system of its own, on the first store.
    let mut sections = Vec::new();
    let mut idle_long = Vec::new();
    for scenario in &long {
        let name = scenario.name();
        let dir = args.out.join(format!("system-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        let (minutes, rate, warmup) = match scenario {
            Scenario::Soak => (args.soak_minutes, args.soak_rate, args.soak_warmup),
            Scenario::Storm => (
                args.storm_minutes,
                args.storm_rate.unwrap_or(10.0 * args.soak_rate),
                args.warmup,
            ),
        };
        let settings = soak::Settings {
            rate,
            warmup_s: warmup,
            duration_s: minutes * 60.0,
            step_s: args.sample_seconds,
            max_in_flight: args.in_flight,
        };
        eprintln!(
            "[bench {:>4.0}s] {name}: {} at {rate} /s, samples every {} s ({} store) in {}",
            started.elapsed().as_secs_f64(),
            soak::span(settings.duration_s),
            args.sample_seconds,
            stores[0],
            dir.display()
        );
        let opts = Options {
            bins: bins.clone(),
            dir,
            redis: stores[0] == "redis",
            netns: false,
            disk_shim: false,
            lock_worker_threads: Some(1),
        };
        let record = soak::run(*scenario, opts, settings).await?;
        let m = &record.measured;
        eprintln!(
            "[bench {:>4.0}s] {name}: {:.0} ops/s, p50 {} µs, p99 {} µs, errors {:?}",
            started.elapsed().as_secs_f64(),
            m.ops_per_s,
            m.p50_us,
            m.p99_us,
            m.errors
        );
        if m.ops == 0 {
            idle_long.push(format!("{name}: {:?}", m.errors));
        }
        sections.push(record.write(&args.out)?);
    }
    let title = if runs.is_empty() {
        let names: Vec<&str> = long.iter().map(|s| s.name()).collect();
        format!("distributed-sync long runs ({})", names.join(", "))
    } else {
        format!(
            "distributed-sync benchmarks ({} s runs, {} run(s) a case)",
            args.seconds, args.runs
        )
    };
    let mut notes: Vec<String> = baselines
        .unavailable()
        .iter()
        .map(|(name, why)| format!("Baseline {name} not run: {why}"))
        .collect();
    drop(baselines);
    std::fs::create_dir_all(&args.out)?;
    let charts = match charts::draw(&args.out, &runs, &report::summarize(&runs)) {
        Ok(files) => files,
        Err(e) => {
            notes.push(format!("No charts: {e:#}"));
            Vec::new()
        }
    };
    report::write(&args.out, &runs, &title, &notes, &charts, &sections)?;
    if args.smoke {
        // A smoke measures nothing, but every case must have done its work.
        let idle: Vec<String> = runs
            .iter()
            .filter(|r| r.result.ops == 0)
            .map(|r| {
                format!(
                    "{} {} {} {:?} c={}: {:?}",
                    r.system, r.service, r.scenario, r.via, r.clients, r.result.errors
                )
            })
            .collect();
        anyhow::ensure!(idle.is_empty(), "cases with no successful call: {idle:#?}");
        anyhow::ensure!(
            idle_long.is_empty(),
            "long runs with no successful call: {idle_long:#?}"
        );
    }
    eprintln!(
        "[bench] done in {:.0} s; results in {}",
        started.elapsed().as_secs_f64(),
        args.out.display()
    );
    Ok(())
}
