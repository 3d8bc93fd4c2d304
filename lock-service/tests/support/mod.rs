//! A real three-node lock cluster for the black-box tests: `lock-service`
//! processes on 127.0.0.1, real HTTP, real signals, and optionally a
//! fault-injecting disk under each node (`chaos::faultfs`, an
//! `LD_PRELOAD` shim built with `cc`).
// Each test file uses its own part of this module.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use common::port::free_port;
use serde_json::Value;

pub struct Cluster {
    pub ports: BTreeMap<u64, u16>,
    pub dir: tempfile::TempDir,
    pub procs: BTreeMap<u64, Child>,
    pub http: reqwest::Client,
    /// Extra environment (flag fallbacks) for every node.
    pub env: Vec<(&'static str, &'static str)>,
    /// Every node runs on the fault-injecting disk shim (see [`Cluster::fault`]).
    pub faulty: bool,
}

/// The fault shim (chaos's `faultfs`), compiled once per test binary.
pub fn faultfs() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        chaos::faultfs::build(Path::new(env!("CARGO_TARGET_TMPDIR"))).expect("build the fault shim")
    })
}

impl Cluster {
    pub async fn start() -> Self {
        Self::start_with(Vec::new(), false).await
    }

    pub async fn start_with_env(env: Vec<(&'static str, &'static str)>) -> Self {
        Self::start_with(env, false).await
    }

    /// A cluster whose nodes all run on the fault shim, each with its own
    /// control file (no fault until [`Cluster::fault`] sets one).
    pub async fn start_faulty() -> Self {
        Self::start_with(Vec::new(), true).await
    }

    async fn start_with(env: Vec<(&'static str, &'static str)>, faulty: bool) -> Self {
        let ports: BTreeMap<u64, u16> = (1..=3).map(|id| (id, free_port())).collect();
        let mut c = Cluster {
            ports,
            dir: tempfile::tempdir().unwrap(),
            procs: BTreeMap::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            env,
            faulty,
        };
        for id in 1..=3 {
            if faulty {
                c.fault(id, "ok");
            }
            c.spawn(id);
        }
        c.wait_leader(None, Duration::from_secs(10)).await;
        c
    }

    /// A handle for a client task: same nodes and HTTP client, no processes
    /// of its own (dropping it stops nothing).
    pub fn client_view(&self) -> Cluster {
        Cluster {
            ports: self.ports.clone(),
            dir: tempfile::tempdir().unwrap(),
            procs: BTreeMap::new(),
            http: self.http.clone(),
            env: Vec::new(),
            faulty: false,
        }
    }

    pub fn peers(&self) -> String {
        self.ports
            .iter()
            .map(|(id, p)| format!("{id}=127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Node `id`'s stderr, kept across restarts.
    pub fn log_path(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("n{id}.log"))
    }

    fn ctl_path(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("faultfs-{id}.ctl"))
    }

    /// Set node `id`'s disk fault (a line as chaos's `faultfs.c` describes
    /// it: "ok", "slow MS", "eio N [MS]", "enospc N"); it applies from the
    /// node's next sync or write on.
    pub fn fault(&self, id: u64, how: &str) {
        assert!(self.faulty, "the cluster was not started on the fault shim");
        std::fs::write(self.ctl_path(id), format!("{how}\n")).unwrap();
    }

    pub fn spawn(&mut self, id: u64) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(id))
            .unwrap();
        // LOCK_SERVICE_BIN runs the tests against another build (to show a
        // fault test fails on the code before its fix).
        let bin = std::env::var("LOCK_SERVICE_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_lock-service").to_string());
        let mut cmd = Command::new(bin);
        cmd.args([
            "--id",
            &id.to_string(),
            "--listen",
            &format!("127.0.0.1:{}", self.ports[&id]),
            "--peers",
            &self.peers(),
            "--data-dir",
            self.dir.path().join(format!("n{id}")).to_str().unwrap(),
        ])
        .env("RUST_LOG", "warn")
        // As run-local.sh and compose.yaml run three nodes on one host.
        .env("WORKER_THREADS", "1")
        .envs(self.env.iter().copied())
        .stdout(Stdio::null())
        .stderr(log);
        if self.faulty {
            cmd.env("LD_PRELOAD", faultfs())
                .env("FAULTFS_CTL", self.ctl_path(id));
        }
        let child = cmd.spawn().expect("start lock-service");
        self.procs.insert(id, child);
    }

    pub fn kill(&mut self, id: u64) {
        let mut child = self.procs.remove(&id).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Wait up to `within` for node `id` to exit on its own; its status.
    pub async fn exited(&mut self, id: u64, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            let child = self.procs.get_mut(&id).expect("a node we started");
            if let Some(status) = child.try_wait().unwrap() {
                self.procs.remove(&id);
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGSTOP or SIGCONT one of our nodes (by its PID).
    pub fn signal(&self, id: u64, sig: &str) {
        let pid = self.procs[&id].id().to_string();
        let ok = Command::new("kill").args([sig, &pid]).status().unwrap();
        assert!(ok.success(), "kill {sig} {pid}");
    }

    pub fn url(&self, id: u64, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports[&id])
    }

    pub async fn get(&self, id: u64, path: &str) -> Option<Value> {
        let r = self.http.get(self.url(id, path)).send().await.ok()?;
        r.json().await.ok()
    }

    pub async fn post(&self, id: u64, path: &str, body: &Value) -> Result<(u16, Value), String> {
        let r = self
            .http
            .post(self.url(id, path))
            .json(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = r.status().as_u16();
        Ok((status, r.json().await.map_err(|e| e.to_string())?))
    }

    /// Wait until every running node names the same leader (≠ `not`).
    pub async fn wait_leader(&self, not: Option<u64>, within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            let mut leaders = Vec::new();
            for id in self.procs.keys() {
                let l = self
                    .get(*id, "/cluster")
                    .await
                    .and_then(|v| v["leader_id"].as_u64());
                leaders.push(l);
            }
            if let Some(Some(l)) = leaders.first() {
                if leaders.iter().all(|x| *x == Some(*l)) && Some(*l) != not {
                    return *l;
                }
            }
            assert!(Instant::now() < deadline, "no agreed leader: {leaders:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// POST to the given node, falling over to the others on connection
    /// errors and 503s (the same request body, so the same request id).
    pub async fn call(&self, first: u64, path: &str, body: &Value) -> (u16, Value) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut i = 0;
        loop {
            let ids: Vec<u64> = self.ports.keys().copied().collect();
            let id = ids[(ids.iter().position(|x| *x == first).unwrap() + i) % ids.len()];
            match self.post(id, path, body).await {
                Ok((503, _)) | Err(_) => {
                    assert!(Instant::now() < deadline, "{path} never succeeded");
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok(other) => return other,
            }
        }
    }

    /// Wait until every running node has applied the same index, and that
    /// index covers everything each of them has in its log; that index.
    pub async fn wait_converged(&self, within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            let mut seen = Vec::new();
            for id in self.procs.keys() {
                let v = self.get(*id, "/cluster").await;
                seen.push(v.map(|v| (v["applied_index"].as_u64(), v["last_log_index"].as_u64())));
            }
            if let Some(Some((Some(a), _))) = seen.first() {
                let same = seen
                    .iter()
                    .all(|s| matches!(s, Some((Some(x), Some(l))) if x == a && l == a));
                if same {
                    return *a;
                }
            }
            assert!(
                Instant::now() < deadline,
                "replicas never converged: {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What node `id` itself has applied for `resource` (a stale read: no
    /// leader involved), as holders `(owner, mode, token)` and waiters.
    pub async fn local_lock(&self, id: u64, resource: &str) -> Value {
        let v = self
            .get(id, &format!("/api/lock/{resource}?consistency=stale"))
            .await
            .unwrap_or_else(|| panic!("node {id} did not answer a read of {resource}"));
        let holders: Vec<Value> = v["holders"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|h| serde_json::json!([h["owner"], h["mode"], h["token"]]))
            .collect();
        serde_json::json!({ "holders": holders, "waiters": v["waiters"] })
    }

    /// The digests of every entry node `id` applied since it started (see
    /// raft-core's `/internal/raft/applied`).
    pub async fn applied(&self, id: u64) -> BTreeMap<u64, String> {
        let mut out = BTreeMap::new();
        let mut from = 0;
        loop {
            let v = self
                .get(
                    id,
                    &format!("/internal/raft/applied?from={from}&limit=10000"),
                )
                .await
                .unwrap_or_else(|| panic!("node {id} did not answer /internal/raft/applied"));
            let page = v["entries"].as_array().cloned().unwrap_or_default();
            for e in &page {
                out.insert(e[0].as_u64().unwrap(), e[1].as_str().unwrap().to_string());
            }
            match page.last() {
                Some(last) if page.len() == 10_000 => from = last[0].as_u64().unwrap() + 1,
                _ => return out,
            }
        }
    }

    /// Every index applied by two or more running nodes carries the same
    /// digest on each; the number of indexes compared.
    pub async fn assert_same_applied(&self) -> usize {
        let mut all = Vec::new();
        for id in self.procs.keys() {
            all.push((*id, self.applied(*id).await));
        }
        let mut compared = 0;
        for (i, (a, da)) in all.iter().enumerate() {
            for (b, db) in &all[i + 1..] {
                for (index, digest) in da {
                    if let Some(other) = db.get(index) {
                        assert_eq!(
                            digest, other,
                            "nodes {a} and {b} applied different entries at index {index}"
                        );
                        compared += 1;
                    }
                }
            }
        }
        compared
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, mut c) in std::mem::take(&mut self.procs) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
