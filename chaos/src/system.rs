//! The system under test, as real processes on 127.0.0.1: three lock nodes
//! (each on the disk fault shim), three queue nodes, three cache nodes, the
//! gateway, and in Redis mode a `redis-server` (AOF, `appendfsync always`)
//! that the queue and cache nodes keep their state in.
//!
//! With `netns`, the lock nodes run in network namespaces of their own
//! ([`crate::netns`]) so that links between them can be cut; everything
//! else stays on 127.0.0.1.
//!
//! Every process writes its output to `<dir>/logs/<name>.log` (appended
//! across restarts) and keeps its data under `<dir>/data/<name>`, so a
//! failing run leaves what is needed to look into it. Only processes
//! started here are ever signalled, by their PID.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::faultfs::{self, Fault};
use crate::netns::Net;

/// For a test binary of this workspace (`target/<profile>/deps/<test>`),
/// the directory of the workspace's built binaries (`target/<profile>`),
/// checked to hold every service and the gateway: the `bins` of
/// [`Options`] for tests that start the whole system.
pub fn workspace_bins() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let bins = exe
        .parent()
        .and_then(Path::parent)
        .expect("a test binary lives in target/<profile>/deps")
        .to_path_buf();
    for b in ["lock-service", "queue-service", "cache-service", "gateway"] {
        assert!(
            bins.join(b).exists(),
            "{} is missing: build the services first (cargo build --workspace --bins)",
            bins.join(b).display()
        );
    }
    bins
}

/// What a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Lock,
    Queue,
    Cache,
    Gateway,
    Redis,
}

/// One process of the system, running or not.
#[derive(Debug)]
pub struct Node {
    pub name: String,
    pub kind: Kind,
    /// `127.0.0.1:port` it serves on.
    pub addr: String,
    args: Vec<String>,
    program: PathBuf,
    child: Option<Child>,
    paused: bool,
    /// The disk shim's control file (lock nodes).
    ctl: Option<PathBuf>,
    /// Extra environment of this process (kept across restarts).
    env: Vec<(String, String)>,
}

/// Where the binaries are and how to run the system.
#[derive(Debug, Clone)]
pub struct Options {
    /// The directory holding `lock-service`, `queue-service`,
    /// `cache-service` and `gateway`.
    pub bins: PathBuf,
    /// The run's directory (logs, data, the shim).
    pub dir: PathBuf,
    /// Queue and cache state in a Redis server instead of the embedded
    /// store and home-node memory.
    pub redis: bool,
    /// Lock nodes in network namespaces (needs root), for partitions.
    pub netns: bool,
    /// Lock nodes on the disk fault shim (off: their disk as it is, for
    /// benchmarks; [`System::disk`] then refuses).
    pub disk_shim: bool,
    /// `--worker-threads` of the lock nodes (`None`: the service's default).
    pub lock_worker_threads: Option<usize>,
}

/// The running system.
pub struct System {
    pub nodes: BTreeMap<String, Node>,
    opts: Options,
    shim: Option<PathBuf>,
    http: reqwest::Client,
    /// The lock nodes' private network, with `Options::netns`. Declared
    /// last: it is dropped after `Drop for System` stopped every process.
    net: Option<Net>,
}

impl System {
    /// Start every process and wait until the gateway reports every backend
    /// healthy and the lock nodes agree on a leader.
    pub async fn start(opts: Options) -> anyhow::Result<System> {
        Self::start_with_env(opts, &[]).await
    }

    /// [`System::start`] with extra environment variables for the processes
    /// of one kind (`(kind, name, value)`), e.g. smaller limits for a
    /// benchmark that must reach them. Environment rather than flags: a
    /// service that does not know a variable ignores it, where an unknown
    /// flag would stop it from starting.
    pub async fn start_with_env(
        opts: Options,
        env: &[(Kind, &str, &str)],
    ) -> anyhow::Result<System> {
        std::fs::create_dir_all(opts.dir.join("logs"))?;
        std::fs::create_dir_all(opts.dir.join("data"))?;
        let shim = if opts.disk_shim {
            Some(faultfs::build(&opts.dir)?)
        } else {
            None
        };
        let net = if opts.netns {
            Some(Net::create(3)?)
        } else {
            None
        };
        let mut ports = BTreeMap::new();
        for name in [
            "lock-1", "lock-2", "lock-3", "queue-1", "queue-2", "queue-3", "cache-1", "cache-2",
            "cache-3", "gateway", "redis",
        ] {
            ports.insert(name, format!("127.0.0.1:{}", common::port::reserve()?));
        }
        if let Some(net) = &net {
            for i in 1..=3 {
                ports.insert(
                    ["lock-1", "lock-2", "lock-3"][i - 1],
                    format!("{}:7001", net.addr(i)),
                );
            }
        }
        let list = |prefix: &str| {
            (1..=3)
                .map(|i| ports[format!("{prefix}-{i}").as_str()].clone())
                .collect::<Vec<_>>()
                .join(",")
        };
        let lock_peers = (1..=3)
            .map(|i| format!("{i}={}", ports[format!("lock-{i}").as_str()]))
            .collect::<Vec<_>>()
            .join(",");
        let redis_url = format!("redis://{}", ports["redis"]);
        let data = |name: &str| opts.dir.join("data").join(name).display().to_string();
        let bin = |name: &str| opts.bins.join(name);
        let mut nodes = BTreeMap::new();
        let mut add = |name: &str, kind: Kind, program: PathBuf, args: Vec<String>| {
            let ctl = (kind == Kind::Lock && opts.disk_shim)
                .then(|| opts.dir.join(format!("{name}.faultfs")));
            nodes.insert(
                name.to_string(),
                Node {
                    name: name.to_string(),
                    kind,
                    addr: ports[name].clone(),
                    args,
                    program,
                    child: None,
                    paused: false,
                    ctl,
                    env: env
                        .iter()
                        .filter(|(k, _, _)| *k == kind)
                        .map(|(_, name, value)| (name.to_string(), value.to_string()))
                        .collect(),
                },
            );
        };
        if opts.redis {
            let (host, port) = ports["redis"]
                .split_once(':')
                .unwrap_or(("127.0.0.1", "6379"));
            std::fs::create_dir_all(data("redis"))?;
            add(
                "redis",
                Kind::Redis,
                PathBuf::from("redis-server"),
                vec![
                    "--bind".into(),
                    host.into(),
                    "--port".into(),
                    port.into(),
                    "--dir".into(),
                    data("redis"),
                    "--appendonly".into(),
                    "yes".into(),
                    "--appendfsync".into(),
                    "always".into(),
                    "--save".into(),
                    "".into(),
                ],
            );
        }
        for i in 1..=3 {
            let name = format!("lock-{i}");
            // In its namespace: `ip netns exec NS lock-service …` (ip execs
            // the service, so the PID is the service's own).
            let (program, mut args) = match &net {
                Some(net) => {
                    let mut prefix = net.prefix(i);
                    prefix.push(bin("lock-service").display().to_string());
                    (PathBuf::from("ip"), prefix)
                }
                None => (bin("lock-service"), Vec::new()),
            };
            args.extend::<Vec<String>>(vec![
                "--id".into(),
                i.to_string(),
                "--listen".into(),
                ports[name.as_str()].clone(),
                "--peers".into(),
                lock_peers.clone(),
                "--data-dir".into(),
                data(&name),
            ]);
            if let Some(n) = opts.lock_worker_threads {
                args.extend(["--worker-threads".into(), n.to_string()]);
            }
            add(&name, Kind::Lock, program, args);
        }
        for i in 1..=3 {
            let name = format!("queue-{i}");
            let mut args = vec![
                "--listen".into(),
                ports[name.as_str()].clone(),
                "--peers".into(),
                list("queue"),
            ];
            if opts.redis {
                args.extend(["--redis-url".into(), redis_url.clone()]);
            } else {
                args.extend(["--data-dir".into(), data(&name)]);
            }
            add(&name, Kind::Queue, bin("queue-service"), args);
        }
        for i in 1..=3 {
            let name = format!("cache-{i}");
            let mut args = vec![
                "--listen".into(),
                ports[name.as_str()].clone(),
                "--peers".into(),
                list("cache"),
            ];
            if opts.redis {
                args.extend(["--redis-url".into(), redis_url.clone()]);
            }
            add(&name, Kind::Cache, bin("cache-service"), args);
        }
        add(
            "gateway",
            Kind::Gateway,
            bin("gateway"),
            vec![
                "--listen".into(),
                ports["gateway"].clone(),
                "--lock-nodes".into(),
                list("lock"),
                "--queue-nodes".into(),
                list("queue"),
                "--cache-nodes".into(),
                list("cache"),
            ],
        );
        let mut sys = System {
            nodes,
            opts,
            shim,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()?,
            net,
        };
        let names: Vec<String> = sys.nodes.keys().cloned().collect();
        // Redis first: the queue and cache nodes connect to it at start.
        if sys.opts.redis {
            sys.spawn("redis")?;
            sys.wait_port("redis", Duration::from_secs(10)).await?;
        }
        for name in names.iter().filter(|n| n.as_str() != "redis") {
            if let Some(ctl) = &sys.nodes[name].ctl {
                faultfs::set(ctl, Fault::None)?;
            }
            sys.spawn(name)?;
        }
        sys.wait_healthy(Duration::from_secs(60)).await?;
        Ok(sys)
    }

    pub fn gateway_url(&self) -> String {
        format!("http://{}", self.nodes["gateway"].addr)
    }

    pub fn dir(&self) -> &Path {
        &self.opts.dir
    }

    pub fn names(&self, kind: Kind) -> Vec<String> {
        self.nodes
            .values()
            .filter(|n| n.kind == kind)
            .map(|n| n.name.clone())
            .collect()
    }

    /// Start `name` (again), appending to its log.
    pub fn spawn(&mut self, name: &str) -> anyhow::Result<()> {
        let shim = self.shim.clone();
        let logs = self.opts.dir.join("logs");
        let node = self
            .nodes
            .get_mut(name)
            .ok_or_else(|| anyhow::anyhow!("no node {name}"))?;
        if node.child.is_some() {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(logs.join(format!("{name}.log")))?;
        let mut cmd = Command::new(&node.program);
        cmd.args(&node.args)
            .env("RUST_LOG", "warn")
            .envs(node.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let (Some(ctl), Some(shim)) = (&node.ctl, &shim) {
            cmd.envs(faultfs::env(shim, ctl));
        }
        let child = cmd
            .spawn()
            .map_err(|e| anyhow::anyhow!("starting {name} ({}): {e}", node.program.display()))?;
        node.child = Some(child);
        node.paused = false;
        Ok(())
    }

    /// The OS process id of `name`, while it runs (for reading its
    /// `/proc/<pid>` figures; signal it through this type, not by the id).
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.nodes.get(name)?.child.as_ref().map(|c| c.id())
    }

    /// SIGKILL `name` and reap it (nothing if it is not running).
    pub fn kill(&mut self, name: &str) {
        if let Some(node) = self.nodes.get_mut(name) {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
            node.paused = false;
        }
    }

    /// Is `name` running (not exited)? Reaps it if it exited on its own.
    pub fn running(&mut self, name: &str) -> bool {
        let Some(node) = self.nodes.get_mut(name) else {
            return false;
        };
        match node.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(_) => {
                node.child = None;
                false
            }
            None => false,
        }
    }

    fn signal(&mut self, name: &str, sig: &str) -> anyhow::Result<()> {
        let node = self
            .nodes
            .get_mut(name)
            .ok_or_else(|| anyhow::anyhow!("no node {name}"))?;
        let Some(child) = &node.child else {
            return Ok(());
        };
        let status = Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill {sig} {name}");
        node.paused = sig == "-STOP";
        Ok(())
    }

    /// SIGSTOP `name` (a process pause: GC, swap, a stalled VM).
    pub fn pause(&mut self, name: &str) -> anyhow::Result<()> {
        self.signal(name, "-STOP")
    }

    /// SIGCONT `name`.
    pub fn resume(&mut self, name: &str) -> anyhow::Result<()> {
        self.signal(name, "-CONT")
    }

    /// Set the disk fault of lock node `name`.
    pub fn disk(&self, name: &str, fault: Fault) -> anyhow::Result<()> {
        let ctl = self
            .nodes
            .get(name)
            .and_then(|n| n.ctl.as_ref())
            .ok_or_else(|| anyhow::anyhow!("{name} has no disk shim"))?;
        Ok(faultfs::set(ctl, fault)?)
    }

    /// Does this run have the lock nodes' private network (partitions)?
    pub fn has_net(&self) -> bool {
        self.net.is_some()
    }

    fn net(&self) -> anyhow::Result<&Net> {
        self.net
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("partitions need the lock nodes in namespaces"))
    }

    /// Lock node `name` (`lock-i`) loses every other lock node.
    pub fn isolate(&self, name: &str) -> anyhow::Result<()> {
        self.net()?.isolate(lock_index(name)?)
    }

    /// Lock node `from` can no longer reach `to` (`to` still reaches it).
    pub fn cut_one_way(&self, from: &str, to: &str) -> anyhow::Result<()> {
        self.net()?.cut_one_way(lock_index(from)?, lock_index(to)?)
    }

    /// Remove every cut between lock nodes.
    pub fn heal_net(&self) -> anyhow::Result<()> {
        match &self.net {
            Some(net) => net.heal(),
            None => Ok(()),
        }
    }

    /// Resume, restart and un-fault everything, then wait until healthy.
    pub async fn heal_all(&mut self) -> anyhow::Result<()> {
        self.heal_net()?;
        let names: Vec<String> = self.nodes.keys().cloned().collect();
        for name in &names {
            if self.nodes[name].paused {
                self.resume(name)?;
            }
            if self.nodes[name].ctl.is_some() {
                self.disk(name, Fault::None)?;
            }
        }
        if self.opts.redis && !self.running("redis") {
            self.spawn("redis")?;
            self.wait_port("redis", Duration::from_secs(10)).await?;
        }
        for name in &names {
            if !self.running(name) {
                self.spawn(name)?;
            }
        }
        self.wait_healthy(Duration::from_secs(60)).await
    }

    async fn wait_port(&self, name: &str, within: Duration) -> anyhow::Result<()> {
        let addr = self.nodes[name].addr.clone();
        let deadline = Instant::now() + within;
        while tokio::net::TcpStream::connect(&addr).await.is_err() {
            anyhow::ensure!(Instant::now() < deadline, "{name} never listened on {addr}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// The lock leader as every running lock node names it, if they agree.
    pub async fn lock_leader(&self) -> Option<String> {
        let mut leaders = Vec::new();
        for n in self.nodes.values().filter(|n| n.kind == Kind::Lock) {
            if n.child.is_none() || n.paused {
                continue;
            }
            let v: serde_json::Value = self
                .http
                .get(format!("http://{}/cluster", n.addr))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            leaders.push(v["leader_id"].as_u64()?);
        }
        let first = *leaders.first()?;
        leaders
            .iter()
            .all(|l| *l == first)
            .then(|| format!("lock-{first}"))
    }

    /// Wait until the gateway answers 200 on /health (every backend it knows
    /// is up) and the lock nodes agree on a leader.
    pub async fn wait_healthy(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        let url = format!("{}/health", self.gateway_url());
        loop {
            let health = match self.http.get(&url).send().await {
                Ok(r) => (r.status().is_success(), r.text().await.unwrap_or_default()),
                Err(e) => (false, e.to_string()),
            };
            if health.0 && self.lock_leader().await.is_some() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let mut locks = Vec::new();
                for n in self.names(Kind::Lock) {
                    let v = match self.get_json(&n, "/cluster").await {
                        Ok(v) => v.to_string(),
                        Err(e) => e.to_string(),
                    };
                    locks.push(format!("{n}: {v}"));
                }
                anyhow::bail!(
                    "the system did not become healthy within {within:?} (see {}); \
                     gateway /health: {}; lock nodes: {}",
                    self.opts.dir.join("logs").display(),
                    health.1,
                    locks.join("; ")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// GET a JSON document from node `name`.
    pub async fn get_json(&self, name: &str, path: &str) -> anyhow::Result<serde_json::Value> {
        let addr = &self
            .nodes
            .get(name)
            .ok_or_else(|| anyhow::anyhow!("no node {name}"))?
            .addr;
        Ok(self
            .http
            .get(format!("http://{addr}{path}"))
            .send()
            .await?
            .json()
            .await?)
    }

    /// Stop everything (SIGCONT first, so a paused process can die).
    pub fn stop(&mut self) {
        let names: Vec<String> = self.nodes.keys().cloned().collect();
        for name in &names {
            if self.nodes[name].paused {
                let _ = self.resume(name);
            }
            self.kill(name);
        }
    }
}

/// `lock-i` → `i`.
fn lock_index(name: &str) -> anyhow::Result<usize> {
    name.strip_prefix("lock-")
        .and_then(|i| i.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("{name} is not a lock node"))
}

impl Drop for System {
    fn drop(&mut self) {
        self.stop();
    }
}
