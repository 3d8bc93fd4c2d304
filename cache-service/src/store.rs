//! The backing memory behind the caches: Redis when `REDIS_URL` is set, else
//! an in-memory map on each home node holding the keys it is home for.
//!
//! Only a key's home touches its memory entry, one transaction at a time, so
//! no compare-and-set per key is needed here. Values are stored with their
//! version and expiry; Redis also expires them itself (`PXAT`).
//!
//! Invariants:
//! - **home memory is bounded** (entries and bytes); the least recently used
//!   entry goes first, and an eviction is a delete: readers then miss, and
//!   never see an older value (memory never holds a value older than the
//!   newest write, see [`crate::directory`]);
//! - **Redis writes are fenced by view**: every Redis operation names the
//!   view ([`crate::view`]) its home acts in, and Redis refuses it once any
//!   node operated in a later view (a global fence key). A home deposed by
//!   a view change can have a write in flight; it must not land after the
//!   new home started on the key. View numbers grow across cluster
//!   restarts, so the fence never blocks a new cluster.

use std::sync::Mutex;
use std::time::Duration;

use lru::LruCache;
use prometheus_client::metrics::counter::Counter;

use crate::directory::MemoryOp;
use crate::error::{Error, Result};
use crate::protocol::Data;
use crate::view::ViewId;

/// Prefix of every Redis key this service writes.
pub const REDIS_PREFIX: &str = "dsync:cache:";

/// The Redis key holding the highest view that operated on memory.
pub const REDIS_FENCE_KEY: &str = "dsync:cache-fence:view";

/// A Redis call that takes longer than this fails the operation (503)
/// instead of holding the key's transaction open.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// One fenced step: KEYS = [fence, key]; ARGV = [view (20 digits, so that
/// string order is number order: Lua numbers are doubles), op, value,
/// pxat]. Returns false (nil) when the fence is above the view, else the
/// value for `get`, 1 for `set`/`del`.
const FENCED: &str = r"
local f = redis.call('GET', KEYS[1])
if f and f > ARGV[1] then return false end
if (not f) or f < ARGV[1] then redis.call('SET', KEYS[1], ARGV[1]) end
if ARGV[2] == 'get' then
  local v = redis.call('GET', KEYS[2])
  if v then return {1, v} end
  return {1}
elseif ARGV[2] == 'set' then
  if ARGV[4] ~= '' then
    redis.call('SET', KEYS[2], ARGV[3], 'PXAT', ARGV[4])
  else
    redis.call('SET', KEYS[2], ARGV[3])
  end
else
  redis.call('DEL', KEYS[2])
end
return {1}
";

/// Bounds of the home-node memory.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub max_entries: usize,
    pub max_bytes: usize,
}

/// The home-node memory: an LRU bounded by entries and bytes.
#[derive(Debug)]
pub struct LocalStore {
    lru: LruCache<String, (Data, usize)>,
    bytes: usize,
    bounds: Bounds,
}

impl LocalStore {
    pub fn new(bounds: Bounds) -> Self {
        Self {
            lru: LruCache::unbounded(),
            bytes: 0,
            bounds: Bounds {
                max_entries: bounds.max_entries.max(1),
                max_bytes: bounds.max_bytes.max(1),
            },
        }
    }

    pub fn get(&mut self, key: &str) -> Option<Data> {
        self.lru.get(key).map(|(d, _)| d.clone())
    }

    /// Store `data`; returns how many other entries were evicted (deleted)
    /// to stay within the bounds. A value larger than the byte bound alone
    /// is not kept at all (counted as one eviction).
    pub fn put(&mut self, key: &str, data: Data) -> u64 {
        let size = data.size_bytes() + key.len();
        self.remove(key);
        if size > self.bounds.max_bytes {
            return 1;
        }
        self.bytes += size;
        self.lru.put(key.to_string(), (data, size));
        let mut evicted = 0;
        while self.lru.len() > self.bounds.max_entries || self.bytes > self.bounds.max_bytes {
            let Some((_, (_, s))) = self.lru.pop_lru() else {
                break;
            };
            self.bytes -= s;
            evicted += 1;
        }
        evicted
    }

    pub fn remove(&mut self, key: &str) {
        if let Some((_, s)) = self.lru.pop(key) {
            self.bytes -= s;
        }
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        let doomed: Vec<String> = self
            .lru
            .iter()
            .filter(|(k, _)| !keep(k))
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            self.remove(&k);
        }
    }

    pub fn len(&self) -> usize {
        self.lru.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lru.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

enum Backend {
    Local(Mutex<LocalStore>),
    Redis {
        conn: redis::aio::ConnectionManager,
        script: redis::Script,
    },
}

/// The backing memory.
pub struct Memory {
    backend: Backend,
    /// Home-memory entries evicted by the LRU bounds.
    evictions: Counter,
}

impl std::fmt::Debug for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.backend())
    }
}

impl Memory {
    pub async fn connect(redis_url: Option<&str>, bounds: Bounds) -> anyhow::Result<Self> {
        let backend = match redis_url {
            None => Backend::Local(Mutex::new(LocalStore::new(bounds))),
            Some(url) => {
                let client = redis::Client::open(url)?;
                // As the queue service's store: bounded connects and
                // answers, one quick retry. With the defaults a connection
                // lost to a Redis restart went through a long backoff, and
                // cache calls answered "redis did not answer in time" for
                // tens of seconds after Redis was back (chaos suite, seed
                // 214 with --redis).
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(REDIS_TIMEOUT)
                    .set_response_timeout(REDIS_TIMEOUT)
                    .set_number_of_retries(1);
                let conn = tokio::time::timeout(
                    REDIS_TIMEOUT * 5,
                    redis::aio::ConnectionManager::new_with_config(client, config),
                )
                .await
                .map_err(|_| anyhow::anyhow!("timed out connecting to redis at {url}"))??;
                Backend::Redis {
                    conn,
                    script: redis::Script::new(FENCED),
                }
            }
        };
        Ok(Self {
            backend,
            evictions: Counter::default(),
        })
    }

    /// Home memory with the given bounds (tests, embedding).
    pub fn local(bounds: Bounds) -> Self {
        Self {
            backend: Backend::Local(Mutex::new(LocalStore::new(bounds))),
            evictions: Counter::default(),
        }
    }

    pub fn backend(&self) -> &'static str {
        match self.backend {
            Backend::Local(_) => "home-memory",
            Backend::Redis { .. } => "redis",
        }
    }

    /// Home-memory entries evicted so far.
    pub fn evictions(&self) -> &Counter {
        &self.evictions
    }

    /// The live value of `key`, if any, read by a home acting in `view`.
    pub async fn get(&self, key: &str, now_ms: u64, view: ViewId) -> Result<Option<Data>> {
        let data = match &self.backend {
            Backend::Local(m) => lock(m).get(key),
            Backend::Redis { conn, script } => {
                let raw = fenced(conn, script, key, view, "get", "", None).await?;
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

    /// Apply a memory step for a home acting in `view`.
    pub async fn apply(&self, key: &str, op: &MemoryOp, view: ViewId) -> Result<()> {
        match (&self.backend, op) {
            (_, MemoryOp::None) => Ok(()),
            (Backend::Local(m), MemoryOp::Write(d)) => {
                let n = lock(m).put(key, d.clone());
                self.evictions.inc_by(n);
                Ok(())
            }
            (Backend::Local(m), MemoryOp::Delete) => {
                lock(m).remove(key);
                Ok(())
            }
            (Backend::Redis { conn, script }, MemoryOp::Write(d)) => {
                let body = serde_json::to_string(d).expect("data serializes");
                fenced(conn, script, key, view, "set", &body, d.expires_at_ms)
                    .await
                    .map(|_| ())
            }
            (Backend::Redis { conn, script }, MemoryOp::Delete) => {
                fenced(conn, script, key, view, "del", "", None)
                    .await
                    .map(|_| ())
            }
        }
    }

    /// Whether the memory answers (always, for the local map).
    pub async fn ping(&self) -> Result<()> {
        match &self.backend {
            Backend::Local(_) => Ok(()),
            Backend::Redis { conn, .. } => {
                let mut conn = conn.clone();
                redis_call::<String>(redis::cmd("PING").query_async(&mut conn))
                    .await
                    .map(|_| ())
            }
        }
    }

    /// Local map only: keep the entries for which `keep` holds (the keys
    /// this node is still home for). Redis is shared, so it keeps everything.
    pub fn retain_local(&self, keep: impl FnMut(&str) -> bool) {
        if let Backend::Local(m) = &self.backend {
            lock(m).retain(keep);
        }
    }

    /// Entries and bytes in the local map (0 for Redis).
    pub fn local_usage(&self) -> (usize, usize) {
        match &self.backend {
            Backend::Local(m) => {
                let m = lock(m);
                (m.len(), m.bytes())
            }
            Backend::Redis { .. } => (0, 0),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn fenced(
    conn: &redis::aio::ConnectionManager,
    script: &redis::Script,
    key: &str,
    view: ViewId,
    op: &str,
    value: &str,
    pxat: Option<u64>,
) -> Result<Option<String>> {
    let mut conn = conn.clone();
    let mut inv = script.prepare_invoke();
    inv.key(REDIS_FENCE_KEY)
        .key(format!("{REDIS_PREFIX}{key}"))
        .arg(format!("{view:020}"))
        .arg(op)
        .arg(value)
        .arg(pxat.map_or(String::new(), |t| t.to_string()));
    let out: Option<Vec<redis::Value>> = redis_call(inv.invoke_async(&mut conn)).await?;
    let Some(out) = out else {
        return Err(Error::NotHome {
            home: "a newer view".into(),
        });
    };
    match out.get(1) {
        Some(redis::Value::BulkString(b)) => Ok(Some(String::from_utf8_lossy(b).into_owned())),
        _ => Ok(None),
    }
}

async fn redis_call<T>(fut: impl std::future::Future<Output = redis::RedisResult<T>>) -> Result<T> {
    match tokio::time::timeout(REDIS_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Error::Unavailable(format!("redis: {e}"))),
        Err(_) => Err(Error::Unavailable("redis did not answer in time".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Version;
    use serde_json::json;

    fn data(v: i64) -> Data {
        Data {
            value: json!(v),
            version: Version::granted(1),
            expires_at_ms: None,
        }
    }

    #[test]
    fn home_memory_evicts_least_recently_used_by_entries() {
        let mut s = LocalStore::new(Bounds {
            max_entries: 2,
            max_bytes: 1 << 20,
        });
        assert_eq!(s.put("a", data(1)), 0);
        assert_eq!(s.put("b", data(2)), 0);
        assert_eq!(s.get("a"), Some(data(1))); // a is now the most recent
        assert_eq!(s.put("c", data(3)), 1);
        assert_eq!(s.get("b"), None, "b was least recently used");
        assert_eq!(s.get("a"), Some(data(1)));
        assert_eq!(s.len(), 2);
        // Overwriting a key is not an eviction.
        assert_eq!(s.put("a", data(4)), 0);
        assert_eq!(s.get("a"), Some(data(4)));
    }

    #[test]
    fn home_memory_evicts_by_bytes_and_refuses_a_value_above_the_bound() {
        let one = data(1).size_bytes() + 1;
        let mut s = LocalStore::new(Bounds {
            max_entries: 100,
            max_bytes: one * 2,
        });
        s.put("a", data(1));
        s.put("b", data(1));
        assert_eq!(s.bytes(), one * 2);
        assert_eq!(s.put("c", data(1)), 1);
        assert_eq!((s.len(), s.bytes()), (2, one * 2));
        let big = Data {
            value: json!("x".repeat(one * 3)),
            ..data(0)
        };
        assert_eq!(s.put("d", big), 1);
        assert_eq!(s.get("d"), None);
        s.remove("b");
        s.remove("c");
        assert_eq!((s.len(), s.bytes()), (0, 0));
    }
}
