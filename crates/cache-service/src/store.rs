//! The backing memory behind the caches: Redis when `REDIS_URL` is set, else
//! an in-memory map on each home node holding the keys it is home for.
//!
//! Only a key's home touches its memory entry, one transaction at a time, so
//! no compare-and-set is needed here. Values are stored with their version
//! and expiry; Redis also expires them itself (`PXAT`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::directory::MemoryOp;
use crate::error::{Error, Result};
use crate::protocol::Data;

/// Prefix of every Redis key this service writes.
pub const REDIS_PREFIX: &str = "dsync:cache:";

/// A Redis call that takes longer than this fails the operation (503)
/// instead of holding the key's transaction open.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

pub enum Memory {
    Local(Mutex<HashMap<String, Data>>),
    Redis(redis::aio::ConnectionManager),
}

impl std::fmt::Debug for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.backend())
    }
}

impl Memory {
    pub async fn connect(redis_url: Option<&str>) -> anyhow::Result<Self> {
        match redis_url {
            None => Ok(Memory::Local(Mutex::new(HashMap::new()))),
            Some(url) => {
                let client = redis::Client::open(url)?;
                let conn = tokio::time::timeout(REDIS_TIMEOUT * 5, client.get_connection_manager())
                    .await
                    .map_err(|_| anyhow::anyhow!("timed out connecting to redis at {url}"))??;
                Ok(Memory::Redis(conn))
            }
        }
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Memory::Local(_) => "home-memory",
            Memory::Redis(_) => "redis",
        }
    }

    /// The live value of `key`, if any.
    pub async fn get(&self, key: &str, now_ms: u64) -> Result<Option<Data>> {
        let data = match self {
            Memory::Local(m) => lock(m).get(key).cloned(),
            Memory::Redis(conn) => {
                let mut conn = conn.clone();
                let raw: Option<String> = redis_call(
                    redis::cmd("GET")
                        .arg(format!("{REDIS_PREFIX}{key}"))
                        .query_async(&mut conn),
                )
                .await?;
                match raw {
                    None => None,
                    Some(s) => Some(serde_json::from_str(&s).map_err(|e| {
                        Error::Unavailable(format!("corrupt memory entry for `{key}`: {e}"))
                    })?),
                }
            }
        };
        Ok(data.filter(|d: &Data| !d.is_expired(now_ms)))
    }

    pub async fn apply(&self, key: &str, op: &MemoryOp) -> Result<()> {
        match (self, op) {
            (_, MemoryOp::None) => Ok(()),
            (Memory::Local(m), MemoryOp::Write(d)) => {
                lock(m).insert(key.to_string(), d.clone());
                Ok(())
            }
            (Memory::Local(m), MemoryOp::Delete) => {
                lock(m).remove(key);
                Ok(())
            }
            (Memory::Redis(conn), MemoryOp::Write(d)) => {
                let mut conn = conn.clone();
                let body = serde_json::to_string(d).expect("data serializes");
                let mut cmd = redis::cmd("SET");
                cmd.arg(format!("{REDIS_PREFIX}{key}")).arg(body);
                if let Some(t) = d.expires_at_ms {
                    cmd.arg("PXAT").arg(t);
                }
                redis_call::<()>(cmd.query_async(&mut conn)).await
            }
            (Memory::Redis(conn), MemoryOp::Delete) => {
                let mut conn = conn.clone();
                redis_call::<()>(
                    redis::cmd("DEL")
                        .arg(format!("{REDIS_PREFIX}{key}"))
                        .query_async(&mut conn),
                )
                .await
            }
        }
    }

    /// Whether the memory answers (always, for the local map).
    pub async fn ping(&self) -> Result<()> {
        match self {
            Memory::Local(_) => Ok(()),
            Memory::Redis(conn) => {
                let mut conn = conn.clone();
                redis_call::<String>(redis::cmd("PING").query_async(&mut conn))
                    .await
                    .map(|_| ())
            }
        }
    }

    /// Local map only: keep the entries for which `keep` holds (the keys
    /// this node is still home for). Redis is shared, so it keeps everything.
    pub fn retain_local(&self, mut keep: impl FnMut(&str) -> bool) {
        if let Memory::Local(m) = self {
            lock(m).retain(|k, _| keep(k));
        }
    }

    /// Entries in the local map (0 for Redis).
    pub fn local_len(&self) -> usize {
        match self {
            Memory::Local(m) => lock(m).len(),
            Memory::Redis(_) => 0,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn redis_call<T>(fut: impl std::future::Future<Output = redis::RedisResult<T>>) -> Result<T> {
    match tokio::time::timeout(REDIS_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Error::Unavailable(format!("redis: {e}"))),
        Err(_) => Err(Error::Unavailable("redis did not answer in time".into())),
    }
}
