//! Real processes for the end-to-end tests: the lock, queue and cache
//! service binaries of this workspace and a throwaway `redis-server`, each
//! on 127.0.0.1 with a free port, each killed when its guard drops. The
//! gateway itself runs in-process (`gateway::serve`) over a member list the
//! test can change.

#![allow(dead_code)] // each test binary uses a different part

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use common::port::free_port;
use gateway::{BackendSenders, Backends, Gateway, Settings};
use tokio::net::TcpListener;

/// Path of a workspace binary next to the test executable
/// (target/<profile>/deps/e2e-… → target/<profile>/<name>).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "binary `{name}` not found at {}: build the workspace first \
         (`cargo build --workspace --bins`; `cargo nextest run --workspace` builds every binary)",
        path.display()
    );
    path
}

/// A port nothing listens on right now.
/// A child process killed on drop. Its stderr goes to a log file kept in
/// the test's temp dir, printed when a wait for it fails.
pub struct Proc {
    pub name: String,
    pub addr: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, addr: &str, cmd: &mut Command, logdir: &std::path::Path) -> Self {
        let log = logdir.join(format!("{}-{}.log", name, addr.replace(':', "_")));
        let file = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        Self {
            name: name.to_string(),
            addr: addr.to_string(),
            child: Some(child),
            log,
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Wait until `GET path` answers 2xx (bounded).
    pub async fn wait_ready(&mut self, path: &str, within: Duration) {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + within;
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!(
                        "{} {} exited with {status}:\n{}",
                        self.name,
                        self.addr,
                        self.log_tail()
                    );
                }
            }
            let url = format!("http://{}{path}", self.addr);
            if let Ok(r) = http
                .get(&url)
                .timeout(Duration::from_millis(500))
                .send()
                .await
            {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{} {} not ready on {path} within {within:?}:\n{}",
                self.name,
                self.addr,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A throwaway redis-server (no persistence) on a free port.
pub struct Redis {
    proc: Proc,
    pub url: String,
}

impl Redis {
    pub async fn start(dir: &std::path::Path) -> Self {
        let server = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .or_else(|| which("redis-server"))
            .expect("redis-server not found: install it (scripts/install-deps.sh; CI installs it via apt)");
        let port = free_port();
        let data = dir.join(format!("redis-{port}"));
        std::fs::create_dir_all(&data).unwrap();
        let mut cmd = Command::new(server);
        cmd.args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            data.to_str().unwrap(),
        ]);
        let addr = format!("127.0.0.1:{port}");
        let proc = Proc::spawn("redis", &addr, &mut cmd, dir);
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(&addr).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "redis did not start:\n{}",
                proc.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Self {
            proc,
            url: format!("redis://{addr}"),
        }
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.exists())
    })
}

/// Three lock nodes forming one Raft group.
pub async fn lock_cluster(dir: &std::path::Path, n: usize) -> Vec<Proc> {
    let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
    let peers = ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{}=127.0.0.1:{p}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let mut nodes = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let addr = format!("127.0.0.1:{port}");
        let data = dir.join(format!("lock-{}", i + 1));
        let mut cmd = Command::new(bin("lock-service"));
        cmd.args([
            "--id",
            &(i + 1).to_string(),
            "--listen",
            &addr,
            "--peers",
            &peers,
            "--data-dir",
            data.to_str().unwrap(),
        ]);
        nodes.push(Proc::spawn("lock-service", &addr, &mut cmd, dir));
    }
    for n in nodes.iter_mut() {
        // /health is 200 only once a leader is known.
        n.wait_ready("/health", Duration::from_secs(30)).await;
    }
    nodes
}

/// One queue node; `peers` is the ring it believes in (itself included).
pub fn queue_node(dir: &std::path::Path, addr: &str, peers: &[String], redis_url: &str) -> Proc {
    let mut cmd = Command::new(bin("queue-service"));
    cmd.args([
        "--listen",
        addr,
        "--peers",
        &peers.join(","),
        "--redis-url",
        redis_url,
        "--data-dir",
        dir.join(format!("queue-{}", addr.replace(':', "_")))
            .to_str()
            .unwrap(),
    ]);
    Proc::spawn("queue-service", addr, &mut cmd, dir)
}

/// `n` queue nodes sharing one Redis.
pub async fn queue_cluster(dir: &std::path::Path, n: usize, redis_url: &str) -> Vec<Proc> {
    let addrs: Vec<String> = (0..n)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let mut nodes: Vec<Proc> = addrs
        .iter()
        .map(|a| queue_node(dir, a, &addrs, redis_url))
        .collect();
    for n in nodes.iter_mut() {
        n.wait_ready("/health", Duration::from_secs(20)).await;
    }
    nodes
}

/// `n` cache nodes (home-node memory).
pub async fn cache_cluster(dir: &std::path::Path, n: usize) -> Vec<Proc> {
    let addrs: Vec<String> = (0..n)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let mut nodes = Vec::new();
    for a in &addrs {
        let mut cmd = Command::new(bin("cache-service"));
        cmd.args(["--listen", a, "--peers", &addrs.join(",")]);
        nodes.push(Proc::spawn("cache-service", a, &mut cmd, dir));
    }
    for n in nodes.iter_mut() {
        n.wait_ready("/health", Duration::from_secs(20)).await;
    }
    nodes
}

pub fn addrs(procs: &[Proc]) -> Vec<String> {
    procs.iter().map(|p| p.addr.clone()).collect()
}

/// An in-process gateway on 127.0.0.1:0; stops when dropped.
pub struct Gw {
    pub addr: String,
    pub gateway: Gateway,
    pub members: BackendSenders,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Gw {
    pub async fn start(
        settings: Settings,
        lock: Vec<String>,
        queue: Vec<String>,
        cache: Vec<String>,
    ) -> Self {
        let (backends, members) = Backends::channels(lock, queue, cache);
        let gateway = Gateway::new(settings, backends).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let gw = gateway.clone();
        tokio::spawn(async move {
            gateway::serve(gw, listener, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Self {
            addr,
            gateway,
            members,
            stop: Some(tx),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn client(&self) -> client::Client {
        client::Client::new(self.addr.clone()).unwrap()
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// The gateway binary on a free port over these members, with extra
/// environment (`LOCK_RETRY_MS`, …); ready once `/health` is 200 (every
/// service has a node up and the lock group a leader).
pub async fn gateway_process(
    dir: &std::path::Path,
    lock: &[String],
    queue: &[String],
    cache: &[String],
    env: &[(&str, &str)],
) -> Proc {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(bin("gateway"));
    cmd.args([
        "--listen",
        &addr,
        "--lock-nodes",
        &lock.join(","),
        "--queue-nodes",
        &queue.join(","),
        "--cache-nodes",
        &cache.join(","),
    ]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut gw = Proc::spawn("gateway", &addr, &mut cmd, dir);
    gw.wait_ready("/health", Duration::from_secs(30)).await;
    gw
}
