//! Test harness: in-process cache clusters on 127.0.0.1 ephemeral ports, a
//! throwaway redis-server, and polling helpers with bounded waits.
#![allow(dead_code)]

pub mod lincheck;

use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cache_service::directory::WritePolicy;
use cache_service::Config;
use client::Client as CacheClient;
use tokio::task::JoinHandle;

pub struct Cluster {
    pub addrs: Vec<String>,
    pub clients: Vec<CacheClient>,
    tasks: Vec<Option<JoinHandle<()>>>,
}

#[derive(Clone, Debug)]
pub struct Opts {
    pub nodes: usize,
    pub policy: WritePolicy,
    pub max_entries: usize,
    pub redis_url: Option<String>,
    pub token: Option<String>,
    pub failure_timeout_ms: u64,
    pub max_memory_entries: usize,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            nodes: 3,
            policy: WritePolicy::WriteBack,
            max_entries: 10_000,
            redis_url: None,
            token: Some("test-token".into()),
            failure_timeout_ms: 3000,
            max_memory_entries: 100_000,
        }
    }
}

impl Cluster {
    pub async fn start(opts: Opts) -> Self {
        let mut listeners = Vec::new();
        for _ in 0..opts.nodes {
            listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        let addrs: Vec<String> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().to_string())
            .collect();
        let mut tasks = Vec::new();
        for (l, addr) in listeners.into_iter().zip(&addrs) {
            let mut cfg = Config::for_test(addr, &addrs);
            cfg.write_policy = opts.policy;
            cfg.max_entries = opts.max_entries;
            cfg.redis_url = opts.redis_url.clone();
            cfg.cluster.cluster_token = opts.token.clone();
            cfg.failure_timeout_ms = opts.failure_timeout_ms;
            cfg.max_memory_entries = opts.max_memory_entries;
            tasks.push(Some(tokio::spawn(async move {
                if let Err(e) = cache_service::run(cfg, l, std::future::pending()).await {
                    panic!("node failed: {e:#}");
                }
            })));
        }
        let clients = addrs.iter().map(|a| cache_client(a)).collect();
        let c = Self {
            addrs,
            clients,
            tasks,
        };
        // Every node serves (its view is confirmed) before tests start.
        for cl in &c.clients {
            wait_confirmed(cl, &c.addrs, Duration::from_secs(20)).await;
        }
        c
    }

    /// Stop node `i` abruptly: its server, heartbeats and state go away.
    pub fn kill(&mut self, i: usize) {
        if let Some(t) = self.tasks[i].take() {
            t.abort();
        }
    }

    /// A key whose home (over all nodes) is node `i`.
    pub fn key_homed_on(&self, i: usize, prefix: &str) -> String {
        let ring = ::common::Ring::new(self.addrs.clone());
        (0..10_000)
            .map(|n| format!("{prefix}-{n}"))
            .find(|k| ring.owner(k) == Some(self.addrs[i].as_str()))
            .expect("some key lands on every node")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for t in self.tasks.iter_mut().flatten() {
            t.abort();
        }
    }
}

/// Wait until `client`'s node is in a confirmed view whose live set is
/// exactly `live`.
pub async fn wait_confirmed(client: &CacheClient, live: &[String], limit: Duration) {
    let mut want: Vec<String> = live.to_vec();
    want.sort();
    wait_until("node's view is confirmed", limit, || async {
        let Ok(c) = client.get_json(&["cluster"]).await else {
            return false;
        };
        let got: Vec<String> = c["view"]["live"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        c["view"]["confirmed"] == true && got == want
    })
    .await;
}

/// The accepted view number of `client`'s node.
pub async fn view_id(client: &CacheClient) -> u64 {
    client.get_json(&["cluster"]).await.unwrap()["view"]["id"]
        .as_u64()
        .unwrap()
}

/// Poll `f` every 20 ms until it is true; panic after `limit`.
pub async fn wait_until<F, Fut>(what: &str, limit: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < limit, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A throwaway redis-server on a free port, killed on drop.
pub struct Redis {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Redis {
    pub async fn start() -> Self {
        let bin = "/usr/bin/redis-server";
        assert!(
            std::path::Path::new(bin).exists() || which("redis-server"),
            "redis-server is not installed (CI installs it with apt-get install redis-server); \
             these tests need a real Redis"
        );
        let port = StdListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new(if std::path::Path::new(bin).exists() {
            bin
        } else {
            "redis-server"
        })
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server");
        let url = format!("redis://127.0.0.1:{port}/");
        let r = Self {
            child,
            url: url.clone(),
            _dir: dir,
        };
        wait_until("redis answers PING", Duration::from_secs(10), || {
            let url = url.clone();
            async move {
                let Ok(client) = redis::Client::open(url.as_str()) else {
                    return false;
                };
                let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
                    return false;
                };
                redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .is_ok()
            }
        })
        .await;
        r
    }
}

fn which(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).exists()))
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `client::Client` talking to one cache node directly (`host:port`).
pub fn cache_client(addr: &str) -> CacheClient {
    CacheClient::builder(addr)
        .timeout(Duration::from_secs(15))
        .build()
        .expect("client builds")
}
