//! Outbound Raft RPCs over HTTP.
//!
//! Each openraft connection to a peer owns one HTTP/1.1 keep-alive
//! connection (`TCP_NODELAY`) and carries append-entries and votes as JSON
//! and snapshot chunks as a JSON header plus raw bytes (`encode_chunk`) to
//! the peer's `/internal/raft/*` routes. openraft sends one
//! RPC at a time per connection, so no pool is needed: this is hyper's
//! connection-level client, without reqwest's pool, redirect and URL layers,
//! which were a tenth of the leader's CPU in the hand-off profile. Every call
//! is bounded by openraft's per-RPC deadline. A connection or timeout failure
//! drops the connection (its state is unknown) and is reported as
//! `Unreachable`, which makes openraft back off that peer instead of treating
//! the failure as a protocol answer.
//!
//! [`Faults`] is the test switch that drops traffic to chosen peers, which is
//! how the partition tests cut a node off without touching the OS, or makes
//! their answers late, which is how they play a slow peer.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use common::server::{ClusterToken, CLUSTER_TOKEN_HEADER};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
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
use tokio::net::TcpStream;

use crate::rpc::{encode_chunk, PreVoteRequest, PreVoteResponse};
use crate::{NodeId, TypeConfig};

/// Connect timeout for peer connections: a dead peer on the same network
/// refuses or times out fast; waiting longer only delays elections.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(200);

/// Peers to which this node drops all outbound traffic, or whose answers
/// it reads late (fault injection).
#[derive(Clone, Debug, Default)]
pub struct Faults {
    blocked: Arc<RwLock<HashSet<NodeId>>>,
    late: Arc<RwLock<HashMap<NodeId, Duration>>>,
}

impl Faults {
    /// Drop every RPC to these peers until [`Faults::heal`].
    pub fn block(&self, peers: &[NodeId]) {
        self.blocked
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .extend(peers.iter().copied());
    }

    /// Read every answer from these peers `by` later than it arrives, as if
    /// they were slow (the peer itself does its work at its usual pace),
    /// until [`Faults::heal`].
    pub fn delay_answers(&self, peers: &[NodeId], by: Duration) {
        self.late
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .extend(peers.iter().map(|p| (*p, by)));
    }

    pub fn heal(&self) {
        self.blocked
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.late.write().unwrap_or_else(|e| e.into_inner()).clear();
    }

    fn answer_delay(&self, peer: NodeId) -> Option<Duration> {
        self.late
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&peer)
            .copied()
    }

    pub fn is_blocked(&self, peer: NodeId) -> bool {
        self.blocked
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&peer)
    }
}

/// Build the HTTP client a node uses for forwarded writes and read-index
/// calls to the leader (Raft's own RPCs use [`Connection`]).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(16)
        // Peers never redirect; skipping the policy saves work per call.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// Largest response body accepted from a peer (answers are small; this only
/// bounds a misbehaving one).
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// The factory openraft asks for a connection to each peer.
#[derive(Clone)]
pub struct Network {
    pub(crate) token: ClusterToken,
    pub(crate) faults: Faults,
}

pub struct Connection {
    token: Option<HeaderValue>,
    faults: Faults,
    target: NodeId,
    /// The peer's `host:port`, also sent as `Host`.
    addr: String,
    host: Option<HeaderValue>,
    /// The open HTTP/1.1 connection, if any; opened on first use and after
    /// any failure.
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        Connection {
            token: self
                .token
                .0
                .as_deref()
                .and_then(|t| HeaderValue::from_str(t).ok()),
            faults: self.faults.clone(),
            target,
            addr: node.addr.clone(),
            host: HeaderValue::from_str(&node.addr).ok(),
            sender: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Dropped(String);

fn unreachable<E: std::error::Error>(e: String) -> RPCError<NodeId, BasicNode, E> {
    RPCError::Unreachable(Unreachable::new(&Dropped(e)))
}

/// Largest append request sent (unless one entry alone is larger). Far
/// below the peer's body limit (16 MiB), because the peer must also parse
/// and sync the request inside the append deadline (100 ms): 16 MiB took
/// longer than that in a debug build, so the request was abandoned and
/// resent forever. A follower catching up takes ~1 MiB per round trip.
const MAX_APPEND_BYTES: usize = 1 << 20;

/// How many of `entries`, from the first, fit in `budget` bytes of JSON
/// (never fewer than one: an entry larger than the budget goes alone, as
/// sending none would make no progress).
fn entries_that_fit(entries: &[openraft::Entry<TypeConfig>], budget: usize) -> usize {
    let mut used = 0;
    for (i, e) in entries.iter().enumerate() {
        used += serde_json::to_vec(e).map_or(usize::MAX / 2, |b| b.len() + 1);
        if used > budget {
            return i.max(1);
        }
    }
    entries.len()
}

const JSON: &str = "application/json";
const OCTET_STREAM: &str = "application/octet-stream";

/// What one exchange with a peer can end in, before it becomes an RPCError.
enum Failure {
    /// No answer: refused, reset, timed out. The peer may be down.
    Unreachable(String),
    /// An answer, but not a usable one.
    Network(String),
}

impl Connection {
    async fn call<Req, Resp, E>(
        &mut self,
        path: &'static str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let body = serde_json::to_vec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.call_body(path, body, JSON, timeout).await
    }

    /// [`Self::call`] with a body already encoded as `content_type`.
    async fn call_body<Resp, E>(
        &mut self,
        path: &'static str,
        body: Vec<u8>,
        content_type: &'static str,
        timeout: Duration,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        if self.faults.is_blocked(self.target) {
            return Err(unreachable(format!(
                "traffic to node {} is blocked",
                self.target
            )));
        }
        let late = self.faults.answer_delay(self.target);
        let exchange = tokio::time::timeout(timeout, async {
            let answer = self.exchange(path, body, content_type).await;
            if let Some(by) = late {
                tokio::time::sleep(by).await;
            }
            answer
        });
        let answer = match exchange.await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(f)) => {
                // Whatever state the connection is in, it is not one to reuse.
                self.sender = None;
                return Err(match f {
                    Failure::Unreachable(why) => unreachable(why),
                    Failure::Network(why) => RPCError::Network(NetworkError::new(&Dropped(why))),
                });
            }
            Err(_) => {
                self.sender = None;
                return Err(unreachable(format!(
                    "node {} did not answer within {timeout:?}",
                    self.target
                )));
            }
        };
        let result: Result<Resp, RaftError<NodeId, E>> = serde_json::from_slice(&answer)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    /// POST `body` to `path` on the peer and return the answer's body.
    async fn exchange(
        &mut self,
        path: &'static str,
        body: Vec<u8>,
        content_type: &'static str,
    ) -> Result<Bytes, Failure> {
        let target = self.target;
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            self.sender = Some(self.connect().await?);
        }
        let Some(sender) = self.sender.as_mut() else {
            return Err(Failure::Unreachable(format!(
                "node {target}: no connection"
            )));
        };
        sender
            .ready()
            .await
            .map_err(|e| Failure::Unreachable(format!("node {target}: {e}")))?;
        let mut req = Request::post(Uri::from_static(path));
        if let Some(h) = &self.host {
            req = req.header(HOST, h.clone());
        }
        if let Some(t) = &self.token {
            req = req.header(CLUSTER_TOKEN_HEADER, t.clone());
        }
        let req = req
            .header(CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| Failure::Network(format!("building the request: {e}")))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| Failure::Unreachable(format!("node {target}: {e}")))?;
        let status = resp.status();
        let bytes = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| Failure::Unreachable(format!("node {target}: reading the answer: {e}")))?
            .to_bytes();
        if !status.is_success() {
            return Err(Failure::Network(format!(
                "peer {target} answered {status}: {}",
                String::from_utf8_lossy(&bytes)
            )));
        }
        Ok(bytes)
    }

    /// Ask the peer whether it would vote for this node now
    /// (see [`crate::election`]).
    pub(crate) async fn pre_vote(
        &mut self,
        req: &PreVoteRequest,
        timeout: Duration,
    ) -> Result<PreVoteResponse, String> {
        self.call::<_, _, openraft::error::Infallible>("/internal/raft/prevote", req, timeout)
            .await
            .map_err(|e| e.to_string())
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, Failure> {
        let target = self.target;
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.addr))
            .await
            .map_err(|_| Failure::Unreachable(format!("connecting to node {target} timed out")))?
            .map_err(|e| Failure::Unreachable(format!("connecting to node {target}: {e}")))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Failure::Unreachable(format!("node {target}: {e}")))?;
        // The connection task ends when the sender is dropped or the peer
        // closes; errors surface through the sender.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
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

    /// openraft sends up to 300 entries at once to a follower that is
    /// catching up, whatever their size; with large entries that is more
    /// than the peer accepts (413) or can take in time, and openraft would
    /// resend the same range forever. Such a request goes out cut to the
    /// entries that fit `MAX_APPEND_BYTES`, and a success is reported as
    /// partial, up to the last one sent, so openraft sends the rest next.
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        const PATH: &str = "/internal/raft/append";
        let body =
            serde_json::to_vec(&rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let fit = if body.len() > MAX_APPEND_BYTES {
            entries_that_fit(&rpc.entries, MAX_APPEND_BYTES)
        } else {
            rpc.entries.len()
        };
        if fit == rpc.entries.len() {
            return self.call_body(PATH, body, JSON, option.hard_ttl()).await;
        }
        rpc.entries.truncate(fit);
        let last = rpc.entries.last().map(|e| e.log_id);
        tracing::debug!(target = self.target, fit, "append cut to MAX_APPEND_BYTES");
        match self.call(PATH, &rpc, option.hard_ttl()).await? {
            AppendEntriesResponse::Success => Ok(AppendEntriesResponse::PartialSuccess(last)),
            other => Ok(other),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let body = encode_chunk(rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.call_body(
            "/internal/raft/snapshot",
            body,
            OCTET_STREAM,
            option.hard_ttl(),
        )
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call("/internal/raft/vote", &rpc, option.hard_ttl())
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_append_is_cut_to_the_entries_that_fit_and_never_to_none() {
        use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
        let entry = |index, kb: usize| Entry::<TypeConfig> {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(crate::Request {
                ts_ms: 0,
                cmds: vec![serde_json::value::to_raw_value(&"x".repeat(kb << 10)).unwrap()],
            }),
        };
        let entries: Vec<_> = (1..=10).map(|i| entry(i, 100)).collect();
        // ~100 KiB each: 4 fit in 450 KiB, all 10 in 2 MiB, and one entry
        // larger than the budget still goes alone.
        assert_eq!(entries_that_fit(&entries, 450 << 10), 4);
        assert_eq!(entries_that_fit(&entries, 2 << 20), 10);
        assert_eq!(entries_that_fit(&entries, 10 << 10), 1);
        assert_eq!(entries_that_fit(&[], 10), 0);
    }

    #[test]
    fn backoff_doubles_from_20_ms_up_to_500_ms() {
        let got: Vec<u64> = backoff_delays()
            .take(8)
            .map(|d| d.as_millis() as u64)
            .collect();
        assert_eq!(got, vec![20, 40, 80, 160, 320, 500, 500, 500]);
    }
}
