//! Faults with real processes on 127.0.0.1: never an older value after a
//! newer acknowledged write, also when nodes crash, restart, pause past the
//! failure timeout, or disagree about who is alive.
//!
//! - the owner-crash sequence of issue 21 (set `v1` via A, read it on B,
//!   set `v2` via A, SIGKILL A: B must never read `v1`), under write-back
//!   and write-through, with home memory and with Redis, for a key whose
//!   home survives and for one homed on A itself;
//! - concurrent readers and writers through every node while a nemesis
//!   pauses a key's home past the failure timeout (SIGSTOP: the others
//!   suspect it while it still believes it is home, and it resumes with
//!   clients' requests in flight) and kills and restarts another node;
//!   every key's history is checked with the cache model of the
//!   linearizability checker (a miss is allowed any time, an older value
//!   never).
//!
//! - the same traffic while the link between two nodes is cut in both
//!   directions (fault injection in the nodes' transport): each suspects
//!   the other, the third suspects neither — a peer suspecting the home of
//!   a key while another does not.
//!
//! - a node cut off from both others: 503s, never its old value.
//!
//! Bounded: every test runs a fixed schedule (about 20 s at most) with at
//! most a fixed number of operations per client.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::common::port::free_port;
use client::Client as CacheClient;
use common::lincheck::{check_model, Event, Model, Op};
use common::{wait_confirmed, wait_until, Redis};
use rand::{Rng, SeedableRng};
use serde_json::json;

const HEARTBEAT_MS: u64 = 100;
/// Long enough that a loaded 2-core machine does not suspect live nodes by
/// accident, short enough to keep the tests quick.
const FAILURE_TIMEOUT_MS: u64 = 1500;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGCONT first: a stopped process cannot die of SIGKILL until it
        // runs again on some systems' accounting; harmless otherwise.
        signal(&self.0, "CONT");
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Send a signal to a child this test started (by its pid).
fn signal(child: &Child, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status();
}

struct Procs {
    addrs: Vec<String>,
    clients: Vec<CacheClient>,
    procs: Vec<Option<Proc>>,
    extra: Vec<String>,
}

impl Procs {
    async fn start(extra: &[&str]) -> Self {
        let addrs: Vec<String> = (0..3)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let mut p = Self {
            clients: addrs.iter().map(|a| common::cache_client(a)).collect(),
            procs: Vec::new(),
            addrs,
            extra,
        };
        for i in 0..3 {
            let proc = p.spawn(i);
            p.procs.push(Some(proc));
        }
        for c in &p.clients {
            wait_confirmed(c, &p.addrs, Duration::from_secs(30)).await;
        }
        p
    }

    fn spawn(&self, i: usize) -> Proc {
        let child = Command::new(env!("CARGO_BIN_EXE_cache-service"))
            .args(["--listen", &self.addrs[i], "--peers", &self.addrs.join(",")])
            .args(["--heartbeat-ms", &HEARTBEAT_MS.to_string()])
            .args(["--failure-timeout-ms", &FAILURE_TIMEOUT_MS.to_string()])
            .args(&self.extra)
            .env("CLUSTER_TOKEN", "fault-token")
            .env("RUST_LOG", "warn")
            .env_remove("REDIS_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn cache-service");
        Proc(child)
    }

    fn kill(&mut self, i: usize) {
        self.procs[i].take();
    }

    fn restart(&mut self, i: usize) {
        self.procs[i] = Some(self.spawn(i));
    }

    fn stop(&self, i: usize) {
        signal(&self.procs[i].as_ref().expect("running").0, "STOP");
    }

    fn cont(&self, i: usize) {
        signal(&self.procs[i].as_ref().expect("running").0, "CONT");
    }

    /// A key whose home (in the view of all three) is node `i`.
    fn key_homed_on(&self, i: usize, prefix: &str) -> String {
        let ring = ::common::Ring::new(self.addrs.clone());
        (0..10_000)
            .map(|n| format!("{prefix}-{n}"))
            .find(|k| ring.owner(k) == Some(self.addrs[i].as_str()))
            .expect("some key lands on every node")
    }
}

fn value_of(got: &Option<client::CacheValue>) -> Option<String> {
    got.as_ref()
        .map(|g| g.value.as_str().unwrap_or("?").to_string())
}

/// The owner-crash sequence for a key homed on C and one homed on A.
async fn owner_crash(policy: &str, redis: Option<&Redis>) {
    let mut extra = vec!["--write-policy", policy];
    if let Some(r) = redis {
        extra.extend(["--redis-url", r.url.as_str()]);
    }
    let mut p = Procs::start(&extra).await;
    let keys = [p.key_homed_on(2, "crash-c"), p.key_homed_on(0, "crash-a")];
    let (a, b) = (p.clients[0].clone(), p.clients[1].clone());
    for k in &keys {
        a.cache_put(k, json!("v1"), None).await.unwrap();
        assert_eq!(
            value_of(&b.cache_get(k).await.unwrap()).as_deref(),
            Some("v1")
        );
        a.cache_put(k, json!("v2"), None).await.unwrap();
    }
    p.kill(0);
    // Read on B and C through detection, the view change and after it:
    // every answer is v2, a miss, or an error (while no view is
    // confirmed) — never v1.
    let mut survivors = [p.addrs[1].clone(), p.addrs[2].clone()];
    survivors.sort();
    let started = Instant::now();
    let mut confirmed_at = None;
    let mut reads = 0;
    loop {
        for c in &p.clients[1..] {
            for k in &keys {
                if let Ok(got) = c.cache_get(k).await {
                    reads += 1;
                    let v = value_of(&got);
                    assert_ne!(v.as_deref(), Some("v1"), "older value after v2 for {k}");
                }
            }
        }
        if confirmed_at.is_none() {
            let mut all = true;
            for c in &p.clients[1..] {
                let v = c.get_json(&["cluster"]).await.unwrap();
                let live: Vec<&str> = v["view"]["live"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|x| x.as_str())
                    .collect();
                all &= v["view"]["confirmed"] == true && live == survivors;
            }
            if all {
                confirmed_at = Some(Instant::now());
            }
        }
        if confirmed_at.is_some_and(|t| t.elapsed() > Duration::from_millis(500)) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "survivors never agreed on a view without A"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(reads > 0, "some reads were answered");
    // What is left: under write-back v2 lived only in A's M line, so it is
    // gone (a miss). Under write-through v2 reached memory before it was
    // acknowledged: it survives wherever memory survived (Redis; or the
    // home's memory when the home is alive).
    for c in &p.clients[1..] {
        let got = [
            value_of(&c.cache_get(&keys[0]).await.unwrap()),
            value_of(&c.cache_get(&keys[1]).await.unwrap()),
        ];
        let want = match (policy, redis.is_some()) {
            ("write-back", _) => [None, None],
            (_, true) => [Some("v2".into()), Some("v2".into())],
            (_, false) => [Some("v2".into()), None],
        };
        assert_eq!(got, want, "policy {policy}, redis {}", redis.is_some());
    }
    // And the survivors still work.
    p.clients[1]
        .cache_put(&keys[0], json!("v3"), None)
        .await
        .unwrap();
    assert_eq!(
        value_of(&p.clients[2].cache_get(&keys[0]).await.unwrap()).as_deref(),
        Some("v3")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn owner_crash_write_back_home_memory() {
    owner_crash("write-back", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn owner_crash_write_back_redis() {
    let r = Redis::start().await;
    owner_crash("write-back", Some(&r)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn owner_crash_write_through_home_memory() {
    owner_crash("write-through", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn owner_crash_write_through_redis() {
    let r = Redis::start().await;
    owner_crash("write-through", Some(&r)).await;
}

const KEYS: usize = 2;
const CLIENTS_PER_NODE: usize = 2;
/// Cap on operations per client (bounds the checker's work).
const MAX_OPS_PER_CLIENT: usize = 150;

/// What the nemesis does while the clients work.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Pause node 0 (home of key 0) past the failure timeout: the others
    /// suspect it and move on while it still thinks it is home, then it
    /// resumes with requests in flight. Then kill node 1 and restart it
    /// (empty) before the others notice.
    PauseThenRestart,
    /// Cut the link between node 0 and node 1 in both directions: each
    /// suspects the other (and the home of the other's keys) while node 2
    /// suspects neither.
    CutLink,
}

/// Cut (or heal, with `to` empty) node `i`'s outgoing calls to `to`.
async fn block(p: &Procs, i: usize, to: &[&str]) {
    let r = reqwest::Client::new()
        .post(format!("http://{}/internal/cache/faults", p.addrs[i]))
        .header("authorization", "Bearer fault-token")
        .json(&json!({ "block": to }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
}

/// Concurrent clients on every node while the nemesis runs `fault`;
/// returns each key's history and the number of reads that returned a
/// value.
async fn chaos(
    p: &mut Procs,
    seed: u64,
    keys: &[String],
    fault: Fault,
) -> (Vec<Vec<Event>>, usize) {
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(8))
        .tcp_nodelay(true)
        .build()
        .unwrap();
    let keys = Arc::new(keys.to_vec());
    let mut tasks = Vec::new();
    for (node, addr) in p.addrs.iter().enumerate() {
        for j in 0..CLIENTS_PER_NODE {
            let client = CacheClient::builder(addr.as_str())
                .http_client(http.clone())
                .build()
                .expect("client builds");
            let keys = keys.clone();
            let stop = stop.clone();
            let id = node * CLIENTS_PER_NODE + j;
            tasks.push(tokio::spawn(async move {
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed * 1000 + id as u64);
                let mut out: Vec<(usize, Event)> = Vec::new();
                let mut values = 0;
                for n in 0..MAX_OPS_PER_CLIENT {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let k = rng.gen_range(0..keys.len());
                    let key = &keys[k];
                    let dice = rng.gen_range(0..100);
                    let call = start.elapsed().as_nanos() as u64;
                    let (op, ok) = if dice < 60 {
                        match client.cache_get(key).await {
                            Ok(got) => {
                                let v = got.map(|g| g.value.as_u64().expect("u64 value"));
                                values += usize::from(v.is_some());
                                (Some(Op::Read(v)), true)
                            }
                            // A failed read says nothing.
                            Err(_) => (None, false),
                        }
                    } else if dice < 95 {
                        let v = (id as u64) * 1_000_000 + n as u64 + 1;
                        let ok = client.cache_put(key, json!(v), None).await.is_ok();
                        (Some(Op::Write(v)), ok)
                    } else {
                        let ok = client.cache_delete(key).await.is_ok();
                        (Some(Op::Delete), ok)
                    };
                    // A failed write or delete may still take effect later.
                    let ret = if ok {
                        start.elapsed().as_nanos() as u64
                    } else {
                        u64::MAX
                    };
                    if let Some(op) = op {
                        out.push((
                            k,
                            Event {
                                client: id,
                                call,
                                ret,
                                op,
                            },
                        ));
                    }
                    if !ok {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    tokio::time::sleep(Duration::from_millis(rng.gen_range(40..120))).await;
                }
                (out, values)
            }));
        }
    }
    // The nemesis, while the clients work.
    let ft = Duration::from_millis(FAILURE_TIMEOUT_MS);
    tokio::time::sleep(Duration::from_millis(800)).await;
    match fault {
        Fault::PauseThenRestart => {
            p.stop(0);
            tokio::time::sleep(ft * 3).await;
            p.cont(0);
            tokio::time::sleep(ft * 2).await;
            p.kill(1);
            tokio::time::sleep(ft / 2).await;
            p.restart(1);
        }
        Fault::CutLink => {
            let (a, b) = (p.addrs[0].clone(), p.addrs[1].clone());
            block(p, 0, &[b.as_str()]).await;
            block(p, 1, &[a.as_str()]).await;
            tokio::time::sleep(ft * 4).await;
            block(p, 0, &[]).await;
            block(p, 1, &[]).await;
        }
    }
    let all = p.addrs.clone();
    for c in &p.clients {
        wait_confirmed(c, &all, Duration::from_secs(20)).await;
    }
    // 3. Let traffic run on the healed cluster for a while.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut per_key: Vec<Vec<Event>> = vec![Vec::new(); KEYS];
    let mut values = 0;
    for t in tasks {
        let (events, v) = t.await.unwrap();
        values += v;
        for (k, e) in events {
            per_key[k].push(e);
        }
    }
    (per_key, values)
}

async fn chaos_is_linearizable(extra: &[&str], seed: u64, fault: Fault) {
    let mut extra = extra.to_vec();
    extra.push("--fault-injection");
    let mut p = Procs::start(&extra).await;
    let keys: Vec<String> = vec![
        p.key_homed_on(0, &format!("chaos{seed}-a")),
        p.key_homed_on(1, &format!("chaos{seed}-b")),
    ];
    let started = Instant::now();
    let (histories, values) = chaos(&mut p, seed, &keys, fault).await;
    let ran = started.elapsed();
    for (k, h) in histories.iter().enumerate() {
        assert!(h.len() >= 30, "key {k} got only {} ops", h.len());
        let t = Instant::now();
        let ok = check_model(Model::Cache, h);
        if !ok {
            let mut sorted = h.clone();
            sorted.sort_by_key(|e| e.call);
            let text: String = sorted
                .iter()
                .map(|e| format!("{:>12} {:>20} c{:<2} {:?}\n", e.call, e.ret, e.client, e.op))
                .collect();
            let path = std::env::temp_dir().join(format!("cache-chaos-{seed}-{k}.txt"));
            let _ = std::fs::write(&path, text);
            panic!(
                "key {k}: an older value after a newer write ({} ops); history in {}",
                h.len(),
                path.display()
            );
        }
        assert!(t.elapsed() < Duration::from_secs(60), "checker too slow");
    }
    eprintln!(
        "{} ops in {ran:?}, {values} reads returned a value",
        histories.iter().map(Vec::len).sum::<usize>()
    );
    assert!(values > 0, "some reads returned values");
    // Every node serves again after the faults.
    for (i, c) in p.clients.iter().enumerate() {
        c.cache_put(&keys[0], json!(7_000_000 + i as u64), None)
            .await
            .unwrap();
        wait_until("read own write", Duration::from_secs(5), || async {
            c.cache_get(&keys[0])
                .await
                .is_ok_and(|g| g.is_some_and(|g| g.value == json!(7_000_000 + i as u64)))
        })
        .await;
    }
}

const WRITE_BACK: [&str; 2] = ["--write-policy", "write-back"];
const WRITE_THROUGH: [&str; 2] = ["--write-policy", "write-through"];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_write_back_home_memory() {
    chaos_is_linearizable(&WRITE_BACK, 1, Fault::PauseThenRestart).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_write_back_redis() {
    let r = Redis::start().await;
    let extra = [&WRITE_BACK[..], &["--redis-url", r.url.as_str()]].concat();
    chaos_is_linearizable(&extra, 2, Fault::PauseThenRestart).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_write_through_redis() {
    let r = Redis::start().await;
    let extra = [&WRITE_THROUGH[..], &["--redis-url", r.url.as_str()]].concat();
    chaos_is_linearizable(&extra, 3, Fault::PauseThenRestart).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cut_link_write_back_home_memory() {
    chaos_is_linearizable(&WRITE_BACK, 4, Fault::CutLink).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cut_link_write_back_redis() {
    let r = Redis::start().await;
    let extra = [&WRITE_BACK[..], &["--redis-url", r.url.as_str()]].concat();
    chaos_is_linearizable(&extra, 5, Fault::CutLink).await;
}

/// A node cut off from both others (a minority of one) serves nothing: no
/// local hit of the value it held, `/health` 503, cache calls 503 after
/// their retry window — while the majority goes on writing. Healed, it
/// reads the majority's value (or a miss), never its old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_minority_node_answers_503_and_never_its_old_value() {
    let p = Procs::start(&["--fault-injection"]).await;
    let k = p.key_homed_on(0, "minority");
    let (a, c) = (p.clients[0].clone(), p.clients[2].clone());
    c.cache_put(&k, json!("old"), None).await.unwrap();
    let got = c.cache_get(&k).await.unwrap().unwrap();
    assert!(got.hit && got.value == json!("old"), "{got:?}");
    // Cut node 2 off, both directions.
    let (n0, n1, n2) = (p.addrs[0].clone(), p.addrs[1].clone(), p.addrs[2].clone());
    block(&p, 2, &[n0.as_str(), n1.as_str()]).await;
    block(&p, 0, &[n2.as_str()]).await;
    block(&p, 1, &[n2.as_str()]).await;
    let majority = [n0.clone(), n1.clone()];
    for cl in &p.clients[..2] {
        wait_confirmed(cl, &majority, Duration::from_secs(20)).await;
    }
    a.cache_put(&k, json!("new"), None).await.unwrap();
    assert_eq!(
        value_of(&p.clients[1].cache_get(&k).await.unwrap()).as_deref(),
        Some("new")
    );
    // The minority side.
    let h = reqwest::get(format!("http://{n2}/health")).await.unwrap();
    assert_eq!(h.status(), 503);
    let body: serde_json::Value = h.json().await.unwrap();
    assert_eq!(body["view"]["confirmed"], false, "{body}");
    let t = Instant::now();
    let err = c
        .cache_get(&k)
        .await
        .expect_err("a minority node must not answer");
    assert_eq!(err.status(), Some(503), "{err}");
    assert_eq!(err.code(), Some("unavailable"), "{err}");
    let waited = t.elapsed();
    assert!(
        waited < Duration::from_millis(2 * FAILURE_TIMEOUT_MS + 3000),
        "answered after {waited:?}"
    );
    let err = c
        .cache_put(&k, json!("minority"), None)
        .await
        .expect_err("no write");
    assert_eq!(err.status(), Some(503), "{err}");
    // Healed: node 2 rejoins and never reads "old".
    for i in 0..3 {
        block(&p, i, &[]).await;
    }
    for cl in &p.clients {
        wait_confirmed(cl, &p.addrs, Duration::from_secs(20)).await;
    }
    let v = value_of(&c.cache_get(&k).await.unwrap());
    assert!(v.is_none() || v.as_deref() == Some("new"), "{v:?}");
}
