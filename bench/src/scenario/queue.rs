//! Queue service scenarios, on whichever store the system runs (embedded or
//! Redis; the report names it). Each client has its own queue; direct calls
//! go to that queue's owner on the ring (as the gateway places them).
//!
//! - `enqueue`: one message per call;
//! - `dequeue_ack`: dequeue one and ack it, from queues filled beforehand
//!   (the run is capped at half of what was filled, the warm-up takes from
//!   the rest; an empty dequeue is an error of kind `empty`);
//! - `cycle`: enqueue, dequeue, ack: a message's whole life, three calls;
//! - `batch10`: the cycle with ten messages a call (enqueue 10, dequeue up
//!   to 10, ack them in one call);
//! - `sequential`: 100 calls one after another, enqueue, dequeue and ack
//!   taking turns.

use std::sync::Arc;

use chaos::system::{Kind, System};
use client::{AckRequest, Client, DequeueRequest, EnqueueRequest, NewMessage};
use serde_json::json;
use tokio::sync::Mutex;

use super::{addrs, client_for, failure, gateway_addr, sequential_plan, Case, Via};
use crate::load::{self, Failure, Measured, Outcome, Plan};

/// Messages filled per client before `dequeue_ack`.
const FILL_PER_CLIENT: u64 = 3_000;
/// Largest batch one enqueue takes (queue-service `MAX_BATCH`).
const FILL_BATCH: usize = 100;

pub async fn run(sys: &mut System, case: &Case, plan: Plan) -> anyhow::Result<Measured> {
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let queues: Vec<String> = (0..case.clients.max(1))
        .map(|w| format!("bench-{run_id}-{w}"))
        .collect();
    let clients = Arc::new(clients_for(sys, case.via, &queues)?);
    let queues = Arc::new(queues);
    let plan = super::shaped(plan, case.clients);
    Ok(match case.scenario {
        "enqueue" => {
            load::run(plan, move |w, seq| {
                let (c, q) = (clients[w % clients.len()].clone(), queues[w].clone());
                async move {
                    c.enqueue_one(&q, json!({"seq": seq}))
                        .await
                        .map_err(|e| failure(&e))?;
                    Ok(None)
                }
            })
            .await
        }
        "dequeue_ack" => {
            for (c, q) in clients.iter().zip(queues.iter()) {
                fill(c, q, FILL_PER_CLIENT).await?;
            }
            // Half of what was filled for the measured calls; the warm-up
            // takes from the other half.
            let plan = Plan {
                max_ops: plan.max_ops.min(FILL_PER_CLIENT / 2 * case.clients as u64),
                ..plan
            };
            load::run(plan, move |w, _| {
                let (c, q) = (clients[w % clients.len()].clone(), queues[w].clone());
                async move { take(&c, &q, 1).await }
            })
            .await
        }
        "cycle" => {
            load::run(plan, move |w, seq| {
                let (c, q) = (clients[w % clients.len()].clone(), queues[w].clone());
                async move { cycle(&c, &q, seq).await }
            })
            .await
        }
        "batch10" => {
            load::run(plan, move |w, seq| {
                let (c, q) = (clients[w % clients.len()].clone(), queues[w].clone());
                async move {
                    c.enqueue(&batch(&q, seq, 10))
                        .await
                        .map_err(|e| failure(&e))?;
                    take(&c, &q, 10).await
                }
            })
            .await
        }
        "sequential" => {
            // Enqueue, dequeue, ack in turn, one call per step.
            let receipt: Arc<Mutex<Option<String>>> = Arc::default();
            load::run(sequential_plan(plan), move |_, seq| {
                let (c, q, receipt) = (clients[0].clone(), queues[0].clone(), receipt.clone());
                async move {
                    let mut receipt = receipt.lock().await;
                    match seq % 3 {
                        0 => {
                            c.enqueue_one(&q, json!({"seq": seq}))
                                .await
                                .map_err(|e| failure(&e))?;
                        }
                        1 => {
                            let got = c.dequeue(&dequeue(&q, 1)).await.map_err(|e| failure(&e))?;
                            let m = got
                                .into_iter()
                                .next()
                                .ok_or_else(|| Failure::new("empty"))?;
                            *receipt = Some(m.receipt);
                        }
                        _ => {
                            let r = receipt.take().ok_or_else(|| Failure::new("no_receipt"))?;
                            c.ack(&q, &r).await.map_err(|e| failure(&e))?;
                        }
                    }
                    Ok(None)
                }
            })
            .await
        }
        other => anyhow::bail!("no queue scenario {other}"),
    })
}

/// One client per queue: the gateway, or the queue's owner on the ring.
fn clients_for(sys: &System, via: Via, queues: &[String]) -> anyhow::Result<Vec<Client>> {
    let ring = common::Ring::new(addrs(sys, Kind::Queue));
    queues
        .iter()
        .map(|q| match via {
            Via::Gateway => client_for(&gateway_addr(sys), None),
            Via::Direct => client_for(ring.owner(q).expect("queue nodes exist"), None),
        })
        .collect()
}

fn batch(queue: &str, seq: u64, n: usize) -> EnqueueRequest {
    EnqueueRequest {
        queue: queue.into(),
        messages: Some(
            (0..n)
                .map(|i| NewMessage {
                    payload: json!({"seq": seq, "i": i}).into(),
                    ..Default::default()
                })
                .collect(),
        ),
        ..Default::default()
    }
}

fn dequeue(queue: &str, max: u32) -> DequeueRequest {
    DequeueRequest {
        queue: queue.into(),
        max: Some(max),
        visibility_ms: Some(30_000),
        wait_ms: None,
    }
}

/// Dequeue up to `max` and ack what came in one call.
pub(crate) async fn take(c: &Client, queue: &str, max: u32) -> Outcome {
    let got = c
        .dequeue(&dequeue(queue, max))
        .await
        .map_err(|e| failure(&e))?;
    if got.is_empty() {
        return Err(Failure::new("empty"));
    }
    c.ack_request(&AckRequest {
        queue: queue.into(),
        receipt: None,
        receipts: Some(got.into_iter().map(|m| m.receipt).collect()),
    })
    .await
    .map_err(|e| failure(&e))?;
    Ok(None)
}

/// A message's whole life: enqueue one, dequeue one and ack it (the one
/// dequeued may be another caller's on a shared queue; the count stays
/// even).
pub(crate) async fn cycle(c: &Client, queue: &str, seq: u64) -> Outcome {
    c.enqueue_one(queue, json!({"seq": seq}))
        .await
        .map_err(|e| failure(&e))?;
    take(c, queue, 1).await
}

/// Put `n` messages into `queue`, a full batch a call.
async fn fill(c: &Client, queue: &str, n: u64) -> anyhow::Result<()> {
    let mut left = n as usize;
    let mut seq = 0;
    while left > 0 {
        let k = left.min(FILL_BATCH);
        c.enqueue(&batch(queue, seq, k)).await?;
        left -= k;
        seq += 1;
    }
    Ok(())
}
