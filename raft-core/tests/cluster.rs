//! Black-box tests of raft-core: real nodes on 127.0.0.1 talking HTTP, each
//! with its own data dir, driven through the public node handle.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use raft_core::{NodeConfig, ProposalBounds, RaftNode, StateMachine, Timing};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A tiny replicated KV: `Set` returns the previous value.
#[derive(Default)]
struct Kv {
    map: BTreeMap<String, u64>,
}

#[derive(Serialize, Deserialize)]
struct Set {
    key: String,
    value: u64,
}

impl StateMachine for Kv {
    type Command = Set;
    type Response = Option<u64>;
    type Image = BTreeMap<String, u64>;

    fn apply(&mut self, cmd: Set, _index: u64, _now_ms: u64) -> Option<u64> {
        self.map.insert(cmd.key, cmd.value)
    }

    fn snapshot(&self) -> raft_core::SnapshotJob {
        let map = self.map.clone();
        Box::new(move || serde_json::to_vec(&map).unwrap())
    }

    fn decode(bytes: &[u8]) -> Result<BTreeMap<String, u64>, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }

    fn restore(&mut self, map: BTreeMap<String, u64>) -> BTreeMap<String, u64> {
        std::mem::replace(&mut self.map, map)
    }
}

struct Running {
    node: RaftNode<Kv>,
    stop: oneshot::Sender<()>,
    server: JoinHandle<()>,
}

struct Cluster {
    addrs: BTreeMap<u64, String>,
    dirs: BTreeMap<u64, PathBuf>,
    nodes: BTreeMap<u64, Running>,
    token: Option<String>,
    snapshot_every: u64,
    /// Applied to every node's config at launch.
    tune: fn(&mut NodeConfig),
    _tmp: tempfile::TempDir,
}

impl Cluster {
    async fn start(n: u64) -> Self {
        Self::start_with(n, None, 10_000).await
    }

    async fn start_with(n: u64, token: Option<String>, snapshot_every: u64) -> Self {
        Self::start_tuned(n, token, snapshot_every, |_| {}).await
    }

    async fn start_tuned(
        n: u64,
        token: Option<String>,
        snapshot_every: u64,
        tune: fn(&mut NodeConfig),
    ) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let mut listeners = BTreeMap::new();
        let mut addrs = BTreeMap::new();
        let mut dirs = BTreeMap::new();
        for id in 1..=n {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            addrs.insert(id, l.local_addr().unwrap().to_string());
            dirs.insert(id, tmp.path().join(format!("n{id}")));
            listeners.insert(id, l);
        }
        let mut c = Cluster {
            addrs,
            dirs,
            nodes: BTreeMap::new(),
            token,
            snapshot_every,
            tune,
            _tmp: tmp,
        };
        for (id, l) in listeners {
            c.launch(id, l).await;
        }
        c
    }

    async fn launch(&mut self, id: u64, listener: TcpListener) {
        let mut cfg = NodeConfig::new(id, self.addrs.clone(), self.dirs[&id].clone());
        cfg.timing = Timing::default();
        cfg.cluster_token = self.token.clone();
        cfg.snapshot_every = self.snapshot_every;
        cfg.keep_logs = if self.snapshot_every < 10_000 {
            0
        } else {
            1_000
        };
        (self.tune)(&mut cfg);
        let node = RaftNode::start(cfg, Kv::default()).await.unwrap();
        let app = raft_core::http::router(node.clone());
        let (stop, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        self.nodes.insert(id, Running { node, stop, server });
    }

    /// Stop a node: no more RPCs in or out, its data dir stays.
    async fn stop(&mut self, id: u64) {
        let r = self.nodes.remove(&id).unwrap();
        r.node.shutdown().await;
        let _ = r.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(2), r.server).await;
    }

    async fn restart(&mut self, id: u64) {
        let l = TcpListener::bind(&self.addrs[&id]).await.unwrap();
        self.launch(id, l).await;
    }

    fn node(&self, id: u64) -> &RaftNode<Kv> {
        &self.nodes[&id].node
    }

    /// Wait until every running node agrees on one leader (other than
    /// `not`) and return it.
    async fn leader(&self, not: Option<u64>, within: Duration) -> u64 {
        eventually(within, Duration::from_millis(5), || {
            let views: Vec<_> = self.nodes.values().map(|r| r.node.status()).collect();
            let leaders: Vec<_> = views.iter().filter(|s| s.state == "Leader").collect();
            if leaders.len() == 1 {
                let l = leaders[0];
                let agreed = views
                    .iter()
                    .all(|s| s.leader_id == Some(l.id) && s.term == l.term);
                if agreed && Some(l.id) != not {
                    return Ok(l.id);
                }
            }
            Err(format!("no single leader: {views:?}"))
        })
        .await
    }

    fn kv(&self, id: u64) -> BTreeMap<String, u64> {
        self.node(id).read(|kv, _| kv.map.clone())
    }

    async fn write(&self, via: u64, key: &str, value: u64) {
        self.node(via)
            .write(Set {
                key: key.into(),
                value,
            })
            .await
            .unwrap_or_else(|e| panic!("write {key} via {via}: {e}"));
    }

    /// Wait until node `id` has applied at least `index`.
    async fn caught_up(&self, id: u64, index: u64) {
        self.node(id)
            .raft()
            .wait(Some(Duration::from_secs(10)))
            .applied_index_at_least(Some(index), "catch up")
            .await
            .unwrap();
    }

    /// Wait until both nodes other than `old` name the same leader (not
    /// `old`) and return it.
    async fn majority_leader(&self, old: u64) -> u64 {
        let maj = others(old);
        eventually(Duration::from_secs(3), Duration::from_millis(10), || {
            let s = self.node(maj[0]).status();
            s.leader_id
                .filter(|l| *l != old && self.node(maj[1]).status().leader_id == Some(*l))
                .ok_or_else(|| "majority elected no leader".to_string())
        })
        .await
    }

    /// Cut node `id` off from the others, in both directions.
    fn isolate(&self, id: u64) {
        self.node(id).faults().block(&others(id));
        for other in others(id) {
            self.node(other).faults().block(&[id]);
        }
    }

    /// Undo every fault on every node.
    fn heal_all(&self) {
        for r in self.nodes.values() {
            r.node.faults().heal();
        }
    }

    /// Every node is in `term` and names `leader`.
    fn assert_all_follow(&self, leader: u64, term: u64, context: &str) {
        for (id, r) in &self.nodes {
            let s = r.node.status();
            assert_eq!(
                (s.term, s.leader_id),
                (term, Some(leader)),
                "node {id} {context}"
            );
        }
    }

    async fn shutdown(mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.stop(id).await;
        }
    }
}

/// Poll `check` every `every` until it gives a value; past `within`, fail
/// with the reason it gave last.
async fn eventually<T>(
    within: Duration,
    every: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        match check() {
            Ok(v) => return v,
            Err(why) => assert!(Instant::now() < deadline, "{why}"),
        }
        tokio::time::sleep(every).await;
    }
}

fn others(of: u64) -> Vec<u64> {
    (1..=3).filter(|i| *i != of).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_elect_exactly_one_leader_and_replicate() {
    let c = Cluster::start(3).await;
    let leader = c.leader(None, Duration::from_secs(5)).await;
    // Writes through every node, followers forwarding to the leader.
    for i in 0..60u64 {
        c.write(1 + i % 3, &format!("k{i}"), i).await;
    }
    let applied = c.node(leader).status().applied_index.unwrap();
    for id in 1..=3 {
        c.node(id).read_barrier().await.unwrap();
        c.caught_up(id, applied).await;
        let kv = c.kv(id);
        assert_eq!(kv.len(), 60, "node {id}");
        assert_eq!(kv["k59"], 59);
    }
    assert_eq!(c.kv(1), c.kv(2));
    assert_eq!(c.kv(2), c.kv(3));
    // Exactly one leader, and every node names it. A host busy with other
    // tests can delay heartbeats past the lease and cause a re-election
    // (seen once in seven runs of the whole suite), so a view taken in the
    // middle of one is looked at again; a split view must not last.
    eventually(Duration::from_secs(5), Duration::from_millis(20), || {
        let views: Vec<_> = (1..=3).map(|id| c.node(id).status()).collect();
        let leaders: Vec<_> = views.iter().filter(|s| s.state == "Leader").collect();
        let agreed = leaders.len() == 1
            && views
                .iter()
                .all(|s| s.leader_id == Some(leaders[0].id) && s.term == leaders[0].term);
        if agreed {
            Ok(())
        } else {
            Err(format!("no single agreed leader: {views:#?}"))
        }
    })
    .await;
    c.shutdown().await;
}

/// A new cluster holds one election, not two: the first leader keeps its
/// term after every member's bootstrap turn has passed. (When every member
/// bootstrapped at once, a higher id that lost the first vote could keep
/// its own term-1 vote, which outranks a lower id's leadership in
/// openraft, and depose the winner. That was seen with members started as
/// separate processes, in about one new cluster in ten of the load tool's;
/// members started in one process, as here, did not show it, so this test
/// guards the outcome rather than replaying that race.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_cluster_keeps_its_first_leader() {
    let lease = Duration::from_millis(Timing::default().election_max_ms);
    for round in 0..4 {
        let c = Cluster::start(3).await;
        let leader = c.leader(None, Duration::from_secs(5)).await;
        let term = c.node(leader).status().term;
        // Past the last member's turn (two leases) and one lease more.
        tokio::time::sleep(lease * 3).await;
        for id in 1..=3 {
            let s = c.node(id).status();
            assert_eq!(
                (s.term, s.leader_id),
                (term, Some(leader)),
                "round {round}, node {id}"
            );
        }
        c.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_stop_elects_a_new_leader_and_keeps_writes() {
    let mut c = Cluster::start(3).await;
    let old = c.leader(None, Duration::from_secs(5)).await;
    for i in 0..30u64 {
        c.write(old, &format!("k{i}"), i).await;
    }
    let stopped_at = Instant::now();
    c.stop(old).await;
    // The failover time is a benchmark figure (lock_load failover,
    // docs/benchmarks.md: ~215 ms); here only that one comes, in a bound
    // a loaded machine keeps.
    let new = c.leader(Some(old), Duration::from_secs(5)).await;
    let took = stopped_at.elapsed();
    eprintln!("leader {old} stopped; node {new} leads after {took:?}");
    c.node(new).read_barrier().await.unwrap();
    let kv = c.kv(new);
    assert_eq!(kv.len(), 30);
    // The new leader keeps taking writes, and so does the other survivor.
    c.write(new, "after", 1).await;
    let other = *others(old).iter().find(|i| **i != new).unwrap();
    c.node(other).read_barrier().await.unwrap();
    assert_eq!(c.kv(other).get("after"), Some(&1));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitioned_leader_cannot_commit_and_converges_after_heal() {
    let c = Cluster::start(3).await;
    let old = c.leader(None, Duration::from_secs(5)).await;
    c.write(old, "before", 1).await;
    // Cut the leader off from both others, in both directions.
    c.isolate(old);
    // The old leader cannot commit: its write does not complete.
    let stuck = tokio::time::timeout(
        Duration::from_millis(800),
        c.node(old).raft().client_write(raft_core::Request {
            ts_ms: 0,
            cmds: vec![serde_json::value::to_raw_value(
                &serde_json::json!({"key": "lost", "value": 9}),
            )
            .unwrap()],
        }),
    )
    .await;
    assert!(
        !matches!(stuck, Ok(Ok(_))),
        "an isolated leader committed a write"
    );
    // The majority elects a new leader and commits.
    let new = c.majority_leader(old).await;
    c.write(new, "during", 2).await;
    assert!(!c.kv(old).contains_key("during"));
    // Heal: the old leader follows and converges; its lost write is gone.
    c.heal_all();
    c.write(new, "healed", 3).await;
    let applied = c.node(new).status().applied_index.unwrap();
    c.caught_up(old, applied).await;
    eventually(Duration::from_secs(3), Duration::from_millis(10), || {
        (c.node(old).status().leader_id == Some(new))
            .then_some(())
            .ok_or_else(|| "old leader never followed".to_string())
    })
    .await;
    assert_eq!(c.kv(old), c.kv(new));
    assert!(!c.kv(old).contains_key("lost"));
    assert_eq!(c.kv(old).get("during"), Some(&2));
    c.shutdown().await;
}

/// A follower cut off from the other two keeps asking for votes, but asks
/// first whether it would get them (pre-vote): nobody who hears the leader
/// says yes, so its term stays where it was. When it comes back the leader
/// keeps its term and its place. (Without pre-vote its openraft timer raised
/// its term on every timeout, and the first append after the heal, refused
/// for that higher term, deposed a healthy leader: one more election and
/// ~200 ms without writes.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partitioned_follower_rejoins_without_deposing_the_leader() {
    let c = Cluster::start(3).await;
    let leader = c.leader(None, Duration::from_secs(5)).await;
    let term = c.node(leader).status().term;
    c.write(leader, "before", 1).await;
    let cut = others(leader)[0];
    c.isolate(cut);
    // Several of its turns: the first comes a lease after the last append,
    // the next ones every two staggers.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    c.write(leader, "during", 2).await;
    let cut_term = c.node(cut).status().term;
    c.heal_all();
    c.write(leader, "after", 3).await;
    let applied = c.node(leader).status().applied_index.unwrap();
    c.caught_up(cut, applied).await;
    assert_eq!(
        cut_term, term,
        "the cut-off follower raised its term while alone"
    );
    c.assert_all_follow(leader, term, "after the heal");
    assert_eq!(c.kv(cut), c.kv(leader));
    c.shutdown().await;
}

/// A follower whose answers take longer than a heartbeat interval, but far
/// less than the lease, is slow, not gone: it keeps up, and nobody holds an
/// election over it. (With openraft's deadline of one heartbeat interval per
/// append, every append to it failed, the leader backed off up to 500 ms,
/// the follower heard nothing for longer than the lease and campaigned, and
/// the leader, whose own lease had long run out, voted it in.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_slower_than_a_heartbeat_keeps_up_without_an_election() {
    let c = Cluster::start(3).await;
    let leader = c.leader(None, Duration::from_secs(5)).await;
    let term = c.node(leader).status().term;
    let slow = others(leader)[0];
    let answer_late_by = Duration::from_millis(3 * Timing::default().heartbeat_ms / 2);
    c.node(leader)
        .faults()
        .delay_answers(&[slow], answer_late_by);
    let until = Instant::now() + Duration::from_millis(1_500);
    let mut i = 0u64;
    while Instant::now() < until {
        c.write(leader, &format!("k{i}"), i).await;
        i += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    c.assert_all_follow(
        leader,
        term,
        &format!("after {i} writes with node {slow} answering {answer_late_by:?} late"),
    );
    // The slow follower has every write, and the leader knows it: its
    // appends were answered, not abandoned.
    let applied = c.node(leader).status().applied_index.unwrap();
    c.caught_up(slow, applied).await;
    assert_eq!(c.kv(slow).len() as u64, i);
    eventually(Duration::from_secs(2), Duration::from_millis(10), || {
        let matched = c.node(leader).raft().metrics().borrow().replication.clone();
        let slow_matched = matched
            .and_then(|r| r.get(&slow).copied().flatten())
            .map(|l| l.index);
        if slow_matched >= Some(applied) {
            Ok(())
        } else {
            Err(format!(
                "leader's view of node {slow}: {slow_matched:?}, applied {applied}"
            ))
        }
    })
    .await;
    c.shutdown().await;
}

/// The leadership check behind a linearizable read waits for followers as
/// long as an append does. With one heartbeat interval (30 ms), as openraft
/// 0.9 has it, followers that answer 45 ms late confirmed nothing and every
/// read failed, though they kept up with every write.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn linearizable_reads_succeed_while_followers_answer_later_than_a_heartbeat() {
    let c = Cluster::start(3).await;
    let leader = c.leader(None, Duration::from_secs(5)).await;
    c.write(leader, "before", 1).await;
    let late = Duration::from_millis(3 * Timing::default().heartbeat_ms / 2);
    c.node(leader).faults().delay_answers(&others(leader), late);
    for i in 0..5u64 {
        c.write(leader, &format!("k{i}"), i).await;
        for id in 1..=3 {
            c.node(id)
                .read_barrier()
                .await
                .unwrap_or_else(|e| panic!("read {i} on node {id}: {e}"));
        }
    }
    c.shutdown().await;
}

/// A leader whose queue is full refuses at once, and what it refused never
/// applies. The leader is cut off so that nothing commits: its one entry in
/// flight stays there, the batcher holds the next command, the queue the
/// one after, and the write after that finds no room.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_proposal_queue_refuses_writes_that_then_never_apply() {
    let c = Cluster::start_tuned(3, None, 10_000, |cfg| {
        cfg.proposals = ProposalBounds {
            in_flight: 1,
            queued: 1,
        };
    })
    .await;
    let old = c.leader(None, Duration::from_secs(5)).await;
    c.write(old, "before", 1).await;
    c.isolate(old);
    let mut calls = Vec::new();
    for i in 0..8u64 {
        let node = c.node(old).clone();
        calls.push(tokio::spawn(async move {
            node.write(Set {
                key: format!("w{i}"),
                value: i,
            })
            .await
        }));
        // Each command its own step: taken into an entry, held, queued.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The majority goes on; healing lets the old leader follow again.
    let new = c.majority_leader(old).await;
    c.heal_all();
    let mut refused = Vec::new();
    let mut written = Vec::new();
    for (i, call) in calls.into_iter().enumerate() {
        match call.await.unwrap() {
            Err(raft_core::Error::Overloaded(why)) => {
                assert!(why.contains("retry"), "{why}");
                refused.push(i);
            }
            Ok(_) => written.push(i),
            // Outcome unknown (the isolated leader's wait ran out).
            Err(_) => {}
        }
    }
    assert!(
        refused.len() >= 5,
        "8 writes with room for 3: refused {refused:?}"
    );
    c.write(new, "after", 2).await;
    let applied = c.node(new).status().applied_index.unwrap();
    for id in 1..=3 {
        c.caught_up(id, applied).await;
        let kv = c.kv(id);
        for i in &refused {
            assert!(
                !kv.contains_key(&format!("w{i}")),
                "refused w{i} applied on {id}"
            );
        }
        for i in &written {
            assert!(
                kv.contains_key(&format!("w{i}")),
                "written w{i} missing on {id}"
            );
        }
    }
    // The old leader takes writes again once it follows.
    c.write(old, "later", 3).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarted_follower_catches_up_and_full_restart_recovers_from_disk() {
    let mut c = Cluster::start(3).await;
    let leader = c.leader(None, Duration::from_secs(5)).await;
    let follower = others(leader)[0];
    for i in 0..20u64 {
        c.write(leader, &format!("a{i}"), i).await;
    }
    c.stop(follower).await;
    for i in 0..20u64 {
        c.write(leader, &format!("b{i}"), i).await;
    }
    c.restart(follower).await;
    let applied = c.node(leader).status().applied_index.unwrap();
    c.caught_up(follower, applied).await;
    assert_eq!(c.kv(follower).len(), 40);

    // Stop everything, then bring all three back from their data dirs.
    for id in 1..=3 {
        c.stop(id).await;
    }
    for id in 1..=3 {
        c.restart(id).await;
    }
    let leader = c.leader(None, Duration::from_secs(5)).await;
    c.node(leader).read_barrier().await.unwrap();
    let kv = c.kv(leader);
    assert_eq!(kv.len(), 40, "writes lost across a full restart");
    assert_eq!(kv["b19"], 19);
    for id in 1..=3 {
        c.node(id).read_barrier().await.unwrap();
        assert_eq!(c.kv(id), kv, "node {id}");
    }
    c.shutdown().await;
}

/// A follower that missed more log than one append request may carry (the
/// peer's 16 MiB body limit; openraft sends up to 300 entries at once)
/// catches up through the log: before, every request was refused (413)
/// and resent unchanged, and the follower got nothing until a snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_behind_by_more_than_one_request_can_carry_catches_up() {
    let mut c = Cluster::start(3).await;
    let leader = c.leader(None, Duration::from_secs(5)).await;
    let follower = others(leader)[0];
    c.stop(follower).await;
    // 24 entries of ~1 MiB each: 24 MiB behind.
    let big = "k".repeat(1 << 20);
    for i in 0..24u64 {
        c.write(leader, &format!("{big}{i}"), i).await;
    }
    c.restart(follower).await;
    let applied = c.node(leader).status().applied_index.unwrap();
    c.caught_up(follower, applied).await;
    assert_eq!(c.kv(follower).len(), 24);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn far_behind_node_catches_up_through_a_snapshot() {
    // Snapshot every 50 entries and keep no log behind it, so a follower
    // that misses 300 entries cannot catch up by log.
    let mut c = Cluster::start_with(3, None, 50).await;
    let leader = c.leader(None, Duration::from_secs(5)).await;
    let lagger = others(leader)[0];
    c.write(leader, "first", 0).await;
    c.stop(lagger).await;
    for i in 0..300u64 {
        c.write(leader, &format!("k{i}"), i).await;
    }
    eventually(Duration::from_secs(5), Duration::from_millis(20), || {
        let m = c.node(leader).metrics().borrow().clone();
        if m.purged.map(|p| p.index).unwrap_or(0) > 10 {
            Ok(())
        } else {
            Err(format!("leader never purged: {m:?}"))
        }
    })
    .await;
    c.restart(lagger).await;
    let applied = c.node(leader).status().applied_index.unwrap();
    c.caught_up(lagger, applied).await;
    assert_eq!(c.kv(lagger), c.kv(leader));
    assert_eq!(c.kv(lagger).len(), 301);
    let snap = c.node(lagger).status().snapshot_index;
    assert!(snap.is_some(), "lagger caught up without a snapshot");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn internal_routes_require_the_cluster_token() {
    let c = Cluster::start_with(3, Some("s3cret".into()), 10_000).await;
    let leader = c.leader(None, Duration::from_secs(5)).await;
    c.write(leader, "x", 1).await;
    let before = c.node(leader).status();
    let http = reqwest::Client::new();
    let vote = serde_json::json!({
        "vote": {"leader_id": {"term": before.term + 100, "node_id": 2}, "committed": false},
        "last_log_id": null
    });
    for (i, token) in [None, Some("wrong")].into_iter().enumerate() {
        for path in [
            "vote",
            "prevote",
            "append",
            "snapshot",
            "write",
            "read-index",
        ] {
            let mut req = http
                .post(format!("http://{}/internal/raft/{path}", c.addrs[&leader]))
                .json(&vote);
            if let Some(t) = token {
                req = req.header("x-cluster-token", t);
            }
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 401, "case {i} path {path}");
            let body: serde_json::Value = resp.json().await.unwrap();
            assert_eq!(body["error"]["code"], "unauthorized");
        }
    }
    // With the token, a pre-vote is answered and changes nothing: the
    // leader says no, and why; a malformed one is refused.
    let prevote_route = format!("http://{}/internal/raft/prevote", c.addrs[&leader]);
    let resp = http
        .post(&prevote_route)
        .header("x-cluster-token", "s3cret")
        .json(&serde_json::json!({"candidate": 2, "last_log_id": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["Ok"]["granted"], false, "{body}");
    assert_eq!(body["Ok"]["reason"], "this node is the leader", "{body}");
    let resp = http
        .post(&prevote_route)
        .header("x-cluster-token", "s3cret")
        .json(&serde_json::json!({"candidate": "two"}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_client_error(), "{}", resp.status());
    assert_eq!(c.node(leader).status().term, before.term);
    // A snapshot chunk that is not one is refused and says why.
    let snapshot_route = format!("http://{}/internal/raft/snapshot", c.addrs[&leader]);
    let resp = http
        .post(&snapshot_route)
        .header("x-cluster-token", "s3cret")
        .body(vec![200u8, 0, 0, 0, b'{'])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("header says 200 bytes"),
        "{body}"
    );
    // A chunk as one JSON request (what older builds send) is still read:
    // this one, from a stale term, is answered with our newer vote.
    let stale = serde_json::json!({
        "vote": {"leader_id": {"term": 0, "node_id": 2}, "committed": true},
        "meta": {"last_log_id": null, "last_membership": {"log_id": null,
                 "membership": {"configs": [], "nodes": {}}}, "snapshot_id": "s"},
        "offset": 0, "data": [1, 2, 3], "done": false
    });
    let resp = http
        .post(&snapshot_route)
        .header("x-cluster-token", "s3cret")
        .json(&stale)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        body["Ok"]["vote"]["leader_id"]["term"], before.term,
        "{body}"
    );
    // Nothing changed: same term, same leader, still writable.
    let after = c.node(leader).status();
    assert_eq!(after.term, before.term);
    assert_eq!(after.leader_id, before.leader_id);
    c.write(leader, "y", 2).await;
    c.shutdown().await;
}
