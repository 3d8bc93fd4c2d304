//! Fault tests of a real three-node lock cluster: a slow, failing or full
//! disk under one node (the `LD_PRELOAD` shim `chaos::faultfs`), and
//! kill -9 with an immediate restart, each checked for the two promises the
//! lock service rests on: no two exclusive holders, and every replica
//! applying the same command at every log index.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::Cluster;

const LONG_TTL: u64 = 600_000;

fn acquire(resource: &str, owner: &str) -> Value {
    json!({ "resource": resource, "owner": owner, "ttl_ms": LONG_TTL,
            "request_id": format!("{owner}-{resource}") })
}

/// Every node agrees on each resource, and none has two exclusive holders.
async fn assert_locks_agree(c: &Cluster, resources: &[&str]) -> BTreeMap<String, Value> {
    let mut agreed = BTreeMap::new();
    for r in resources {
        let mut views = Vec::new();
        for id in c.procs.keys() {
            views.push((*id, c.local_lock(*id, r).await));
        }
        for (id, v) in &views {
            assert_eq!(
                v, &views[0].1,
                "node {id} and node {} disagree on {r}",
                views[0].0
            );
            let holders = v["holders"].as_array().unwrap();
            let exclusive = holders.iter().filter(|h| h[1] == "exclusive").count();
            assert!(
                exclusive == 0 || holders.len() == 1,
                "{r} has an exclusive holder beside others on node {id}: {v}"
            );
        }
        agreed.insert(r.to_string(), views[0].1.clone());
    }
    agreed
}

/// Issue "raft-core safety", scenario 1: the leader's disk is slow, an
/// entry is committed by the followers while it still waits in the
/// leader's writer queue, and the leader is killed and restarted at once.
/// Before the fix it came back as leader of its old term, numbered its next
/// entry with the lost entry's log id, and granted the held lock again with
/// the same fencing token.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_restarted_without_an_unflushed_entry_never_grants_a_held_lock_again() {
    let mut c = Cluster::start_faulty().await;
    let leader = c.wait_leader(None, Duration::from_secs(10)).await;
    c.fault(leader, "slow 3000");
    // This grant's entry is written and then sits in a 3 s fdatasync; it
    // commits on the followers meanwhile.
    let (s, g0) = c
        .post(leader, "/api/lock/acquire", &acquire("x0", "a0"))
        .await
        .unwrap();
    assert_eq!(s, 200, "{g0}");
    // This one waits behind it in the writer's queue, never written, and
    // commits on the followers too.
    let (s, ga) = c
        .post(leader, "/api/lock/acquire", &acquire("X", "A"))
        .await
        .unwrap();
    assert_eq!(s, 200, "{ga}");
    let token_a = ga["token"].as_u64().unwrap();
    c.kill(leader);
    c.fault(leader, "ok");
    c.spawn(leader);

    let (s, gc) = c
        .call(leader, "/api/lock/acquire", &acquire("X", "C"))
        .await;
    assert_eq!(
        s, 409,
        "X was granted twice (A holds token {token_a}): {gc}"
    );
    assert_eq!(gc["error"]["code"], "lock_held", "{gc}");
    // A new write through the restarted node commits, and all agree.
    let (s, gd) = c
        .call(leader, "/api/lock/acquire", &acquire("Y", "D"))
        .await;
    assert_eq!(s, 200, "{gd}");
    assert!(gd["token"].as_u64().unwrap() > token_a);
    c.wait_converged(Duration::from_secs(10)).await;
    let locks = assert_locks_agree(&c, &["x0", "X", "Y"]).await;
    assert_eq!(locks["X"]["holders"], json!([["A", "exclusive", token_a]]));
    assert!(c.assert_same_applied().await > 0);
}

/// Scenario 2: one fdatasync on the leader fails with EIO while another
/// append waits behind it. Before the fix the core stopped but the process
/// went on answering, the log wrote the next batch over the failed one and
/// reported it flushed, and after a restart the node's log had a hole that
/// made it read a held lock as free. Now the node exits (fail-stop), and
/// after a restart it agrees with the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_fsync_stops_the_leader_and_after_a_restart_every_replica_agrees() {
    let mut c = Cluster::start_faulty().await;
    let leader = c.wait_leader(None, Duration::from_secs(10)).await;
    c.fault(leader, "eio 1 500");
    let view = c.client_view();
    let first = tokio::spawn(async move {
        view.post(leader, "/api/lock/acquire", &acquire("x0", "a0"))
            .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Queued behind the failing sync.
    let second = c
        .post(leader, "/api/lock/acquire", &acquire("x1", "a1"))
        .await;
    let first = first.await.unwrap();
    let status = c
        .exited(leader, Duration::from_secs(10))
        .await
        .expect("the leader went on after its disk failed");
    assert!(!status.success(), "{status:?}");
    let log = std::fs::read_to_string(c.log_path(leader)).unwrap();
    assert!(log.contains("raft log failed"), "no clear message: {log}");

    c.fault(leader, "ok");
    c.spawn(leader);
    c.wait_leader(None, Duration::from_secs(10)).await;
    // A write through every node, then everyone has everything.
    for id in 1..=3 {
        let (s, v) = c
            .call(
                id,
                "/api/lock/acquire",
                &acquire(&format!("after{id}"), "z"),
            )
            .await;
        assert_eq!(s, 200, "{v}");
    }
    c.wait_converged(Duration::from_secs(10)).await;
    let locks = assert_locks_agree(&c, &["x0", "x1"]).await;
    // A lock granted to a client is held on every replica (an answer lost
    // with the dying leader may be either).
    for (r, owner, answer) in [("x0", "a0", &first), ("x1", "a1", &second)] {
        if let Ok((200, g)) = answer {
            assert_eq!(
                locks[r]["holders"],
                json!([[owner, "exclusive", g["token"]]]),
                "{r} was granted but is not held"
            );
        }
        // Linearizable reads through every node say the same.
        for id in 1..=3 {
            let v = c.get(id, &format!("/api/lock/{r}")).await.unwrap();
            assert_eq!(
                v["holders"].as_array().map(|h| h.len()),
                locks[r]["holders"].as_array().map(|h| h.len()),
                "node {id} on {r}: {v}"
            );
        }
    }
    assert!(c.assert_same_applied().await > 0);
}

/// A full disk (ENOSPC on the log's write) under a follower stops it; the
/// other two go on, and once restarted it catches up and agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_stops_a_follower_and_the_cluster_goes_on_without_it() {
    let mut c = Cluster::start_faulty().await;
    let leader = c.wait_leader(None, Duration::from_secs(10)).await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    c.fault(follower, "enospc 1");
    let (s, v) = c
        .post(leader, "/api/lock/acquire", &acquire("a", "o1"))
        .await
        .unwrap();
    assert_eq!(s, 200, "{v}");
    let status = c
        .exited(follower, Duration::from_secs(10))
        .await
        .expect("the follower went on after its disk filled up");
    assert!(!status.success(), "{status:?}");
    let (s, v) = c
        .post(leader, "/api/lock/acquire", &acquire("b", "o2"))
        .await
        .unwrap();
    assert_eq!(s, 200, "the two others go on: {v}");
    c.fault(follower, "ok");
    c.spawn(follower);
    c.wait_converged(Duration::from_secs(10)).await;
    assert_locks_agree(&c, &["a", "b"]).await;
    assert!(c.assert_same_applied().await > 0);
}

/// A node syncs the log it finds on open before it trusts it: a process
/// killed after a write and before its sync leaves the record in the page
/// cache, where it reads back as if it were durable. Shown by a sync that
/// fails at open: the node refuses to start rather than go on with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_node_syncs_its_log_before_trusting_it() {
    let mut c = Cluster::start_faulty().await;
    let leader = c.wait_leader(None, Duration::from_secs(10)).await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let (s, v) = c
        .post(leader, "/api/lock/acquire", &acquire("a", "o"))
        .await
        .unwrap();
    assert_eq!(s, 200, "{v}");
    c.kill(follower);
    c.fault(follower, "eio 1");
    c.spawn(follower);
    let status = c
        .exited(follower, Duration::from_secs(10))
        .await
        .expect("started on a log it could not sync");
    assert!(!status.success(), "{status:?}");
    let log = std::fs::read_to_string(c.log_path(follower)).unwrap();
    assert!(log.contains("raft log"), "no clear message: {log}");
    c.spawn(follower);
    c.wait_converged(Duration::from_secs(10)).await;
    assert_locks_agree(&c, &["a"]).await;
}

/// A follower's slow fsync happens off its runtime thread: while its disk
/// takes 3 s per sync, the node still answers everything that does not wait
/// for that disk. (Its appends were once synced on the runtime's one
/// thread, and the whole node froze with its disk.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_followers_slow_disk_does_not_freeze_the_rest_of_the_node() {
    let c = Cluster::start_faulty().await;
    let leader = c.wait_leader(None, Duration::from_secs(10)).await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    c.fault(follower, "slow 3000");
    let (s, v) = c
        .post(leader, "/api/lock/acquire", &acquire("a", "o"))
        .await
        .unwrap();
    assert_eq!(s, 200, "the other follower commits it: {v}");
    // The follower is now inside a 3 s sync of that entry.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let asked = Instant::now();
    let status = c.get(follower, "/cluster").await.expect("answered");
    let took = asked.elapsed();
    assert_eq!(status["id"], follower, "{status}");
    assert!(
        took < Duration::from_millis(1500),
        "the node answered only after {took:?}, with its disk"
    );
    c.fault(follower, "ok");
}

/// kill -9 and an immediate restart of the leader, 20 times, under a
/// concurrent write load, half the rounds with the leader's disk slow (so
/// entries are replicated before they are on its disk). Clients never see
/// two holders, fencing tokens grow per resource, and every replica applied
/// the same command at every index.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_kills_with_immediate_restarts_under_load_keep_every_replica_identical() {
    const ROUNDS: usize = 20;
    const RESOURCES: u64 = 3;
    let c = Arc::new(tokio::sync::Mutex::new(Cluster::start_faulty().await));
    let view = c.lock().await.client_view();
    let stop = Arc::new(AtomicBool::new(false));
    let inside: Arc<Vec<AtomicBool>> =
        Arc::new((0..RESOURCES).map(|_| AtomicBool::new(false)).collect());
    let tokens = Arc::new(Mutex::new(BTreeMap::<u64, Vec<u64>>::new()));
    let grants = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(150);
    let mut tasks = Vec::new();
    for client in 0..6u64 {
        let (cl, stop, inside, tokens, grants) = (
            view.client_view(),
            stop.clone(),
            inside.clone(),
            tokens.clone(),
            grants.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let owner = format!("client-{client}");
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                n += 1;
                let r = (client + n) % RESOURCES;
                let acquire = json!({
                    "resource": format!("r{r}"), "owner": owner, "ttl_ms": 10_000,
                    "wait_ms": 3_000, "request_id": format!("{owner}-{n}"),
                });
                let (s, g) = cl
                    .call(1 + (client + n) % 3, "/api/lock/acquire", &acquire)
                    .await;
                if s != 200 {
                    // A wait that ended, or an outcome unknown across a kill:
                    // this client does not hold it; any hold expires.
                    assert!(s == 409 || s == 503 || s == 429, "acquire: {s} {g}");
                    continue;
                }
                let token = g["token"].as_u64().unwrap();
                assert!(
                    !inside[r as usize].swap(true, Ordering::SeqCst),
                    "two holders of r{r}"
                );
                tokens.lock().unwrap().entry(r).or_default().push(token);
                grants.fetch_add(1, Ordering::SeqCst);
                inside[r as usize].store(false, Ordering::SeqCst);
                let release = json!({
                    "resource": format!("r{r}"), "owner": owner, "token": token,
                    "request_id": format!("{owner}-{n}-rel"),
                });
                let (s, v) = cl
                    .call(1 + (client + n + 1) % 3, "/api/lock/release", &release)
                    .await;
                assert!(s == 200 || s == 503 || s == 404, "release: {s} {v}");
            }
        }));
    }
    for round in 0..ROUNDS {
        assert!(Instant::now() < deadline, "only {round} rounds in time");
        let mut g = c.lock().await;
        let leader = g.wait_leader(None, Duration::from_secs(15)).await;
        if round % 2 == 1 {
            g.fault(leader, "slow 30");
        }
        let before = grants.load(Ordering::SeqCst);
        let until = Instant::now() + Duration::from_secs(5);
        while grants.load(Ordering::SeqCst) < before + 8 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        g.kill(leader);
        g.fault(leader, "ok");
        g.spawn(leader);
    }
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    let c = c.lock().await;
    c.wait_leader(None, Duration::from_secs(15)).await;
    // One more write, so that every node's log ends in the same term.
    let (s, v) = c.call(1, "/api/lock/acquire", &acquire("final", "f")).await;
    assert_eq!(s, 200, "{v}");
    c.wait_converged(Duration::from_secs(15)).await;
    for (r, ts) in tokens.lock().unwrap().iter() {
        assert!(
            ts.windows(2).all(|w| w[0] < w[1]),
            "r{r} tokens not increasing: {ts:?}"
        );
    }
    let names: Vec<String> = (0..RESOURCES).map(|r| format!("r{r}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    assert_locks_agree(&c, &names).await;
    let compared = c.assert_same_applied().await;
    let total = grants.load(Ordering::SeqCst);
    eprintln!(
        "{ROUNDS} leader kills, {total} grants, {compared} (index, node pair) digests compared"
    );
    assert!(total > ROUNDS as u64 * 8, "too few grants: {total}");
    assert!(compared > 300, "too few entries compared: {compared}");
}
