//! The client workloads: concurrent clients on the typed client, through
//! the gateway, each recording every operation it performs in the history
//! (the vocabulary is the one the checkers in [`crate::check`] read).
//!
//! - locks: contended exclusive and shared locks on a few resources; each
//!   holder writes to a [`FencedRegister`] with its token, sometimes renews,
//!   sometimes stalls past its lease before writing (a paused holder, which
//!   the register must fence off), then releases; linearizable reads.
//! - queue: producers enqueue unique values; consumers dequeue and ack,
//!   and now and then "crash" (never ack) so the message is redelivered.
//! - cache: reads and writes of a few keys, each client on its own cache
//!   node, every written value unique per key.
//!
//! Every loop ends at the run's deadline; every call has a timeout.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client::{
    AcquireRequest, CacheSetRequest, Client, DequeueRequest, EnqueueRequest, LockMode,
    ReleaseRequest, RenewRequest,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::history::{Outcome, Pending, Recorder};

/// The lock resources, queues and cache keys the workloads use.
pub const LOCKS: [&str; 3] = ["L0", "L1", "L2"];
pub const QUEUES: [&str; 3] = ["Q0", "Q1", "Q2"];
pub const KEYS: [&str; 3] = ["K0", "K1", "K2"];

/// A lease short enough that pauses and kills outlast it.
const LOCK_TTL_MS: u64 = 1_500;
/// How long a queue consumer keeps a message invisible.
pub const VISIBILITY_MS: u64 = 1_500;
/// Longest any one client call may take before it counts as unknown.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(8);

/// How a call ended, as the history records it: a definite refusal (4xx)
/// is a failure; no answer or a 5xx may or may not have taken effect.
fn outcome_of(e: &client::Error) -> (Outcome, Value) {
    let out = json!({ "code": e.code().unwrap_or("transport"), "message": e.to_string() });
    match e.status() {
        Some(s) if (400..500).contains(&s) && s != 408 => (Outcome::Fail, out),
        _ => (Outcome::Unknown, out),
    }
}

/// Record how a call ended and hand back its result: a success is Ok with
/// the output `ok` makes of it; an error is classified by [`outcome_of`].
fn finish<T>(
    rec: &Recorder,
    p: Pending,
    res: Result<T, client::Error>,
    ok: impl FnOnce(&T) -> Value,
) -> Option<T> {
    match res {
        Ok(v) => {
            rec.complete(p, Outcome::Ok, ok(&v));
            Some(v)
        }
        Err(e) => {
            let (o, out) = outcome_of(&e);
            rec.complete(p, o, out);
            None
        }
    }
}

/// [`finish`] for a read: it changes nothing, so any error is a Fail.
fn finish_read<T>(
    rec: &Recorder,
    p: Pending,
    res: Result<T, client::Error>,
    ok: impl FnOnce(&T) -> Value,
) {
    match res {
        Ok(v) => rec.complete(p, Outcome::Ok, ok(&v)),
        Err(e) => rec.complete(p, Outcome::Fail, outcome_of(&e).1),
    };
}

/// A client whose calls through the gateway give up after [`CALL_TIMEOUT`].
pub fn client(gateway: &str, cache_node: Option<&str>) -> anyhow::Result<Client> {
    let mut b = Client::builder(gateway).timeout(CALL_TIMEOUT);
    if let Some(n) = cache_node {
        b = b.cache_node(n);
    }
    Ok(b.build()?)
}

/// What every client of a run shares.
#[derive(Clone)]
pub struct Run {
    pub rec: Recorder,
    pub deadline: Instant,
    pub seed: u64,
}

impl Run {
    fn rng(&self, salt: u64) -> StdRng {
        StdRng::seed_from_u64(self.seed.wrapping_mul(1_000_003).wrapping_add(salt))
    }

    fn going(&self) -> bool {
        Instant::now() < self.deadline
    }
}

/// The storage a lock protects, as a fencing-aware store implements it:
/// it refuses a token lower than the highest it has accepted. It lives in
/// this process, behind one mutex, so its own behaviour is atomic; what the
/// checker looks at is which writes it had to refuse and which it took.
#[derive(Default, Clone)]
pub struct FencedRegister(Arc<Mutex<BTreeMap<String, u64>>>);

impl FencedRegister {
    /// Write with `token`: `Ok` if accepted, else the highest token seen.
    pub fn write(&self, resource: &str, token: u64) -> Result<(), u64> {
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let max = seen.entry(resource.to_string()).or_insert(0);
        if token < *max {
            return Err(*max);
        }
        *max = token;
        Ok(())
    }
}

/// One lock client: acquire, write fenced, maybe renew or stall, release.
pub async fn lock_client(run: Run, id: usize, c: Client, register: FencedRegister) {
    let mut rng = run.rng(100 + id as u64);
    let owner = format!("lock-client-{id}");
    let process = owner.clone();
    let mut n = 0u64;
    while run.going() {
        n += 1;
        let resource = LOCKS[rng.gen_range(0..LOCKS.len())];
        if rng.gen_bool(0.15) {
            let p = run
                .rec
                .invoke(&process, "lock", "read", json!({ "resource": resource }));
            finish_read(&run.rec, p, c.lock_state(resource).await, |s| {
                let holders: Vec<Value> = s
                    .holders
                    .iter()
                    .map(|h| json!({ "owner": h.owner, "mode": h.mode, "token": h.token, "expires_at_ms": h.expires_at_ms }))
                    .collect();
                json!({ "holders": holders })
            });
            continue;
        }
        let mode = if rng.gen_bool(0.7) {
            LockMode::Exclusive
        } else {
            LockMode::Shared
        };
        let req = AcquireRequest {
            resource: resource.to_string(),
            owner: owner.clone(),
            mode: Some(mode),
            ttl_ms: Some(LOCK_TTL_MS),
            wait_ms: Some(1_000),
            request_id: Some(format!("{owner}-{n}")),
            retry_window_ms: None,
        };
        let p = run.rec.invoke(
            &process,
            "lock",
            "acquire",
            json!({ "resource": resource, "owner": owner, "mode": mode, "ttl_ms": LOCK_TTL_MS,
                    "wait_ms": 1_000, "request_id": req.request_id }),
        );
        let granted = finish(
            &run.rec,
            p,
            c.acquire(&req).await,
            |g| json!({ "token": g.token, "expires_at_ms": g.expires_at_ms }),
        );
        let Some(token) = granted.map(|g| g.token) else {
            continue;
        };
        // A holder that stalls past its lease (a GC pause, a swapped-out
        // process) and then writes: the register must refuse it if anyone
        // got the lock since.
        if rng.gen_bool(0.1) {
            tokio::time::sleep(Duration::from_millis(LOCK_TTL_MS + 300)).await;
        }
        fenced_write(&run, &process, &register, resource, &owner, token);
        if rng.gen_bool(0.3) {
            let p = run.rec.invoke(
                &process,
                "lock",
                "renew",
                json!({ "resource": resource, "owner": owner, "token": token, "ttl_ms": LOCK_TTL_MS }),
            );
            let req = RenewRequest {
                resource: resource.to_string(),
                owner: owner.clone(),
                token,
                ttl_ms: Some(LOCK_TTL_MS),
                request_id: Some(format!("{owner}-{n}-renew")),
                retry_window_ms: None,
            };
            let renewed = finish(
                &run.rec,
                p,
                c.renew(&req).await,
                |r| json!({ "expires_at_ms": r.expires_at_ms }),
            );
            if renewed.is_some() {
                fenced_write(&run, &process, &register, resource, &owner, token);
            }
        }
        let p = run.rec.invoke(
            &process,
            "lock",
            "release",
            json!({ "resource": resource, "owner": owner, "token": token }),
        );
        let req = ReleaseRequest {
            resource: resource.to_string(),
            owner: owner.clone(),
            token,
            request_id: Some(format!("{owner}-{n}-release")),
            retry_window_ms: None,
        };
        finish(&run.rec, p, c.release(&req).await, |_| Value::Null);
    }
}

fn fenced_write(
    run: &Run,
    process: &str,
    register: &FencedRegister,
    resource: &str,
    owner: &str,
    token: u64,
) {
    let p = run.rec.invoke(
        process,
        "lock",
        "fenced_write",
        json!({ "resource": resource, "owner": owner, "token": token }),
    );
    match register.write(resource, token) {
        Ok(()) => run.rec.complete(p, Outcome::Ok, Value::Null),
        Err(seen) => run.rec.complete(
            p,
            Outcome::Fail,
            json!({ "code": "stale_token", "seen": seen }),
        ),
    };
}

/// A producer: enqueue unique values (from `next`) round-robin over the
/// queues.
pub async fn queue_producer(run: Run, id: usize, c: Client, next: Arc<AtomicU64>) {
    let process = format!("queue-producer-{id}");
    while run.going() {
        let value = next.fetch_add(1, Ordering::SeqCst);
        let queue = QUEUES[(value % QUEUES.len() as u64) as usize];
        let p = run.rec.invoke(
            &process,
            "queue",
            "enqueue",
            json!({ "queue": queue, "value": value }),
        );
        let req = EnqueueRequest {
            queue: queue.to_string(),
            payload: Some(json!({ "v": value }).into()),
            ..Default::default()
        };
        let sent = finish(&run.rec, p, c.enqueue(&req).await, |r| {
            serde_json::to_value(r).unwrap_or_default()
        });
        if sent.is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn delivered(messages: &[client::Message]) -> Vec<Value> {
    messages
        .iter()
        .map(|m| {
            json!({ "id": m.id, "value": m.payload.to_value()["v"], "receipt": m.receipt, "attempts": m.attempts })
        })
        .collect()
}

/// A consumer: dequeue from one queue, ack most messages, and "crash" on
/// some (never ack), so they are delivered again after the visibility.
pub async fn queue_consumer(run: Run, id: usize, c: Client) {
    let mut rng = run.rng(200 + id as u64);
    let process = format!("queue-consumer-{id}");
    let queue = QUEUES[id % QUEUES.len()];
    while run.going() {
        let p = run
            .rec
            .invoke(&process, "queue", "dequeue", json!({ "queue": queue }));
        let req = DequeueRequest {
            queue: queue.to_string(),
            max: Some(5),
            visibility_ms: Some(VISIBILITY_MS),
            wait_ms: Some(200),
        };
        // A dequeue whose answer was lost may have delivered messages
        // nobody saw: they come back after the visibility.
        let got = finish(
            &run.rec,
            p,
            c.dequeue(&req).await,
            |m| json!({ "messages": delivered(m) }),
        );
        let Some(messages) = got else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        for m in messages {
            if rng.gen_bool(0.15) {
                continue;
            }
            let p = run.rec.invoke(
                &process,
                "queue",
                "ack",
                json!({ "queue": queue, "receipt": m.receipt, "id": m.id, "value": m.payload.to_value()["v"] }),
            );
            finish(&run.rec, p, c.ack(queue, &m.receipt).await, |_| Value::Null);
        }
    }
}

/// After the run: take everything left in `queue` (ready, in flight once
/// its visibility ends, dead-lettered) and record it as one `drain`.
pub async fn queue_drain(rec: &Recorder, c: &Client, queue: &str) {
    let p = rec.invoke("final", "queue", "drain", json!({ "queue": queue }));
    // Each value and the id of the message that carried it.
    let (mut values, mut ids) = (Vec::new(), Vec::new());
    let mut empty_since: Option<Instant> = None;
    let give_up = Instant::now() + Duration::from_secs(60);
    // Empty for longer than a visibility: whatever was in flight is back.
    while empty_since.is_none_or(|t| t.elapsed() < Duration::from_millis(VISIBILITY_MS + 1_000)) {
        if Instant::now() > give_up {
            rec.complete(
                p,
                Outcome::Unknown,
                json!({ "code": "timeout", "values": values, "ids": ids }),
            );
            return;
        }
        let req = DequeueRequest {
            queue: queue.to_string(),
            max: Some(100),
            visibility_ms: Some(600_000),
            wait_ms: Some(0),
        };
        match c.dequeue(&req).await {
            Ok(ms) if !ms.is_empty() => {
                empty_since = None;
                values.extend(ms.iter().map(|m| m.payload.to_value()["v"].clone()));
                ids.extend(ms.iter().map(|m| json!(m.id)));
            }
            Ok(_) => {
                empty_since.get_or_insert_with(Instant::now);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    // One page of the largest size the queue service allows; a run's dead
    // letters are far fewer (a message needs five lost deliveries).
    match c.dead_letters(queue, Some(1_000)).await {
        Ok(d) => {
            values.extend(d.messages.iter().map(|m| m.payload.to_value()["v"].clone()));
            ids.extend(d.messages.iter().map(|m| json!(m.id)));
            rec.complete(p, Outcome::Ok, json!({ "values": values, "ids": ids }));
        }
        Err(e) => {
            rec.complete(
                p,
                Outcome::Unknown,
                json!({ "code": e.code().unwrap_or("transport"), "values": values, "ids": ids }),
            );
        }
    }
}

/// A cache client on one node: writes unique values (from `next`, per
/// key) and reads.
pub async fn cache_client(run: Run, id: usize, c: Client, node: String, next: Arc<Vec<AtomicU64>>) {
    let mut rng = run.rng(300 + id as u64);
    let process = format!("cache-client-{id}");
    while run.going() {
        let k = rng.gen_range(0..KEYS.len());
        let key = KEYS[k];
        if rng.gen_bool(0.4) {
            let value = next[k].fetch_add(1, Ordering::SeqCst);
            let p = run.rec.invoke(
                &process,
                "cache",
                "cache_set",
                json!({ "key": key, "value": value, "node": node }),
            );
            let req = CacheSetRequest {
                key: key.to_string(),
                value: json!(value),
                ttl_ms: None,
            };
            finish(&run.rec, p, c.cache_set(&req).await, |_| Value::Null);
        } else {
            let p = run.rec.invoke(
                &process,
                "cache",
                "cache_get",
                json!({ "key": key, "node": node }),
            );
            finish_read(
                &run.rec,
                p,
                c.cache_get(key).await,
                |v| json!({ "value": v.as_ref().map(|v| &v.value) }),
            );
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..5))).await;
    }
}
