//! etcd as the lock service's baseline: a 3-member cluster on 127.0.0.1
//! (Debian's etcd 3.4, its defaults: fsync on, 100 ms heartbeat, 1 s
//! election timeout; Go's default GOMAXPROCS), driven through its v3 JSON
//! gateway the way an etcd user locks: each client grants one lease (kept
//! alive every third of its TTL, as etcd's own client does) and calls
//! `/v3/lock/lock` + `/v3/lock/unlock` on the leader.
//! - `pairs`: each client on its own lock name;
//! - `handoff`: every client on one name (etcd's lock waits in line).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::Proc;
use crate::load::{self, Failure, Measured, Plan};

/// The lease every client holds, in seconds.
const LEASE_TTL_S: u64 = 10;

/// A running 3-member cluster.
pub struct Cluster {
    /// Client URLs' `host:port`, by member.
    pub clients: Vec<String>,
    http: reqwest::Client,
    _procs: Vec<Proc>,
}

pub async fn start(dir: &Path) -> anyhow::Result<Cluster> {
    let bin = super::find(&["etcd"])
        .ok_or_else(|| anyhow::anyhow!("no etcd (scripts/install-bench-deps.sh installs it)"))?;
    let client_ports: Vec<u16> = (0..3)
        .map(|_| common::port::reserve())
        .collect::<Result<_, _>>()?;
    let peer_ports: Vec<u16> = (0..3)
        .map(|_| common::port::reserve())
        .collect::<Result<_, _>>()?;
    let peer_url = |i: usize| format!("http://127.0.0.1:{}", peer_ports[i]);
    let cluster = (0..3)
        .map(|i| format!("e{i}={}", peer_url(i)))
        .collect::<Vec<_>>()
        .join(",");
    let token = uuid::Uuid::new_v4().simple().to_string();
    let mut procs = Vec::new();
    for (i, port) in client_ports.iter().enumerate() {
        let client_url = format!("http://127.0.0.1:{port}");
        let mut cmd = Command::new(&bin);
        cmd.args(["--name", &format!("e{i}")])
            .arg("--data-dir")
            .arg(dir.join(format!("e{i}")))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url(i)])
            .args(["--initial-advertise-peer-urls", &peer_url(i)])
            .args(["--initial-cluster", &cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &format!("bench-{token}")])
            .args(["--logger", "zap", "--log-level", "error"]);
        // etcd reads ETCD_* variables as flags: none of the caller's leak in.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ETCD_") {
                cmd.env_remove(k);
            }
        }
        procs.push(Proc::spawn(cmd, dir, &format!("etcd-{i}"))?);
    }
    let clients: Vec<String> = client_ports
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    for c in &clients {
        super::wait_port(c, Duration::from_secs(20)).await?;
    }
    Ok(Cluster {
        clients,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?,
        _procs: procs,
    })
}

impl Cluster {
    /// The member the others follow (etcd names members by 64-bit ids,
    /// which travel as JSON strings; each member's status says its own and
    /// the leader's).
    pub async fn leader(&self) -> anyhow::Result<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            for addr in &self.clients {
                if let Ok(v) = post(&self.http, addr, "/v3/maintenance/status", &json!({})).await {
                    if !v["leader"].is_null() && v["leader"] == v["header"]["member_id"] {
                        return Ok(addr.clone());
                    }
                }
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "etcd elected no leader within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `pairs` or `handoff` with `clients` closed-loop clients.
    pub async fn run(
        &self,
        scenario: &str,
        clients: usize,
        plan: Plan,
    ) -> anyhow::Result<Measured> {
        let leader = self.leader().await?;
        let mut leases = Vec::new();
        for _ in 0..clients.max(1) {
            let v = post(
                &self.http,
                &leader,
                "/v3/lease/grant",
                &json!({"TTL": LEASE_TTL_S}),
            )
            .await
            .map_err(|e| anyhow::anyhow!("etcd lease grant: {e}"))?;
            anyhow::ensure!(!v["ID"].is_null(), "lease grant: {v}");
            leases.push(v["ID"].clone());
        }
        let keepalive = {
            let (http, leader, leases) = (self.http.clone(), leader.clone(), leases.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(LEASE_TTL_S) / 3).await;
                    for l in &leases {
                        let body = json!({"ID": l});
                        let r = post(&http, &leader, "/v3/lease/keepalive", &body);
                        let _ = tokio::time::timeout(Duration::from_secs(2), r).await;
                    }
                }
            })
        };
        let run_id = uuid::Uuid::new_v4().simple().to_string();
        let shared = match scenario {
            "pairs" => false,
            "handoff" => true,
            other => anyhow::bail!("no etcd baseline for {other}"),
        };
        let (http, leases) = (self.http.clone(), Arc::new(leases));
        let m = load::run(crate::scenario::shaped(plan, clients), move |w, _| {
            let (http, leader) = (http.clone(), leader.clone());
            let lease = leases[w % leases.len()].clone();
            let name = if shared {
                format!("hot-{run_id}")
            } else {
                format!("pairs-{run_id}-{w}")
            };
            async move {
                let g = post(
                    &http,
                    &leader,
                    "/v3/lock/lock",
                    &json!({"name": b64(&name), "lease": lease}),
                )
                .await
                .map_err(|e| Failure::new(format!("etcd_{e}")))?;
                let key = g
                    .get("key")
                    .cloned()
                    .ok_or_else(|| Failure::new("etcd_no_key"))?;
                post(&http, &leader, "/v3/lock/unlock", &json!({"key": key}))
                    .await
                    .map_err(|e| Failure::new(format!("etcd_{e}")))?;
                Ok(None)
            }
        })
        .await;
        keepalive.abort();
        Ok(m)
    }
}

/// A POST that must answer 200 with JSON; the error is a short kind.
async fn post(
    http: &reqwest::Client,
    addr: &str,
    path: &str,
    body: &Value,
) -> Result<Value, String> {
    let r = http
        .post(format!("http://{addr}{path}"))
        .json(body)
        .send()
        .await
        .map_err(|_| "transport".to_string())?;
    let status = r.status().as_u16();
    if status != 200 {
        return Err(format!("http_{status}"));
    }
    r.json().await.map_err(|_| "decode".to_string())
}

/// Standard base64 with padding, as etcd's JSON gateway takes `bytes`.
fn b64(s: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(s.len().div_ceil(3) * 4);
    for chunk in s.as_bytes().chunks(3) {
        let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (byte(0) << 16) | (byte(1) << 8) | byte(2);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_as_etcd_reads_it() {
        assert_eq!(super::b64("a"), "YQ==");
        assert_eq!(super::b64("ab"), "YWI=");
        assert_eq!(super::b64("abc"), "YWJj");
        assert_eq!(super::b64("hot-1"), "aG90LTE=");
    }
}
