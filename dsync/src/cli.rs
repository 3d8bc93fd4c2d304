//! The command line: every command, flag and environment fallback, as clap
//! derive types. Parsing only; the commands run in their own modules.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::duration;

/// A command-line client of distributed-sync: locks, queues, the coherent
/// cache and the cluster's status, through the gateway.
///
/// Exit codes: 0 ok, 1 refused or not granted, 2 usage, 3 unreachable,
/// 4 lock lost during `lock exec`; `lock exec` passes its command's code
/// through.
#[derive(Debug, Parser)]
#[command(name = "dsync", version, propagate_version = true)]
pub struct Cli {
    /// The gateway's URL.
    #[arg(
        long,
        global = true,
        env = "DSYNC_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub url: String,
    /// Bearer token for a gateway that requires one (its API_TOKENS).
    #[arg(
        long = "api-token",
        global = true,
        env = "DSYNC_TOKEN",
        hide_env_values = true
    )]
    pub api_token: Option<String>,
    /// Print JSON on stdout instead of text (errors too, as {"error":{…}}).
    #[arg(long, global = true)]
    pub json: bool,
    /// Give up on one call after this long (waits add their own length).
    #[arg(long, global = true, value_parser = duration::parse, default_value = "35s")]
    pub timeout: Duration,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Locks: run a command under a lock, or acquire, release, renew, show.
    #[command(subcommand)]
    Lock(LockCommand),
    /// Work queues: put messages, turn a command into a worker, stats, dead letters.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// The coherent cache: get, set, delete, and a key's MESI line on every node.
    Cache(CacheArgs),
    /// The cluster at a glance: lock leader and term, every node's health,
    /// the queue ring, the cache peers. Exit 1 when the gateway reports a
    /// service down.
    Status(StatusArgs),
    /// Recent deadlock aborts, leader changes, dead-letterings and redrives
    /// of every lock and queue node, newest first (each node keeps its
    /// newest 256 in memory).
    Events {
        /// At most this many (1 to 1000; default 100).
        #[arg(long)]
        limit: Option<u64>,
    },
    /// Print a shell completion script (e.g. `dsync completions bash > /etc/bash_completion.d/dsync`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

// ------------------------------------------------------------------ locks

#[derive(Debug, Subcommand)]
pub enum LockCommand {
    /// Run a command while holding a lock: acquire (waiting up to --wait),
    /// run CMD with DSYNC_FENCING_TOKEN and DSYNC_LOCK_RESOURCE in its
    /// environment, renew the lease in the background, release when it
    /// exits, and exit with its exit code. If the lock is lost while it
    /// runs, its process group gets SIGTERM (SIGKILL after --kill-after)
    /// and dsync exits 4. SIGINT, SIGTERM and SIGHUP sent to dsync are
    /// passed on to the command's process group.
    Exec(ExecArgs),
    /// Acquire a lock and print its fencing token (the lease is not renewed:
    /// renew or release it with the printed owner and token).
    Acquire(AcquireArgs),
    /// Release a lock held by --owner with --token.
    Release(HeldArgs),
    /// Renew a lock's lease held by --owner with --token.
    Renew(RenewArgs),
    /// Show a lock's holders and waiters.
    Show {
        resource: String,
        /// Read the answering node's own state (possibly behind) instead of
        /// a linearizable read.
        #[arg(long)]
        stale: bool,
    },
    /// List held and waited-for locks, sorted by resource, one page at a
    /// time (holders with tokens, waiters in order).
    List {
        #[command(flatten)]
        page: ListArgs,
        /// Read the answering node's own state (possibly behind).
        #[arg(long)]
        stale: bool,
    },
}

/// One page of a list: `--prefix`, `--after` (the cursor a page prints),
/// `--limit`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only names that start with this.
    #[arg(long)]
    pub prefix: Option<String>,
    /// Only names after this one (the `next` of the previous page).
    #[arg(long)]
    pub after: Option<String>,
    /// Page size (1 to 1000; the service's default is 100).
    #[arg(long)]
    pub limit: Option<u64>,
}

/// What an acquire asks for.
#[derive(Debug, Args)]
pub struct LockOptions {
    /// Take a shared lock (held together with other shared holders).
    #[arg(long)]
    pub shared: bool,
    /// Lease length (renewed in the background by `exec`).
    #[arg(long, value_parser = duration::parse, default_value = "30s")]
    pub ttl: Duration,
    /// Wait up to this long for the lock (0: fail at once when it is held).
    #[arg(long, value_parser = duration::parse, default_value = "0")]
    pub wait: Duration,
    /// Owner name (default: dsync-HOST-PID).
    #[arg(long, env = "DSYNC_OWNER")]
    pub owner: Option<String>,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The lock's name.
    pub resource: String,
    #[command(flatten)]
    pub lock: LockOptions,
    /// After the SIGTERM sent on a lost lock, SIGKILL this long later.
    #[arg(long, value_parser = duration::parse, default_value = "10s")]
    pub kill_after: Duration,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, num_args = 1.., value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct AcquireArgs {
    pub resource: String,
    #[command(flatten)]
    pub lock: LockOptions,
}

#[derive(Debug, Args)]
pub struct HeldArgs {
    pub resource: String,
    /// The fencing token the acquire printed.
    #[arg(long)]
    pub token: u64,
    /// The owner the lock was acquired for.
    #[arg(long, env = "DSYNC_OWNER")]
    pub owner: String,
}

#[derive(Debug, Args)]
pub struct RenewArgs {
    #[command(flatten)]
    pub held: HeldArgs,
    /// New lease length from now.
    #[arg(long, value_parser = duration::parse, default_value = "30s")]
    pub ttl: Duration,
}

// ------------------------------------------------------------------ queues

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Put messages. PAYLOAD is one JSON value; `-` (or nothing) reads stdin,
    /// one message per line, each line one JSON value (empty lines are
    /// skipped). A line that is not JSON stops the command with exit 2
    /// before its batch is sent; with --raw every line (or PAYLOAD) is sent
    /// as a JSON string instead. Prints the new message ids.
    Put(PutArgs),
    /// Turn a command into a worker: each message's payload goes to a run of
    /// CMD as one line of JSON on its stdin, with DSYNC_QUEUE,
    /// DSYNC_MESSAGE_ID and DSYNC_MESSAGE_ATTEMPT in its environment. Exit 0
    /// acks the message; any other exit nacks it with exponential backoff
    /// (after the queue's max attempts it is dead-lettered). A run past half
    /// the visibility timeout gets its message's visibility extended; a run
    /// past --timeout is stopped (SIGTERM, then SIGKILL) and nacked.
    /// SIGINT/SIGTERM stop taking messages, are passed on to running
    /// commands, and dsync exits once they have finished.
    Work(WorkArgs),
    /// Ready, delayed, in-flight and dead-lettered counts.
    Stats { queue: String },
    /// List known queues with their counts, sorted by name, one page at a
    /// time (every queue node asked; the ones that did not answer are named).
    List(ListArgs),
    /// List dead letters, oldest first.
    Dead {
        queue: String,
        /// At most this many.
        #[arg(long)]
        limit: Option<u64>,
    },
    /// Move dead letters back to ready (all up to --max, or the given --id's).
    Redrive {
        queue: String,
        /// A dead letter's id (repeatable).
        #[arg(long = "id")]
        ids: Vec<String>,
        /// At most this many (default 100).
        #[arg(long)]
        max: Option<u64>,
    },
    /// Set the queue's max attempts (deliveries before dead-lettering).
    Config {
        queue: String,
        /// Deliveries before a message is dead-lettered.
        #[arg(long, conflicts_with = "default", required_unless_present = "default")]
        max_attempts: Option<u32>,
        /// Go back to the service's default.
        #[arg(long)]
        default: bool,
    },
}

#[derive(Debug, Args)]
pub struct PutArgs {
    pub queue: String,
    /// One JSON value, or `-` for one per stdin line.
    #[arg(value_name = "JSON|-")]
    pub payload: Option<String>,
    /// Send the text as a JSON string instead of parsing it as JSON.
    #[arg(long)]
    pub raw: bool,
    /// Invisible for this long first.
    #[arg(long, value_parser = duration::parse)]
    pub delay: Option<Duration>,
    /// Dropped when nobody took it within this long.
    #[arg(long, value_parser = duration::parse)]
    pub ttl: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct WorkArgs {
    pub queue: String,
    /// Run this many commands at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub concurrency: u32,
    /// Visibility timeout of each delivery (extended while the command runs).
    #[arg(long, value_parser = duration::parse, default_value = "30s")]
    pub visibility: Duration,
    /// Stop after taking this many messages.
    #[arg(long)]
    pub max_messages: Option<u64>,
    /// Exit when no message came for this long (default: run until stopped).
    #[arg(long, value_parser = duration::parse)]
    pub idle_exit: Option<Duration>,
    /// Stop a command that runs longer than this and nack its message.
    #[arg(long, value_parser = duration::parse)]
    pub timeout: Option<Duration>,
    /// After the SIGTERM of --timeout, SIGKILL this long later.
    #[arg(long, value_parser = duration::parse, default_value = "10s")]
    pub kill_after: Duration,
    /// A failed message is retried after backoff × 2^(attempt-1) …
    #[arg(long, value_parser = duration::parse, default_value = "1s")]
    pub backoff: Duration,
    /// … but never later than this.
    #[arg(long, value_parser = duration::parse, default_value = "5m")]
    pub max_backoff: Duration,
    /// Print a line per message on stderr (failures are always printed).
    #[arg(short, long)]
    pub verbose: bool,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, num_args = 1.., value_name = "CMD")]
    pub command: Vec<String>,
}

// ------------------------------------------------------------------ cache

#[derive(Debug, Args)]
pub struct CacheArgs {
    /// Talk to this cache node (host:port as the gateway knows it).
    #[arg(long, global = true, env = "DSYNC_CACHE_NODE")]
    pub node: Option<String>,
    /// Sticky identity: the gateway keeps one client id on one cache node.
    #[arg(long, global = true, env = "DSYNC_CLIENT_ID")]
    pub client_id: Option<String>,
    #[command(subcommand)]
    pub command: CacheCommand,
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Print a key's value as JSON (exit 1 on a miss).
    Get { key: String },
    /// Set a key to a JSON value (--string: to the text as a JSON string).
    Set {
        key: String,
        value: String,
        /// Send VALUE as a JSON string instead of parsing it as JSON.
        #[arg(long)]
        string: bool,
        /// Dropped after this long.
        #[arg(long, value_parser = duration::parse)]
        ttl: Option<Duration>,
    },
    /// Delete a key.
    Del { key: String },
    /// A key's MESI state on every cache node, as a table.
    Line { key: String },
    /// Hits, misses, lines per state of the node this client talks to.
    Stats,
}

// ------------------------------------------------------------------ status

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Redraw every INTERVAL (default 2s) until Ctrl-C.
    #[arg(long, value_name = "INTERVAL", num_args = 0..=1, default_missing_value = "2s",
          value_parser = duration::parse)]
    pub watch: Option<Duration>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn exec_takes_the_command_after_dashes() {
        let cli = Cli::try_parse_from([
            "dsync", "lock", "exec", "r", "--ttl", "5s", "--", "sh", "-c", "echo hi",
        ])
        .unwrap();
        let Command::Lock(LockCommand::Exec(a)) = cli.command else {
            panic!("not exec");
        };
        assert_eq!(a.command, ["sh", "-c", "echo hi"]);
        assert_eq!(a.lock.ttl, Duration::from_secs(5));
        assert!(Cli::try_parse_from(["dsync", "lock", "exec", "r"]).is_err());
    }

    #[test]
    fn the_lock_token_is_not_the_api_token() {
        let cli = Cli::try_parse_from([
            "dsync",
            "--api-token",
            "s3",
            "lock",
            "release",
            "r",
            "--token",
            "5",
            "--owner",
            "a",
        ])
        .unwrap();
        assert_eq!(cli.api_token.as_deref(), Some("s3"));
        let Command::Lock(LockCommand::Release(h)) = cli.command else {
            panic!("not release");
        };
        assert_eq!((h.token, h.owner.as_str()), (5, "a"));
    }

    #[test]
    fn watch_has_an_optional_interval() {
        let cli = Cli::try_parse_from(["dsync", "status", "--watch"]).unwrap();
        let Command::Status(s) = cli.command else {
            panic!()
        };
        assert_eq!(s.watch, Some(Duration::from_secs(2)));
        let cli = Cli::try_parse_from(["dsync", "status", "--watch", "500ms"]).unwrap();
        let Command::Status(s) = cli.command else {
            panic!()
        };
        assert_eq!(s.watch, Some(Duration::from_millis(500)));
    }
}
