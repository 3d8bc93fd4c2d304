//! Test harness: throwaway `redis-server` processes and in-process or
//! real-process queue nodes on 127.0.0.1 with ephemeral ports.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use common::port::free_port;
use queue_service::limit::StoreLimits;
use queue_service::store::embedded::EmbeddedStore;
use queue_service::store::redis::RedisStore;
use queue_service::store::QueueStore;
use queue_service::Config;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A redis-server child in its own temp dir, killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    extra: Vec<String>,
}

impl RedisServer {
    /// No persistence (`--save "" --appendonly no`).
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// With extra arguments (later ones override the defaults), e.g.
    /// `["--appendonly", "yes", "--appendfsync", "always"]`.
    pub fn start_with(extra: &[&str]) -> Self {
        let mut s = RedisServer {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}); these tests need it on PATH \
                     (apt-get install redis-server; CI installs it)"
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if ping(self.port) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "redis-server on port {} did not answer PING within 10 s",
            self.port
        );
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// SIGKILL: no shutdown save, no final fsync.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kill and start again on the same port and data dir.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(n) => buf[..n].starts_with(b"+PONG"),
        Err(_) => false,
    }
}

/// A store of either backend plus whatever keeps it alive.
pub struct TestStore {
    pub store: Arc<dyn QueueStore>,
    pub redis: Option<RedisServer>,
    pub dir: Option<tempfile::TempDir>,
    pub max_attempts: u32,
}

/// An embedded store in a temp dir, with the default limits.
pub fn embedded_store(max_attempts: u32) -> TestStore {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), max_attempts, StoreLimits::default()).unwrap();
    TestStore {
        store: Arc::new(store),
        redis: None,
        dir: Some(dir),
        max_attempts,
    }
}

/// A Redis store on a throwaway redis-server, with the default limits.
pub fn redis_store(max_attempts: u32) -> TestStore {
    let redis = RedisServer::start();
    let store = RedisStore::new(&redis.url(), max_attempts, StoreLimits::default().queue).unwrap();
    TestStore {
        store: Arc::new(store),
        redis: Some(redis),
        dir: None,
        max_attempts,
    }
}

impl TestStore {
    /// Close the store and open it again on the same data with `limits`:
    /// the embedded store reloads from its data dir, the Redis store is a
    /// new client of the same redis-server. Panics if the store is still
    /// shared (the embedded file can only be open once).
    pub fn reopen(self, limits: StoreLimits) -> TestStore {
        let TestStore {
            store,
            redis,
            dir,
            max_attempts,
        } = self;
        assert_eq!(
            Arc::strong_count(&store),
            1,
            "the store is still in use; cannot reopen it"
        );
        drop(store);
        let store: Arc<dyn QueueStore> = match (&redis, &dir) {
            (Some(r), _) => {
                Arc::new(RedisStore::new(&r.url(), max_attempts, limits.queue).unwrap())
            }
            (None, Some(d)) => {
                Arc::new(EmbeddedStore::open(d.path(), max_attempts, limits).unwrap())
            }
            (None, None) => unreachable!("a test store has a redis-server or a data dir"),
        };
        TestStore {
            store,
            redis,
            dir,
            max_attempts,
        }
    }
}

/// An in-process node serving on its own task.
pub struct InProcNode {
    pub addr: String,
    pub state: queue_service::AppState,
    task: JoinHandle<()>,
}

impl InProcNode {
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn abort(&self) {
        self.task.abort();
    }
}

impl Drop for InProcNode {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Bind `n` listeners first, so every node knows every address.
pub async fn bind_n(n: usize) -> Vec<TcpListener> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    v
}

/// Serve a node on `listener` with `peers`, backed by `store`.
pub async fn start_node(
    listener: TcpListener,
    peers: &[String],
    store: Arc<dyn QueueStore>,
) -> InProcNode {
    let addr = listener.local_addr().unwrap().to_string();
    let mut config = Config::for_listen(addr.clone());
    config.members.peers = peers.join(",");
    config.forward_timeout_ms = 1000;
    let state = queue_service::build_state(&config, store).await;
    let app = queue_service::router(state.clone());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    InProcNode { addr, state, task }
}

/// A real `queue-service` process, killed (SIGKILL) on drop.
pub struct ProcNode {
    pub addr: String,
    child: Option<Child>,
}

impl ProcNode {
    pub fn spawn(
        addr: &str,
        peers: &[String],
        redis_url: Option<&str>,
        data_dir: Option<&Path>,
    ) -> Self {
        Self::spawn_with(addr, peers, redis_url, data_dir, &[], &[])
    }

    /// [`ProcNode::spawn`] with extra flags and environment variables.
    pub fn spawn_with(
        addr: &str,
        peers: &[String],
        redis_url: Option<&str>,
        data_dir: Option<&Path>,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_queue-service"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "warn")
            .envs(envs.iter().copied())
            .args(["--listen", addr, "--peers", &peers.join(",")])
            .args(["--forward-timeout-ms", "1000"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let Some(u) = redis_url {
            cmd.args(["--redis-url", u]);
        }
        if let Some(d) = data_dir {
            cmd.arg("--data-dir").arg(d);
        }
        let child = cmd.spawn().expect("spawn queue-service");
        let node = ProcNode {
            addr: addr.to_string(),
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if TcpStream::connect(addr).is_ok() {
                return node;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("queue-service on {addr} did not start listening within 15 s");
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for ProcNode {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn data_dir(root: &Path, name: &str) -> PathBuf {
    root.join(name)
}

/// Client helpers speaking the public API.
#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
}

impl Default for Api {
    fn default() -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }
}

impl Api {
    pub async fn post(
        &self,
        base: &str,
        path: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let (status, _, v) = self.post_with_retry_after(base, path, body).await;
        (status, v)
    }

    /// A POST's status, `Retry-After` header and JSON body.
    pub async fn post_with_retry_after(
        &self,
        base: &str,
        path: &str,
        body: serde_json::Value,
    ) -> (u16, Option<String>, serde_json::Value) {
        let r = self
            .http
            .post(format!("{base}{path}"))
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        let retry_after = r
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap_or("<not text>").to_string());
        let v = r.json().await.unwrap_or(serde_json::Value::Null);
        (status, retry_after, v)
    }

    /// A GET's body as text (for `/metrics`).
    pub async fn get_text(&self, base: &str, path: &str) -> (u16, String) {
        let r = self
            .http
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("request");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }

    pub async fn get(&self, base: &str, path: &str) -> (u16, serde_json::Value) {
        let r = self
            .http
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        let v = r.json().await.unwrap_or(serde_json::Value::Null);
        (status, v)
    }
}
