//! A typed client for the public cache API, used by the tests, the load tool
//! and anyone embedding a cache client in Rust.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::protocol::Version;

#[derive(Debug, Clone)]
pub struct CacheClient {
    base: String,
    http: reqwest::Client,
}

/// A value as `GET /api/cache/get` returns it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Got {
    pub key: String,
    pub value: Value,
    pub version: Version,
    /// Whether the node answered from its own cache (M, E or S).
    pub hit: bool,
}

/// A failed call: the HTTP status (0 when the node did not answer) and body.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cache call failed: {status} {body}")]
pub struct ClientError {
    pub status: u16,
    pub body: Value,
}

impl CacheClient {
    /// `addr` is `host:port`.
    pub fn new(addr: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .tcp_nodelay(true)
            .build()
            .expect("reqwest client builds");
        Self::with_client(addr, http)
    }

    pub fn with_client(addr: &str, http: reqwest::Client) -> Self {
        Self {
            base: format!("http://{addr}"),
            http,
        }
    }

    pub async fn set(
        &self,
        key: &str,
        value: Value,
        ttl_ms: Option<u64>,
    ) -> Result<Value, ClientError> {
        let mut body = json!({ "key": key, "value": value });
        if let Some(t) = ttl_ms {
            body["ttl_ms"] = json!(t);
        }
        let r = self
            .http
            .post(format!("{}/api/cache/set", self.base))
            .json(&body)
            .send()
            .await;
        json_or_err(r).await
    }

    /// `Ok(None)` for 404 `not_found`.
    pub async fn get(&self, key: &str) -> Result<Option<Got>, ClientError> {
        let r = self
            .http
            .get(format!("{}/api/cache/get", self.base))
            .query(&[("key", key)])
            .send()
            .await;
        match json_or_err(r).await {
            Ok(v) => serde_json::from_value(v.clone())
                .map(Some)
                .map_err(|_| ClientError {
                    status: 200,
                    body: v,
                }),
            Err(e) if e.status == 404 && e.body["error"]["code"] == "not_found" => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn delete(&self, key: &str) -> Result<Value, ClientError> {
        let r = self
            .http
            .delete(format!("{}/api/cache/delete", self.base))
            .query(&[("key", key)])
            .send()
            .await;
        json_or_err(r).await
    }

    pub async fn line(&self, key: &str) -> Result<Value, ClientError> {
        let r = self
            .http
            .get(format!("{}/api/cache/line", self.base))
            .query(&[("key", key)])
            .send()
            .await;
        json_or_err(r).await
    }

    pub async fn stats(&self) -> Result<Value, ClientError> {
        let r = self
            .http
            .get(format!("{}/api/cache/stats", self.base))
            .send()
            .await;
        json_or_err(r).await
    }

    pub async fn cluster(&self) -> Result<Value, ClientError> {
        let r = self.http.get(format!("{}/cluster", self.base)).send().await;
        json_or_err(r).await
    }
}

async fn json_or_err(r: reqwest::Result<reqwest::Response>) -> Result<Value, ClientError> {
    let resp = r.map_err(|e| ClientError {
        status: 0,
        body: json!(e.to_string()),
    })?;
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if (200..300).contains(&status) {
        Ok(body)
    } else {
        Err(ClientError { status, body })
    }
}
