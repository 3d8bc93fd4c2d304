//! `dsync lock …`: run a command under a lock (`exec`), and the lock
//! routes one by one (`acquire`, `release`, `renew`, `show`).
//!
//! `exec`, step by step:
//! 1. acquire through the typed client's [`client::Client::lock`], which
//!    returns a [`client::LockGuard`] that renews the lease at a third of
//!    the TTL. Waiting is the service's: `wait_ms` queues the request FIFO
//!    in the replicated lock table; a wait longer than the service's
//!    longest (`api::limits::lock::MAX_WAIT_MS`) is asked for in turns;
//! 2. run the command in its own process group with
//!    `DSYNC_FENCING_TOKEN`, `DSYNC_LOCK_RESOURCE` and `DSYNC_LOCK_OWNER`;
//! 3. SIGINT/SIGTERM/SIGHUP to dsync go on to the command's group;
//! 4. when the guard reports the lock lost, the group gets SIGTERM (SIGKILL
//!    after `--kill-after`) and dsync exits [`error::LOCK_LOST`];
//! 5. when the command exits, release, and exit with its code.
//!
//! Invariant: the command never starts without a granted lock, and never
//! keeps running (past the grace period) once dsync knows it is lost.

use std::process::Stdio;
use std::time::{Duration, Instant};

use client::{
    limits, AcquireRequest, Client, LockGrant, LockGuard, LockMode, LockState, ReleaseRequest,
    RenewRequest,
};
use tokio::signal::unix::{signal, SignalKind};

use crate::child::{self, Group};
use crate::cli::{AcquireArgs, ExecArgs, HeldArgs, ListArgs, LockCommand, LockOptions, RenewArgs};
use crate::duration::{self, ms};
use crate::error::{self, Error};
use crate::output::{table, Output};

/// Run one `dsync lock …` command.
pub async fn run(c: &Client, out: Output, cmd: LockCommand) -> Result<i32, Error> {
    match cmd {
        LockCommand::Exec(a) => exec(c, a).await,
        LockCommand::Acquire(a) => acquire(c, out, a).await,
        LockCommand::Release(a) => release(c, out, a).await,
        LockCommand::Renew(a) => renew(c, out, a).await,
        LockCommand::Show { resource, stale } => show(c, out, &resource, stale).await,
        LockCommand::List { page, stale } => list(c, out, page, stale).await,
    }
}

/// The owner name when none is given: this host and process.
pub fn default_owner() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("dsync-{host}-{}", std::process::id())
}

fn request(resource: &str, o: &LockOptions) -> Result<AcquireRequest, Error> {
    let ttl = ms(o.ttl);
    if !(limits::lock::MIN_TTL_MS..=limits::lock::MAX_TTL_MS).contains(&ttl) {
        return Err(Error::Usage(format!(
            "--ttl {} is out of range ({}..={})",
            duration::show(o.ttl),
            duration::show(Duration::from_millis(limits::lock::MIN_TTL_MS)),
            duration::show(Duration::from_millis(limits::lock::MAX_TTL_MS)),
        )));
    }
    Ok(AcquireRequest {
        resource: resource.to_string(),
        owner: o.owner.clone().unwrap_or_else(default_owner),
        mode: Some(if o.shared {
            LockMode::Shared
        } else {
            LockMode::Exclusive
        }),
        ttl_ms: Some(ttl),
        ..Default::default()
    })
}

/// Wait for the grant in turns of at most the service's longest wait; each
/// turn is a new request (a fresh request id: an answered one is never
/// sent again), so a turn that times out leaves the queue and the next one
/// joins it at the back.
async fn acquire_waiting<T, F, Fut>(
    req: &AcquireRequest,
    wait: Duration,
    mut call: F,
) -> Result<T, Error>
where
    F: FnMut(AcquireRequest) -> Fut,
    Fut: std::future::Future<Output = Result<T, client::Error>>,
{
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let turn = ms(left).min(limits::lock::MAX_WAIT_MS);
        let mut r = req.clone();
        r.wait_ms = Some(turn);
        match call(r).await {
            Err(e)
                if e.code() == Some("wait_timeout")
                    && Instant::now() + Duration::from_millis(1) < deadline =>
            {
                continue;
            }
            res => return res.map_err(Error::from),
        }
    }
}

async fn exec(c: &Client, a: ExecArgs) -> Result<i32, Error> {
    let req = request(&a.resource, &a.lock)?;
    let owner = req.owner.clone();
    let guard: LockGuard = acquire_waiting(&req, a.lock.wait, |r| c.lock(r))
        .await
        .map_err(not_granted)?;
    let token = guard.token();
    let env = [
        ("DSYNC_FENCING_TOKEN", token.to_string()),
        ("DSYNC_LOCK_RESOURCE", a.resource.clone()),
        ("DSYNC_LOCK_OWNER", owner.clone()),
    ];
    let mut running = match child::spawn(&a.command, &env, Stdio::inherit()) {
        Ok(r) => r,
        Err(e) => {
            let _ = guard.release().await;
            return Err(e);
        }
    };
    let group = running.group();
    let mut signals = Signals::new()?;
    enum End {
        Exited(std::process::ExitStatus),
        Lost(String),
    }
    let end = {
        let lost = guard.lost();
        tokio::pin!(lost);
        loop {
            tokio::select! {
                status = running.wait() => break End::Exited(status?),
                reason = &mut lost => break End::Lost(reason),
                sig = signals.recv() => group.signal(sig),
            }
        }
    };
    match end {
        End::Exited(status) => {
            let code = child::exit_code(status);
            if !guard.is_held() {
                // Lost just as the command ended: say so, its work may not
                // have been protected to the end.
                let reason = match guard.status() {
                    client::LockStatus::Lost { reason } => reason,
                    other => format!("{other:?}"),
                };
                return Err(Error::Exit {
                    code: error::LOCK_LOST,
                    message: format!(
                        "lock {:?} (token {token}) was lost while the command ran ({reason}); the command ended with {}",
                        a.resource,
                        child::describe(status)
                    ),
                });
            }
            if let Err(e) = guard.release().await {
                eprintln!(
                    "dsync: the command ended ({}), but releasing lock {:?} failed: {e} (the lease ends by itself within {})",
                    child::describe(status),
                    a.resource,
                    duration::show(a.lock.ttl)
                );
            }
            Ok(code)
        }
        End::Lost(reason) => {
            eprintln!(
                "dsync: LOCK LOST: {:?} (token {token}): {reason}; stopping the command (SIGTERM, SIGKILL after {})",
                a.resource,
                duration::show(a.kill_after)
            );
            let status = stop_forwarding(&mut running, group, a.kill_after, &mut signals).await?;
            Err(Error::Exit {
                code: error::LOCK_LOST,
                message: format!(
                    "lock {:?} was lost while the command ran; the command was stopped ({})",
                    a.resource,
                    child::describe(status)
                ),
            })
        }
    }
}

/// Terminate the command while still passing signals on.
async fn stop_forwarding(
    running: &mut child::Running,
    group: Group,
    grace: Duration,
    signals: &mut Signals,
) -> Result<std::process::ExitStatus, Error> {
    let stop = running.terminate(grace);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            status = &mut stop => return status,
            sig = signals.recv() => group.signal(sig),
        }
    }
}

/// The signals dsync passes on to the commands it runs.
pub struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Install the handlers (from now on these signals no longer end dsync).
    pub fn new() -> Result<Self, Error> {
        let s = |k: SignalKind| signal(k).map_err(|e| Error::io("installing a signal handler", e));
        Ok(Self {
            int: s(SignalKind::interrupt())?,
            term: s(SignalKind::terminate())?,
            hup: s(SignalKind::hangup())?,
        })
    }

    /// The next signal received.
    pub async fn recv(&mut self) -> rustix::process::Signal {
        use rustix::process::Signal;
        tokio::select! {
            _ = self.int.recv() => Signal::INT,
            _ = self.term.recv() => Signal::TERM,
            _ = self.hup.recv() => Signal::HUP,
        }
    }
}

/// A refused acquire, said the way a person reads it.
fn not_granted(e: Error) -> Error {
    let Error::Client(ce) = e else { return e };
    let message = match ce.code() {
        Some("lock_held") => format!("not granted: {ce}{}", holders(&ce)),
        Some("wait_timeout") => format!("not granted within the wait: {ce}"),
        Some("deadlock") => format!("not granted (deadlock): {ce}"),
        _ => return Error::Client(ce),
    };
    Error::NotGranted {
        message,
        source: ce,
    }
}

fn holders(e: &client::Error) -> String {
    let Some(list) = e.detail("holders").and_then(|h| h.as_array()) else {
        return String::new();
    };
    let named: Vec<String> = list
        .iter()
        .map(
            |h| match (h["owner"].as_str(), h["mode"].as_str(), h["token"].as_u64()) {
                (Some(o), Some(m), Some(t)) => format!("{o} ({m}, token {t})"),
                _ => h.to_string(),
            },
        )
        .collect();
    format!("; held by {}", named.join(", "))
}

async fn acquire(c: &Client, out: Output, a: AcquireArgs) -> Result<i32, Error> {
    let mut req = request(&a.resource, &a.lock)?;
    req.request_id = Some(uuid::Uuid::new_v4().to_string());
    req.retry_window_ms = Some(limits::lock::SHORT_RETRY_WINDOW_MS);
    let grant: LockGrant =
        acquire_waiting(&req, a.lock.wait, |r| async move { c.acquire(&r).await })
            .await
            .map_err(not_granted)?;
    out.emit(&grant, || grant.token.to_string());
    out.note(format!(
        "granted {} lock {:?} to {} (lease {}); release with: dsync lock release {:?} --owner {:?} --token {}",
        mode(grant.mode),
        grant.resource,
        grant.owner,
        duration::show(a.lock.ttl),
        grant.resource,
        grant.owner,
        grant.token
    ));
    Ok(error::OK)
}

fn mode(m: LockMode) -> &'static str {
    match m {
        LockMode::Exclusive => "exclusive",
        LockMode::Shared => "shared",
    }
}

async fn release(c: &Client, out: Output, a: HeldArgs) -> Result<i32, Error> {
    let r = c
        .release(&ReleaseRequest {
            resource: a.resource.clone(),
            owner: a.owner.clone(),
            token: a.token,
            request_id: Some(uuid::Uuid::new_v4().to_string()),
            retry_window_ms: Some(limits::lock::SHORT_RETRY_WINDOW_MS),
        })
        .await?;
    out.emit(&r, || {
        format!("released {:?} (token {})", a.resource, a.token)
    });
    Ok(error::OK)
}

async fn renew(c: &Client, out: Output, a: RenewArgs) -> Result<i32, Error> {
    let r = c
        .renew(&RenewRequest {
            resource: a.held.resource.clone(),
            owner: a.held.owner.clone(),
            token: a.held.token,
            ttl_ms: Some(ms(a.ttl)),
            request_id: Some(uuid::Uuid::new_v4().to_string()),
            retry_window_ms: Some(limits::lock::SHORT_RETRY_WINDOW_MS),
        })
        .await?;
    out.emit(&r, || {
        format!(
            "renewed {:?} (token {}) for {}; expires at {} ms",
            a.held.resource,
            a.held.token,
            duration::show(a.ttl),
            r.expires_at_ms
        )
    });
    Ok(error::OK)
}

async fn show(c: &Client, out: Output, resource: &str, stale: bool) -> Result<i32, Error> {
    let s: LockState = if stale {
        c.lock_state_stale(resource).await?
    } else {
        c.lock_state(resource).await?
    };
    out.emit(&s, || render_state(&s));
    Ok(error::OK)
}

async fn list(c: &Client, out: Output, page: ListArgs, stale: bool) -> Result<i32, Error> {
    let q = client::ListQuery {
        prefix: page.prefix,
        after: page.after,
        limit: page.limit,
        consistency: stale.then(|| "stale".to_string()),
    };
    let l = c.lock_list(&q).await?;
    out.emit(&l, || render_list(&l));
    if let Some(next) = &l.next {
        out.note(format!("more: --after {next:?}"));
    }
    Ok(error::OK)
}

/// One row per resource: holders (`owner mode #token`) and when the first
/// lease ends, waiters in order.
pub fn render_list(l: &client::LockList) -> String {
    if l.locks.is_empty() {
        return "no locks held or waited for\n".into();
    }
    let rel = |at: u64| match l.clock_ms {
        Some(now) if at >= now => format!("in {}", duration::show(Duration::from_millis(at - now))),
        Some(now) => format!("{} ago", duration::show(Duration::from_millis(now - at))),
        None => format!("at {at} ms"),
    };
    let rows: Vec<Vec<String>> = l
        .locks
        .iter()
        .map(|s| {
            let holders: Vec<String> = s
                .holders
                .iter()
                .map(|h| format!("{} {} #{}", h.owner, mode(h.mode), h.token))
                .collect();
            let waiters: Vec<String> = s
                .waiters
                .iter()
                .map(|w| format!("{} {}", w.owner, mode(w.mode)))
                .collect();
            let expires = s.holders.iter().map(|h| h.expires_at_ms).min();
            vec![
                s.resource.clone(),
                if holders.is_empty() {
                    "-".into()
                } else {
                    holders.join(", ")
                },
                expires.map(rel).unwrap_or_else(|| "-".into()),
                if waiters.is_empty() {
                    "-".into()
                } else {
                    waiters.join(", ")
                },
            ]
        })
        .collect();
    table(&["RESOURCE", "HOLDERS", "EXPIRES", "WAITERS"], &rows)
}

/// A lock's holders and waiters, expiries relative to the answer's clock.
pub fn render_state(s: &LockState) -> String {
    let rel = |at: u64| match s.clock_ms {
        Some(now) if at >= now => format!("in {}", duration::show(Duration::from_millis(at - now))),
        Some(now) => format!("{} ago", duration::show(Duration::from_millis(now - at))),
        None => format!("at {at} ms"),
    };
    let mut text = format!(
        "{:?}: {}\n",
        s.resource,
        if s.held { "held" } else { "free" }
    );
    if !s.holders.is_empty() {
        let rows: Vec<Vec<String>> = s
            .holders
            .iter()
            .map(|h| {
                vec![
                    h.owner.clone(),
                    mode(h.mode).into(),
                    h.token.to_string(),
                    rel(h.expires_at_ms),
                ]
            })
            .collect();
        text.push_str(&table(&["HOLDER", "MODE", "TOKEN", "EXPIRES"], &rows));
    }
    if !s.waiters.is_empty() {
        let rows: Vec<Vec<String>> = s
            .waiters
            .iter()
            .map(|w| {
                vec![
                    w.owner.clone(),
                    mode(w.mode).into(),
                    w.deadline_ms.map(rel).unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        text.push_str(&table(&["WAITER", "MODE", "GIVES UP"], &rows));
    }
    text
}
