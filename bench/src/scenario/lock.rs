//! Lock service scenarios. Direct calls go to the Raft leader (as the
//! gateway's leader-following does); each is one typed-client call.
//!
//! - `pairs`: acquire + release, each client on its own resource (no
//!   contention: the cost of two replicated, fsynced writes);
//! - `handoff`: every client on one resource with `wait_ms`, so each release
//!   hands the lock to the next waiter (hand-offs per second);
//! - `shared_mix`: nine shared acquire + release pairs for every exclusive
//!   one, on one resource (readers coexist, a writer waits for them);
//! - `failover`: SIGKILL of the leader, then the time until a write through
//!   a survivor succeeds again (each round restarts the killed node);
//! - `sequential`: 100 calls one after another, acquire and release taking
//!   turns (the seed report's method).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chaos::system::{Kind, System};
use client::{AcquireRequest, Client, LockMode, ReleaseRequest};
use tokio::sync::Mutex;

use super::{client_for, failure, gateway_addr, sequential_plan, Case, Via};
use crate::load::{self, Failure, Measured, Mode, Plan};

/// Long enough that no hold expires inside a run.
const TTL_MS: u64 = 30_000;
/// How long a contended acquire may wait.
const WAIT_MS: u64 = 10_000;
/// Failover rounds per run.
const FAILOVER_ROUNDS: usize = 3;

pub async fn run(sys: &mut System, case: &Case, plan: Plan) -> anyhow::Result<Measured> {
    if case.scenario == "failover" {
        return failover(sys).await;
    }
    let c = Arc::new(target(sys, case.via).await?);
    // Unique per run, so runs never meet each other's holds.
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let plan = super::shaped(plan, case.clients);
    Ok(match case.scenario {
        "pairs" => load::run(plan, move |w, seq| {
            let (c, res) = (c.clone(), format!("pairs-{run_id}-{w}"));
            async move { pair(&c, &res, &format!("w{w}-{seq}"), LockMode::Exclusive, None).await }
        })
        .await,
        "handoff" => {
            load::run(plan, move |w, seq| {
                let (c, res) = (c.clone(), format!("hot-{run_id}"));
                async move {
                    pair(
                        &c,
                        &res,
                        &format!("w{w}-{seq}"),
                        LockMode::Exclusive,
                        Some(WAIT_MS),
                    )
                    .await
                }
            })
            .await
        }
        "shared_mix" => {
            load::run(plan, move |w, seq| {
                let (c, res) = (c.clone(), format!("mix-{run_id}"));
                let mode = if seq % 10 == 9 {
                    LockMode::Exclusive
                } else {
                    LockMode::Shared
                };
                async move { pair(&c, &res, &format!("w{w}-{seq}"), mode, Some(WAIT_MS)).await }
            })
            .await
        }
        "sequential" => {
            // Acquire on even calls, release the hold on odd ones.
            let held: Arc<Mutex<Option<u64>>> = Arc::default();
            load::run(sequential_plan(plan), move |_, seq| {
                let (c, held, res) = (c.clone(), held.clone(), format!("seq-{run_id}"));
                async move {
                    let mut held = held.lock().await;
                    match held.take() {
                        None => {
                            let g = c
                                .acquire(&acquire(&res, "seq", LockMode::Exclusive, None))
                                .await;
                            *held = Some(g.map_err(|e| failure(&e))?.token);
                        }
                        Some(token) => {
                            c.release(&release(&res, "seq", token))
                                .await
                                .map_err(|e| failure(&e))?;
                        }
                    }
                    let _ = seq;
                    Ok(None)
                }
            })
            .await
        }
        other => anyhow::bail!("no lock scenario {other}"),
    })
}

/// A client for the leader (direct) or the gateway.
async fn target(sys: &System, via: Via) -> anyhow::Result<Client> {
    match via {
        Via::Gateway => client_for(&gateway_addr(sys), None),
        Via::Direct => {
            let leader = leader(sys, Duration::from_secs(10)).await?;
            client_for(&sys.nodes[&leader].addr, None)
        }
    }
}

async fn leader(sys: &System, within: Duration) -> anyhow::Result<String> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(l) = sys.lock_leader().await {
            return Ok(l);
        }
        if Instant::now() > deadline {
            anyhow::bail!("the lock nodes agreed on no leader within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) fn acquire(
    resource: &str,
    owner: &str,
    mode: LockMode,
    wait_ms: Option<u64>,
) -> AcquireRequest {
    AcquireRequest {
        resource: resource.into(),
        owner: owner.into(),
        mode: Some(mode),
        ttl_ms: Some(TTL_MS),
        wait_ms,
        ..Default::default()
    }
}

fn release(resource: &str, owner: &str, token: u64) -> ReleaseRequest {
    ReleaseRequest {
        resource: resource.into(),
        owner: owner.into(),
        token,
        request_id: None,
        retry_window_ms: None,
    }
}

/// One acquire and its release: the unit of `pairs`, `handoff` and
/// `shared_mix`.
pub(crate) async fn pair(
    c: &Client,
    resource: &str,
    owner: &str,
    mode: LockMode,
    wait_ms: Option<u64>,
) -> load::Outcome {
    let g = c
        .acquire(&acquire(resource, owner, mode, wait_ms))
        .await
        .map_err(|e| failure(&e))?;
    c.release(&release(resource, owner, g.token))
        .await
        .map_err(|e| failure(&e))?;
    Ok(None)
}

/// Rounds of: kill the leader, write through a survivor until one
/// succeeds; each round's time is one recorded "call".
async fn failover(sys: &mut System) -> anyhow::Result<Measured> {
    let mut times = Vec::new();
    let mut errors = std::collections::BTreeMap::new();
    for round in 0..FAILOVER_ROUNDS {
        let old = leader(sys, Duration::from_secs(10)).await?;
        let survivor = sys
            .names(Kind::Lock)
            .into_iter()
            .find(|n| *n != old)
            .expect("three lock nodes");
        let c = client_for(&sys.nodes[&survivor].addr, None)?;
        // Warm the survivor's connection and forwarding path first.
        probe(&c, round, 0)
            .await
            .map_err(|f| anyhow::anyhow!("warm-up write failed: {}", f.kind))?;
        sys.kill(&old);
        let killed = Instant::now();
        let mut attempt = 1;
        let took = loop {
            match probe(&c, round, attempt).await {
                Ok(()) => break killed.elapsed(),
                Err(f) => *errors.entry(f.kind).or_insert(0u64) += 1,
            }
            attempt += 1;
            if killed.elapsed() > Duration::from_secs(30) {
                anyhow::bail!("no write succeeded within 30 s of killing the leader {old}");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        times.push(took);
        sys.spawn(&old)?;
        sys.wait_healthy(Duration::from_secs(30)).await?;
    }
    Ok(crate::load::from_samples(
        Mode::Closed { clients: 1 },
        &times,
        errors,
    ))
}

/// One short write: acquire with a 1 s lease (it lapses on its own).
async fn probe(c: &Client, round: usize, attempt: usize) -> Result<(), Failure> {
    let mut r = acquire(
        &format!("failover-{round}-{attempt}"),
        "probe",
        LockMode::Exclusive,
        None,
    );
    r.ttl_ms = Some(1_000);
    // A call to a dead leader's forward would wait out the client timeout;
    // a short one lets the probe try again as soon as a leader exists.
    tokio::time::timeout(Duration::from_millis(500), c.acquire(&r))
        .await
        .map_err(|_| Failure::new("timeout"))?
        .map_err(|e| failure(&e))?;
    Ok(())
}
