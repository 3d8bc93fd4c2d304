//! The baselines each of our figures is printed next to, run in the same
//! invocation on the same machine, each installed from Debian's packages by
//! `scripts/install-bench-deps.sh`:
//! - [`etcd`]: a 3-member etcd cluster, lock + unlock with a reused lease
//!   (what an etcd user does for a lock), for the lock pairs and hand-off;
//! - [`redis`]: Redis itself doing the reliable-queue cycle (LPUSH, LMOVE
//!   into a processing list, LREM as the ack) with the same durability as
//!   our Redis store (AOF, `appendfsync always`), and GET for the cache hit;
//! - [`nginx`]: nginx as a reverse proxy (upstream keep-alive) in front of
//!   the same cache node, for the gateway hop.
//!
//! A baseline that is not installed is skipped with a message, never
//! faked: its rows are simply absent from the report.

pub mod etcd;
pub mod nginx;
pub mod redis;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A baseline's server process, killed with its whole process group when
/// dropped (nginx's master forks workers that SIGKILL to the master alone
/// would orphan, still serving the port and using CPU through the next
/// cases), with its files in a directory of its own.
pub struct Proc {
    child: Option<Child>,
}

impl Proc {
    /// Start `cmd` with its output in `<dir>/<name>.log`.
    pub fn spawn(mut cmd: Command, dir: &Path, name: &str) -> anyhow::Result<Proc> {
        std::fs::create_dir_all(dir)?;
        let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
        let child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| anyhow::anyhow!("starting {name}: {e}"))?;
        Ok(Proc { child: Some(child) })
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // The group is the child's own (process_group(0)): its PID.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", c.id())])
                .stderr(Stdio::null())
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The first of `names` found on PATH or in /usr/sbin (nginx lives there).
pub fn find(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(["/usr/sbin", "/usr/bin", "/sbin"].map(PathBuf::from));
    names
        .iter()
        .flat_map(|n| dirs.iter().map(move |d| d.join(n)))
        .find(|p| p.is_file())
}

/// Wait until something accepts connections on `addr`.
pub async fn wait_port(addr: &str, within: std::time::Duration) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + within;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "nothing listens on {addr} after {within:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Ok(())
}

/// The baselines of one invocation, each started the first time a case
/// needs it and kept for the rest (stopped when dropped).
pub struct Baselines {
    dir: PathBuf,
    redis: Option<redis::Server>,
    nginx: Option<nginx::Proxy>,
    etcd: Option<etcd::Cluster>,
    /// Baselines that could not start, with why (said once, then skipped).
    unavailable: std::collections::BTreeMap<&'static str, String>,
}

impl Baselines {
    pub fn new(dir: &Path) -> Self {
        Baselines {
            dir: dir.to_path_buf(),
            redis: None,
            nginx: None,
            etcd: None,
            unavailable: Default::default(),
        }
    }

    /// Run a baseline case once; `None` when that baseline is not available
    /// here (its reason is printed the first time).
    pub async fn run(
        &mut self,
        sys: &chaos::system::System,
        case: &crate::scenario::Case,
        plan: crate::load::Plan,
    ) -> anyhow::Result<Option<crate::load::Measured>> {
        if self.unavailable.contains_key(case.system) {
            return Ok(None);
        }
        if let Err(e) = self.ensure(sys, case.system).await {
            eprintln!("[bench] baseline {} skipped: {e:#}", case.system);
            self.unavailable.insert(case.system, format!("{e:#}"));
            return Ok(None);
        }
        let m = match case.system {
            "redis" => {
                let server = self.redis.as_ref().expect("started above");
                redis::run(server, case.scenario, case.clients, plan).await?
            }
            "etcd" => {
                let cluster = self.etcd.as_ref().expect("started above");
                cluster.run(case.scenario, case.clients, plan).await?
            }
            "nginx" => {
                let proxy = self.nginx.as_ref().expect("started above");
                let c = crate::scenario::client_for(&proxy.addr, None)?;
                let plan = crate::scenario::shaped(plan, case.clients);
                let run_id = uuid::Uuid::new_v4().simple().to_string();
                crate::scenario::cache::hit(c, plan, &run_id).await?
            }
            other => anyhow::bail!("no baseline {other}"),
        };
        Ok(Some(m))
    }

    /// The baselines that could not run, with why.
    pub fn unavailable(&self) -> &std::collections::BTreeMap<&'static str, String> {
        &self.unavailable
    }

    async fn ensure(&mut self, sys: &chaos::system::System, system: &str) -> anyhow::Result<()> {
        match system {
            "redis" if self.redis.is_none() => {
                self.redis = Some(redis::start(&self.dir.join("redis")).await?);
            }
            "etcd" if self.etcd.is_none() => {
                self.etcd = Some(etcd::start(&self.dir.join("etcd")).await?);
            }
            "nginx" if self.nginx.is_none() => {
                // In front of the node the gateway hop's cases use.
                let node = crate::scenario::addrs(sys, chaos::system::Kind::Cache)
                    .into_iter()
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("no cache node"))?;
                self.nginx = Some(nginx::start(&self.dir.join("nginx"), &node).await?);
            }
            _ => {}
        }
        Ok(())
    }
}
