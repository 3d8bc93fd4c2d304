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

/// One benchmark case: a scenario at one concurrency, one way in, on our
/// system or on a baseline (`etcd`, `redis`, `nginx`: [`crate::baseline`]).
#[derive(Debug, Clone, Serialize)]
pub struct Case {
    pub service: &'static str,
    pub scenario: &'static str,
    pub via: Via,
    pub clients: usize,
    pub system: &'static str,
}

impl Case {
    pub fn is_baseline(&self) -> bool {
        self.system != OURS
    }
}

/// `Case::system` of our own services.
pub const OURS: &str = "ours";

/// Every case of `service` (`lock`, `queue`, `cache`, `gateway`), in the
/// order they run; a baseline's case right after the one of ours it is
/// compared with.
pub fn cases(service: &'static str) -> Vec<Case> {
    use Via::{Direct, Gateway};
    // (system, scenario, via, client counts)
    let table: &[(&'static str, &'static str, Via, &[usize])] = match service {
        "lock" => &[
            (OURS, "pairs", Direct, &[1, 16, 64]),
            ("etcd", "pairs", Direct, &[1, 16, 64]),
            (OURS, "pairs", Gateway, &[1, 16, 64]),
            (OURS, "handoff", Direct, &[16]),
            ("etcd", "handoff", Direct, &[16]),
            (OURS, "shared_mix", Direct, &[16]),
            (OURS, "failover", Direct, &[1]),
            (OURS, "sequential", Gateway, &[1]),
        ],
        "queue" => &[
            (OURS, "enqueue", Direct, &[16]),
            ("redis", "enqueue", Direct, &[16]),
            (OURS, "enqueue", Gateway, &[16]),
            (OURS, "dequeue_ack", Direct, &[16]),
            (OURS, "dequeue_ack", Gateway, &[16]),
            (OURS, "cycle", Direct, &[1, 16]),
            ("redis", "cycle", Direct, &[1, 16]),
            (OURS, "cycle", Gateway, &[1, 16]),
            (OURS, "batch10", Direct, &[16]),
            (OURS, "batch10", Gateway, &[16]),
            (OURS, "sequential", Gateway, &[1]),
        ],
        "cache" => &[
            (OURS, "hit", Direct, &[16]),
            ("redis", "hit", Direct, &[16]),
            (OURS, "hit", Gateway, &[16]),
            (OURS, "miss", Direct, &[16]),
            (OURS, "miss", Gateway, &[16]),
            (OURS, "invalidate", Direct, &[16]),
            (OURS, "invalidate", Gateway, &[16]),
            (OURS, "sequential", Gateway, &[1]),
        ],
        "gateway" => &[
            (OURS, "hop", Direct, &[16, 64]),
            (OURS, "hop", Gateway, &[16, 64]),
            ("nginx", "hop", Gateway, &[16, 64]),
        ],
        _ => &[],
    };
    table
        .iter()
        .flat_map(|&(system, scenario, via, clients)| {
            clients.iter().map(move |&clients| Case {
                service,
                scenario,
                via,
                clients,
                system,
            })
        })
        .collect()
}

/// The services `cases` knows.
pub const SERVICES: [&str; 4] = ["lock", "queue", "cache", "gateway"];

/// Run one case of ours once against `sys`.
pub async fn run(sys: &mut System, case: &Case, plan: Plan) -> anyhow::Result<Measured> {
    anyhow::ensure!(!case.is_baseline(), "{} is a baseline case", case.system);
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
        step: plan.step,
    }
}
