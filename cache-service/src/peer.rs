//! Outbound calls to other cache nodes over the `/internal/` routes, with the
//! cluster token. Transport failures become [`Error::Unavailable`]; a peer
//! that says it is not the key's home becomes [`Error::NotHome`].

use std::time::Duration;

use common::server::ClusterToken;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::protocol::{Forward, ForwardReply, HomeReply, HomeRequest, NodeId};
use crate::view::{ViewId, ViewReport};

/// Body of `POST /internal/cache/home`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HomeEnvelope {
    pub key: String,
    pub from: NodeId,
    /// The view the requester routed by; the home answers only in the same.
    #[serde(default)]
    pub view: ViewId,
    pub request: HomeRequest,
}

/// Body of `POST /internal/cache/forward`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForwardEnvelope {
    pub key: String,
    pub from: NodeId,
    /// The view the home acts in; a holder in a later view refuses.
    #[serde(default)]
    pub view: ViewId,
    pub forward: Forward,
}

/// Body of `POST /internal/cache/ping` and its answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ping {
    pub node: NodeId,
    pub incarnation: u64,
    /// The sender's accepted view, and whether it is settled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub view: Option<ViewReport>,
    /// The peers the sender's failure detector suspects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suspects: Vec<NodeId>,
}

/// One node's own view of a key (`GET /internal/cache/local`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LocalView {
    pub node: NodeId,
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<crate::protocol::Version>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_epoch: Option<u64>,
    /// The directory entry, when this node is the key's home and has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory: Option<serde_json::Value>,
}

#[derive(Debug, Clone)]
pub struct Peers {
    http: reqwest::Client,
    token: ClusterToken,
    /// Fault injection (tests): peers this node's outgoing calls to fail
    /// at once, as if the link in that direction were cut.
    blocked: std::sync::Arc<std::sync::RwLock<std::collections::BTreeSet<NodeId>>>,
    /// Bound on a home request (covers the home's forwards and retries).
    home_timeout: Duration,
    /// Bound on a forward (covers a downgrade waiting for its grant).
    forward_timeout: Duration,
    ping_timeout: Duration,
}

impl Peers {
    pub fn new(
        token: ClusterToken,
        home_timeout: Duration,
        forward_timeout: Duration,
        ping_timeout: Duration,
    ) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(ping_timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .build()
            .expect("reqwest client builds");
        Self {
            blocked: Default::default(),
            http,
            token,
            home_timeout,
            forward_timeout,
            ping_timeout,
        }
    }

    pub async fn home(&self, addr: &str, env: &HomeEnvelope) -> Result<HomeReply> {
        self.post(addr, "/internal/cache/home", env, self.home_timeout)
            .await
    }

    pub async fn forward(&self, addr: &str, env: &ForwardEnvelope) -> Result<ForwardReply> {
        self.post(addr, "/internal/cache/forward", env, self.forward_timeout)
            .await
    }

    pub async fn ping(&self, addr: &str, me: &Ping) -> Result<Ping> {
        self.post(addr, "/internal/cache/ping", me, self.ping_timeout)
            .await
    }

    /// Cut (or restore) this node's outgoing calls to `to` (fault
    /// injection; see `--fault-injection`).
    pub fn set_blocked(&self, to: Vec<NodeId>) {
        *self.blocked.write().unwrap_or_else(|e| e.into_inner()) = to.into_iter().collect();
    }

    pub fn blocked(&self) -> Vec<NodeId> {
        self.blocked
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    fn check_link(&self, addr: &str) -> Result<()> {
        if self
            .blocked
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(addr)
        {
            return Err(Error::Unavailable(format!(
                "peer {addr}: link cut by fault injection"
            )));
        }
        Ok(())
    }

    pub async fn local(&self, addr: &str, key: &str) -> Result<LocalView> {
        self.check_link(addr)?;
        let req = self
            .http
            .get(format!("http://{addr}/internal/cache/local"))
            .query(&[("key", key)])
            .timeout(self.ping_timeout);
        decode(self.token.apply(req).send().await, addr).await
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<T> {
        self.check_link(addr)?;
        let req = self
            .http
            .post(format!("http://{addr}{path}"))
            .json(body)
            .timeout(timeout);
        decode(self.token.apply(req).send().await, addr).await
    }
}

async fn decode<T: DeserializeOwned>(
    sent: reqwest::Result<reqwest::Response>,
    addr: &str,
) -> Result<T> {
    let resp = sent.map_err(|e| Error::Unavailable(format!("peer {addr}: {e}")))?;
    let status = resp.status();
    if status.is_success() {
        return resp
            .json()
            .await
            .map_err(|e| Error::Unavailable(format!("peer {addr}: bad reply: {e}")));
    }
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    let err = &body["error"];
    if err["code"] == "not_home" || err["code"] == "stale_view" {
        return Err(Error::NotHome {
            home: err["home"].as_str().unwrap_or_default().to_string(),
        });
    }
    Err(Error::Unavailable(format!(
        "peer {addr} answered {status}: {}",
        err["message"].as_str().unwrap_or("")
    )))
}
