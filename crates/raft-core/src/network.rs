//! Outbound Raft RPCs over HTTP.
//!
//! One pooled reqwest client per node (keep-alive, `TCP_NODELAY`) carries
//! append-entries, vote and snapshot chunks as JSON to the peer's
//! `/internal/raft/*` routes. Every call is bounded by openraft's per-RPC
//! deadline. A connection or timeout failure is reported as `Unreachable`,
//! which makes openraft back off that peer instead of treating the failure as
//! a protocol answer.
//!
//! [`Faults`] is the test switch that drops traffic to chosen peers, which is
//! how the partition tests cut a node off without touching the OS.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use common::server::ClusterToken;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{NodeId, TypeConfig};

/// Connect timeout for peer connections: a dead peer on the same network
/// refuses or times out fast; waiting longer only delays elections.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(200);

/// Peers to which this node drops all outbound traffic (fault injection).
#[derive(Clone, Debug, Default)]
pub struct Faults {
    blocked: Arc<RwLock<HashSet<NodeId>>>,
}

impl Faults {
    /// Drop every RPC to these peers until [`Faults::heal`].
    pub fn block(&self, peers: &[NodeId]) {
        self.blocked
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .extend(peers.iter().copied());
    }

    pub fn heal(&self) {
        self.blocked
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    pub fn is_blocked(&self, peer: NodeId) -> bool {
        self.blocked
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&peer)
    }
}

/// Build the HTTP client used for every peer call of a node.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(16)
        // Peers never redirect; skipping the policy saves work per RPC.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// The factory openraft asks for a connection to each peer.
#[derive(Clone)]
pub struct Network {
    pub(crate) client: reqwest::Client,
    pub(crate) token: ClusterToken,
    pub(crate) faults: Faults,
}

pub struct Connection {
    client: reqwest::Client,
    token: ClusterToken,
    faults: Faults,
    target: NodeId,
    /// The peer's routes, parsed once: every heartbeat and append goes
    /// through here, and parsing a URL per call showed up in the leader's
    /// profile. `None` if the member's address is not a valid host:port.
    routes: Option<Routes>,
}

struct Routes {
    append: reqwest::Url,
    vote: reqwest::Url,
    snapshot: reqwest::Url,
}

impl Routes {
    fn new(addr: &str) -> Option<Self> {
        let url = |path: &str| reqwest::Url::parse(&format!("http://{addr}/internal/raft/{path}"));
        Some(Self {
            append: url("append").ok()?,
            vote: url("vote").ok()?,
            snapshot: url("snapshot").ok()?,
        })
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        Connection {
            client: self.client.clone(),
            token: self.token.clone(),
            faults: self.faults.clone(),
            target,
            routes: Routes::new(&node.addr),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Dropped(String);

impl Connection {
    async fn call<Req, Resp, E>(
        &self,
        route: fn(&Routes) -> &reqwest::Url,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        if self.faults.is_blocked(self.target) {
            return Err(RPCError::Unreachable(Unreachable::new(&Dropped(format!(
                "traffic to node {} is blocked",
                self.target
            )))));
        }
        let Some(url) = self.routes.as_ref().map(|r| route(r).clone()) else {
            return Err(RPCError::Unreachable(Unreachable::new(&Dropped(format!(
                "node {} has no valid address",
                self.target
            )))));
        };
        let resp = self
            .token
            .apply(self.client.post(url).json(req).timeout(timeout))
            .send()
            .await
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            return Err(RPCError::Network(NetworkError::new(&Dropped(format!(
                "peer {} answered {status}: {body}",
                self.target
            )))));
        }
        let result: Result<Resp, RaftError<NodeId, E>> = resp
            .json()
            .await
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

/// First pause after an unreachable peer; doubles up to [`BACKOFF_MAX`].
pub const BACKOFF_FIRST: Duration = Duration::from_millis(20);
/// Longest pause between attempts to an unreachable peer.
pub const BACKOFF_MAX: Duration = Duration::from_millis(500);

/// The pauses between attempts to a peer that did not answer: 20, 40, 80 …
/// ms, capped at 500 ms.
fn backoff_delays() -> impl Iterator<Item = Duration> + Send + 'static {
    std::iter::successors(Some(BACKOFF_FIRST), |d| Some((*d * 2).min(BACKOFF_MAX)))
}

impl RaftNetwork<TypeConfig> for Connection {
    /// openraft's default is a flat 500 ms. A peer that is merely slow to
    /// come up (its listener bound but not yet serving, a restart) would
    /// then hear nothing for 500 ms, past its election timeout, and depose
    /// a healthy leader when it campaigns. Starting short and doubling
    /// reaches it within a heartbeat or two and still leaves a dead peer
    /// probed only twice a second.
    fn backoff(&self) -> Backoff {
        Backoff::new(backoff_delays())
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(|r| &r.append, &rpc, option.hard_ttl()).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(|r| &r.snapshot, &rpc, option.hard_ttl()).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(|r| &r.vote, &rpc, option.hard_ttl()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_20_ms_up_to_500_ms() {
        let got: Vec<u64> = backoff_delays()
            .take(8)
            .map(|d| d.as_millis() as u64)
            .collect();
        assert_eq!(got, vec![20, 40, 80, 160, 320, 500, 500, 500]);
    }
}
