//! Store tests that are not delivery rules: the rules themselves are the
//! goldenscripts in `testscripts/`, run against both backends by
//! `delivery.rs`. Here: the largest payload on both backends, the embedded
//! store's reopen and group commit, Redis down, two owners on one Redis,
//! limits under concurrent enqueues (and the per-node limits of the
//! embedded store), and Redis byte counts of queues stored before them. Time is an argument of every store call (`now_ms`), never slept.

mod support;

use queue_service::delivery::NewMessage;
use queue_service::limit::{Limits, StoreLimits};
use queue_service::store::QueueStore;

/// An arbitrary fixed start time.
const T0: u64 = 1_700_000_000_000;

fn msg(p: &str) -> NewMessage {
    NewMessage {
        payload: p.to_string(),
        delay_ms: 0,
        ttl_ms: None,
    }
}

fn msgs(n: usize) -> Vec<NewMessage> {
    (0..n).map(|i| msg(&i.to_string())).collect()
}

async fn stats(s: &dyn QueueStore, q: &str, now: u64) -> (u64, u64, u64, u64, u64) {
    let (st, _) = s.stats(q, now).await.unwrap();
    (
        st.ready,
        st.delayed,
        st.in_flight,
        st.dead_lettered,
        st.expired_total,
    )
}

/// Payload text comes back byte for byte, up to the largest payload (the
/// scripts in `testscripts/` cover short ones; this one is too long for a
/// script).
async fn largest_payload_text_is_kept_exactly(s: &dyn QueueStore) {
    let big = format!("\"{}\"", "y".repeat(256 * 1024 - 2));
    s.enqueue("q", vec![msg(&big)], T0)
        .await
        .unwrap()
        .0
        .unwrap();
    let got = s.dequeue("q", 10, 1000, T0).await.unwrap().deliveries;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].payload, big);
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test]
                async fn $name() {
                    let t = crate::support::embedded_store(queue_service::delivery::DEFAULT_MAX_ATTEMPTS);
                    super::$name(&*t.store).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $name() {
                    let t = crate::support::redis_store(queue_service::delivery::DEFAULT_MAX_ATTEMPTS);
                    super::$name(&*t.store).await;
                }
            )*
        }
    };
}

conformance!(largest_payload_text_is_kept_exactly);

/// The embedded store comes back from disk with every state intact,
/// including live receipts.
#[tokio::test]
async fn embedded_state_survives_reopen() {
    use queue_service::store::embedded::EmbeddedStore;
    let dir = tempfile::tempdir().unwrap();
    let receipt;
    {
        let s = EmbeddedStore::open(dir.path(), 5, StoreLimits::default()).unwrap();
        s.set_max_attempts("q", Some(2)).await.unwrap();
        s.enqueue("q", msgs(3), T0).await.unwrap().0.unwrap();
        receipt = s
            .dequeue("q", 1, 1000, T0)
            .await
            .unwrap()
            .deliveries
            .remove(0)
            .receipt;
    }
    let s = EmbeddedStore::open(dir.path(), 5, StoreLimits::default()).unwrap();
    assert_eq!(stats(&s, "q", T0).await, (2, 0, 1, 0, 0));
    let (res, _) = s.ack("q", vec![receipt], T0 + 1).await.unwrap();
    assert_eq!(res, vec![Ok(())]);
    let ids = s.enqueue("q", msgs(1), T0).await.unwrap().0.unwrap();
    assert_eq!(ids, vec![queue_service::delivery::format_id(4)]);
    // max_attempts 2 survived too: two deliveries each, then dead.
    assert_eq!(
        s.dequeue("q", 10, 10, T0 + 2)
            .await
            .unwrap()
            .deliveries
            .len(),
        3
    );
    let second = s.dequeue("q", 10, 10, T0 + 12).await.unwrap().deliveries;
    assert!(second.iter().all(|d| d.attempts == 2), "{second:?}");
    assert!(s
        .dequeue("q", 10, 10, T0 + 22)
        .await
        .unwrap()
        .deliveries
        .is_empty());
    assert_eq!(s.dead_letters("q", 10).await.unwrap().len(), 3);
}

/// Concurrent writers share commits and each still gets its own answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_group_commit_under_concurrency() {
    use queue_service::store::embedded::EmbeddedStore;
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Arc::new(EmbeddedStore::open(dir.path(), 5, StoreLimits::default()).unwrap());
        let mut tasks = Vec::new();
        for t in 0..16 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..20 {
                    s.enqueue("q", vec![msg(&format!("{t}-{i}"))], T0)
                        .await
                        .unwrap()
                        .0
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    }
    let s = EmbeddedStore::open(dir.path(), 5, StoreLimits::default()).unwrap();
    assert_eq!(stats(&s, "q", T0).await, (320, 0, 0, 0, 0));
}

/// Redis down: every call fails with `Unavailable`, nothing is claimed.
#[tokio::test]
async fn redis_down_is_unavailable() {
    use queue_service::error::Error;
    use queue_service::store::redis::RedisStore;
    let mut t = support::redis_store(5);
    t.store.enqueue("q", msgs(1), T0).await.unwrap().0.unwrap();
    t.redis.as_mut().unwrap().kill();
    let err = t.store.enqueue("q", msgs(1), T0).await.unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    assert!(t.store.ping().await.is_err());
    let port = support::free_port();
    let never = RedisStore::new(
        &format!("redis://127.0.0.1:{port}/"),
        5,
        Limits::QUEUE_DEFAULT,
    )
    .unwrap();
    assert!(matches!(never.ping().await, Err(Error::Unavailable(_))));
    assert!(matches!(
        never.dequeue("q", 1, 100, T0).await,
        Err(Error::Unavailable(_))
    ));
}

/// Two nodes that both think they own a queue (two stores on one Redis),
/// consuming concurrently: every message is delivered exactly once (the
/// visibility outlasts the test) and acked exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_two_owners_never_double_deliver_or_double_ack() {
    use queue_service::store::redis::RedisStore;
    use std::collections::HashSet;
    use std::sync::Arc;
    let redis = support::RedisServer::start();
    let a: Arc<dyn QueueStore> =
        Arc::new(RedisStore::new(&redis.url(), 5, Limits::QUEUE_DEFAULT).unwrap());
    let b: Arc<dyn QueueStore> =
        Arc::new(RedisStore::new(&redis.url(), 5, Limits::QUEUE_DEFAULT).unwrap());
    let mut all = HashSet::new();
    for _ in 0..4 {
        all.extend(a.enqueue("shared", msgs(50), T0).await.unwrap().0.unwrap());
    }
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..200 {
                let ds = s
                    .dequeue("shared", 7, 60_000, T0 + 1)
                    .await
                    .unwrap()
                    .deliveries;
                if ds.is_empty() {
                    break;
                }
                let receipts = ds.iter().map(|d| d.receipt.clone()).collect();
                let (res, _) = s.ack("shared", receipts, T0 + 2).await.unwrap();
                assert!(res.iter().all(|r| r.is_ok()), "{res:?}");
                got.extend(ds.into_iter().map(|d| d.id));
            }
            got
        }));
    }
    let mut seen = Vec::new();
    for t in tasks {
        seen.extend(t.await.unwrap());
    }
    let unique: HashSet<String> = seen.iter().cloned().collect();
    assert_eq!(seen.len(), unique.len(), "a message was delivered twice");
    assert_eq!(unique, all);
    assert_eq!(stats(&*b, "shared", T0 + 3).await, (0, 0, 0, 0, 0));
}

/// Sixteen producers race to fill a queue limited to 50 messages: exactly
/// 50 are stored and every other enqueue is refused whole. Against one
/// store, and against two Redis stores on one Redis (two nodes that both
/// think they own the queue), where only the script's atomic check holds
/// the limit.
async fn racing_producers_store_exactly_the_limit(stores: Vec<std::sync::Arc<dyn QueueStore>>) {
    let mut tasks = Vec::new();
    for t in 0..16 {
        let s = stores[t % stores.len()].clone();
        tasks.push(tokio::spawn(async move {
            let (mut stored, mut refused) = (0u64, 0u64);
            for i in 0..10 {
                let (res, _) = s
                    .enqueue("q", vec![msg(&format!("\"{t}-{i}\"")); 2], T0)
                    .await
                    .unwrap();
                match res {
                    Ok(ids) => stored += ids.len() as u64,
                    Err(full) => {
                        assert_eq!(full.limit_name(), "queue_messages", "{full:?}");
                        assert!(full.used + full.adding > 50, "{full:?}");
                        refused += 1;
                    }
                }
            }
            (stored, refused)
        }));
    }
    let (mut stored, mut refused) = (0, 0);
    for t in tasks {
        let (s, r) = t.await.unwrap();
        stored += s;
        refused += r;
    }
    // Batches of 2 into room for 50: 25 batches fit, the other 135 not.
    assert_eq!((stored, refused), (50, 135));
    assert_eq!(stats(&*stores[0], "q", T0).await, (50, 0, 0, 0, 0));
}

const FIFTY: Limits = Limits {
    max_messages: 50,
    max_bytes: 1 << 20,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_racing_producers_store_exactly_the_limit() {
    use queue_service::store::embedded::EmbeddedStore;
    let dir = tempfile::tempdir().unwrap();
    let limits = StoreLimits {
        queue: FIFTY,
        ..StoreLimits::default()
    };
    let s = EmbeddedStore::open(dir.path(), 5, limits).unwrap();
    racing_producers_store_exactly_the_limit(vec![std::sync::Arc::new(s)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_racing_producers_on_two_owners_store_exactly_the_limit() {
    use queue_service::store::redis::RedisStore;
    let redis = support::RedisServer::start();
    let two: Vec<std::sync::Arc<dyn QueueStore>> = (0..2)
        .map(|_| {
            std::sync::Arc::new(RedisStore::new(&redis.url(), 5, FIFTY).unwrap())
                as std::sync::Arc<dyn QueueStore>
        })
        .collect();
    racing_producers_store_exactly_the_limit(two).await;
}

/// The embedded store's per-node limits count every queue it holds, are
/// checked before the per-queue ones, free up on ack, and hold again after
/// a reopen (the counts are rebuilt from disk).
#[tokio::test]
async fn embedded_node_limits_span_queues_and_survive_reopen() {
    use queue_service::store::embedded::EmbeddedStore;
    let dir = tempfile::tempdir().unwrap();
    let limits = StoreLimits {
        queue: Limits {
            max_messages: 3,
            max_bytes: 1000,
        },
        node: Limits {
            max_messages: 4,
            max_bytes: 8,
        },
    };
    let refused = |res: Result<Vec<String>, queue_service::limit::Full>| {
        let full = res.expect_err("enqueue should be refused");
        (full.limit_name(), full.limit, full.used, full.adding)
    };
    {
        let s = EmbeddedStore::open(dir.path(), 5, limits).unwrap();
        s.enqueue("a", msgs(3), T0).await.unwrap().0.unwrap();
        // "a" is full by its own limit, "b" fits one more on the node.
        let (res, _) = s.enqueue("a", msgs(1), T0).await.unwrap();
        assert_eq!(refused(res), ("queue_messages", 3, 3, 1));
        s.enqueue("b", msgs(1), T0).await.unwrap().0.unwrap();
        let (res, _) = s.enqueue("c", msgs(1), T0).await.unwrap();
        assert_eq!(refused(res), ("node_messages", 4, 4, 1));
        // A refused enqueue to a new queue leaves no queue behind.
        assert_eq!(s.queues().await.unwrap(), vec!["a", "b"]);
        let d = s.dequeue("a", 1, 1000, T0).await.unwrap().deliveries;
        s.ack("a", vec![d[0].receipt.clone()], T0).await.unwrap();
        assert_eq!(
            s.node_usage(),
            Some(queue_service::limit::Usage {
                messages: 3,
                bytes: 3
            })
        );
        // Room for one message, but not for its bytes.
        let (res, _) = s.enqueue("c", vec![msg("123456")], T0).await.unwrap();
        assert_eq!(refused(res), ("node_bytes", 8, 3, 6));
        s.enqueue("c", vec![msg("12345")], T0)
            .await
            .unwrap()
            .0
            .unwrap();
    }
    let s = EmbeddedStore::open(dir.path(), 5, limits).unwrap();
    assert_eq!(
        s.node_usage(),
        Some(queue_service::limit::Usage {
            messages: 4,
            bytes: 8
        })
    );
    let (res, _) = s.enqueue("b", msgs(1), T0).await.unwrap();
    assert_eq!(refused(res), ("node_messages", 4, 4, 1));
}

/// A queue written before Redis kept a byte count (no `bytes` in its
/// meta) has it counted once by the next script that touches it.
#[tokio::test]
async fn redis_counts_the_bytes_of_queues_stored_before_the_count() {
    let t = support::redis_store(5);
    t.store
        .enqueue("old", vec![msg("\"abc\""), msg("12")], T0)
        .await
        .unwrap()
        .0
        .unwrap();
    let client = ::redis::Client::open(t.redis.as_ref().unwrap().url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let removed: i64 = ::redis::cmd("HDEL")
        .arg("dsq:{old}:meta")
        .arg("bytes")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(removed, 1, "the meta hash should have had a byte count");
    let (st, _) = t.store.stats("old", T0).await.unwrap();
    assert_eq!(st.bytes, 7);
    let d = t
        .store
        .dequeue("old", 1, 1000, T0)
        .await
        .unwrap()
        .deliveries;
    t.store
        .ack("old", vec![d[0].receipt.clone()], T0)
        .await
        .unwrap();
    assert_eq!(t.store.stats("old", T0).await.unwrap().0.bytes, 2);
}

/// Redis at `maxmemory` (noeviction): the enqueue script is refused before
/// it starts (503, nothing stored), while dequeue, ack, nack, extend,
/// redrive and stats keep working, so consumers can drain a full Redis.
#[tokio::test]
async fn redis_at_maxmemory_refuses_enqueue_whole_and_keeps_draining() {
    use queue_service::error::Error;
    let t = support::redis_store(5);
    let s = &*t.store;
    let big = format!("\"{}\"", "m".repeat(1000));
    for _ in 0..3 {
        s.enqueue("q", vec![msg(&big); 10], T0)
            .await
            .unwrap()
            .0
            .unwrap();
    }
    let first = s.dequeue("q", 3, 60_000, T0).await.unwrap().deliveries;
    assert_eq!(first.len(), 3);
    let client = ::redis::Client::open(t.redis.as_ref().unwrap().url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    for (k, v) in [("maxmemory-policy", "noeviction"), ("maxmemory", "1")] {
        ::redis::cmd("CONFIG")
            .arg("SET")
            .arg(k)
            .arg(v)
            .query_async::<()>(&mut conn)
            .await
            .unwrap();
    }
    let err = s.enqueue("q", msgs(1), T0 + 1).await.unwrap_err();
    assert!(
        matches!(&err, Error::Unavailable(m) if m.contains("OOM")),
        "{err:?}"
    );
    let (acked, _) = s
        .ack("q", vec![first[0].receipt.clone()], T0 + 1)
        .await
        .unwrap();
    assert_eq!(acked, vec![Ok(())]);
    let (nacked, _) = s.nack("q", &first[1].receipt, 0, T0 + 1).await.unwrap();
    assert!(nacked.is_ok(), "{nacked:?}");
    let (extended, _) = s
        .extend("q", &first[2].receipt, 1000, T0 + 1)
        .await
        .unwrap();
    assert!(extended.is_ok(), "{extended:?}");
    let more = s.dequeue("q", 5, 60_000, T0 + 2).await.unwrap().deliveries;
    assert_eq!(more.len(), 5);
    s.redrive("q", None, 10, T0 + 2).await.unwrap();
    let (st, _) = s.stats("q", T0 + 2).await.unwrap();
    // 30 stored, 1 acked, the refused enqueue left nothing.
    assert_eq!((st.messages(), st.in_flight), (29, 6), "{st:?}");
    assert_eq!(st.bytes, 29 * big.len() as u64);
}
