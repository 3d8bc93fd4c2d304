//! The Redis backend: every queue's whole state in Redis, every operation one
//! Lua script (atomic: Redis runs one script at a time), over one
//! auto-reconnecting multiplexed connection (`ConnectionManager`).
//!
//! The scripts implement the rules of [`crate::delivery`] (same states, same
//! timeouts, same receipt format); the goldenscripts in `tests/testscripts/`
//! (run by `tests/delivery.rs`) run against both backends to keep them equal.
//!
//! Keys for queue `q` (the `{q}` hash tag keeps a queue in one cluster slot):
//! - `dsq:{q}:meta` hash: `seq` (last id), `max_attempts`, `expired`,
//!   `bytes` (sum of the stored payloads' lengths, kept by every script
//!   that adds or deletes a message, for `--max-queue-bytes`);
//! - `dsq:{q}:m:{id}` hash per message: `p` payload, `e` enqueued_at,
//!   `a` attempts, `x` expires_at (`""` = none), `r` receipt, `s` state
//!   (`p` pending, `i` in flight, `d` dead);
//! - `dsq:{q}:pending` zset by visible_at, `dsq:{q}:inflight` by deadline,
//!   `dsq:{q}:dead` by dead-letter time, `dsq:{q}:ttl` (pending messages
//!   with a TTL) by expiry;
//! - `dsq:queues` set of queue names (for metrics).
//!
//! Message keys are derived inside the scripts from the prefix passed as
//! `KEYS[1]`; all share the queue's hash tag. Times come from the calling
//! node (`now_ms` argument), like the pure rules; nodes' clocks are assumed
//! to agree within a small fraction of a visibility timeout.
//!
//! Limits: the enqueue script checks the per-queue limits itself (messages
//! = the three state zsets' sizes, bytes = `bytes`), so the check and the
//! write are one atomic step even when two nodes serve one queue. The
//! per-node limits do not apply: this node stores nothing, and Redis's own
//! `maxmemory` bounds Redis.
//!
//! At `maxmemory` (with `noeviction`) Redis refuses the enqueue script
//! whole; every other script carries `allow-oom`, so consumers keep
//! draining a full Redis (see `MAY_RUN_OOM`).
//!
//! Durability is Redis's: with `appendonly yes` and `appendfsync always` a
//! script's effects are on disk before Redis replies, so an enqueue that got
//! 201 survives a Redis crash.

use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;
use tokio::sync::OnceCell;

use super::EnqueueResult;
use super::{AckResults, DequeueResult, QueueStore};
use crate::delivery::{
    receipt_seq, DeadLetter, Delivery, Events, NackOutcome, NewMessage, QueueStats, ReceiptError,
    Seq, SWEEP_LIMIT,
};
use crate::error::{Error, Result};
use crate::limit::{Full, Limits, Resource, Scope, Usage};

/// Longest wait for Redis on any one call; after that the node answers 503
/// instead of hanging the client.
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(3);
/// Key of the set of queue names.
const QUEUES_KEY: &str = "dsq:queues";
/// Names one `SSCAN` step asks for (a hint to Redis, not a bound).
const SCAN_STEP: usize = 500;
/// Most `SSCAN` steps of one listing: 10 million queues' worth.
const MAX_SCAN_STEPS: usize = 20_000;
/// Longest one listing walks the index set.
const LIST_TIMEOUT: Duration = Duration::from_secs(5);

/// First line of every script but enqueue: it runs even when Redis is at
/// `maxmemory`. Those scripts free memory or change a few fields, and
/// consumers must be able to drain a full Redis; without the flag Redis
/// would fail a script at its first write that may allocate (`ZADD`,
/// `HINCRBY`, ...), after earlier writes were made, leaving a message out
/// of every index.
const MAY_RUN_OOM: &str = "#!lua flags=allow-oom";
/// First line of the enqueue script: at `maxmemory` Redis refuses it before
/// it starts (503 `store_unavailable`), never half way through.
const CHECK_OOM: &str = "#!lua";

/// Shared Lua prelude: key helpers and the timeout sweep. Expects
/// `KEYS[1]` = prefix, `ARGV[1]` = now_ms, `ARGV[2]` = default max_attempts.
const PRELUDE: &str = r#"
local P = KEYS[1]
local now = tonumber(ARGV[1])
local default_max = tonumber(ARGV[2])
local LIMIT = tonumber(ARGV[3])
local function mkey(id) return P .. 'm:' .. id end
-- Queues written before the byte count existed have none: count it once.
if redis.call('HEXISTS', P .. 'meta', 'bytes') == 0
    and redis.call('HEXISTS', P .. 'meta', 'seq') == 1 then
  local total = 0
  for _, z in ipairs({'pending', 'inflight', 'dead'}) do
    for _, id in ipairs(redis.call('ZRANGE', P .. z, 0, -1)) do
      total = total + redis.call('HSTRLEN', mkey(id), 'p')
    end
  end
  redis.call('HSET', P .. 'meta', 'bytes', total)
end
-- Delete a message for good, keeping the byte count.
local function drop(id)
  local len = redis.call('HSTRLEN', mkey(id), 'p')
  if len > 0 then redis.call('HINCRBY', P .. 'meta', 'bytes', -len) end
  redis.call('DEL', mkey(id))
end
local function stored()
  return redis.call('ZCARD', P .. 'pending') + redis.call('ZCARD', P .. 'inflight')
    + redis.call('ZCARD', P .. 'dead')
end
local function stored_bytes()
  return tonumber(redis.call('HGET', P .. 'meta', 'bytes') or '0')
end
local function max_attempts()
  local m = redis.call('HGET', P .. 'meta', 'max_attempts')
  if m then return tonumber(m) end
  return default_max
end
local function is_expired(x)
  return x and x ~= '' and tonumber(x) <= now
end
local expired, dead = 0, 0
local function count_expired()
  expired = expired + 1
  redis.call('HINCRBY', P .. 'meta', 'expired', 1)
end
local function to_pending(id, visible_at)
  redis.call('ZADD', P .. 'pending', visible_at, id)
  redis.call('HSET', mkey(id), 's', 'p', 'r', '')
  local x = redis.call('HGET', mkey(id), 'x')
  if x and x ~= '' then redis.call('ZADD', P .. 'ttl', x, id) end
end
local function to_dead(id)
  redis.call('ZADD', P .. 'dead', now, id)
  redis.call('HSET', mkey(id), 's', 'd', 'r', '')
  dead = dead + 1
end
local function sweep()
  local mx = max_attempts()
  local due = redis.call('ZRANGEBYSCORE', P .. 'inflight', '-inf', now, 'WITHSCORES', 'LIMIT', 0, LIMIT)
  for i = 1, #due, 2 do
    local id, deadline = due[i], due[i + 1]
    redis.call('ZREM', P .. 'inflight', id)
    local f = redis.call('HMGET', mkey(id), 'a', 'x')
    if is_expired(f[2]) then
      drop(id)
      count_expired()
    elseif tonumber(f[1]) >= mx then
      to_dead(id)
    else
      to_pending(id, deadline)
    end
  end
  local gone = redis.call('ZRANGEBYSCORE', P .. 'ttl', '-inf', now, 'LIMIT', 0, LIMIT)
  for _, id in ipairs(gone) do
    redis.call('ZREM', P .. 'ttl', id)
    redis.call('ZREM', P .. 'pending', id)
    drop(id)
    count_expired()
  end
end
-- 0 = live delivery, 1 = no such message, 2 = stale receipt
local function check(id, receipt)
  local f = redis.call('HMGET', mkey(id), 's', 'r')
  if not f[1] then return 1 end
  if f[1] ~= 'i' or f[2] ~= receipt then return 2 end
  local d = redis.call('ZSCORE', P .. 'inflight', id)
  if not d or tonumber(d) <= now then return 2 end
  return 0
end
"#;

/// ARGV[4] = queue name, ARGV[5] = max messages, ARGV[6] = max payload
/// bytes, then (payload, delay_ms, ttl_ms or -1) triples. Returns
/// {expired, dead, full, ids}: `full` is 0 when stored, else {1 messages | 2
/// bytes, limit, used, adding} and nothing was stored. Like
/// `Queue::enqueue` it sweeps only when the messages do not fit, then
/// checks again.
const ENQUEUE: &str = r#"
local max_msgs, max_bytes = tonumber(ARGV[5]), tonumber(ARGV[6])
local n, b = 0, 0
for i = 7, #ARGV, 3 do
  n = n + 1
  b = b + #ARGV[i]
end
local function over()
  local m = stored()
  if m + n > max_msgs then return {1, max_msgs, m, n} end
  local sb = stored_bytes()
  if sb + b > max_bytes then return {2, max_bytes, sb, b} end
  return nil
end
if over() then
  sweep()
  local full = over()
  if full then return {expired, dead, full, {}} end
end
redis.call('SADD', KEYS[2], ARGV[4])
redis.call('HINCRBY', P .. 'meta', 'bytes', b)
local ids = {}
for i = 7, #ARGV, 3 do
  local seq = redis.call('HINCRBY', P .. 'meta', 'seq', 1)
  local id = string.format('%016x', seq)
  local delay, ttl = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local x = ''
  if ttl >= 0 then x = now + ttl end
  redis.call('HSET', mkey(id), 'p', ARGV[i], 'e', now, 'a', 0, 'x', x, 'r', '', 's', 'p')
  redis.call('ZADD', P .. 'pending', now + delay, id)
  if x ~= '' then redis.call('ZADD', P .. 'ttl', x, id) end
  ids[#ids + 1] = id
end
return {expired, dead, 0, ids}
"#;

/// ARGV[4] = visibility_ms, ARGV[5..] = one nonce (16 hex digits) per
/// wanted message. Returns {expired, dead, next_wake or -1, deliveries}.
const DEQUEUE: &str = r#"
sweep()
local vis = tonumber(ARGV[4])
local want = #ARGV - 4
local out = {}
while #out < want do
  local ids = redis.call('ZRANGEBYSCORE', P .. 'pending', '-inf', now, 'LIMIT', 0, want - #out)
  if #ids == 0 then break end
  for _, id in ipairs(ids) do
    redis.call('ZREM', P .. 'pending', id)
    redis.call('ZREM', P .. 'ttl', id)
    local f = redis.call('HMGET', mkey(id), 'a', 'x', 'p', 'e')
    if is_expired(f[2]) then
      drop(id)
      count_expired()
    else
      local a = tonumber(f[1]) + 1
      local receipt = id .. '.' .. a .. '.' .. ARGV[4 + #out + 1]
      redis.call('HSET', mkey(id), 'a', a, 'r', receipt, 's', 'i')
      redis.call('ZADD', P .. 'inflight', now + vis, id)
      out[#out + 1] = {id, receipt, f[3], a, f[4]}
    end
  end
end
local wake = -1
local p = redis.call('ZRANGE', P .. 'pending', 0, 0, 'WITHSCORES')
local i = redis.call('ZRANGE', P .. 'inflight', 0, 0, 'WITHSCORES')
if #p > 0 then wake = tonumber(p[2]) end
if #i > 0 and (wake < 0 or tonumber(i[2]) < wake) then wake = tonumber(i[2]) end
return {expired, dead, wake, out}
"#;

/// ARGV[4..] = (id, receipt) pairs. Returns {expired, dead, codes}.
const ACK: &str = r#"
sweep()
local codes = {}
for i = 4, #ARGV, 2 do
  local id, receipt = ARGV[i], ARGV[i + 1]
  local c = check(id, receipt)
  if c == 0 then
    redis.call('ZREM', P .. 'inflight', id)
    drop(id)
  end
  codes[#codes + 1] = c
end
return {expired, dead, codes}
"#;

/// ARGV[4] = id, ARGV[5] = receipt, ARGV[6] = delay_ms.
/// Returns {expired, dead, code, outcome (0 requeued, 1 dead, 2 expired)}.
const NACK: &str = r#"
sweep()
local id, receipt = ARGV[4], ARGV[5]
local c = check(id, receipt)
local outcome = -1
if c == 0 then
  redis.call('ZREM', P .. 'inflight', id)
  local f = redis.call('HMGET', mkey(id), 'a', 'x')
  if is_expired(f[2]) then
    drop(id)
    count_expired()
    outcome = 2
  elseif tonumber(f[1]) >= max_attempts() then
    to_dead(id)
    outcome = 1
  else
    to_pending(id, now + tonumber(ARGV[6]))
    outcome = 0
  end
end
return {expired, dead, c, outcome}
"#;

/// ARGV[4] = id, ARGV[5] = receipt, ARGV[6] = visibility_ms.
/// Returns {expired, dead, code, deadline}.
const EXTEND: &str = r#"
sweep()
local id, receipt = ARGV[4], ARGV[5]
local c = check(id, receipt)
local deadline = now + tonumber(ARGV[6])
if c == 0 then
  redis.call('ZADD', P .. 'inflight', 'XX', deadline, id)
end
return {expired, dead, c, deadline}
"#;

/// Returns {expired, dead, ready, delayed, in_flight, dead_lettered,
/// expired_total, bytes}.
const STATS: &str = r#"
sweep()
local ready = redis.call('ZCOUNT', P .. 'pending', '-inf', now)
local delayed = redis.call('ZCOUNT', P .. 'pending', '(' .. now, '+inf')
local inflight = redis.call('ZCARD', P .. 'inflight')
local deadn = redis.call('ZCARD', P .. 'dead')
local total = tonumber(redis.call('HGET', P .. 'meta', 'expired') or '0')
return {expired, dead, ready, delayed, inflight, deadn, total, stored_bytes()}
"#;

/// ARGV[4] = limit. Returns {id, payload, attempts, enqueued_at, dead_at}…
const DEAD_LETTERS: &str = r#"
local rows = redis.call('ZRANGE', P .. 'dead', 0, tonumber(ARGV[4]) - 1, 'WITHSCORES')
local out = {}
for i = 1, #rows, 2 do
  local id = rows[i]
  local f = redis.call('HMGET', mkey(id), 'p', 'a', 'e')
  if f[1] then out[#out + 1] = {id, f[1], tonumber(f[2]), tonumber(f[3]), tonumber(rows[i + 1])} end
end
return out
"#;

/// ARGV[4] = limit, ARGV[5..] = ids (none: the oldest `limit`).
/// Returns the ids re-driven.
const REDRIVE: &str = r#"
local limit = tonumber(ARGV[4])
local ids = {}
if #ARGV >= 5 then
  for i = 5, #ARGV do ids[#ids + 1] = ARGV[i] end
else
  ids = redis.call('ZRANGE', P .. 'dead', 0, limit - 1)
end
local out = {}
for _, id in ipairs(ids) do
  if #out >= limit then break end
  if redis.call('HGET', mkey(id), 's') == 'd' then
    redis.call('ZREM', P .. 'dead', id)
    redis.call('HSET', mkey(id), 'a', 0, 'x', '')
    to_pending(id, now)
    out[#out + 1] = id
  end
end
return out
"#;

struct Scripts {
    enqueue: Script,
    dequeue: Script,
    ack: Script,
    nack: Script,
    extend: Script,
    stats: Script,
    dead_letters: Script,
    redrive: Script,
}

impl Scripts {
    fn new() -> Self {
        let s = |body: &str| Script::new(&format!("{MAY_RUN_OOM}\n{PRELUDE}\n{body}"));
        Self {
            enqueue: Script::new(&format!("{CHECK_OOM}\n{PRELUDE}\n{ENQUEUE}")),
            dequeue: s(DEQUEUE),
            ack: s(ACK),
            nack: s(NACK),
            extend: s(EXTEND),
            stats: s(STATS),
            dead_letters: s(DEAD_LETTERS),
            redrive: s(REDRIVE),
        }
    }
}

pub struct RedisStore {
    client: redis::Client,
    conn: OnceCell<ConnectionManager>,
    scripts: Scripts,
    default_max_attempts: u32,
    queue_limits: Limits,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisStore")
    }
}

fn prefix(queue: &str) -> String {
    format!("dsq:{{{queue}}}:")
}

fn receipt_code(code: i64) -> Result<(), ReceiptError> {
    match code {
        0 => Ok(()),
        1 => Err(ReceiptError::NotFound),
        _ => Err(ReceiptError::Stale),
    }
}

fn events(expired: i64, dead: i64) -> Events {
    Events {
        expired: expired.max(0) as u64,
        dead_lettered: dead.max(0) as u64,
    }
}

impl RedisStore {
    /// A store for `url`, enforcing `queue_limits` on every queue.
    /// Connecting is lazy (first use, and again after a failure), so a node
    /// starts, and reports itself unhealthy, while Redis is still down.
    pub fn new(url: &str, default_max_attempts: u32, queue_limits: Limits) -> Result<Self> {
        let client = redis::Client::open(url)
            .map_err(|e| Error::InvalidInput(format!("bad REDIS_URL {url:?}: {e}")))?;
        Ok(Self {
            client,
            conn: OnceCell::new(),
            scripts: Scripts::new(),
            default_max_attempts,
            queue_limits,
        })
    }

    async fn conn(&self) -> Result<ConnectionManager> {
        let c = self
            .conn
            .get_or_try_init(|| async {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(REDIS_TIMEOUT)
                    .set_response_timeout(REDIS_TIMEOUT)
                    .set_number_of_retries(1);
                ConnectionManager::new_with_config(self.client.clone(), config).await
            })
            .await?;
        Ok(c.clone())
    }

    /// Run one script with the common arguments (prefix, now, default max
    /// attempts, sweep limit) followed by `args`, within [`REDIS_TIMEOUT`].
    async fn run<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        queue: &str,
        now_ms: u64,
        args: impl FnOnce(&mut redis::ScriptInvocation<'_>),
    ) -> Result<T> {
        let fut = async {
            let mut conn = self.conn().await?;
            let mut inv = script.prepare_invoke();
            inv.key(prefix(queue))
                .key(QUEUES_KEY)
                .arg(now_ms)
                .arg(self.default_max_attempts)
                .arg(SWEEP_LIMIT);
            args(&mut inv);
            Ok::<T, Error>(inv.invoke_async(&mut conn).await?)
        };
        match tokio::time::timeout(REDIS_TIMEOUT, fut).await {
            Ok(r) => r,
            Err(_) => Err(Error::Unavailable(format!(
                "redis: no answer within {} ms",
                REDIS_TIMEOUT.as_millis()
            ))),
        }
    }
}

type DeliveryRow = (String, String, String, u32, u64);

/// The enqueue script's `full` answer: 0, or {resource, limit, used, adding}.
#[derive(Debug)]
enum FullRow {
    Stored,
    Refused(i64, u64, u64, u64),
}

impl redis::FromRedisValue for FullRow {
    fn from_redis_value(v: &redis::Value) -> redis::RedisResult<Self> {
        match v {
            redis::Value::Int(0) => Ok(FullRow::Stored),
            v => {
                let (resource, limit, used, adding) = redis::FromRedisValue::from_redis_value(v)?;
                Ok(FullRow::Refused(resource, limit, used, adding))
            }
        }
    }
}

impl QueueStore for RedisStore {
    fn backend(&self) -> &'static str {
        "redis"
    }

    fn shared(&self) -> bool {
        true
    }

    fn enqueue<'a>(
        &'a self,
        queue: &'a str,
        msgs: Vec<NewMessage>,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<EnqueueResult>> {
        async move {
            let (expired, dead, full, ids): (i64, i64, FullRow, Vec<String>) = self
                .run(&self.scripts.enqueue, queue, now_ms, |inv| {
                    inv.arg(queue)
                        .arg(self.queue_limits.max_messages)
                        .arg(self.queue_limits.max_bytes);
                    for m in &msgs {
                        inv.arg(m.payload.as_str())
                            .arg(m.delay_ms)
                            .arg(m.ttl_ms.map(|t| t as i64).unwrap_or(-1));
                    }
                })
                .await?;
            let res = match full {
                FullRow::Stored => Ok(ids),
                FullRow::Refused(resource, limit, used, adding) => Err(Full {
                    scope: Scope::Queue,
                    resource: if resource == 1 {
                        Resource::Messages
                    } else {
                        Resource::Bytes
                    },
                    limit,
                    used,
                    adding,
                }),
            };
            Ok((res, events(expired, dead)))
        }
        .boxed()
    }

    fn dequeue<'a>(
        &'a self,
        queue: &'a str,
        max: usize,
        visibility_ms: u64,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<DequeueResult>> {
        async move {
            let (expired, dead, wake, rows): (i64, i64, i64, Vec<DeliveryRow>) = self
                .run(&self.scripts.dequeue, queue, now_ms, |inv| {
                    inv.arg(visibility_ms);
                    for _ in 0..max {
                        inv.arg(format!("{:016x}", rand::random::<u64>()));
                    }
                })
                .await?;
            Ok(DequeueResult {
                deliveries: rows
                    .into_iter()
                    .map(
                        |(id, receipt, payload, attempts, enqueued_at_ms)| Delivery {
                            id,
                            receipt,
                            payload,
                            attempts,
                            enqueued_at_ms,
                        },
                    )
                    .collect(),
                next_wake_ms: (wake >= 0).then_some(wake as u64),
                events: events(expired, dead),
            })
        }
        .boxed()
    }

    fn ack<'a>(
        &'a self,
        queue: &'a str,
        receipts: Vec<String>,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<AckResults>> {
        async move {
            // Malformed receipts are answered here; the rest go to Redis.
            let parsed: Vec<Option<String>> = receipts
                .iter()
                .map(|r| receipt_seq(r).map(crate::delivery::format_id))
                .collect();
            let (expired, dead, codes): (i64, i64, Vec<i64>) = self
                .run(&self.scripts.ack, queue, now_ms, |inv| {
                    for (r, id) in receipts.iter().zip(&parsed) {
                        if let Some(id) = id {
                            inv.arg(id.as_str()).arg(r.as_str());
                        }
                    }
                })
                .await?;
            let mut codes = codes.into_iter();
            let results = parsed
                .iter()
                .map(|id| match id {
                    None => Err(ReceiptError::Malformed),
                    Some(_) => receipt_code(codes.next().unwrap_or(1)),
                })
                .collect();
            Ok((results, events(expired, dead)))
        }
        .boxed()
    }

    fn nack<'a>(
        &'a self,
        queue: &'a str,
        receipt: &'a str,
        delay_ms: u64,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<(Result<NackOutcome, ReceiptError>, Events)>> {
        async move {
            let Some(seq) = receipt_seq(receipt) else {
                return Ok((Err(ReceiptError::Malformed), Events::default()));
            };
            let (expired, dead, code, outcome): (i64, i64, i64, i64) = self
                .run(&self.scripts.nack, queue, now_ms, |inv| {
                    inv.arg(crate::delivery::format_id(seq))
                        .arg(receipt)
                        .arg(delay_ms);
                })
                .await?;
            let res = receipt_code(code).map(|()| match outcome {
                0 => NackOutcome::Requeued,
                1 => NackOutcome::DeadLettered,
                _ => NackOutcome::Expired,
            });
            Ok((res, events(expired, dead)))
        }
        .boxed()
    }

    fn extend<'a>(
        &'a self,
        queue: &'a str,
        receipt: &'a str,
        visibility_ms: u64,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<(Result<u64, ReceiptError>, Events)>> {
        async move {
            let Some(seq) = receipt_seq(receipt) else {
                return Ok((Err(ReceiptError::Malformed), Events::default()));
            };
            let (expired, dead, code, deadline): (i64, i64, i64, u64) = self
                .run(&self.scripts.extend, queue, now_ms, |inv| {
                    inv.arg(crate::delivery::format_id(seq))
                        .arg(receipt)
                        .arg(visibility_ms);
                })
                .await?;
            Ok((receipt_code(code).map(|()| deadline), events(expired, dead)))
        }
        .boxed()
    }

    fn stats<'a>(
        &'a self,
        queue: &'a str,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<(QueueStats, Events)>> {
        async move {
            let (expired, dead, ready, delayed, in_flight, dead_lettered, expired_total, bytes): (
                i64,
                i64,
                u64,
                u64,
                u64,
                u64,
                u64,
                u64,
            ) = self.run(&self.scripts.stats, queue, now_ms, |_| {}).await?;
            Ok((
                QueueStats {
                    ready,
                    delayed,
                    in_flight,
                    dead_lettered,
                    expired_total,
                    bytes,
                },
                events(expired, dead),
            ))
        }
        .boxed()
    }

    fn dead_letters<'a>(
        &'a self,
        queue: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<DeadLetter>>> {
        async move {
            let rows: Vec<(String, String, u32, u64, u64)> = self
                .run(&self.scripts.dead_letters, queue, 0, |inv| {
                    inv.arg(limit);
                })
                .await?;
            Ok(rows
                .into_iter()
                .map(
                    |(id, payload, attempts, enqueued_at_ms, dead_lettered_at_ms)| DeadLetter {
                        id,
                        payload,
                        attempts,
                        enqueued_at_ms,
                        dead_lettered_at_ms,
                    },
                )
                .collect())
        }
        .boxed()
    }

    fn redrive<'a>(
        &'a self,
        queue: &'a str,
        ids: Option<Vec<Seq>>,
        limit: usize,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Vec<String>>> {
        async move {
            self.run(&self.scripts.redrive, queue, now_ms, |inv| {
                inv.arg(limit);
                for seq in ids.iter().flatten() {
                    inv.arg(crate::delivery::format_id(*seq));
                }
            })
            .await
        }
        .boxed()
    }

    fn set_max_attempts<'a>(
        &'a self,
        queue: &'a str,
        max_attempts: Option<u32>,
    ) -> BoxFuture<'a, Result<()>> {
        async move {
            let fut = async {
                let mut conn = self.conn().await?;
                let key = format!("{}meta", prefix(queue));
                let mut pipe = redis::pipe();
                pipe.atomic();
                match max_attempts {
                    Some(n) => pipe.hset(&key, "max_attempts", n).ignore(),
                    None => pipe.hdel(&key, "max_attempts").ignore(),
                };
                pipe.sadd(QUEUES_KEY, queue).ignore();
                pipe.query_async::<()>(&mut conn).await?;
                Ok(())
            };
            tokio::time::timeout(REDIS_TIMEOUT, fut)
                .await
                .unwrap_or_else(|_| Err(Error::Unavailable("redis: timed out".into())))
        }
        .boxed()
    }

    fn queues(&self) -> BoxFuture<'_, Result<Vec<String>>> {
        async move {
            let fut = async {
                let mut conn = self.conn().await?;
                let mut names: Vec<String> = redis::cmd("SMEMBERS")
                    .arg(QUEUES_KEY)
                    .query_async(&mut conn)
                    .await?;
                names.sort();
                Ok(names)
            };
            tokio::time::timeout(REDIS_TIMEOUT, fut)
                .await
                .unwrap_or_else(|_| Err(Error::Unavailable("redis: timed out".into())))
        }
        .boxed()
    }

    /// `SSCAN` over the index set in steps of `SCAN_STEP` names, keeping only
    /// the page's window: memory bounded by the page, not the queues.
    fn queue_page<'a>(
        &'a self,
        page: &'a api::limits::Page,
        keep: &'a (dyn Fn(&str) -> bool + Send + Sync),
    ) -> BoxFuture<'a, Result<(Vec<String>, bool)>> {
        async move {
            let fut = async {
                let mut conn = self.conn().await?;
                let mut window = super::PageWindow::new(page);
                let mut cursor: u64 = 0;
                for _ in 0..MAX_SCAN_STEPS {
                    let (next, names): (u64, Vec<String>) = redis::cmd("SSCAN")
                        .arg(QUEUES_KEY)
                        .arg(cursor)
                        .arg("COUNT")
                        .arg(SCAN_STEP)
                        .query_async(&mut conn)
                        .await?;
                    for name in names {
                        window.offer(name, keep);
                    }
                    cursor = next;
                    if cursor == 0 {
                        break;
                    }
                }
                Ok(window.finish())
            };
            tokio::time::timeout(LIST_TIMEOUT, fut)
                .await
                .unwrap_or_else(|_| Err(Error::Unavailable("redis: listing timed out".into())))
        }
        .boxed()
    }

    fn ping(&self) -> BoxFuture<'_, Result<()>> {
        async move {
            let fut = async {
                let mut conn = self.conn().await?;
                redis::cmd("PING").query_async::<()>(&mut conn).await?;
                Ok(())
            };
            tokio::time::timeout(Duration::from_secs(1), fut)
                .await
                .unwrap_or_else(|_| Err(Error::Unavailable("redis: no answer to PING".into())))
        }
        .boxed()
    }

    fn node_usage(&self) -> Option<Usage> {
        None
    }
}
