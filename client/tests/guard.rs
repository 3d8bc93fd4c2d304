//! The lock guard against a scripted fake lock endpoint on 127.0.0.1:0:
//! renewal cadence, loss on refusal, loss on silence, release.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use client::{AcquireRequest, Client, LockStatus};
use serde_json::{json, Value};

#[derive(Default)]
struct Fake {
    renews: AtomicUsize,
    releases: AtomicUsize,
    refuse: AtomicBool,
}

async fn start(fake: Arc<Fake>) -> (String, tokio::task::JoinHandle<()>) {
    async fn acquire(Json(b): Json<Value>) -> Json<Value> {
        Json(json!({
            "granted": true, "resource": b["resource"], "owner": b["owner"],
            "mode": "exclusive", "token": 42, "expires_at_ms": 1000
        }))
    }
    async fn renew(State(f): State<Arc<Fake>>, Json(b): Json<Value>) -> (StatusCode, Json<Value>) {
        assert_eq!(b["token"], 42);
        assert!(b["request_id"].is_string());
        if f.refuse.load(Ordering::SeqCst) {
            return (
                StatusCode::CONFLICT,
                Json(json!({"error": {"code": "token_mismatch", "message": "not yours"}})),
            );
        }
        let n = f.renews.fetch_add(1, Ordering::SeqCst) as u64;
        (StatusCode::OK, Json(json!({"expires_at_ms": 2000 + n})))
    }
    async fn release(State(f): State<Arc<Fake>>) -> Json<Value> {
        f.releases.fetch_add(1, Ordering::SeqCst);
        Json(json!({"released": true}))
    }
    let app = Router::new()
        .route("/api/lock/acquire", post(acquire))
        .route("/api/lock/renew", post(renew))
        .route("/api/lock/release", post(release))
        .with_state(fake);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let h = tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (addr, h)
}

fn req(ttl_ms: u64) -> AcquireRequest {
    AcquireRequest {
        resource: "r".into(),
        owner: "o".into(),
        ttl_ms: Some(ttl_ms),
        ..Default::default()
    }
}

#[tokio::test]
async fn renews_at_a_third_of_the_ttl_and_releases() {
    let fake = Arc::new(Fake::default());
    let (addr, _h) = start(fake.clone()).await;
    let c = Client::new(addr).unwrap();
    let started = std::time::Instant::now();
    let guard = c.lock(req(300)).await.unwrap();
    assert_eq!(guard.token(), 42);
    // Three renewals, however long a loaded machine makes them take...
    let deadline = started + Duration::from_secs(10);
    while fake.renews.load(Ordering::SeqCst) < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "fewer than 3 renewals in 10 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // ...and never more often than every 100 ms (a third of the TTL): load
    // can only delay a renewal, so this bound holds on any machine.
    let n = fake.renews.load(Ordering::SeqCst) as u128;
    let most = started.elapsed().as_millis() / 100 + 1;
    assert!(
        n <= most,
        "renewed {n} times in {:?} at ttl 300",
        started.elapsed()
    );
    assert!(guard.is_held());
    assert!(matches!(guard.status(), LockStatus::Held { expires_at_ms } if expires_at_ms >= 2000));
    let mut w = guard.watch();
    guard.release().await.unwrap();
    assert_eq!(*w.borrow_and_update(), LockStatus::Released);
    assert_eq!(fake.releases.load(Ordering::SeqCst), 1);
    let after = fake.renews.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(
        fake.renews.load(Ordering::SeqCst),
        after,
        "no renewals after release"
    );
}

#[tokio::test]
async fn a_refused_renewal_means_lost() {
    let fake = Arc::new(Fake::default());
    let (addr, _h) = start(fake.clone()).await;
    let c = Client::new(addr).unwrap();
    let guard = c.lock(req(300)).await.unwrap();
    fake.refuse.store(true, Ordering::SeqCst);
    let reason = tokio::time::timeout(Duration::from_secs(2), guard.lost())
        .await
        .expect("loss reported");
    assert!(reason.contains("token_mismatch"), "{reason}");
    assert!(!guard.is_held());
}

#[tokio::test]
async fn silence_past_the_ttl_means_lost() {
    let fake = Arc::new(Fake::default());
    let (addr, server) = start(fake.clone()).await;
    let c = Client::builder(addr)
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let guard = c.lock(req(400)).await.unwrap();
    server.abort(); // the lock service becomes unreachable
    let started = std::time::Instant::now();
    let reason = tokio::time::timeout(Duration::from_secs(3), guard.lost())
        .await
        .expect("loss reported");
    assert!(reason.contains("expired"), "{reason}");
    assert!(
        started.elapsed() <= Duration::from_millis(700),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn dropping_the_guard_releases_in_the_background() {
    let fake = Arc::new(Fake::default());
    let (addr, _h) = start(fake.clone()).await;
    let c = Client::new(addr).unwrap();
    drop(c.lock(req(10_000)).await.unwrap());
    for _ in 0..50 {
        if fake.releases.load(Ordering::SeqCst) == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no release after drop");
}
