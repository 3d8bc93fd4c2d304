//! The long runs: what the services do with memory and descriptors over
//! time, and at their limits. Both start a system of their own (so nothing
//! earlier is in its memory), offer an open loop through the gateway (no
//! coordinated omission: [`crate::load`]) and sample every node every
//! `step` ([`crate::probe`]): resident memory, open descriptors, what it
//! holds, next to the load's p50/p99 and errors of the same slice.
//!
//! - **soak**: a steady mix at a fixed rate for a long time (20 minutes by
//!   default). An operation is, in turn, a lock acquire + release, a queue
//!   enqueue + dequeue + ack, a cache set + get, on a fixed set of names:
//!   nothing should accumulate, so memory, descriptors and p99 should be as
//!   flat at the end as after the warm-up. The summary gives each node's
//!   drift (first sample after the warm-up against the last) and p99's.
//! - **storm**: ten times the rate of single calls that only ever add:
//!   lock acquires on fresh resources, each with its own `request_id`
//!   (nothing is released, every answer is remembered), and enqueues that
//!   are never dequeued. The services start with smaller limits
//!   ([`STORM_LIMITS`]) so that they are reached within minutes: past them
//!   the answers are errors (`capacity_exceeded`, `queue_full`,
//!   `overloaded`, counted by code) and memory must level off. The summary
//!   gives each node's peak memory and, from the samples, its memory per
//!   held lock or stored message.
//!
//! Output in the run's directory: `<scenario>-samples.json` (the settings,
//! the whole-run figures and every sample), `<scenario>-samples.csv` (a row
//! per sample), charts `<scenario>-{rss,fds,held,latency,errors}.{svg,png}`
//! and a section of `summary.md` ([`Record::markdown`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chaos::system::{Kind, Options, System};
use client::{Client, LockMode};
use serde::Serialize;
use serde_json::json;

use crate::charts::{self, Chart, LINES_HEIGHT};
use crate::load::{self, Failure, Measured, Mode, Plan, Slice};
use crate::probe::{self, NodeSample};
use crate::report::ms;
use crate::scenario::{addrs, cache, client_for, failure, gateway_addr, lock, queue};

/// The storm's limits, as environment of the services (a service that does
/// not have a limit yet ignores its variable). Sized so that a storm of a
/// few minutes at its default rate passes every one:
/// - locks: one grant per two calls, so 20 000 held after ~15 s at 3 000/s;
///   the remembered answers (one per acquire, refused ones too) pass
///   50 000 within a minute, so the oldest are being forgotten;
/// - queue: the storm's queues are placed ([`storm_queues`]) two on one
///   node, one on another: the pair fills its node (60 000) while each of
///   the two holds 30 000, under the per-queue 40 000 that the lone queue
///   then reaches; both answers show;
/// - gateway: 64 calls in flight per backend, well under the load's own
///   window, so a backend that falls behind makes the gateway refuse.
pub const STORM_LIMITS: &[(Kind, &str, &str)] = &[
    (Kind::Lock, "MAX_LOCKS", "20000"),
    (Kind::Lock, "MAX_REMEMBERED", "50000"),
    (Kind::Queue, "MAX_QUEUE_MESSAGES", "40000"),
    (Kind::Queue, "MAX_NODE_MESSAGES", "60000"),
    (Kind::Gateway, "MAX_IN_FLIGHT", "64"),
];

/// Distinct lock resources, queues and cache keys of the soak: reused, so
/// a steady state has a fixed size.
const SOAK_RESOURCES: usize = 1024;
const SOAK_QUEUES: usize = 16;
const SOAK_KEYS: usize = 256;
/// The least growth of a node's held count from which its memory per unit
/// is estimated (fewer would be allocator noise over a handful).
const MIN_UNITS_FOR_ESTIMATE: u64 = 1_000;
/// Shares of the run whose p99s are compared for the drift (the median of
/// the first tenth of slices against that of the last tenth: one slice
/// alone is a few hundred calls, its p99 a handful of them).
const DRIFT_SHARE: usize = 10;

/// Which long run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    Soak,
    Storm,
}

impl Scenario {
    pub const ALL: [Scenario; 2] = [Scenario::Soak, Scenario::Storm];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Soak => "soak",
            Scenario::Storm => "storm",
        }
    }

    pub fn parse(name: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The environment the services start with.
    fn limits(self) -> &'static [(Kind, &'static str, &'static str)] {
        match self {
            Scenario::Soak => &[],
            Scenario::Storm => STORM_LIMITS,
        }
    }
}

/// How a long run is offered.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Settings {
    /// Operations (soak) or calls (storm) per second.
    pub rate: f64,
    /// Load before the first sample (not recorded).
    pub warmup_s: f64,
    /// Load recorded and sampled.
    pub duration_s: f64,
    /// Between samples.
    pub step_s: f64,
    /// Calls outstanding at most; one due when the window is full is an
    /// error of kind `backlog`.
    pub max_in_flight: usize,
}

/// One sample: every node's figures at `t_s`, and the load of the slice
/// that ended there.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Seconds since the warm-up ended.
    pub t_s: f64,
    /// The slice `[t_s - step, t_s)` (none for the first sample, at 0).
    pub load: Option<Slice>,
    pub nodes: Vec<NodeSample>,
}

/// Everything a long run produced.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    pub scenario: Scenario,
    pub settings: Settings,
    /// `(kind, variable, value)` the services started with.
    pub limits: Vec<(String, String, String)>,
    /// The whole measured window (its timeline is the samples' `load`).
    pub measured: Measured,
    pub samples: Vec<Sample>,
}

/// Start a system of its own with the scenario's limits, run the scenario
/// on it, stop it.
pub async fn run(scenario: Scenario, opts: Options, settings: Settings) -> anyhow::Result<Record> {
    anyhow::ensure!(
        settings.rate > 0.0 && settings.duration_s > 0.0 && settings.step_s > 0.0,
        "{}: rate, duration and sampling interval must be positive",
        scenario.name()
    );
    let mut sys = System::start_with_env(opts, scenario.limits()).await?;
    let record = measure(scenario, &sys, settings).await;
    sys.stop();
    record
}

async fn measure(scenario: Scenario, sys: &System, s: Settings) -> anyhow::Result<Record> {
    let c = Arc::new(client_for(&gateway_addr(sys), None)?);
    // Unique per run: a run never meets an earlier one's names.
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let (warmup, duration, step) = (
        Duration::from_secs_f64(s.warmup_s),
        Duration::from_secs_f64(s.duration_s),
        Duration::from_secs_f64(s.step_s),
    );
    let plan = Plan {
        mode: Mode::Open {
            rate: s.rate,
            max_in_flight: s.max_in_flight,
        },
        warmup,
        duration,
        // The schedule's own count: the cap only makes the bound explicit.
        max_ops: (s.rate * s.duration_s).ceil() as u64 + 1,
        step,
    };
    let targets = probe::targets(sys);
    let steps = (s.duration_s / s.step_s).ceil() as usize;
    let queues = match scenario {
        Scenario::Soak => Vec::new(),
        Scenario::Storm => storm_queues(sys, &run_id)?,
    };
    // The load's window starts when `load::run` is first polled, which
    // `join!` does right away: the two clocks agree to microseconds.
    let start = Instant::now() + warmup;
    let load = async {
        match scenario {
            Scenario::Soak => {
                load::run(plan, move |w, seq| {
                    let (c, run_id) = (c.clone(), run_id.clone());
                    async move { soak_operation(&c, &run_id, w, seq).await }
                })
                .await
            }
            Scenario::Storm => {
                // Every hold outlives the run: nothing is ever released.
                let ttl_ms = (warmup + duration + Duration::from_secs(60)).as_millis() as u64;
                let queues = Arc::new(queues);
                load::run(plan, move |w, seq| {
                    let (c, run_id, queues) = (c.clone(), run_id.clone(), queues.clone());
                    async move { storm_call(&c, &run_id, &queues, ttl_ms, w, seq).await }
                })
                .await
            }
        }
    };
    let (measured, nodes) = tokio::join!(load, probe::every(start, step, steps, &targets));
    let samples = nodes
        .into_iter()
        .enumerate()
        .map(|(k, (at, nodes))| Sample {
            t_s: at.saturating_duration_since(start).as_secs_f64(),
            load: k
                .checked_sub(1)
                .and_then(|i| measured.timeline.get(i).cloned()),
            nodes,
        })
        .collect();
    Ok(Record {
        scenario,
        settings: s,
        limits: scenario
            .limits()
            .iter()
            .map(|(k, n, v)| (format!("{k:?}"), n.to_string(), v.to_string()))
            .collect(),
        measured: Measured {
            timeline: Vec::new(),
            ..measured
        },
        samples,
    })
}

/// One soak operation, by turns: a lock pair, a queue cycle, a cache set
/// and get, each on one of a fixed set of names.
async fn soak_operation(c: &Client, run_id: &str, w: usize, seq: u64) -> load::Outcome {
    match seq % 3 {
        0 => {
            let resource = format!("soak-{run_id}-{}", w % SOAK_RESOURCES);
            lock::pair(
                c,
                &resource,
                &format!("soak-{seq}"),
                LockMode::Exclusive,
                None,
            )
            .await
        }
        1 => queue::cycle(c, &format!("soak-{run_id}-{}", w % SOAK_QUEUES), seq).await,
        _ => {
            let key = format!("soak-{run_id}-{}", w % SOAK_KEYS);
            c.cache_set(&cache::set(&key, seq))
                .await
                .map_err(|e| failure(&e))?;
            match c.cache_get(&key).await.map_err(|e| failure(&e))? {
                Some(_) => Ok(None),
                None => Err(Failure::new("missing")),
            }
        }
    }
}

/// One storm call, by turns: an acquire of a fresh resource with its own
/// request id, an enqueue that is never taken.
async fn storm_call(
    c: &Client,
    run_id: &str,
    queues: &[String],
    ttl_ms: u64,
    w: usize,
    seq: u64,
) -> load::Outcome {
    if seq % 2 == 0 {
        let name = format!("storm-{run_id}-{seq}");
        let mut req = lock::acquire(&name, &format!("storm-{w}"), LockMode::Exclusive, None);
        req.ttl_ms = Some(ttl_ms);
        req.request_id = Some(name);
        c.acquire(&req).await.map_err(|e| failure(&e))?;
    } else {
        let q = &queues[(seq / 2) as usize % queues.len()];
        c.enqueue_one(q, json!({"seq": seq}))
            .await
            .map_err(|e| failure(&e))?;
    }
    Ok(None)
}

/// The storm's queues: two owned by one queue node and one by another, so
/// that both the node's and a queue's bound are reached (see
/// [`STORM_LIMITS`]). Names are tried in order until the ring places them
/// so (bounded: with three nodes a few dozen names always do).
fn storm_queues(sys: &System, run_id: &str) -> anyhow::Result<Vec<String>> {
    let ring = common::Ring::new(addrs(sys, Kind::Queue));
    let mut by_owner: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for i in 0..1_000 {
        let q = format!("storm-{run_id}-{i}");
        let owner = ring
            .owner(&q)
            .ok_or_else(|| anyhow::anyhow!("no queue nodes"))?;
        by_owner.entry(owner.to_string()).or_default().push(q);
        let pair = by_owner.values().find(|qs| qs.len() >= 2);
        let lone = by_owner.values().find(|qs| Some(*qs) != pair);
        if let (Some(pair), Some(lone)) = (pair, lone) {
            return Ok(vec![pair[0].clone(), lone[0].clone(), pair[1].clone()]);
        }
    }
    // One queue node: its queues are all it has.
    Ok(by_owner.into_values().flatten().take(3).collect())
}

/// A node's figures over the run, for the summary.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRow {
    pub name: String,
    /// KiB, at the first sample, the last, and the most.
    pub rss_first: Option<u64>,
    pub rss_last: Option<u64>,
    pub rss_peak: Option<u64>,
    pub fds_first: Option<u64>,
    pub fds_last: Option<u64>,
    pub held_first: Option<u64>,
    pub held_peak: Option<u64>,
    /// Bytes of resident memory per held unit: the growth of RSS from the
    /// first sample to the first that holds the most, over the growth of
    /// the held count (when it grew by [`MIN_UNITS_FOR_ESTIMATE`] or more).
    pub bytes_per_unit: Option<f64>,
}

impl Record {
    /// Every node's row, in the samples' order.
    pub fn nodes(&self) -> Vec<NodeRow> {
        let Some(first) = self.samples.first() else {
            return Vec::new();
        };
        let names: Vec<&str> = first.nodes.iter().map(|n| n.name.as_str()).collect();
        names
            .into_iter()
            .map(|name| {
                let of = |s: &Sample| s.nodes.iter().find(|n| n.name == name).cloned();
                let series: Vec<NodeSample> = self.samples.iter().filter_map(of).collect();
                let first_some = |f: fn(&NodeSample) -> Option<u64>| series.iter().find_map(f);
                let last_some = |f: fn(&NodeSample) -> Option<u64>| series.iter().rev().find_map(f);
                let peak = |f: fn(&NodeSample) -> Option<u64>| series.iter().filter_map(f).max();
                let held_peak = peak(|n| n.held);
                // The first sample with both figures, and the first at the
                // peak with both: the growth between them.
                let base = series
                    .iter()
                    .find(|n| n.rss_kib.is_some() && n.held.is_some());
                let top = series
                    .iter()
                    .find(|n| n.held == held_peak && n.rss_kib.is_some() && held_peak.is_some());
                let bytes_per_unit = match (base, top) {
                    (Some(b), Some(t)) => {
                        let units = t.held.unwrap_or(0).saturating_sub(b.held.unwrap_or(0));
                        let kib = t.rss_kib.unwrap_or(0) as f64 - b.rss_kib.unwrap_or(0) as f64;
                        (units >= MIN_UNITS_FOR_ESTIMATE).then(|| kib * 1024.0 / units as f64)
                    }
                    _ => None,
                };
                NodeRow {
                    name: name.to_string(),
                    rss_first: first_some(|n| n.rss_kib),
                    rss_last: last_some(|n| n.rss_kib),
                    rss_peak: peak(|n| n.rss_kib),
                    fds_first: first_some(|n| n.fds),
                    fds_last: last_some(|n| n.fds),
                    held_first: first_some(|n| n.held),
                    held_peak,
                    bytes_per_unit,
                }
            })
            .collect()
    }

    /// p99 (µs) at the start and at the end: the median of the slices' p99
    /// over the first and the last tenth of the slices that had calls.
    pub fn p99_drift(&self) -> Option<(f64, f64)> {
        let p99s: Vec<f64> = self
            .samples
            .iter()
            .filter_map(|s| s.load.as_ref())
            .filter(|l| l.ops > 0)
            .map(|l| l.p99_us as f64)
            .collect();
        if p99s.is_empty() {
            return None;
        }
        let n = (p99s.len() / DRIFT_SHARE).max(1);
        Some((
            load::median(p99s[..n].to_vec()),
            load::median(p99s[p99s.len() - n..].to_vec()),
        ))
    }

    /// One row per sample: the load of the slice it ends, errors by kind
    /// (a column per kind seen in the run), then each node's figures.
    pub fn csv(&self) -> String {
        let kinds: Vec<&String> = self.measured.errors.keys().collect();
        let names: Vec<&str> = self
            .samples
            .first()
            .map(|s| s.nodes.iter().map(|n| n.name.as_str()).collect())
            .unwrap_or_default();
        let mut out = String::from("t_s,ops,p50_us,p99_us,errors");
        for k in &kinds {
            let _ = write!(out, ",errors_{k}");
        }
        for n in &names {
            let _ = write!(out, ",{n}_rss_kib,{n}_fds,{n}_held");
        }
        out.push('\n');
        let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
        for s in &self.samples {
            let _ = write!(out, "{:.3}", s.t_s);
            match &s.load {
                Some(l) => {
                    let _ = write!(
                        out,
                        ",{},{},{},{}",
                        l.ops,
                        l.p50_us,
                        l.p99_us,
                        l.errors.values().sum::<u64>()
                    );
                    for k in &kinds {
                        let _ = write!(out, ",{}", l.errors.get(*k).copied().unwrap_or(0));
                    }
                }
                None => out.push_str(&",".repeat(4 + kinds.len())),
            }
            for name in &names {
                let n = s.nodes.iter().find(|n| n.name == *name);
                let _ = write!(
                    out,
                    ",{},{},{}",
                    opt(n.and_then(|n| n.rss_kib)),
                    opt(n.and_then(|n| n.fds)),
                    opt(n.and_then(|n| n.held))
                );
            }
            out.push('\n');
        }
        out
    }

    /// The charts: memory, descriptors and held units per node, latency
    /// and errors of each slice, over the run.
    pub fn charts(&self) -> Vec<(&'static str, Chart)> {
        let scenario = self.scenario.name();
        let per_node = |f: fn(&NodeSample) -> Option<f64>| -> Vec<(String, Vec<(f64, f64)>)> {
            let names: Vec<&str> = self
                .samples
                .first()
                .map(|s| s.nodes.iter().map(|n| n.name.as_str()).collect())
                .unwrap_or_default();
            names
                .into_iter()
                .map(|name| {
                    let pts: Vec<(f64, f64)> = self
                        .samples
                        .iter()
                        .filter_map(|s| {
                            let v = f(s.nodes.iter().find(|n| n.name == name)?)?;
                            Some((s.t_s, v))
                        })
                        .collect();
                    (name.to_string(), pts)
                })
                .filter(|(_, pts)| !pts.is_empty())
                .collect()
        };
        let per_slice = |f: &dyn Fn(&Slice) -> f64| -> Vec<(f64, f64)> {
            self.samples
                .iter()
                .filter_map(|s| Some((s.t_s, f(s.load.as_ref()?))))
                .collect()
        };
        let lines = |what: &str, y_desc: &str, series| Chart::Lines {
            title: format!("{scenario}: {what}"),
            x_desc: "seconds after the warm-up".into(),
            y_desc: y_desc.into(),
            series,
            points: false,
        };
        let mut errors = vec![(
            "all".to_string(),
            per_slice(&|l| l.errors.values().sum::<u64>() as f64),
        )];
        for kind in self.measured.errors.keys() {
            errors.push((
                kind.clone(),
                per_slice(&|l| l.errors.get(kind).copied().unwrap_or(0) as f64),
            ));
        }
        let latency = vec![
            ("p50".to_string(), per_slice(&|l| l.p50_us as f64 / 1000.0)),
            ("p99".to_string(), per_slice(&|l| l.p99_us as f64 / 1000.0)),
        ];
        vec![
            (
                "rss",
                lines(
                    "resident memory per node",
                    "RSS (MiB)",
                    per_node(|n| Some(n.rss_kib? as f64 / 1024.0)),
                ),
            ),
            (
                "fds",
                lines(
                    "open file descriptors per node",
                    "fds",
                    per_node(|n| Some(n.fds? as f64)),
                ),
            ),
            (
                "held",
                lines(
                    "held locks + waiters (lock nodes), stored messages (queue nodes)",
                    "count",
                    per_node(|n| Some(n.held? as f64)),
                ),
            ),
            (
                "latency",
                lines(
                    &format!("latency per {} s slice", self.settings.step_s),
                    "ms (from the schedule)",
                    latency,
                ),
            ),
            (
                "errors",
                lines(
                    &format!("errors per {} s slice, by kind", self.settings.step_s),
                    "errors",
                    errors,
                ),
            ),
        ]
    }

    /// The run's section of `summary.md`; `charts` are the files drawn.
    pub fn markdown(&self, charts: &[String]) -> String {
        let s = &self.settings;
        let m = &self.measured;
        let mut out = format!("\n## {}\n\n", self.scenario.name());
        let what = match self.scenario {
            Scenario::Soak => {
                "operations a second; an operation is, in turn, a lock acquire + release, \
                 a queue enqueue + dequeue + ack, a cache set + get, on fixed names"
            }
            Scenario::Storm => {
                "calls a second; in turn a lock acquire of a fresh resource with its own \
                 request id (never released) and an enqueue that is never dequeued"
            }
        };
        let _ = writeln!(
            out,
            "{} at {:.0} {what}; through the gateway, open loop (at most {} in flight), \
             sampled every {} s after a {} s warm-up.\n\n\
             {} succeeded ({:.0}/s), p50 {}, p99 {}, max {}; {} failed.",
            span(s.duration_s),
            s.rate,
            s.max_in_flight,
            s.step_s,
            s.warmup_s,
            m.ops,
            m.ops_per_s,
            ms(m.p50_us as f64),
            ms(m.p99_us as f64),
            ms(m.max_us as f64),
            m.error_count()
        );
        if !self.limits.is_empty() {
            out.push_str("\nLimits the services started with: ");
            let limits: Vec<String> = self
                .limits
                .iter()
                .map(|(k, n, v)| format!("{k} `{n}={v}`"))
                .collect();
            out.push_str(&limits.join(", "));
            out.push('\n');
        }
        if let Some((first, last)) = self.p99_drift() {
            let _ = writeln!(
                out,
                "\np99 drift (median slice p99, first against last tenth of the run): {} → {} ({:+.0} %).",
                ms(first),
                ms(last),
                (last / first.max(1.0) - 1.0) * 100.0
            );
        }
        out.push_str(
            "\n| node | RSS first | RSS last | drift | RSS peak | fds first → last | held first → peak | RSS per held |\n\
             | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        );
        let mib =
            |k: Option<u64>| k.map_or("–".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
        let num = |v: Option<u64>| v.map_or("–".into(), |v| v.to_string());
        for n in self.nodes() {
            let drift = match (n.rss_first, n.rss_last) {
                (Some(a), Some(b)) => format!(
                    "{:+.1} MiB ({:+.1} %)",
                    (b as f64 - a as f64) / 1024.0,
                    (b as f64 / (a as f64).max(1.0) - 1.0) * 100.0
                ),
                _ => "–".into(),
            };
            let held = match (n.held_first, n.held_peak) {
                (None, None) => String::new(),
                (a, b) => format!("{} → {}", num(a), num(b)),
            };
            let per = n
                .bytes_per_unit
                .map_or(String::new(), |b| format!("{b:.0} B"));
            let _ = writeln!(
                out,
                "| {} | {} | {} | {drift} | {} | {} → {} | {held} | {per} |",
                n.name,
                mib(n.rss_first),
                mib(n.rss_last),
                mib(n.rss_peak),
                num(n.fds_first),
                num(n.fds_last),
            );
        }
        out.push_str(
            "\n*held*: held locks + waiters on a lock node (each holds the whole table), stored \
             messages on a queue node. *RSS per held*: RSS growth over held growth from the \
             first sample to the first at the peak (shown from a growth of 1000).\n",
        );
        if m.errors.is_empty() {
            out.push_str("\nNo errors.\n");
        } else {
            out.push_str("\n| error (code, status or kind) | count |\n| --- | ---: |\n");
            for (k, n) in &m.errors {
                let _ = writeln!(out, "| {k} | {n} |");
            }
        }
        out.push('\n');
        for c in charts.iter().filter(|c| c.ends_with(".svg")) {
            let _ = writeln!(out, "![{}]({c})\n", c.trim_end_matches(".svg"));
        }
        out
    }

    /// Write the samples (JSON, CSV) and the charts into `dir`; the
    /// summary's section, with a note when no chart could be drawn.
    pub fn write(&self, dir: &Path) -> anyhow::Result<String> {
        std::fs::create_dir_all(dir)?;
        let name = self.scenario.name();
        std::fs::write(
            dir.join(format!("{name}-samples.json")),
            serde_json::to_string_pretty(self)?,
        )?;
        std::fs::write(dir.join(format!("{name}-samples.csv")), self.csv())?;
        let mut files = Vec::new();
        let mut note = String::new();
        for (chart, c) in self.charts() {
            match charts::save(dir, &format!("{name}-{chart}"), LINES_HEIGHT, &c) {
                Ok(f) => files.extend(f),
                Err(e) => {
                    note = format!("\n> No {name} charts: {e:#}\n");
                    break;
                }
            }
        }
        Ok(self.markdown(&files) + &note)
    }
}

/// A duration for the summary: seconds up to two minutes, then minutes.
pub fn span(seconds: f64) -> String {
    if seconds < 120.0 {
        format!("{seconds:.0} s")
    } else {
        format!("{:.1} min", seconds / 60.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, rss_kib: u64, held: Option<u64>) -> NodeSample {
        NodeSample {
            name: name.into(),
            rss_kib: Some(rss_kib),
            fds: Some(20),
            held,
        }
    }

    fn slice(t: f64, p99_us: u64, errors: &[(&str, u64)]) -> Slice {
        Slice {
            t,
            ops: 100,
            p50_us: p99_us / 2,
            p99_us,
            errors: errors.iter().map(|(k, n)| (k.to_string(), *n)).collect(),
        }
    }

    /// A storm-like record: lock-1 grows 100 KiB per 1000 locks up to a
    /// cap of 3000, then stays; the gateway holds nothing.
    fn record() -> Record {
        let held = [0u64, 1000, 2000, 3000, 3000, 3000];
        let samples = held
            .iter()
            .enumerate()
            .map(|(k, h)| Sample {
                t_s: k as f64,
                load: (k > 0).then(|| {
                    slice(
                        k as f64 - 1.0,
                        1000 * k as u64,
                        &[("capacity_exceeded", (k as u64).saturating_sub(3))],
                    )
                }),
                nodes: vec![
                    node("lock-1", 10_000 + h / 10, Some(*h)),
                    node("gateway", 5_000 + k as u64, None),
                ],
            })
            .collect();
        Record {
            scenario: Scenario::Storm,
            settings: Settings {
                rate: 10.0,
                warmup_s: 1.0,
                duration_s: 5.0,
                step_s: 1.0,
                max_in_flight: 4,
            },
            limits: vec![("Lock".into(), "MAX_LOCKS".into(), "3000".into())],
            measured: load::from_samples(
                Mode::Closed { clients: 1 },
                &[Duration::from_millis(1)],
                BTreeMap::from([("capacity_exceeded".to_string(), 3)]),
            ),
            samples,
        }
    }

    #[test]
    fn rows_give_drift_peak_and_memory_per_unit() {
        let rows = record().nodes();
        let lock = &rows[0];
        assert_eq!(
            (lock.rss_first, lock.rss_last, lock.rss_peak),
            (Some(10_000), Some(10_300), Some(10_300))
        );
        assert_eq!((lock.held_first, lock.held_peak), (Some(0), Some(3000)));
        // 300 KiB over 3000 locks.
        let per = lock.bytes_per_unit.expect("an estimate");
        assert!((per - 102.4).abs() < 1e-9, "{per}");
        let gw = &rows[1];
        assert_eq!((gw.rss_first, gw.rss_last), (Some(5_000), Some(5_005)));
        assert_eq!((gw.held_peak, gw.bytes_per_unit), (None, None));
    }

    #[test]
    fn too_little_growth_gives_no_estimate() {
        let mut r = record();
        for s in &mut r.samples {
            s.nodes[0].held = s.nodes[0].held.map(|h| h / 10);
        }
        assert_eq!(r.nodes()[0].bytes_per_unit, None);
    }

    #[test]
    fn p99_drift_compares_the_first_and_last_slices() {
        // Five slices: a tenth rounds up to one slice at each end.
        assert_eq!(record().p99_drift(), Some((1000.0, 5000.0)));
    }

    #[test]
    fn csv_has_a_row_per_sample_and_a_column_per_error_kind() {
        let csv = record().csv();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 7);
        assert_eq!(
            lines[0],
            "t_s,ops,p50_us,p99_us,errors,errors_capacity_exceeded,\
             lock-1_rss_kib,lock-1_fds,lock-1_held,gateway_rss_kib,gateway_fds,gateway_held"
        );
        // The first sample has no slice before it.
        assert_eq!(lines[1], "0.000,,,,,,10000,20,0,5000,20,");
        assert_eq!(lines[5], "4.000,100,2000,4000,1,1,10300,20,3000,5004,20,");
    }

    #[test]
    fn summary_names_limits_errors_and_estimates() {
        let md = record().markdown(&["storm-rss.svg".into(), "storm-rss.png".into()]);
        assert!(md.contains("## storm"), "{md}");
        assert!(md.contains("Lock `MAX_LOCKS=3000`"), "{md}");
        assert!(md.contains("| capacity_exceeded | 3 |"), "{md}");
        assert!(
            md.contains("| lock-1 | 9.8 MiB | 10.1 MiB | +0.3 MiB (+3.0 %) | 10.1 MiB | 20 → 20 | 0 → 3000 | 102 B |"),
            "{md}"
        );
        assert!(md.contains("![storm-rss](storm-rss.svg)"), "{md}");
        assert!(!md.contains("storm-rss.png"), "{md}");
    }

    #[test]
    fn charts_have_a_line_per_node_and_per_error_kind() {
        let charts = record().charts();
        let names: Vec<&str> = charts.iter().map(|c| c.0).collect();
        assert_eq!(names, ["rss", "fds", "held", "latency", "errors"]);
        let series = |i: usize| match &charts[i].1 {
            Chart::Lines { series, .. } => series
                .iter()
                .map(|(l, pts)| (l.clone(), pts.len()))
                .collect::<Vec<_>>(),
            Chart::Bars { .. } => panic!("a line chart"),
        };
        assert_eq!(series(0), [("lock-1".into(), 6), ("gateway".into(), 6)]);
        // Only the lock node holds anything.
        assert_eq!(series(2), [("lock-1".to_string(), 6)]);
        // Slices, not samples: five.
        assert_eq!(
            series(4),
            [("all".into(), 5), ("capacity_exceeded".to_string(), 5)]
        );
    }
}
