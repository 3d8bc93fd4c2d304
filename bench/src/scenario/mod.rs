//! The scenarios, one file per service, and what they share: where a call
//! goes (straight to a node or through the gateway), how a client error is
//! counted, and the one entry point [`run`] that the command line calls.
//!
//! Every scenario uses the typed client (`client::Client`), the same one
//! applications use, so what is measured is what a user gets.

pub mod cache;
pub mod gateway;
pub mod lock;
pub mod queue;

use std::time::Duration;

use chaos::system::{Kind, System};
use client::Client;
use serde::Serialize;

use crate::load::{Failure, Measured, Plan};

/// Where the calls go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// Straight to the node that serves the call (the lock leader, the
    /// queue's owner, a cache node).
    Direct,
    /// Through the gateway, as clients do.
    Gateway,
}

/// One benchmark case: a scenario at one concurrency, one way in.
#[derive(Debug, Clone, Serialize)]
pub struct Case {
    pub service: &'static str,
    pub scenario: &'static str,
    pub via: Via,
    pub clients: usize,
}

/// Every case of `service` (`lock`, `queue`, `cache`, `gateway`), in the
/// order they run.
pub fn cases(service: &str) -> Vec<Case> {
    let mut v = Vec::new();
    let mut add = |service, scenario, via, clients: &[usize]| {
        for &c in clients {
            v.push(Case {
                service,
                scenario,
                via,
                clients: c,
            });
        }
    };
    match service {
        "lock" => {
            for via in [Via::Direct, Via::Gateway] {
                add("lock", "pairs", via, &[1, 16, 64]);
            }
            add("lock", "handoff", Via::Direct, &[16]);
            add("lock", "shared_mix", Via::Direct, &[16]);
            add("lock", "failover", Via::Direct, &[1]);
            add("lock", "sequential", Via::Gateway, &[1]);
        }
        "queue" => {
            for via in [Via::Direct, Via::Gateway] {
                add("queue", "enqueue", via, &[16]);
                add("queue", "dequeue_ack", via, &[16]);
                add("queue", "cycle", via, &[1, 16]);
                add("queue", "batch10", via, &[16]);
            }
            add("queue", "sequential", Via::Gateway, &[1]);
        }
        "cache" => {
            for via in [Via::Direct, Via::Gateway] {
                add("cache", "hit", via, &[16]);
                add("cache", "miss", via, &[16]);
                add("cache", "invalidate", via, &[16]);
            }
            add("cache", "sequential", Via::Gateway, &[1]);
        }
        "gateway" => {
            for via in [Via::Direct, Via::Gateway] {
                add("gateway", "hop", via, &[16, 64]);
            }
        }
        _ => {}
    }
    v
}

/// The services `cases` knows.
pub const SERVICES: [&str; 4] = ["lock", "queue", "cache", "gateway"];

/// Run one case once against `sys`.
pub async fn run(sys: &mut System, case: &Case, plan: Plan) -> anyhow::Result<Measured> {
    match case.service {
        "lock" => lock::run(sys, case, plan).await,
        "queue" => queue::run(sys, case, plan).await,
        "cache" => cache::run(sys, case, plan).await,
        "gateway" => gateway::run(sys, case, plan).await,
        other => anyhow::bail!("no service {other}"),
    }
}

/// How a failed call is counted: the API's error code, else the status,
/// else `transport`.
pub fn failure(e: &client::Error) -> Failure {
    match (e.code(), e.status()) {
        (Some(code), _) => Failure::new(code),
        (None, Some(status)) => Failure::new(format!("http_{status}")),
        (None, None) => Failure::new("transport"),
    }
}

/// A client for `addr` (`host:port`), with keep-alive connections, a
/// timeout that ends a stuck call as an error instead of a hang, and
/// `cache_node` set when calls must reach one cache node.
pub fn client_for(addr: &str, cache_node: Option<&str>) -> anyhow::Result<Client> {
    let mut b = Client::builder(format!("http://{addr}")).timeout(Duration::from_secs(30));
    if let Some(node) = cache_node {
        b = b.cache_node(node);
    }
    Ok(b.build()?)
}

/// The gateway's address.
pub fn gateway_addr(sys: &System) -> String {
    sys.nodes["gateway"].addr.clone()
}

/// The address of every node of `kind`, by name order.
pub fn addrs(sys: &System, kind: Kind) -> Vec<String> {
    sys.names(kind)
        .iter()
        .map(|n| sys.nodes[n].addr.clone())
        .collect()
}

/// `plan` with `clients` closed-loop clients, unless it is an open loop
/// (`--rate`), which keeps its schedule.
pub fn shaped(plan: Plan, clients: usize) -> Plan {
    match plan.mode {
        crate::load::Mode::Open { .. } => plan,
        crate::load::Mode::Closed { .. } => Plan {
            mode: crate::load::Mode::Closed { clients },
            ..plan
        },
    }
}

/// `Plan` for `sequential`: one client, 100 calls, nothing else.
pub fn sequential_plan(plan: Plan) -> Plan {
    Plan {
        mode: crate::load::Mode::Closed { clients: 1 },
        warmup: Duration::from_millis(200),
        duration: plan.duration.max(Duration::from_secs(5)),
        max_ops: 100,
    }
}
