//! The load engine every scenario runs on: a closed loop (N clients, each
//! sending its next call when the last one answered) or an open loop (calls
//! sent on a fixed schedule whatever the answers do), a warm-up that is not
//! recorded, a fixed measured duration, and HDR histograms.
//!
//! - **No coordinated omission in the open loop**: a call's latency is
//!   measured from the moment the schedule said to send it, not from when a
//!   free slot let it go; a stalled server shows up as the backlog it causes.
//! - **Every loop is bounded**: by its duration, by `max_ops`, and the open
//!   loop by `max_in_flight` calls outstanding (a call that finds the window
//!   full is counted as an error of kind `backlog`, not queued without end).
//! - A worker's errors are counted by kind (the scenario names the kind,
//!   e.g. the HTTP status or `timeout`), never silently dropped.
//! - The measured window is also cut into slices of `Plan::step` (a
//!   second for the benchmarks, the sampling interval for a soak), each
//!   with its own percentiles and errors: what changes over a run.
//! - A call may time the part that counts itself ([`Outcome`] `Ok(Some(d))`,
//!   e.g. a write without the reads that set it up); the closed loop records
//!   that instead of the whole call.

/// A call's result: `Ok(None)` times the whole call, `Ok(Some(d))` records
/// `d` (closed loop; the open loop always times from the schedule).
pub type Outcome = Result<Option<Duration>, Failure>;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::Semaphore;

/// Latencies are recorded in microseconds, up to this (an hour: anything
/// longer is clamped, and shows as the max).
const MAX_RECORDED_US: u64 = 3_600_000_000;

/// How a run offers load.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(tag = "loop", rename_all = "snake_case")]
pub enum Mode {
    /// `clients` loops, each sending its next call when the last answered.
    Closed { clients: usize },
    /// Calls started at `rate` per second on a fixed schedule, at most
    /// `max_in_flight` outstanding.
    Open { rate: f64, max_in_flight: usize },
}

/// One run's shape.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub mode: Mode,
    /// Load offered but not recorded (connections, caches, leader warm).
    pub warmup: Duration,
    /// Load offered and recorded.
    pub duration: Duration,
    /// A hard cap on recorded calls, whatever the duration.
    pub max_ops: u64,
    /// The length of one slice of the timeline ([`Measured::timeline`]).
    pub step: Duration,
}

/// The timeline's slices of the benchmarks: one a second.
pub const ONE_SECOND: Duration = Duration::from_secs(1);

/// A call failed; `kind` is what the summary counts it under.
#[derive(Debug, Clone)]
pub struct Failure {
    pub kind: String,
}

impl Failure {
    pub fn new(kind: impl Into<String>) -> Self {
        Failure { kind: kind.into() }
    }
}

/// What one slice (`Plan::step`) of the measured window saw, by when the
/// calls were due (for latency and errors over time).
#[derive(Debug, Clone, Serialize)]
pub struct Slice {
    /// Seconds from the start of the measured window to the slice's start.
    pub t: f64,
    pub ops: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    /// Failed calls by kind.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub errors: BTreeMap<String, u64>,
}

/// The result of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Measured {
    pub mode: Mode,
    /// Calls that succeeded inside the measured window.
    pub ops: u64,
    pub seconds: f64,
    pub ops_per_s: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    /// Failed calls by kind.
    pub errors: BTreeMap<String, u64>,
    pub timeline: Vec<Slice>,
}

impl Measured {
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// What each worker collects; merged at the end.
struct Tally {
    all: Histogram<u64>,
    slices: Vec<(Histogram<u64>, BTreeMap<String, u64>)>,
    errors: BTreeMap<String, u64>,
    /// When the last recorded call ended: a run its cap ended early lasted
    /// until then, not the whole window.
    last_done: Option<Instant>,
}

impl Tally {
    fn new(slices: usize) -> Self {
        Tally {
            all: histogram(),
            slices: (0..slices)
                .map(|_| (histogram(), BTreeMap::new()))
                .collect(),
            errors: BTreeMap::new(),
            last_done: None,
        }
    }

    /// Record one call that was due at `due` (open loop) or sent at `due`
    /// (closed loop), answered now, if it falls in the measured window.
    fn record(&mut self, window: &Window, due: Instant, outcome: Outcome) {
        if due < window.start || due >= window.end {
            return;
        }
        self.last_done = self.last_done.max(Some(Instant::now()));
        let slice = ((due - window.start).as_nanos() / window.step.as_nanos()) as usize;
        let slice = self.slices.get_mut(slice);
        match outcome {
            Ok(timed) => {
                let took = timed.unwrap_or_else(|| due.elapsed());
                let us = (took.as_micros() as u64).clamp(1, MAX_RECORDED_US);
                self.all.saturating_record(us);
                if let Some((h, _)) = slice {
                    h.saturating_record(us);
                }
            }
            Err(f) => {
                if let Some((_, errors)) = slice {
                    *errors.entry(f.kind.clone()).or_default() += 1;
                }
                *self.errors.entry(f.kind).or_default() += 1;
            }
        }
    }

    fn merge(&mut self, other: Tally) {
        self.all.add(&other.all).expect("same histogram bounds");
        for ((h, errors), (other_h, other_errors)) in self.slices.iter_mut().zip(other.slices) {
            h.add(&other_h).expect("same histogram bounds");
            add_counts(errors, other_errors);
        }
        add_counts(&mut self.errors, other.errors);
        self.last_done = self.last_done.max(other.last_done);
    }
}

fn add_counts(into: &mut BTreeMap<String, u64>, from: BTreeMap<String, u64>) {
    for (k, n) in from {
        *into.entry(k).or_default() += n;
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_RECORDED_US, 3).expect("valid histogram bounds")
}

struct Window {
    start: Instant,
    end: Instant,
    /// The length of a timeline slice (never zero).
    step: Duration,
}

/// Run `call` under `plan`. `call(worker, seq)` makes one call; in the
/// closed loop `worker` is the client's index, in the open loop it is
/// `seq % 1024` (for scenarios that spread calls over keys).
pub async fn run<F, Fut>(plan: Plan, call: F) -> Measured
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let call = Arc::new(call);
    let start = Instant::now() + plan.warmup;
    let step = plan.step.max(Duration::from_millis(1));
    let window = Arc::new(Window {
        start,
        end: start + plan.duration,
        step,
    });
    let slices = (plan.duration.as_secs_f64() / step.as_secs_f64()).ceil() as usize;
    let tally = match plan.mode {
        Mode::Closed { clients } => {
            closed(clients, plan.max_ops, slices, window.clone(), call).await
        }
        Mode::Open {
            rate,
            max_in_flight,
        } => {
            open(
                rate,
                max_in_flight,
                plan.max_ops,
                slices,
                window.clone(),
                call,
            )
            .await
        }
    };
    summarize(plan, &window, tally)
}

async fn closed<F, Fut>(
    clients: usize,
    max_ops: u64,
    slices: usize,
    window: Arc<Window>,
    call: Arc<F>,
) -> Tally
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    // Each client's share of the cap, so the cap bounds the whole run.
    let per_client = max_ops.div_ceil(clients.max(1) as u64);
    let mut tasks = Vec::with_capacity(clients);
    for worker in 0..clients.max(1) {
        let (window, call) = (window.clone(), call.clone());
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::new(slices);
            let mut recorded = 0u64;
            let mut seq = 0u64;
            while recorded < per_client {
                let sent = Instant::now();
                if sent >= window.end {
                    break;
                }
                let outcome = call(worker, seq).await;
                seq += 1;
                if sent >= window.start {
                    recorded += 1;
                }
                tally.record(&window, sent, outcome);
            }
            tally
        }));
    }
    let mut total = Tally::new(slices);
    for t in tasks {
        total.merge(t.await.expect("a load worker panicked"));
    }
    total
}

async fn open<F, Fut>(
    rate: f64,
    max_in_flight: usize,
    max_ops: u64,
    slices: usize,
    window: Arc<Window>,
    call: Arc<F>,
) -> Tally
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let slots = Arc::new(Semaphore::new(max_in_flight.max(1)));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Outcome)>();
    let first = Instant::now();
    let collector = {
        let window = window.clone();
        tokio::spawn(async move {
            let mut tally = Tally::new(slices);
            while let Some((due, outcome)) = rx.recv().await {
                tally.record(&window, due, outcome);
            }
            tally
        })
    };
    let mut seq = 0u64;
    let mut recorded = 0u64;
    loop {
        let due = first + interval.mul_f64(seq as f64);
        if due >= window.end || recorded >= max_ops {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        if due >= window.start {
            recorded += 1;
        }
        match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                let (tx, call) = (tx.clone(), call.clone());
                let worker = (seq % 1024) as usize;
                tokio::spawn(async move {
                    // Always from the schedule: that is the point of the open loop.
                    let outcome = call(worker, seq).await.map(|_| None);
                    let _ = tx.send((due, outcome));
                    drop(permit);
                });
            }
            Err(_) => {
                let _ = tx.send((due, Err(Failure::new("backlog"))));
            }
        }
        seq += 1;
    }
    drop(tx);
    collector.await.expect("the collector panicked")
}

fn summarize(plan: Plan, window: &Window, t: Tally) -> Measured {
    let end = t.last_done.map_or(window.end, |d| d.min(window.end));
    let secs = end.saturating_duration_since(window.start).as_secs_f64();
    let ops = t.all.len();
    let q = |h: &Histogram<u64>, p: f64| {
        if h.is_empty() {
            0
        } else {
            h.value_at_quantile(p)
        }
    };
    Measured {
        mode: plan.mode,
        ops,
        seconds: secs,
        ops_per_s: ops as f64 / secs.max(1e-9),
        p50_us: q(&t.all, 0.50),
        p90_us: q(&t.all, 0.90),
        p99_us: q(&t.all, 0.99),
        p999_us: q(&t.all, 0.999),
        max_us: t.all.max(),
        errors: t.errors,
        timeline: t
            .slices
            .into_iter()
            .enumerate()
            .map(|(i, (h, errors))| Slice {
                t: window.step.as_secs_f64() * i as f64,
                ops: h.len(),
                p50_us: q(&h, 0.50),
                p99_us: q(&h, 0.99),
                errors,
            })
            .collect(),
    }
}

/// A result made of samples measured one by one (failover rounds), for
/// the same report as a load run.
pub fn from_samples(mode: Mode, samples: &[Duration], errors: BTreeMap<String, u64>) -> Measured {
    let mut all = histogram();
    for d in samples {
        all.saturating_record((d.as_micros() as u64).clamp(1, MAX_RECORDED_US));
    }
    let total: Duration = samples.iter().sum();
    let q = |p: f64| {
        if all.is_empty() {
            0
        } else {
            all.value_at_quantile(p)
        }
    };
    Measured {
        mode,
        ops: all.len(),
        seconds: total.as_secs_f64(),
        ops_per_s: all.len() as f64 / total.as_secs_f64().max(1e-9),
        p50_us: q(0.50),
        p90_us: q(0.90),
        p99_us: q(0.99),
        p999_us: q(0.999),
        max_us: all.max(),
        errors,
        timeline: Vec::new(),
    }
}

/// The median of `v` (the mean of the middle two for an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn plan(mode: Mode, ms: u64) -> Plan {
        Plan {
            mode,
            warmup: Duration::from_millis(50),
            duration: Duration::from_millis(ms),
            max_ops: u64::MAX,
            step: ONE_SECOND,
        }
    }

    #[tokio::test]
    async fn closed_loop_records_only_the_window_and_counts_errors_by_kind() {
        let calls = Arc::new(AtomicU64::new(0));
        let c = calls.clone();
        let m = run(plan(Mode::Closed { clients: 4 }, 300), move |_, seq| {
            c.fetch_add(1, Ordering::Relaxed);
            async move {
                tokio::time::sleep(Duration::from_millis(2)).await;
                if seq % 10 == 9 {
                    Err(Failure::new("teapot"))
                } else {
                    Ok(None)
                }
            }
        })
        .await;
        let total = calls.load(Ordering::Relaxed);
        assert!(
            m.ops > 0 && m.ops + m.error_count() < total,
            "warm-up calls are not recorded: {m:?} of {total}"
        );
        assert_eq!(m.errors.keys().collect::<Vec<_>>(), ["teapot"]);
        assert!(m.p50_us >= 2_000, "{m:?}");
        assert!(m.p50_us <= m.p99_us && m.p99_us <= m.max_us);
    }

    #[tokio::test]
    async fn the_cap_bounds_a_run_whatever_its_duration() {
        let mut p = plan(Mode::Closed { clients: 2 }, 60_000);
        p.max_ops = 100;
        let started = Instant::now();
        let m = run(p, |_, _| async { Ok(None) }).await;
        assert_eq!(m.ops, 100);
        assert!(started.elapsed() < Duration::from_secs(30));
        // The rate is over the time the calls took, not the whole window.
        assert!(m.seconds < 30.0 && m.ops_per_s > 100.0 / 30.0, "{m:?}");
    }

    #[tokio::test]
    async fn open_loop_counts_from_the_schedule_so_a_stall_shows() {
        // Calls due every 5 ms, each taking 20 ms, one slot: the schedule
        // does not wait for the server, so the calls it could not start are
        // counted (backlog), and the ones that ran took their 20 ms.
        let m = run(
            plan(
                Mode::Open {
                    rate: 200.0,
                    max_in_flight: 1,
                },
                400,
            ),
            |_, _| async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(None)
            },
        )
        .await;
        assert!(m.errors.get("backlog").copied().unwrap_or(0) > 0, "{m:?}");
        assert!(m.ops > 0 && m.p50_us >= 20_000, "{m:?}");
        // Offered 200/s for 0.4 s: every due call is either run or refused.
        let offered = m.ops + m.error_count();
        assert!((70..=90).contains(&offered), "offered {offered}");
    }

    #[tokio::test]
    async fn a_call_that_times_itself_is_recorded_as_it_says() {
        let m = run(plan(Mode::Closed { clients: 1 }, 100), |_, _| async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            Ok(Some(Duration::from_micros(700)))
        })
        .await;
        assert!(m.ops > 0);
        assert!((690..=710).contains(&m.max_us), "{m:?}");
    }

    #[tokio::test]
    async fn slices_of_the_step_carry_their_own_calls_and_errors() {
        // 200 calls/s for 0.6 s in 0.2 s slices; every fifth call fails.
        let mut p = plan(
            Mode::Open {
                rate: 200.0,
                max_in_flight: 64,
            },
            600,
        );
        p.step = Duration::from_millis(200);
        let m = run(p, |_, seq| async move {
            if seq % 5 == 0 {
                Err(Failure::new("teapot"))
            } else {
                Ok(None)
            }
        })
        .await;
        let ts: Vec<f64> = m.timeline.iter().map(|s| s.t).collect();
        assert_eq!(ts.len(), 3, "{m:?}");
        assert!((ts[1] - 0.2).abs() < 1e-9 && (ts[2] - 0.4).abs() < 1e-9);
        for s in &m.timeline {
            // 40 calls due per slice (give or take the edges): 32 ok, 8 not.
            let errors = s.errors.get("teapot").copied().unwrap_or(0);
            assert!(
                (30..=34).contains(&s.ops) && (7..=9).contains(&errors),
                "{s:?}"
            );
        }
        let sliced: u64 = m.timeline.iter().flat_map(|s| s.errors.values()).sum();
        assert_eq!(sliced, m.error_count());
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(vec![]), 0.0);
    }
}
