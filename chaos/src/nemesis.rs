//! The nemesis: a seeded random schedule of faults, injected into the
//! running [`System`] between calm periods and recorded in the history as
//! operations of process [`NEMESIS`] (invoked when injected, completed when
//! healed), so checkers can tell what happened during which fault.
//!
//! The same seed and the same set of fault kinds give the same schedule
//! (which fault, which role, how long); which node plays a role (the lock
//! leader of the moment) depends on the run.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::faultfs::Fault;
use crate::history::{Outcome, Recorder, NEMESIS};
use crate::system::{Kind, System};

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// kill -9 the lock leader; restart it at once or after a delay.
    KillLockLeader,
    /// kill -9 a lock follower; restart it at once or after a delay.
    KillLockFollower,
    /// SIGSTOP a lock node (the leader or a follower) for longer than a
    /// lease, then SIGCONT.
    PauseLockNode,
    /// Every fsync of a lock node (the leader) sleeps.
    SlowDisk,
    /// One fsync of a lock node fails with EIO (it must stop); restart it.
    FailingDisk,
    /// One log write of a lock node fails with ENOSPC (it must stop);
    /// restart it.
    FullDisk,
    /// kill -9 a queue node; restart it at once or after a delay.
    KillQueueNode,
    /// kill -9 a cache node; restart it at once or after a delay.
    KillCacheNode,
    /// SIGSTOP a cache node past its peers' failure timeout, then SIGCONT.
    PauseCacheNode,
    /// kill -9 Redis (Redis mode); restart it at once or after a delay.
    KillRedis,
    /// The lock leader loses both followers (they elect a new leader; the
    /// old one must not grant anything meanwhile).
    PartitionLeader,
    /// A random lock node loses the other two (a 1/2 split).
    PartitionSplit,
    /// The lock leader cannot reach its followers, who can still reach it
    /// (one-way loss).
    PartitionOneWay,
}

impl FaultKind {
    pub const ALL: [FaultKind; 13] = [
        FaultKind::KillLockLeader,
        FaultKind::KillLockFollower,
        FaultKind::PauseLockNode,
        FaultKind::SlowDisk,
        FaultKind::FailingDisk,
        FaultKind::FullDisk,
        FaultKind::KillQueueNode,
        FaultKind::KillCacheNode,
        FaultKind::PauseCacheNode,
        FaultKind::KillRedis,
        FaultKind::PartitionLeader,
        FaultKind::PartitionSplit,
        FaultKind::PartitionOneWay,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::KillLockLeader => "kill-lock-leader",
            FaultKind::KillLockFollower => "kill-lock-follower",
            FaultKind::PauseLockNode => "pause-lock-node",
            FaultKind::SlowDisk => "slow-disk",
            FaultKind::FailingDisk => "failing-disk",
            FaultKind::FullDisk => "full-disk",
            FaultKind::KillQueueNode => "kill-queue-node",
            FaultKind::KillCacheNode => "kill-cache-node",
            FaultKind::PauseCacheNode => "pause-cache-node",
            FaultKind::KillRedis => "kill-redis",
            FaultKind::PartitionLeader => "partition-leader",
            FaultKind::PartitionSplit => "partition-split",
            FaultKind::PartitionOneWay => "partition-one-way",
        }
    }

    pub fn parse(s: &str) -> Option<FaultKind> {
        FaultKind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// Whether it cuts links (needs the lock nodes in namespaces).
    pub fn is_partition(&self) -> bool {
        matches!(
            self,
            FaultKind::PartitionLeader | FaultKind::PartitionSplit | FaultKind::PartitionOneWay
        )
    }

    /// The workloads this fault is aimed at ("lock", "queue", "cache").
    pub fn workload(&self) -> &'static str {
        match self {
            FaultKind::KillQueueNode | FaultKind::KillRedis => "queue",
            FaultKind::KillCacheNode | FaultKind::PauseCacheNode => "cache",
            _ => "lock",
        }
    }
}

/// How the nemesis behaves.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub seed: u64,
    pub kinds: Vec<FaultKind>,
    /// Calm time between faults (drawn between the two).
    pub calm: (Duration, Duration),
    /// How long a fault lasts (drawn between the two).
    pub length: (Duration, Duration),
}

/// Run faults from `schedule` until `until`, then heal everything. Every
/// kind in the schedule is injected at least once if time allows: the
/// first round goes through them in a seeded order, later ones draw at
/// random.
pub async fn run(
    sys: &tokio::sync::Mutex<System>,
    rec: &Recorder,
    schedule: &Schedule,
    until: tokio::time::Instant,
) -> anyhow::Result<Vec<(FaultKind, String)>> {
    let mut rng = StdRng::seed_from_u64(schedule.seed ^ 0x006e_656d_6573_6973);
    let mut order = schedule.kinds.clone();
    // A seeded shuffle (Fisher-Yates) for the first round.
    for i in (1..order.len()).rev() {
        order.swap(i, rng.gen_range(0..=i));
    }
    let mut done = Vec::new();
    let mut i = 0usize;
    loop {
        let calm = draw(&mut rng, schedule.calm);
        if tokio::time::Instant::now() + calm >= until || order.is_empty() {
            break;
        }
        tokio::time::sleep(calm).await;
        let kind = if i < order.len() {
            order[i]
        } else {
            order[rng.gen_range(0..order.len())]
        };
        let length = draw(&mut rng, schedule.length);
        let delayed_restart = rng.gen_bool(0.5);
        let pick = rng.gen::<u64>();
        match inject(sys, rec, kind, length, delayed_restart, pick).await? {
            Some(target) => {
                done.push((kind, target));
                i += 1;
            }
            // No node plays the role now (no agreed leader during an
            // election): a kind of the first round is tried again after
            // the next calm, so that every kind is injected at least once.
            None if i < order.len() => {}
            None => i += 1,
        }
    }
    sys.lock().await.heal_all().await?;
    Ok(done)
}

fn draw(rng: &mut StdRng, (lo, hi): (Duration, Duration)) -> Duration {
    if hi <= lo {
        return lo;
    }
    Duration::from_millis(rng.gen_range(lo.as_millis() as u64..=hi.as_millis() as u64))
}

/// Inject one fault, hold it for `length`, heal it; the node it hit, or
/// `None` when no node plays the fault's role now.
async fn inject(
    sys: &tokio::sync::Mutex<System>,
    rec: &Recorder,
    kind: FaultKind,
    length: Duration,
    delayed_restart: bool,
    pick: u64,
) -> anyhow::Result<Option<String>> {
    let mut s = sys.lock().await;
    // The leader may be changing hands (an election after the last fault):
    // give the lock nodes a moment to agree on one.
    let mut leader = s.lock_leader().await;
    for _ in 0..30 {
        if leader.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        leader = s.lock_leader().await;
    }
    let choose = |names: Vec<String>| -> Option<String> {
        if names.is_empty() {
            None
        } else {
            Some(names[(pick % names.len() as u64) as usize].clone())
        }
    };
    let followers: Vec<String> = s
        .names(Kind::Lock)
        .into_iter()
        .filter(|n| Some(n) != leader.as_ref())
        .collect();
    let target = match kind {
        FaultKind::KillLockLeader
        | FaultKind::SlowDisk
        | FaultKind::FailingDisk
        | FaultKind::PartitionLeader
        | FaultKind::PartitionOneWay => leader.clone(),
        FaultKind::PartitionSplit => choose(s.names(Kind::Lock)),
        FaultKind::KillLockFollower => choose(followers),
        FaultKind::PauseLockNode | FaultKind::FullDisk => choose(s.names(Kind::Lock)),
        FaultKind::KillQueueNode => choose(s.names(Kind::Queue)),
        FaultKind::KillCacheNode | FaultKind::PauseCacheNode => choose(s.names(Kind::Cache)),
        FaultKind::KillRedis => choose(s.names(Kind::Redis)),
    };
    let Some(target) = target else {
        tracing::info!(
            fault = kind.name(),
            "no target for this fault now; tried later"
        );
        return Ok(None);
    };
    let restart_after = if delayed_restart {
        length
    } else {
        Duration::ZERO
    };
    let p = rec.invoke(
        NEMESIS,
        NEMESIS,
        "fault",
        json!({ "kind": kind.name(), "target": target, "workload": kind.workload(),
                "length_ms": length.as_millis() as u64,
                "restart_after_ms": restart_after.as_millis() as u64 }),
    );
    let mut note = json!(null);
    match kind {
        FaultKind::KillLockLeader
        | FaultKind::KillLockFollower
        | FaultKind::KillQueueNode
        | FaultKind::KillCacheNode
        | FaultKind::KillRedis => {
            s.kill(&target);
            drop(s);
            tokio::time::sleep(restart_after).await;
            sys.lock().await.spawn(&target)?;
        }
        FaultKind::PauseLockNode | FaultKind::PauseCacheNode => {
            s.pause(&target)?;
            drop(s);
            tokio::time::sleep(length.max(Duration::from_millis(500))).await;
            sys.lock().await.resume(&target)?;
        }
        FaultKind::PartitionLeader | FaultKind::PartitionSplit => {
            s.isolate(&target)?;
            drop(s);
            tokio::time::sleep(length).await;
            sys.lock().await.heal_net()?;
        }
        FaultKind::PartitionOneWay => {
            for to in s.names(Kind::Lock).iter().filter(|n| **n != target) {
                s.cut_one_way(&target, to)?;
            }
            drop(s);
            tokio::time::sleep(length).await;
            sys.lock().await.heal_net()?;
        }
        FaultKind::SlowDisk => {
            s.disk(&target, Fault::Slow { ms: 100 })?;
            drop(s);
            tokio::time::sleep(length).await;
            sys.lock().await.disk(&target, Fault::None)?;
        }
        FaultKind::FailingDisk | FaultKind::FullDisk => {
            let fault = if kind == FaultKind::FailingDisk {
                Fault::Eio {
                    times: 1,
                    after_ms: 50,
                }
            } else {
                Fault::Enospc { times: 1 }
            };
            s.disk(&target, fault)?;
            drop(s);
            tokio::time::sleep(length).await;
            let mut s = sys.lock().await;
            // Fail-stop: the node must have exited on the error (if it
            // wrote anything meanwhile); a supervisor restarts it.
            let stopped = !s.running(&target);
            s.disk(&target, Fault::None)?;
            if stopped {
                s.spawn(&target)?;
            }
            note = json!({ "node_stopped": stopped });
        }
    }
    rec.complete(p, Outcome::Ok, note);
    Ok(Some(target))
}
