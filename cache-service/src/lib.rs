//! cache-service: per-node LRU caches kept coherent across nodes with a
//! directory-based MESI protocol.
//!
//! Modules, from pure to wired:
//! - [`protocol`]: line states, versions and epochs, the messages;
//! - [`mod@line`]: one node's cache (LRU by entries and bytes, TTL, late-message
//!   rules) — pure;
//! - [`directory`]: a home's per-key directory and its transactions — pure;
//! - [`membership`]: heartbeat failure detection — pure;
//! - [`view`]: membership views confirmed by a majority (one home per key
//!   at a time) — pure;
//! - [`store`]: the backing memory (Redis or the home's own map);
//! - [`peer`]: calls to other nodes over `/internal/`;
//! - [`node`]: the engine joining all of the above, one file per role it
//!   plays (requester, home, holder, heartbeat, report);
//! - [`metrics`]: the node's counters and their Prometheus families;
//! - [`http`]: the routes; [`config`]: flags. (The typed client of the
//!   cache API is the `client` crate's `Client`.)

pub mod config;
pub mod directory;
pub mod error;
pub mod http;
pub mod line;
pub mod membership;
pub mod metrics;
pub mod node;
pub mod peer;
pub mod protocol;
pub mod store;
pub mod view;

use std::time::Duration;

use common::discovery::Members;
use common::metrics::{Metrics, MetricsRegistry};

pub use config::Config;
pub use error::Error;
pub use http::{router, AppState};
pub use node::{Node, NodeConfig};

/// How long a downgrade waits for the grant it refers to; the grant is a
/// reply already on its way, so this only bounds lost replies.
const FORWARD_WAIT: Duration = Duration::from_secs(2);

/// Build the node and its router from a config (the address it advertises
/// must be known: pass the bound address when listening on port 0).
pub async fn build(config: &Config, me: String) -> anyhow::Result<(AppState, Members)> {
    let token = config.cluster.token();
    let memory_bounds = store::Bounds {
        max_entries: config.max_memory_entries,
        max_bytes: config.max_memory_bytes,
    };
    let memory = store::Memory::connect(
        config.redis_url.as_deref().filter(|u| !u.is_empty()),
        memory_bounds,
    )
    .await?;
    let heartbeat = Duration::from_millis(config.heartbeat_ms.max(10));
    let failure_timeout =
        Duration::from_millis(config.failure_timeout_ms.max(config.heartbeat_ms * 2));
    let peers = peer::Peers::new(
        token.clone(),
        failure_timeout * 3 + FORWARD_WAIT * 2 + Duration::from_secs(2),
        FORWARD_WAIT + Duration::from_secs(1),
        heartbeat.max(Duration::from_millis(100)) * 2,
    );
    let members = Members::spawn(
        common::discovery::parse_list(&config.members.peers),
        common::discovery::DEFAULT_REFRESH,
    )
    .await;
    let mut list: Vec<String> = members.current().to_vec();
    if !list.contains(&me) {
        list.push(me.clone());
    }
    let node = Node::new(
        NodeConfig {
            me,
            policy: config.write_policy,
            max_entries: config.max_entries,
            max_bytes: config.max_bytes,
            heartbeat,
            failure_timeout,
            forward_wait: FORWARD_WAIT,
            memory_bounds,
        },
        memory,
        peers,
        &list,
    );
    let mut registry = MetricsRegistry::default();
    node.stats().register(&mut registry);
    let state = AppState {
        node,
        metrics: Metrics::new(registry),
        token,
        fault_injection: config.fault_injection,
    };
    Ok((state, members))
}

/// Serve on `listener` until `shutdown` resolves. Heartbeats run inside this
/// future, so aborting it stops the node entirely (tests rely on that).
pub async fn run(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let bound_addr = listener.local_addr()?;
    let bound = bound_addr.to_string();
    let me = match config.members.advertise() {
        Some(a) => a.to_string(),
        None => default_advertise(&config, bound_addr).await,
    };
    let (state, members) = build(&config, me).await?;
    let node = state.node.clone();
    tracing::info!(node = node.me(), %bound, memory = node.memory().backend(), policy = ?node.policy(), "cache node up");
    let app = router(state);
    let server = common::server::serve(listener, app, shutdown);
    let heartbeats = async move {
        let mut watch = members.watch();
        let mut tick = tokio::time::interval(node.heartbeat_interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A static member list never changes (its sender is gone at once).
        let mut watching = true;
        loop {
            tokio::select! {
                _ = tick.tick() => node.heartbeat_round().await,
                changed = watch.changed(), if watching => {
                    if changed.is_err() {
                        watching = false;
                        continue;
                    }
                    let mut list: Vec<String> = watch.borrow_and_update().to_vec();
                    if !list.iter().any(|m| m == node.me()) {
                        list.push(node.me().to_string());
                    }
                    node.set_members(&list);
                }
            }
        }
    };
    tokio::select! {
        r = server => r?,
        _ = heartbeats => {}
    }
    Ok(())
}

/// The name this node goes by when `--advertise` is not given: the bound
/// address when listening on a specific address (port 0 resolved); when
/// listening on all interfaces (`0.0.0.0`, as in containers), the local
/// address that routes to the first peer, so that it matches what the peers'
/// DNS lookups return.
async fn default_advertise(config: &Config, bound: std::net::SocketAddr) -> String {
    if !bound.ip().is_unspecified() {
        return bound.to_string();
    }
    let first = common::discovery::parse_list(&config.members.peers)
        .into_iter()
        .next();
    if let Some(spec) = first {
        if let Ok(mut addrs) = tokio::net::lookup_host(spec.as_str()).await {
            if let Some(peer) = addrs.find(|a| a.is_ipv4()) {
                if let Ok(sock) = std::net::UdpSocket::bind("0.0.0.0:0") {
                    if sock.connect(peer).is_ok() {
                        if let Ok(local) = sock.local_addr() {
                            return format!("{}:{}", local.ip(), bound.port());
                        }
                    }
                }
            }
        }
    }
    bound.to_string()
}
