//! lock-service: shared and exclusive locks with leases, FIFO waits,
//! fencing tokens and deadlock detection, replicated by Raft.
//!
//! - [`table`]: the pure lock table (the replicated state and every rule,
//!   and the pages of `GET /api/locks`).
//! - [`deadlock`]: cycle detection on the wait-for graph.
//! - [`machine`]: the table as a raft-core state machine, and the registry
//!   through which applies wake blocked acquires.
//! - [`ticker`]: the leader's proposals of time at lease and wait deadlines.
//! - [`http`]: the client API, health, cluster view, stats and metrics.
//! - [`metrics`]: the lock and Raft metric families on `/metrics`.
//! - [`events`]: this node's ring of recent deadlocks and leader changes.
//! - [`error`]: the crate's error and its one mapping to HTTP.
//! - [`config`]: flags and environment (the shared ones from
//!   `common::config`).
//!
//! Any node serves every route: writes go through Raft (a follower forwards
//! them to the leader); reads are linearizable unless `consistency=stale`.

pub mod config;
pub mod deadlock;
pub mod error;
pub mod events;
pub mod http;
pub mod machine;
pub mod metrics;
pub mod table;
pub mod ticker;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use raft_core::{NodeConfig, RaftNode, Timing};
use tokio::net::TcpListener;

pub use config::Config;
pub use error::Error;
pub use http::AppState;

/// A started node: its Raft handle and its full router.
pub struct Service {
    pub node: RaftNode<LockMachine>,
    pub router: Router,
    ticker: tokio::task::JoinHandle<()>,
    leader_watch: tokio::task::JoinHandle<()>,
}

pub use machine::LockMachine;

impl Service {
    /// Open the data dir, start Raft and the leader ticker, build the router.
    pub async fn start(config: &Config) -> Result<Self, Error> {
        let peers = config.peer_map().map_err(Error::InvalidInput)?;
        if !peers.contains_key(&config.id) {
            return Err(Error::InvalidInput(format!(
                "node id {} is not among --peers",
                config.id
            )));
        }
        let events = events::Events::new(peers[&config.id].clone());
        let mut nc = NodeConfig::new(config.id, peers, config.data_dir.clone());
        nc.timing = Timing {
            heartbeat_ms: config.heartbeat_ms,
            election_min_ms: config.election_min_ms,
            election_max_ms: config.election_max_ms,
        };
        nc.snapshot_every = config.snapshot_every;
        nc.proposals.queued = config.max_queued_writes as usize;
        nc.cluster_token = config.cluster.token().0;
        let waiters = Arc::new(machine::Waiters::default());
        let (changed_tx, changed_rx) = tokio::sync::watch::channel(0u64);
        let machine = LockMachine::new(waiters.clone(), changed_tx, events.clone());
        let node = RaftNode::start(nc, machine).await?;
        let ticker = tokio::spawn(ticker::run(node.clone(), changed_rx));
        let leader_watch = events::spawn_leader_watch(&node, events.clone());
        let limits = table::Limits {
            max_locks: config.max_locks,
            max_remembered: config.max_remembered,
        };
        let state = AppState::new(node.clone(), waiters, limits).with_events(events);
        let metrics = state.metrics.clone();
        let router = common::server::tail(
            http::routes(state).merge(raft_core::http::router(node.clone())),
            metrics,
            http::BODY_LIMIT,
        );
        Ok(Self {
            node,
            router,
            ticker,
            leader_watch,
        })
    }

    /// Stop the ticker and Raft (closing the data files).
    pub async fn stop(&self) {
        self.ticker.abort();
        self.leader_watch.abort();
        self.node.shutdown().await;
    }
}

/// Serve a node on `listener` until `shutdown` resolves.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let service = Service::start(&config).await?;
    tracing::info!(id = config.id, addr = %config.server.listen, "lock node serving");
    let serve = common::server::serve(listener, service.router.clone(), shutdown);
    // Fail-stop: a node whose log failed (or whose Raft core stopped) must
    // not go on answering as if it were a member; the process exits
    // non-zero, and a supervisor restarts it from what is on its disk.
    tokio::select! {
        served = serve => served.map_err(|e| Error::Unavailable(format!("server: {e}")))?,
        why = service.node.fatal() => {
            tracing::error!(id = config.id, error = %why, "stopping: this node can no longer serve safely");
            // Exit now: unwinding would wait for blocking tasks (a snapshot
            // write) that a stuck disk may never finish. The data on disk is
            // all a restart needs.
            eprintln!("Error: fatal: {why}");
            std::process::exit(1);
        }
    }
    service.stop().await;
    Ok(())
}
