//! Cache service scenarios. Calls go to one cache node, straight or through
//! the gateway with the `x-cache-node` header naming that node.
//!
//! - `hit`: a read of a key the node holds (E or S): answered from the
//!   node's own memory, the cheapest call in the system;
//! - `miss`: a read of a key nobody has (a round trip to its home node);
//! - `invalidate`: a write to a key two other nodes share: the write must
//!   invalidate both sharers before it is answered; only the write is
//!   timed (the two reads that make the sharers are set-up);
//! - `sequential`: 100 calls one after another, set and get taking turns.

use std::sync::Arc;
use std::time::Instant;

use chaos::system::{Kind, System};
use client::{CacheSetRequest, Client};
use serde_json::json;

use super::{addrs, client_for, failure, gateway_addr, sequential_plan, Case, Via};
use crate::load::{self, Failure, Measured, Plan};

/// Keys the `hit` clients read (each client its own, set up first).
const HIT_KEYS: usize = 64;

pub async fn run(sys: &mut System, case: &Case, plan: Plan) -> anyhow::Result<Measured> {
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let plan = super::shaped(plan, case.clients);
    let nodes = addrs(sys, Kind::Cache);
    anyhow::ensure!(nodes.len() >= 3, "the cache scenarios need three nodes");
    let at = |i: usize| node_client(sys, case.via, &nodes[i]);
    Ok(match case.scenario {
        "hit" => hit(at(0)?, plan, &run_id).await?,
        "miss" => {
            let c = Arc::new(at(0)?);
            load::run(plan, move |_, seq| {
                let (c, key) = (c.clone(), format!("miss-{run_id}-{seq}"));
                async move {
                    match c.cache_get(&key).await.map_err(|e| failure(&e))? {
                        None => Ok(None),
                        Some(_) => Err(Failure::new("unexpected_hit")),
                    }
                }
            })
            .await
        }
        "invalidate" => {
            let (a, b, c) = (Arc::new(at(0)?), Arc::new(at(1)?), Arc::new(at(2)?));
            load::run(plan, move |w, seq| {
                let (a, b, c, key) = (a.clone(), b.clone(), c.clone(), format!("inv-{run_id}-{w}"));
                async move {
                    if seq == 0 {
                        a.cache_set(&set(&key, seq))
                            .await
                            .map_err(|e| failure(&e))?;
                    }
                    // Two sharers...
                    for sharer in [&b, &c] {
                        if sharer
                            .cache_get(&key)
                            .await
                            .map_err(|e| failure(&e))?
                            .is_none()
                        {
                            return Err(Failure::new("sharer_missed"));
                        }
                    }
                    // ...that the timed write must invalidate.
                    let t = Instant::now();
                    a.cache_set(&set(&key, seq + 1))
                        .await
                        .map_err(|e| failure(&e))?;
                    Ok(Some(t.elapsed()))
                }
            })
            .await
        }
        "sequential" => {
            let c = Arc::new(at(0)?);
            load::run(sequential_plan(plan), move |_, seq| {
                let (c, key) = (c.clone(), format!("seq-{run_id}"));
                async move {
                    if seq % 2 == 0 {
                        c.cache_set(&set(&key, seq))
                            .await
                            .map_err(|e| failure(&e))?;
                    } else if c.cache_get(&key).await.map_err(|e| failure(&e))?.is_none() {
                        return Err(Failure::new("lost_write"));
                    }
                    Ok(None)
                }
            })
            .await
        }
        other => anyhow::bail!("no cache scenario {other}"),
    })
}

/// `hit` on `c`: also the gateway hop's call (the same read, direct and
/// through the gateway).
pub async fn hit(c: Client, plan: Plan, run_id: &str) -> anyhow::Result<Measured> {
    let keys: Arc<Vec<String>> =
        Arc::new((0..HIT_KEYS).map(|i| format!("hit-{run_id}-{i}")).collect());
    for (i, k) in keys.iter().enumerate() {
        c.cache_set(&set(k, i as u64)).await?;
        // A first read makes sure the node holds the line it answers from.
        anyhow::ensure!(
            c.cache_get(k).await?.is_some(),
            "{k} not readable after its set"
        );
    }
    let c = Arc::new(c);
    Ok(load::run(plan, move |w, _| {
        let (c, keys) = (c.clone(), keys.clone());
        async move {
            let got = c
                .cache_get(&keys[w % keys.len()])
                .await
                .map_err(|e| failure(&e))?;
            match got {
                Some(v) if v.hit => Ok(None),
                Some(_) => Err(Failure::new("not_a_local_hit")),
                None => Err(Failure::new("missing")),
            }
        }
    })
    .await)
}

/// A client for cache node `addr`: itself, or the gateway pinned to it.
fn node_client(sys: &System, via: Via, addr: &str) -> anyhow::Result<Client> {
    match via {
        Via::Direct => client_for(addr, None),
        Via::Gateway => client_for(&gateway_addr(sys), Some(addr)),
    }
}

pub(crate) fn set(key: &str, v: u64) -> CacheSetRequest {
    CacheSetRequest {
        key: key.into(),
        value: json!(v),
        ttl_ms: None,
    }
}
