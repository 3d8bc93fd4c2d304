//! One conformance suite, run against both backends (embedded redb and a
//! throwaway redis-server): every delivery rule, driven by an explicit
//! clock (`now_ms` is an argument of every store call), so timeouts are
//! exercised without sleeping.

mod support;

use queue_service::delivery::{
    parse_id, NackOutcome, NewMessage, ReceiptError, DEFAULT_MAX_ATTEMPTS,
};
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

async fn enqueue_dequeue_in_order_with_stats(s: &dyn QueueStore) {
    let ids = s.enqueue("q", msgs(3), T0).await.unwrap();
    assert_eq!(ids.len(), 3);
    assert!(
        ids[0] < ids[1] && ids[1] < ids[2],
        "ids sort in enqueue order: {ids:?}"
    );
    assert_eq!(stats(s, "q", T0).await, (3, 0, 0, 0, 0));
    let got = s.dequeue("q", 2, 1000, T0).await.unwrap();
    let ds = got.deliveries;
    assert_eq!(
        ds.iter().map(|d| d.id.clone()).collect::<Vec<_>>(),
        ids[..2].to_vec()
    );
    assert_eq!(ds[0].payload, "0");
    assert!(ds.iter().all(|d| d.attempts == 1 && d.enqueued_at_ms == T0));
    assert_ne!(ds[0].receipt, ds[1].receipt);
    assert_eq!(stats(s, "q", T0).await, (1, 0, 2, 0, 0));
    let empty = s.dequeue("other", 5, 1000, T0).await.unwrap();
    assert!(empty.deliveries.is_empty());
    assert_eq!(empty.next_wake_ms, None);
}

async fn payload_text_is_kept_exactly(s: &dyn QueueStore) {
    let text = r#"{"b": [1, 2.50, "x\u00e9"], "a": null}"#;
    s.enqueue("q", vec![msg(text)], T0).await.unwrap();
    let big = format!("\"{}\"", "y".repeat(256 * 1024 - 2));
    s.enqueue("q", vec![msg(&big)], T0).await.unwrap();
    let got = s.dequeue("q", 10, 1000, T0).await.unwrap().deliveries;
    assert_eq!(got[0].payload, text);
    assert_eq!(got[1].payload, big);
}

async fn ack_is_final_and_twice_is_not_found(s: &dyn QueueStore) {
    s.enqueue("q", msgs(1), T0).await.unwrap();
    let d = s
        .dequeue("q", 1, 1000, T0)
        .await
        .unwrap()
        .deliveries
        .remove(0);
    let (res, _) = s.ack("q", vec![d.receipt.clone()], T0 + 1).await.unwrap();
    assert_eq!(res, vec![Ok(())]);
    let (res, _) = s.ack("q", vec![d.receipt.clone()], T0 + 2).await.unwrap();
    assert_eq!(res, vec![Err(ReceiptError::NotFound)]);
    // An acked message never comes back, however long we wait.
    assert!(s
        .dequeue("q", 1, 1000, T0 + 100_000)
        .await
        .unwrap()
        .deliveries
        .is_empty());
    assert_eq!(stats(s, "q", T0 + 100_000).await, (0, 0, 0, 0, 0));
}

async fn batch_ack_answers_per_receipt(s: &dyn QueueStore) {
    s.enqueue("q", msgs(2), T0).await.unwrap();
    let ds = s.dequeue("q", 2, 1000, T0).await.unwrap().deliveries;
    let receipts = vec![
        ds[0].receipt.clone(),
        "garbage".to_string(),
        ds[1].receipt.clone(),
        ds[0].receipt.clone(),
    ];
    let (res, _) = s.ack("q", receipts, T0 + 1).await.unwrap();
    assert_eq!(
        res,
        vec![
            Ok(()),
            Err(ReceiptError::Malformed),
            Ok(()),
            Err(ReceiptError::NotFound)
        ]
    );
}

async fn crashed_consumer_gets_redelivery_and_stale_receipt_is_refused(s: &dyn QueueStore) {
    s.enqueue("q", msgs(1), T0).await.unwrap();
    let first = s
        .dequeue("q", 1, 500, T0)
        .await
        .unwrap()
        .deliveries
        .remove(0);
    // The consumer dies; nobody else sees the message before the deadline.
    let early = s.dequeue("q", 1, 500, T0 + 499).await.unwrap();
    assert!(early.deliveries.is_empty());
    assert_eq!(early.next_wake_ms, Some(T0 + 500));
    let second = s
        .dequeue("q", 1, 500, T0 + 500)
        .await
        .unwrap()
        .deliveries
        .remove(0);
    assert_eq!(second.id, first.id);
    assert_eq!(second.attempts, 2);
    assert_ne!(second.receipt, first.receipt);
    let (res, _) = s
        .ack("q", vec![first.receipt.clone()], T0 + 501)
        .await
        .unwrap();
    assert_eq!(res, vec![Err(ReceiptError::Stale)]);
    let (res, _) = s.nack("q", &first.receipt, 0, T0 + 501).await.unwrap();
    assert_eq!(res, Err(ReceiptError::Stale));
    let (res, _) = s.extend("q", &first.receipt, 100, T0 + 501).await.unwrap();
    assert_eq!(res, Err(ReceiptError::Stale));
    let (res, _) = s.ack("q", vec![second.receipt], T0 + 502).await.unwrap();
    assert_eq!(res, vec![Ok(())]);
}

async fn receipt_is_stale_once_visibility_ended(s: &dyn QueueStore) {
    s.enqueue("q", msgs(1), T0).await.unwrap();
    let d = s
        .dequeue("q", 1, 100, T0)
        .await
        .unwrap()
        .deliveries
        .remove(0);
    let (res, _) = s.ack("q", vec![d.receipt], T0 + 100).await.unwrap();
    assert_eq!(res, vec![Err(ReceiptError::Stale)]);
    assert_eq!(stats(s, "q", T0 + 100).await, (1, 0, 0, 0, 0));
}

async fn nack_requeues_after_delay(s: &dyn QueueStore) {
    s.enqueue("q", msgs(1), T0).await.unwrap();
    let d = s
        .dequeue("q", 1, 10_000, T0)
        .await
        .unwrap()
        .deliveries
        .remove(0);
    let (res, _) = s.nack("q", &d.receipt, 300, T0 + 10).await.unwrap();
    assert_eq!(res, Ok(NackOutcome::Requeued));
    assert_eq!(stats(s, "q", T0 + 10).await, (0, 1, 0, 0, 0));
    let early = s.dequeue("q", 1, 10_000, T0 + 309).await.unwrap();
    assert!(early.deliveries.is_empty());
    assert_eq!(early.next_wake_ms, Some(T0 + 310));
    let again = s
        .dequeue("q", 1, 10_000, T0 + 310)
        .await
        .unwrap()
        .deliveries
        .remove(0);
    assert_eq!((again.id, again.attempts), (d.id, 2));
    let (res, _) = s.nack("q", &d.receipt, 0, T0 + 311).await.unwrap();
    assert_eq!(res, Err(ReceiptError::Stale));
}

async fn extend_moves_the_deadline(s: &dyn QueueStore) {
    s.enqueue("q", msgs(1), T0).await.unwrap();
    let d = s
        .dequeue("q", 1, 100, T0)
        .await
        .unwrap()
        .deliveries
        .remove(0);
    let (res, _) = s.extend("q", &d.receipt, 1000, T0 + 90).await.unwrap();
    assert_eq!(res, Ok(T0 + 1090));
    assert!(s
        .dequeue("q", 1, 100, T0 + 1089)
        .await
        .unwrap()
        .deliveries
        .is_empty());
    assert_eq!(stats(s, "q", T0 + 1089).await, (0, 0, 1, 0, 0));
    let (res, _) = s.ack("q", vec![d.receipt], T0 + 1089).await.unwrap();
    assert_eq!(res, vec![Ok(())]);
}

async fn dead_letters_after_default_max_attempts_then_redrive(s: &dyn QueueStore) {
    let ids = s.enqueue("q", vec![msg("\"poison\"")], T0).await.unwrap();
    let mut now = T0;
    for attempt in 1..=DEFAULT_MAX_ATTEMPTS {
        let got = s.dequeue("q", 1, 100, now).await.unwrap();
        assert_eq!(got.deliveries[0].attempts, attempt);
        now += 100;
    }
    let last = s.dequeue("q", 1, 100, now).await.unwrap();
    assert!(last.deliveries.is_empty());
    assert_eq!(last.events.dead_lettered, 1);
    assert_eq!(stats(s, "q", now).await, (0, 0, 0, 1, 0));
    let dead = s.dead_letters("q", 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, ids[0]);
    assert_eq!(dead[0].payload, "\"poison\"");
    assert_eq!(dead[0].attempts, DEFAULT_MAX_ATTEMPTS);
    assert_eq!(dead[0].dead_lettered_at_ms, now);
    let redriven = s.redrive("q", None, 10, now + 1).await.unwrap();
    assert_eq!(redriven, ids);
    assert_eq!(stats(s, "q", now + 1).await, (1, 0, 0, 0, 0));
    let d = s
        .dequeue("q", 1, 100, now + 1)
        .await
        .unwrap()
        .deliveries
        .remove(0);
    assert_eq!((d.id.as_str(), d.attempts), (ids[0].as_str(), 1));
}

async fn per_queue_max_attempts_and_nack_dead_letters(s: &dyn QueueStore) {
    s.set_max_attempts("strict", Some(1)).await.unwrap();
    s.enqueue("strict", msgs(2), T0).await.unwrap();
    s.enqueue("lax", msgs(1), T0).await.unwrap();
    let d = s
        .dequeue("strict", 1, 100, T0)
        .await
        .unwrap()
        .deliveries
        .remove(0);
    let (res, ev) = s.nack("strict", &d.receipt, 0, T0 + 1).await.unwrap();
    assert_eq!(res, Ok(NackOutcome::DeadLettered));
    assert_eq!(ev.dead_lettered, 1);
    s.dequeue("strict", 1, 100, T0 + 1).await.unwrap();
    assert!(s
        .dequeue("strict", 1, 100, T0 + 101)
        .await
        .unwrap()
        .deliveries
        .is_empty());
    assert_eq!(stats(s, "strict", T0 + 101).await, (0, 0, 0, 2, 0));
    // Other queues keep the default.
    let d = s
        .dequeue("lax", 1, 100, T0)
        .await
        .unwrap()
        .deliveries
        .remove(0);
    let (res, _) = s.nack("lax", &d.receipt, 0, T0 + 1).await.unwrap();
    assert_eq!(res, Ok(NackOutcome::Requeued));
    // Back to the default.
    s.set_max_attempts("strict", None).await.unwrap();
    s.redrive("strict", None, 10, T0 + 200).await.unwrap();
    let d = s
        .dequeue("strict", 1, 100, T0 + 200)
        .await
        .unwrap()
        .deliveries
        .remove(0);
    let (res, _) = s.nack("strict", &d.receipt, 0, T0 + 201).await.unwrap();
    assert_eq!(res, Ok(NackOutcome::Requeued));
}

async fn redrive_by_id_touches_only_dead_letters(s: &dyn QueueStore) {
    s.set_max_attempts("q", Some(1)).await.unwrap();
    let ids = s.enqueue("q", msgs(3), T0).await.unwrap();
    let ds = s.dequeue("q", 2, 100, T0).await.unwrap().deliveries;
    assert_eq!(ds.len(), 2);
    // Both dead after their one attempt.
    assert_eq!(stats(s, "q", T0 + 100).await, (1, 0, 0, 2, 0));
    let want: Vec<u64> = [&ids[1], &ids[2]]
        .iter()
        .map(|i| parse_id(i).unwrap())
        .collect();
    let redriven = s.redrive("q", Some(want), 10, T0 + 101).await.unwrap();
    assert_eq!(redriven, vec![ids[1].clone()]);
    assert_eq!(stats(s, "q", T0 + 101).await, (2, 0, 0, 1, 0));
    assert_eq!(s.dead_letters("q", 10).await.unwrap()[0].id, ids[0]);
}

async fn delay_hides_messages_until_due(s: &dyn QueueStore) {
    s.enqueue(
        "q",
        vec![NewMessage {
            payload: "1".into(),
            delay_ms: 1000,
            ttl_ms: None,
        }],
        T0,
    )
    .await
    .unwrap();
    assert_eq!(stats(s, "q", T0).await, (0, 1, 0, 0, 0));
    let early = s.dequeue("q", 1, 100, T0 + 999).await.unwrap();
    assert!(early.deliveries.is_empty());
    assert_eq!(early.next_wake_ms, Some(T0 + 1000));
    assert_eq!(
        s.dequeue("q", 1, 100, T0 + 1000)
            .await
            .unwrap()
            .deliveries
            .len(),
        1
    );
}

async fn ttl_drops_waiting_messages_and_counts_them(s: &dyn QueueStore) {
    let ttl = |p: &str, t| NewMessage {
        payload: p.into(),
        delay_ms: 0,
        ttl_ms: Some(t),
    };
    s.enqueue("q", vec![ttl("1", 100), ttl("2", 10_000), msg("3")], T0)
        .await
        .unwrap();
    assert_eq!(stats(s, "q", T0 + 99).await, (3, 0, 0, 0, 0));
    let (st, ev) = s.stats("q", T0 + 100).await.unwrap();
    assert_eq!((st.ready, st.expired_total, ev.expired), (2, 1, 1));
    let got = s.dequeue("q", 10, 100, T0 + 100).await.unwrap().deliveries;
    assert_eq!(
        got.iter().map(|d| d.payload.as_str()).collect::<Vec<_>>(),
        vec!["2", "3"]
    );
}

async fn ttl_passed_during_delivery_drops_instead_of_redelivering(s: &dyn QueueStore) {
    s.enqueue(
        "q",
        vec![NewMessage {
            payload: "1".into(),
            delay_ms: 0,
            ttl_ms: Some(50),
        }],
        T0,
    )
    .await
    .unwrap();
    let d = s
        .dequeue("q", 1, 100, T0)
        .await
        .unwrap()
        .deliveries
        .remove(0);
    // The live delivery may still be worked on and acked or extended.
    let (res, _) = s.extend("q", &d.receipt, 100, T0 + 60).await.unwrap();
    assert_eq!(res, Ok(T0 + 160));
    let after = s.dequeue("q", 1, 100, T0 + 160).await.unwrap();
    assert!(after.deliveries.is_empty());
    assert_eq!(after.events.expired, 1);
    assert_eq!(stats(s, "q", T0 + 160).await, (0, 0, 0, 0, 1));
}

async fn dequeue_takes_at_most_max_and_timed_out_batch_returns(s: &dyn QueueStore) {
    for _ in 0..3 {
        s.enqueue("q", msgs(100), T0).await.unwrap();
    }
    let got = s.dequeue("q", 100, 100, T0).await.unwrap().deliveries;
    assert_eq!(got.len(), 100);
    assert_eq!(stats(s, "q", T0).await, (200, 0, 100, 0, 0));
    let mut seen = 0;
    for now in (T0 + 100)..(T0 + 110) {
        let got = s.dequeue("q", 100, 100, now).await.unwrap().deliveries;
        if got.is_empty() {
            break;
        }
        for d in &got {
            let (res, _) = s.ack("q", vec![d.receipt.clone()], now).await.unwrap();
            assert_eq!(res, vec![Ok(())]);
        }
        seen += got.len();
    }
    // The 100 timed-out deliveries came back along with the 200 others.
    assert_eq!(seen, 300);
}

async fn queues_are_isolated_and_listed(s: &dyn QueueStore) {
    s.enqueue("a", msgs(1), T0).await.unwrap();
    s.enqueue("b", msgs(2), T0).await.unwrap();
    let a = s.dequeue("a", 10, 100, T0).await.unwrap().deliveries;
    assert_eq!(a.len(), 1);
    // A receipt of queue a means nothing on queue b.
    let (res, _) = s.ack("b", vec![a[0].receipt.clone()], T0).await.unwrap();
    assert_eq!(res, vec![Err(ReceiptError::Stale)]);
    let names = s.queues().await.unwrap();
    assert_eq!(names, vec!["a".to_string(), "b".to_string()]);
    s.ping().await.unwrap();
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

conformance!(
    enqueue_dequeue_in_order_with_stats,
    payload_text_is_kept_exactly,
    ack_is_final_and_twice_is_not_found,
    batch_ack_answers_per_receipt,
    crashed_consumer_gets_redelivery_and_stale_receipt_is_refused,
    receipt_is_stale_once_visibility_ended,
    nack_requeues_after_delay,
    extend_moves_the_deadline,
    dead_letters_after_default_max_attempts_then_redrive,
    per_queue_max_attempts_and_nack_dead_letters,
    redrive_by_id_touches_only_dead_letters,
    delay_hides_messages_until_due,
    ttl_drops_waiting_messages_and_counts_them,
    ttl_passed_during_delivery_drops_instead_of_redelivering,
    dequeue_takes_at_most_max_and_timed_out_batch_returns,
    queues_are_isolated_and_listed,
);

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
