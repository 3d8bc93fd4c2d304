//! `dsync`: a command-line client of distributed-sync on the typed
//! [`client`] crate, for shell scripts and operators (as `etcdctl`,
//! `redis-cli` or `flock` are for theirs).
//!
//! - [`cli`]: the command line (clap derive, env fallbacks `DSYNC_URL`,
//!   `DSYNC_TOKEN`, `DSYNC_OWNER`, …);
//! - [`lock`]: `lock exec` (a command under a renewed lock) and the lock
//!   routes;
//! - [`queue`]: `queue put`, `queue work` (a command as a queue worker),
//!   stats, dead letters, redrive, config;
//! - [`cache`]: get, set, del, and a key's MESI line as a table;
//! - [`status`]: the cluster at a glance, `--watch`;
//! - [`child`]: running a command in its own process group, passing
//!   signals on, stopping it with SIGTERM then SIGKILL;
//! - [`output`]: text or `--json`, tables;
//! - [`error`]: the one error type and the exit codes scripts branch on
//!   (0 ok, 1 refused, 2 usage, 3 unreachable, 4 lock lost).

pub mod cache;
pub mod child;
pub mod cli;
pub mod duration;
pub mod error;
pub mod lock;
pub mod output;
pub mod queue;
pub mod status;

use std::time::Duration;

use clap::CommandFactory;
use client::{limits, Client};

use crate::cli::{Cli, Command, LockCommand};
use crate::error::Error;
use crate::output::Output;

/// Run a parsed command line; the exit code on success.
pub async fn run(cli: Cli) -> Result<i32, Error> {
    let out = Output { json: cli.json };
    if let Command::Completions { shell } = cli.command {
        let mut cmd = Cli::command();
        clap_complete::generate(shell, &mut cmd, "dsync", &mut std::io::stdout());
        return Ok(error::OK);
    }
    // A waiting acquire holds its call open for the wait (in turns of at
    // most the service's longest wait); the call's timeout covers it.
    let wait = match &cli.command {
        Command::Lock(LockCommand::Exec(a)) => a.lock.wait,
        Command::Lock(LockCommand::Acquire(a)) => a.lock.wait,
        _ => Duration::ZERO,
    }
    .min(Duration::from_millis(limits::lock::MAX_WAIT_MS));
    let mut builder = Client::builder(cli.url.clone()).timeout(cli.timeout + wait);
    if let Some(t) = &cli.api_token {
        builder = builder.token(t.clone());
    }
    if let Command::Cache(a) = &cli.command {
        if let Some(n) = &a.node {
            builder = builder.cache_node(n.clone());
        }
        if let Some(id) = &a.client_id {
            builder = builder.client_id(id.clone());
        }
    }
    let c = builder.build()?;
    match cli.command {
        Command::Lock(cmd) => lock::run(&c, out, cmd).await,
        Command::Queue(cmd) => queue::run(&c, out, cmd).await,
        Command::Cache(a) => cache::run(&c, out, a.command).await,
        Command::Status(a) => status::run(&c, out, a.watch).await,
        Command::Events { limit } => status::events(&c, out, limit).await,
        Command::Completions { .. } => Ok(error::OK),
    }
}
