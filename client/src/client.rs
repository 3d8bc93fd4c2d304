//! [`Client`]: one typed method per public route of the gateway (which serves
//! the services' routes unchanged, so a client pointed straight at a service
//! node works for that service's routes too).
//!
//! Connections are pooled and kept alive by the inner `reqwest::Client`;
//! clone a `Client` freely, clones share the pool.

use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::error::Error;
use crate::guard::{LockGuard, DEFAULT_TTL_MS};
use crate::types::*;

/// Per-call timeout unless the builder sets one. Generous because acquire and
/// dequeue may long-poll; the server bounds those by `wait_ms`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(35);

/// Header naming the cache node to talk to.
pub const CACHE_NODE_HEADER: &str = "x-cache-node";
/// Header that keeps one client on one cache node.
pub const CLIENT_ID_HEADER: &str = "x-client-id";

/// Builder for [`Client`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    base: String,
    token: Option<String>,
    client_id: Option<String>,
    cache_node: Option<String>,
    timeout: Duration,
    http: Option<reqwest::Client>,
}

impl ClientBuilder {
    /// Share this HTTP client's connection pool (its own timeouts apply
    /// instead of [`ClientBuilder::timeout`]): many clients of one load tool.
    pub fn http_client(mut self, http: reqwest::Client) -> Self {
        self.http = Some(http);
        self
    }

    /// Bearer token sent on every call (the gateway's `API_TOKENS`).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Sticky identity: the gateway keeps this client on one cache node.
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.client_id = Some(id.into());
        self
    }

    /// Talk to this cache node (`host:port` as the gateway knows it).
    pub fn cache_node(mut self, node: impl Into<String>) -> Self {
        self.cache_node = Some(node.into());
        self
    }

    /// Per-call timeout (connect + answer).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn build(self) -> Result<Client, Error> {
        let base = if self.base.contains("://") {
            self.base
        } else {
            format!("http://{}", self.base)
        };
        let base = Url::parse(&base)
            .map_err(|e| Error::InvalidArgument(format!("base url {base:?}: {e}")))?;
        let http = match self.http {
            Some(http) => http,
            None => reqwest::Client::builder()
                .timeout(self.timeout)
                .connect_timeout(Duration::from_secs(3))
                .pool_idle_timeout(Duration::from_secs(60))
                .tcp_nodelay(true)
                .build()?,
        };
        Ok(Client {
            http,
            base,
            token: self.token,
            client_id: self.client_id,
            cache_node: self.cache_node,
        })
    }
}

/// A typed client for the distributed-sync public API.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
    client_id: Option<String>,
    cache_node: Option<String>,
}

impl Client {
    /// A client for the gateway (or a service node) at `base`
    /// (`http://127.0.0.1:8080` or `127.0.0.1:8080`).
    pub fn new(base: impl Into<String>) -> Result<Self, Error> {
        Self::builder(base).build()
    }

    pub fn builder(base: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            base: base.into(),
            token: None,
            client_id: None,
            cache_node: None,
            timeout: DEFAULT_TIMEOUT,
            http: None,
        }
    }

    /// The base URL calls go to.
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// URL for fixed `segments` (each percent-encoded as one path segment).
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty();
            path.extend(segments);
        }
        url
    }

    fn request(&self, method: Method, url: Url) -> reqwest::RequestBuilder {
        let mut req = self.http.request(method, url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        req
    }

    fn cache_request(&self, method: Method, url: Url) -> reqwest::RequestBuilder {
        let mut req = self.request(method, url);
        if let Some(n) = &self.cache_node {
            req = req.header(CACHE_NODE_HEADER, n);
        }
        if let Some(c) = &self.client_id {
            req = req.header(CLIENT_ID_HEADER, c);
        }
        req
    }

    async fn send<T: DeserializeOwned>(req: reqwest::RequestBuilder) -> Result<T, Error> {
        let resp = req.send().await?;
        let status = resp.status();
        let body = resp.bytes().await?;
        if !status.is_success() {
            return Err(Error::from_body(status.as_u16(), &body));
        }
        decode(status, &body)
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        segments: &[&str],
        body: &B,
    ) -> Result<T, Error> {
        Self::send(self.request(Method::POST, self.url(segments)).json(body)).await
    }

    async fn get<T: DeserializeOwned>(&self, segments: &[&str]) -> Result<T, Error> {
        Self::send(self.request(Method::GET, self.url(segments))).await
    }

    // ------------------------------------------------------------ locks

    /// `POST /api/lock/acquire`. A refusal is `Error::Api` with code
    /// `lock_held`, `wait_timeout` or `deadlock`.
    pub async fn acquire(&self, req: &AcquireRequest) -> Result<LockGrant, Error> {
        self.post(&["api", "lock", "acquire"], req).await
    }

    /// `POST /api/lock/release`.
    pub async fn release(&self, req: &ReleaseRequest) -> Result<ReleaseResponse, Error> {
        self.post(&["api", "lock", "release"], req).await
    }

    /// `POST /api/lock/renew`.
    pub async fn renew(&self, req: &RenewRequest) -> Result<RenewResponse, Error> {
        self.post(&["api", "lock", "renew"], req).await
    }

    /// `GET /api/lock/{resource}` (linearizable read).
    pub async fn lock_state(&self, resource: &str) -> Result<LockState, Error> {
        self.get(&["api", "lock", resource]).await
    }

    /// `GET /api/lock/{resource}?consistency=stale` (served by any node).
    pub async fn lock_state_stale(&self, resource: &str) -> Result<LockState, Error> {
        let mut url = self.url(&["api", "lock", resource]);
        url.query_pairs_mut().append_pair("consistency", "stale");
        Self::send(self.request(Method::GET, url)).await
    }

    /// `GET /api/locks?prefix=&after=&limit=`: one page of held and
    /// waited-for locks, sorted by resource (`next`: pass it as `after`
    /// for the following page). `stale`: the answering node's state.
    pub async fn lock_list(&self, q: &ListQuery) -> Result<LockList, Error> {
        let url = self.list_url(&["api", "locks"], q);
        Self::send(self.request(Method::GET, url)).await
    }

    /// The URL of a list route with `q` as its query.
    fn list_url(&self, segments: &[&str], q: &ListQuery) -> Url {
        let mut url = self.url(segments);
        {
            let mut pairs = url.query_pairs_mut();
            if let Some(p) = &q.prefix {
                pairs.append_pair("prefix", p);
            }
            if let Some(a) = &q.after {
                pairs.append_pair("after", a);
            }
            if let Some(l) = q.limit {
                pairs.append_pair("limit", &l.to_string());
            }
            if let Some(c) = &q.consistency {
                pairs.append_pair("consistency", c);
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        url
    }

    /// Acquire and keep the lock: the returned guard renews the lease in the
    /// background and reports when it is lost. `ttl_ms` defaults to
    /// [`DEFAULT_TTL_MS`]. A `request_id` is generated when absent so the
    /// acquire itself is safe to retry.
    pub async fn lock(&self, mut req: AcquireRequest) -> Result<LockGuard, Error> {
        let ttl = *req.ttl_ms.get_or_insert(DEFAULT_TTL_MS);
        if ttl == 0 {
            return Err(Error::InvalidArgument("ttl_ms must be > 0".into()));
        }
        if req.request_id.is_none() {
            req.request_id = Some(uuid::Uuid::new_v4().to_string());
            // Only this call sends the id it made.
            req.retry_window_ms
                .get_or_insert(api::limits::lock::SHORT_RETRY_WINDOW_MS);
        }
        let grant = self.acquire(&req).await?;
        Ok(LockGuard::start(self.clone(), grant, ttl))
    }

    // ------------------------------------------------------------ queues

    /// `POST /api/queue/enqueue` (single or batch form).
    pub async fn enqueue(&self, req: &EnqueueRequest) -> Result<EnqueueResponse, Error> {
        self.post(&["api", "queue", "enqueue"], req).await
    }

    /// Enqueue one message with default options; returns its id.
    pub async fn enqueue_one(&self, queue: &str, payload: Value) -> Result<String, Error> {
        let resp = self
            .enqueue(&EnqueueRequest {
                queue: queue.to_string(),
                payload: Some(payload.into()),
                ..Default::default()
            })
            .await?;
        resp.id.ok_or_else(|| Error::Decode {
            status: 201,
            message: "enqueue answer has no id".into(),
        })
    }

    /// `POST /api/queue/dequeue`; an empty vector when nothing is ready.
    pub async fn dequeue(&self, req: &DequeueRequest) -> Result<Vec<Message>, Error> {
        let resp: DequeueResponse = self.post(&["api", "queue", "dequeue"], req).await?;
        Ok(resp.messages)
    }

    /// `POST /api/queue/ack` for one receipt.
    pub async fn ack(&self, queue: &str, receipt: &str) -> Result<AckResponse, Error> {
        self.ack_request(&AckRequest {
            queue: queue.to_string(),
            receipt: Some(receipt.to_string()),
            receipts: None,
        })
        .await
    }

    /// `POST /api/queue/ack` in either form.
    pub async fn ack_request(&self, req: &AckRequest) -> Result<AckResponse, Error> {
        self.post(&["api", "queue", "ack"], req).await
    }

    /// `POST /api/queue/nack`.
    pub async fn nack(&self, req: &NackRequest) -> Result<NackResponse, Error> {
        self.post(&["api", "queue", "nack"], req).await
    }

    /// `POST /api/queue/extend`.
    pub async fn extend(&self, req: &ExtendRequest) -> Result<ExtendResponse, Error> {
        self.post(&["api", "queue", "extend"], req).await
    }

    /// `GET /api/queue/{queue}/dead?limit=` (oldest first).
    pub async fn dead_letters(
        &self,
        queue: &str,
        limit: Option<u64>,
    ) -> Result<DeadLetters, Error> {
        let mut url = self.url(&["api", "queue", queue, "dead"]);
        if let Some(l) = limit {
            url.query_pairs_mut().append_pair("limit", &l.to_string());
        }
        Self::send(self.request(Method::GET, url)).await
    }

    /// `POST /api/queue/redrive`.
    pub async fn redrive(&self, req: &RedriveRequest) -> Result<RedriveResponse, Error> {
        self.post(&["api", "queue", "redrive"], req).await
    }

    /// `POST /api/queue/config`.
    pub async fn configure_queue(&self, req: &QueueConfig) -> Result<QueueConfig, Error> {
        self.post(&["api", "queue", "config"], req).await
    }

    /// `GET /api/queue/{queue}`.
    pub async fn queue_stats(&self, queue: &str) -> Result<QueueStats, Error> {
        self.get(&["api", "queue", queue]).await
    }

    /// `GET /api/queues?prefix=&after=&limit=`: one page of known queues
    /// with their counts, sorted by name; `unavailable` names the queue
    /// nodes that did not answer.
    pub async fn queue_list(&self, q: &ListQuery) -> Result<QueueList, Error> {
        let url = self.list_url(&["api", "queues"], q);
        Self::send(self.request(Method::GET, url)).await
    }

    /// `GET /api/events?limit=`: recent deadlocks, leader changes,
    /// dead-letterings and redrives of every node, newest first.
    pub async fn events(&self, limit: Option<u64>) -> Result<EventList, Error> {
        let mut url = self.url(&["api", "events"]);
        if let Some(l) = limit {
            url.query_pairs_mut().append_pair("limit", &l.to_string());
        }
        Self::send(self.request(Method::GET, url)).await
    }

    // ------------------------------------------------------------ cache

    /// `POST /api/cache/set`.
    pub async fn cache_set(&self, req: &CacheSetRequest) -> Result<CacheSetResponse, Error> {
        Self::send(
            self.cache_request(Method::POST, self.url(&["api", "cache", "set"]))
                .json(req),
        )
        .await
    }

    /// `POST /api/cache/set` from its parts.
    pub async fn cache_put(
        &self,
        key: &str,
        value: Value,
        ttl_ms: Option<u64>,
    ) -> Result<CacheSetResponse, Error> {
        self.cache_set(&CacheSetRequest {
            key: key.to_string(),
            value,
            ttl_ms,
        })
        .await
    }

    /// `GET /api/cache/get?key=`; `None` on a miss (404 `not_found`).
    pub async fn cache_get(&self, key: &str) -> Result<Option<CacheValue>, Error> {
        let mut url = self.url(&["api", "cache", "get"]);
        url.query_pairs_mut().append_pair("key", key);
        match Self::send(self.cache_request(Method::GET, url)).await {
            Ok(v) => Ok(Some(v)),
            Err(Error::Api {
                status: 404, code, ..
            }) if code == "not_found" => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `DELETE /api/cache/delete?key=`.
    pub async fn cache_delete(&self, key: &str) -> Result<CacheDeleteResponse, Error> {
        let mut url = self.url(&["api", "cache", "delete"]);
        url.query_pairs_mut().append_pair("key", key);
        Self::send(self.cache_request(Method::DELETE, url)).await
    }

    /// `GET /api/cache/line?key=`: every node's MESI state for the key.
    pub async fn cache_line(&self, key: &str) -> Result<Value, Error> {
        let mut url = self.url(&["api", "cache", "line"]);
        url.query_pairs_mut().append_pair("key", key);
        Self::send(self.cache_request(Method::GET, url)).await
    }

    /// `GET /api/cache/stats` of the node this client talks to.
    pub async fn cache_stats(&self) -> Result<Value, Error> {
        Self::send(self.cache_request(Method::GET, self.url(&["api", "cache", "stats"]))).await
    }

    // ------------------------------------------------------------ gateway

    /// `GET /health`: the report is returned whether the gateway says 200 or
    /// 503 (look at `status` / `down`).
    pub async fn health(&self) -> Result<HealthReport, Error> {
        let resp = self
            .request(Method::GET, self.url(&["health"]))
            .send()
            .await?;
        let status = resp.status();
        let body = resp.bytes().await?;
        if status.is_success() || status == StatusCode::SERVICE_UNAVAILABLE {
            if let Ok(report) = serde_json::from_slice(&body) {
                return Ok(report);
            }
        }
        if status.is_success() {
            return decode(status, &body);
        }
        Err(Error::from_body(status.as_u16(), &body))
    }

    /// `GET /cluster` on the gateway.
    pub async fn cluster(&self) -> Result<ClusterView, Error> {
        self.get(&["cluster"]).await
    }

    /// `GET /stats` on the gateway.
    pub async fn stats(&self) -> Result<GatewayStats, Error> {
        self.get(&["stats"]).await
    }

    /// `GET /metrics` (Prometheus text).
    pub async fn metrics(&self) -> Result<String, Error> {
        let resp = self
            .request(Method::GET, self.url(&["metrics"]))
            .send()
            .await?;
        let status = resp.status();
        let body = resp.bytes().await?;
        if !status.is_success() {
            return Err(Error::from_body(status.as_u16(), &body));
        }
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// `GET` a JSON route the typed methods do not cover, such as a
    /// service node's own `/cluster` or `/stats` (`segments` are the path's
    /// segments, percent-encoded here).
    pub async fn get_json(&self, segments: &[&str]) -> Result<Value, Error> {
        self.get(segments).await
    }

    /// `GET /openapi.json`.
    pub async fn openapi(&self) -> Result<Value, Error> {
        self.get(&["openapi.json"]).await
    }
}

fn decode<T: DeserializeOwned>(status: StatusCode, body: &[u8]) -> Result<T, Error> {
    // Some success answers carry no body; let `()`/`Value` targets accept it.
    let body: &[u8] = if body.is_empty() { b"null" } else { body };
    serde_json::from_slice(body).map_err(|e| Error::Decode {
        status: status.as_u16(),
        message: format!(
            "{e}; body: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ),
    })
}
