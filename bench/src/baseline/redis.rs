//! Redis as the baseline of the queue and the cache: the same work done by
//! Redis itself, one connection per client.
//! - `enqueue`: LPUSH;
//! - `cycle`: LPUSH, LMOVE from the queue into the client's processing list
//!   (the reliable-queue pattern: a taken message is not lost if the taker
//!   dies), LREM from the processing list as the ack: three round trips, as
//!   ours takes three calls;
//! - `hit`: GET of a key that is set.
//!
//! Durability matches our Redis store's: AOF with `appendfsync always`.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use redis::AsyncCommands;

use super::Proc;
use crate::load::{self, Failure, Measured, Plan};

/// A `redis-server` of the baseline's own.
pub struct Server {
    pub url: String,
    _proc: Proc,
}

pub async fn start(dir: &Path) -> anyhow::Result<Server> {
    let bin = super::find(&["redis-server"])
        .ok_or_else(|| anyhow::anyhow!("no redis-server (scripts/install-deps.sh installs it)"))?;
    let port = common::port::reserve()?;
    let mut cmd = Command::new(bin);
    cmd.args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .arg("--dir")
        .arg(dir)
        .args([
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
        ]);
    let proc = Proc::spawn(cmd, dir, "redis-server")?;
    let addr = format!("127.0.0.1:{port}");
    super::wait_port(&addr, std::time::Duration::from_secs(10)).await?;
    Ok(Server {
        url: format!("redis://{addr}/"),
        _proc: proc,
    })
}

fn failed(e: redis::RedisError) -> Failure {
    Failure::new(format!("redis_{:?}", e.kind()).to_lowercase())
}

/// Run `scenario` (`enqueue`, `cycle`, `hit`) with one connection per
/// closed-loop client.
pub async fn run(
    server: &Server,
    scenario: &str,
    clients: usize,
    plan: Plan,
) -> anyhow::Result<Measured> {
    let client = redis::Client::open(server.url.as_str())?;
    let mut conns = Vec::new();
    for _ in 0..clients.max(1) {
        conns.push(client.get_multiplexed_async_connection().await?);
    }
    let conns = Arc::new(conns);
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let plan = crate::scenario::shaped(plan, clients);
    Ok(match scenario {
        "enqueue" => {
            load::run(plan, move |w, seq| {
                let mut c = conns[w % conns.len()].clone();
                let q = format!("q-{run_id}-{w}");
                async move {
                    let _: i64 = c
                        .lpush(&q, format!("{{\"seq\":{seq}}}"))
                        .await
                        .map_err(failed)?;
                    Ok(None)
                }
            })
            .await
        }
        "cycle" => {
            load::run(plan, move |w, seq| {
                let mut c = conns[w % conns.len()].clone();
                let (q, taken) = (format!("q-{run_id}-{w}"), format!("taken-{run_id}-{w}"));
                async move {
                    let _: i64 = c
                        .lpush(&q, format!("{{\"seq\":{seq}}}"))
                        .await
                        .map_err(failed)?;
                    let m: Option<String> = c
                        .lmove(&q, &taken, redis::Direction::Right, redis::Direction::Left)
                        .await
                        .map_err(failed)?;
                    let m = m.ok_or_else(|| Failure::new("empty"))?;
                    let n: i64 = c.lrem(&taken, 1, &m).await.map_err(failed)?;
                    if n != 1 {
                        return Err(Failure::new("ack_missed"));
                    }
                    Ok(None)
                }
            })
            .await
        }
        "hit" => {
            let mut c = conns[0].clone();
            let keys: Vec<String> = (0..64).map(|i| format!("hit-{run_id}-{i}")).collect();
            for (i, k) in keys.iter().enumerate() {
                let _: () = c.set(k, i).await?;
            }
            let keys = Arc::new(keys);
            load::run(plan, move |w, _| {
                let (mut c, keys) = (conns[w % conns.len()].clone(), keys.clone());
                async move {
                    let v: Option<String> = c.get(&keys[w % keys.len()]).await.map_err(failed)?;
                    v.map(|_| None).ok_or_else(|| Failure::new("missing"))
                }
            })
            .await
        }
        other => anyhow::bail!("no redis baseline for {other}"),
    })
}
