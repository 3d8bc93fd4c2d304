//! Store tests that are not delivery rules: the rules themselves are the
//! goldenscripts in `testscripts/`, run against both backends by
//! `delivery.rs`. Here: the largest payload on both backends, the embedded
//! store's reopen and group commit, Redis down, and two owners on one
//! Redis. Time is an argument of every store call (`now_ms`), never slept.

mod support;

use queue_service::delivery::NewMessage;
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
    s.enqueue("q", vec![msg(&big)], T0).await.unwrap();
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
        let s = EmbeddedStore::open(dir.path(), 5).unwrap();
        s.set_max_attempts("q", Some(2)).await.unwrap();
        s.enqueue("q", msgs(3), T0).await.unwrap();
        receipt = s
            .dequeue("q", 1, 1000, T0)
            .await
            .unwrap()
            .deliveries
            .remove(0)
            .receipt;
    }
    let s = EmbeddedStore::open(dir.path(), 5).unwrap();
    assert_eq!(stats(&s, "q", T0).await, (2, 0, 1, 0, 0));
    let (res, _) = s.ack("q", vec![receipt], T0 + 1).await.unwrap();
    assert_eq!(res, vec![Ok(())]);
    let ids = s.enqueue("q", msgs(1), T0).await.unwrap();
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
        let s = Arc::new(EmbeddedStore::open(dir.path(), 5).unwrap());
        let mut tasks = Vec::new();
        for t in 0..16 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..20 {
                    s.enqueue("q", vec![msg(&format!("{t}-{i}"))], T0)
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    }
    let s = EmbeddedStore::open(dir.path(), 5).unwrap();
    assert_eq!(stats(&s, "q", T0).await, (320, 0, 0, 0, 0));
}

/// Redis down: every call fails with `Unavailable`, nothing is claimed.
#[tokio::test]
async fn redis_down_is_unavailable() {
    use queue_service::error::Error;
    use queue_service::store::redis::RedisStore;
    let mut t = support::redis_store(5);
    t.store.enqueue("q", msgs(1), T0).await.unwrap();
    t.redis.as_mut().unwrap().kill();
    let err = t.store.enqueue("q", msgs(1), T0).await.unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    assert!(t.store.ping().await.is_err());
    let port = support::free_port();
    let never = RedisStore::new(&format!("redis://127.0.0.1:{port}/"), 5).unwrap();
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
    let a: Arc<dyn QueueStore> = Arc::new(RedisStore::new(&redis.url(), 5).unwrap());
    let b: Arc<dyn QueueStore> = Arc::new(RedisStore::new(&redis.url(), 5).unwrap());
    let mut all = HashSet::new();
    for _ in 0..4 {
        all.extend(a.enqueue("shared", msgs(50), T0).await.unwrap());
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
