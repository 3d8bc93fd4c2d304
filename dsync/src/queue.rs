//! `dsync queue …`: put messages, turn a command into a worker, and the
//! queue's stats, dead letters, redrive and config.
//!
//! `work`, per message (at-least-once, like the queue itself):
//! - the payload goes to the command's stdin as one line of JSON (the text
//!   the producer sent, then `\n`), with `DSYNC_QUEUE`, `DSYNC_MESSAGE_ID`,
//!   `DSYNC_MESSAGE_ATTEMPT` and `DSYNC_MESSAGE_ENQUEUED_AT_MS` in its
//!   environment;
//! - while it runs, the delivery's visibility is extended by the visibility
//!   timeout every half of it, so a long command keeps its message;
//! - exit 0 → ack; any other exit, or running past `--timeout` (then the
//!   command's process group gets SIGTERM, SIGKILL after `--kill-after`)
//!   → nack, visible again after `backoff × 2^(attempt-1)` (at most
//!   `--max-backoff`); after the queue's max attempts the service
//!   dead-letters it;
//! - a stopping worker (SIGINT/SIGTERM) takes no new message, passes the
//!   signal on to the running commands and settles each as above; a
//!   dequeue that was still waiting is dropped (a message it may have taken
//!   comes back after its visibility timeout).

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use client::{
    limits, Client, DequeueRequest, EnqueueRequest, ExtendRequest, Message, NackRequest,
    NewMessage, Payload, QueueConfig, RedriveRequest,
};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::child::{self, Group};
use crate::cli::{PutArgs, QueueCommand, WorkArgs};
use crate::duration::{self, ms};
use crate::error::{self, Error};
use crate::lock::Signals;
use crate::output::{table, Output};

/// Longest a worker's dequeue long-polls: short enough that `--idle-exit`
/// and a stop are noticed soon, long enough not to spin.
const POLL: Duration = Duration::from_secs(5);
/// A worker that has had no answer from the gateway for this long gives up
/// (exit 3); shorter outages are retried.
const GIVE_UP_UNREACHABLE: Duration = Duration::from_secs(30);

/// Run one `dsync queue …` command.
pub async fn run(c: &Client, out: Output, cmd: QueueCommand) -> Result<i32, Error> {
    match cmd {
        QueueCommand::Put(a) => put(c, out, a).await,
        QueueCommand::Work(a) => work(c, out, a).await,
        QueueCommand::List(page) => {
            let q = client::ListQuery {
                prefix: page.prefix,
                after: page.after,
                limit: page.limit,
                consistency: None,
            };
            let l = c.queue_list(&q).await?;
            out.emit(&l, || render_list(&l));
            if let Some(next) = &l.next {
                out.note(format!("more: --after {next:?}"));
            }
            if !l.unavailable.is_empty() {
                out.note(format!(
                    "not answering (their queues are missing): {}",
                    l.unavailable.join(", ")
                ));
            }
            Ok(error::OK)
        }
        QueueCommand::Stats { queue } => {
            let s = c.queue_stats(&queue).await?;
            out.emit(&s, || {
                table(
                    &[
                        "QUEUE",
                        "READY",
                        "DELAYED",
                        "IN FLIGHT",
                        "DEAD",
                        "EXPIRED",
                        "NODE",
                    ],
                    &[vec![
                        s.queue.clone(),
                        s.ready.to_string(),
                        s.delayed.to_string(),
                        s.in_flight.to_string(),
                        s.dead_lettered.to_string(),
                        s.expired_total.to_string(),
                        s.node.clone().unwrap_or_else(|| "-".into()),
                    ]],
                )
            });
            Ok(error::OK)
        }
        QueueCommand::Dead { queue, limit } => {
            let d = c.dead_letters(&queue, limit).await?;
            out.emit(&d, || {
                let rows: Vec<Vec<String>> = d
                    .messages
                    .iter()
                    .map(|m| {
                        vec![
                            m.id.clone(),
                            m.attempts.to_string(),
                            m.payload.as_str().to_string(),
                        ]
                    })
                    .collect();
                if rows.is_empty() {
                    format!("no dead letters in {queue:?}")
                } else {
                    table(&["ID", "ATTEMPTS", "PAYLOAD"], &rows)
                }
            });
            Ok(error::OK)
        }
        QueueCommand::Redrive { queue, ids, max } => {
            let r = c
                .redrive(&RedriveRequest {
                    queue: queue.clone(),
                    ids: (!ids.is_empty()).then_some(ids),
                    max,
                })
                .await?;
            out.emit(&r, || {
                format!("redrove {} message(s) in {queue:?}", r.redriven.len())
            });
            Ok(error::OK)
        }
        QueueCommand::Config {
            queue,
            max_attempts,
            default: _,
        } => {
            let r = c
                .configure_queue(&QueueConfig {
                    queue,
                    max_attempts,
                })
                .await?;
            out.emit(&r, || match r.max_attempts {
                Some(n) => format!("{:?}: max attempts {n}", r.queue),
                None => format!("{:?}: max attempts as the service's default", r.queue),
            });
            Ok(error::OK)
        }
    }
}

// ------------------------------------------------------------------ put

/// One message's payload from the command line or a stdin line.
pub fn payload(text: &str, raw: bool) -> Result<Payload, String> {
    if raw {
        return Ok(Payload::new(&Value::String(text.to_string())));
    }
    Payload::from_text(text.to_string())
        .map_err(|e| format!("not JSON ({e}); quote a string as JSON, or use --raw"))
}

async fn put(c: &Client, out: Output, a: PutArgs) -> Result<i32, Error> {
    let delay_ms = a.delay.map(ms);
    let ttl_ms = a.ttl.map(ms);
    match a.payload.as_deref() {
        Some(text) if text != "-" => {
            let payload = payload(text, a.raw).map_err(Error::Usage)?;
            let r = c
                .enqueue(&EnqueueRequest {
                    queue: a.queue.clone(),
                    payload: Some(payload),
                    delay_ms,
                    ttl_ms,
                    messages: None,
                })
                .await?;
            let id = r.id.unwrap_or_default();
            out.emit(&json!({"queue": a.queue, "ids": [id]}), || id.clone());
            Ok(error::OK)
        }
        _ => put_lines(c, out, &a.queue, a.raw, delay_ms, ttl_ms).await,
    }
}

/// One message per stdin line, sent in batches: a batch goes out when it is
/// full or when stdin has nothing more buffered (so a slow producer's
/// lines are not held back). Each batch is checked whole before it is sent.
async fn put_lines(
    c: &Client,
    out: Output,
    queue: &str,
    raw: bool,
    delay_ms: Option<u64>,
    ttl_ms: Option<u64>,
) -> Result<i32, Error> {
    let mut stdin = BufReader::new(tokio::io::stdin());
    let mut all_ids: Vec<String> = Vec::new();
    let mut batch: Vec<NewMessage> = Vec::new();
    let mut line = String::new();
    let mut number = 0u64;
    loop {
        line.clear();
        let n = stdin
            .read_line(&mut line)
            .await
            .map_err(|e| Error::io("reading stdin", e))?;
        if n > 0 {
            number += 1;
            let text = line.trim_end_matches(['\n', '\r']);
            if !text.trim().is_empty() {
                let p = payload(text, raw).map_err(|e| {
                    Error::Usage(format!(
                        "stdin line {number}: {e}; {} message(s) before it were sent",
                        all_ids.len()
                    ))
                })?;
                batch.push(NewMessage {
                    payload: p,
                    delay_ms,
                    ttl_ms,
                });
            }
        }
        let eof = n == 0;
        if !batch.is_empty()
            && (eof || batch.len() >= limits::queue::MAX_BATCH || stdin.buffer().is_empty())
        {
            let r = c
                .enqueue(&EnqueueRequest {
                    queue: queue.to_string(),
                    messages: Some(std::mem::take(&mut batch)),
                    ..Default::default()
                })
                .await?;
            let ids = r.ids.unwrap_or_default();
            if !out.json {
                for id in &ids {
                    println!("{id}");
                }
            }
            all_ids.extend(ids);
        }
        if eof {
            break;
        }
    }
    if out.json {
        out.emit(&json!({"queue": queue, "ids": all_ids}), String::new);
    }
    Ok(error::OK)
}

// ------------------------------------------------------------------ work

/// What a worker did, printed when it exits.
#[derive(Debug, Default, Serialize)]
struct Counts {
    taken: u64,
    acked: u64,
    nacked: u64,
    dead_lettered: u64,
    timed_out: u64,
    /// Acks or extends the service refused (the message had been delivered
    /// again: another worker may run it too).
    lost_receipts: u64,
}

/// State shared by one run's worker tasks.
struct Work {
    client: Client,
    args: WorkArgs,
    stop: watch::Receiver<bool>,
    /// Messages taken or being asked for (towards `--max-messages`).
    reserved: AtomicU64,
    /// When a message last came in, or a command last finished.
    last_activity: Mutex<Instant>,
    counts: Mutex<Counts>,
    /// Running commands by message id, for passing signals on.
    running: Mutex<HashMap<String, Group>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Nack delay for a failed `attempt` (1 for the first delivery).
pub fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
    let shift = attempt.saturating_sub(1).min(30);
    base.saturating_mul(1u32 << shift)
        .min(max)
        .min(Duration::from_millis(limits::queue::MAX_DELAY_MS))
}

async fn work(c: &Client, out: Output, args: WorkArgs) -> Result<i32, Error> {
    let vis = ms(args.visibility);
    if !(limits::queue::MIN_VISIBILITY_MS..=limits::queue::MAX_VISIBILITY_MS).contains(&vis) {
        return Err(Error::Usage(format!(
            "--visibility {} is out of range",
            duration::show(args.visibility)
        )));
    }
    let (stop_tx, stop) = watch::channel(false);
    let concurrency = args.concurrency;
    let w = Arc::new(Work {
        client: c.clone(),
        args,
        stop,
        reserved: AtomicU64::new(0),
        last_activity: Mutex::new(Instant::now()),
        counts: Mutex::new(Counts::default()),
        running: Mutex::new(HashMap::new()),
    });
    let mut signals = Signals::new()?;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        tasks.spawn(worker(w.clone()));
    }
    let mut failure: Option<Error> = None;
    loop {
        tokio::select! {
            done = tasks.join_next() => match done {
                None => break,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => {
                    failure.get_or_insert(e);
                    stop_tx.send_replace(true);
                }
                Some(Err(join)) => {
                    failure.get_or_insert(Error::Refused(format!("a worker task failed: {join}")));
                    stop_tx.send_replace(true);
                }
            },
            sig = signals.recv() => {
                if !*stop_tx.borrow() {
                    eprintln!("dsync: stopping: no new messages; waiting for running commands");
                }
                stop_tx.send_replace(true);
                for g in lock(&w.running).values() {
                    g.signal(sig);
                }
            }
        }
    }
    let counts = std::mem::take(&mut *lock(&w.counts));
    let queue = &w.args.queue;
    out.emit(&json!({"queue": queue, "counts": counts}), || {
        format!(
            "{queue:?}: {} taken, {} acked, {} nacked ({} dead-lettered), {} timed out, {} lost receipts",
            counts.taken,
            counts.acked,
            counts.nacked,
            counts.dead_lettered,
            counts.timed_out,
            counts.lost_receipts
        )
    });
    match failure {
        Some(e) => Err(e),
        None => Ok(error::OK),
    }
}

async fn worker(w: Arc<Work>) -> Result<(), Error> {
    loop {
        if *w.stop.borrow() {
            return Ok(());
        }
        if let Some(max) = w.args.max_messages {
            if w.reserved.fetch_add(1, Ordering::SeqCst) >= max {
                w.reserved.fetch_sub(1, Ordering::SeqCst);
                return Ok(());
            }
        }
        let msg = next(&w).await?;
        let Some(msg) = msg else {
            if w.args.max_messages.is_some() {
                w.reserved.fetch_sub(1, Ordering::SeqCst);
            }
            if let Some(idle) = w.args.idle_exit {
                if lock(&w.last_activity).elapsed() >= idle {
                    return Ok(());
                }
            }
            continue;
        };
        *lock(&w.last_activity) = Instant::now();
        lock(&w.counts).taken += 1;
        let res = handle(&w, msg).await;
        *lock(&w.last_activity) = Instant::now();
        res?;
    }
}

/// The next message, or `None` when none came within the poll (or the run
/// is stopping). Retries when the gateway does not answer, up to
/// [`GIVE_UP_UNREACHABLE`].
async fn next(w: &Work) -> Result<Option<Message>, Error> {
    let mut stop = w.stop.clone();
    let poll = match w.args.idle_exit {
        Some(idle) => POLL.min(idle.max(Duration::from_millis(100))),
        None => POLL,
    };
    let req = DequeueRequest {
        queue: w.args.queue.clone(),
        max: Some(1),
        visibility_ms: Some(ms(w.args.visibility)),
        wait_ms: Some(ms(poll).min(limits::queue::MAX_WAIT_MS)),
    };
    let failing_since = Instant::now();
    let mut pause = Duration::from_millis(100);
    loop {
        let res = tokio::select! {
            r = w.client.dequeue(&req) => r,
            _ = stop.wait_for(|s| *s) => return Ok(None),
        };
        match res {
            Ok(mut msgs) => return Ok(msgs.pop()),
            Err(e) if e.is_retryable() && failing_since.elapsed() < GIVE_UP_UNREACHABLE => {
                eprintln!(
                    "dsync: dequeue failed ({e}); retrying in {}",
                    duration::show(pause)
                );
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stop.wait_for(|s| *s) => return Ok(None),
                }
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

enum Ended {
    Exited(std::process::ExitStatus),
    TimedOut(std::process::ExitStatus),
}

async fn handle(w: &Work, msg: Message) -> Result<(), Error> {
    let a = &w.args;
    let queue = &a.queue;
    let env = [
        ("DSYNC_QUEUE", queue.clone()),
        ("DSYNC_MESSAGE_ID", msg.id.clone()),
        ("DSYNC_MESSAGE_ATTEMPT", msg.attempts.to_string()),
        (
            "DSYNC_MESSAGE_ENQUEUED_AT_MS",
            msg.enqueued_at_ms.to_string(),
        ),
    ];
    let mut running = match child::spawn(&a.command, &env, Stdio::piped()) {
        Ok(r) => r,
        Err(e) => {
            // Every message would fail the same way: give this one back
            // at once and stop.
            let _ = w
                .client
                .nack(&NackRequest {
                    queue: queue.clone(),
                    receipt: msg.receipt.clone(),
                    delay_ms: None,
                })
                .await;
            return Err(e);
        }
    };
    if let Some(mut stdin) = running.take_stdin() {
        let mut text = msg.payload.as_str().as_bytes().to_vec();
        text.push(b'\n');
        // A command that does not read its stdin must not block us.
        tokio::spawn(async move {
            let _ = stdin.write_all(&text).await;
            let _ = stdin.shutdown().await;
        });
    }
    let group = running.group();
    lock(&w.running).insert(msg.id.clone(), group);
    if *w.stop.borrow() {
        // A stop came in between the dequeue and the spawn: it was not
        // passed on to this one.
        group.signal(rustix::process::Signal::TERM);
    }
    let started = Instant::now();
    let every = (a.visibility / 2).max(Duration::from_millis(50));
    let mut next_extend = started + every;
    let hard = a.timeout.map(|t| started + t);
    let mut receipt_ok = true;
    let ended = loop {
        tokio::select! {
            status = running.wait() => break Ended::Exited(status?),
            _ = tokio::time::sleep_until(next_extend), if receipt_ok => {
                next_extend += every;
                let r = w.client.extend(&ExtendRequest {
                    queue: queue.clone(),
                    receipt: msg.receipt.clone(),
                    visibility_ms: ms(a.visibility),
                }).await;
                match r {
                    Ok(_) => {}
                    Err(e) if e.is_retryable() => {
                        eprintln!("dsync: {}: extending its visibility failed ({e}); retrying", msg.id);
                        next_extend = Instant::now() + (every / 4).max(Duration::from_millis(50));
                    }
                    Err(e) => {
                        eprintln!("dsync: {}: the queue refused to extend its visibility ({e}): it may be delivered again while this run goes on", msg.id);
                        receipt_ok = false;
                        lock(&w.counts).lost_receipts += 1;
                    }
                }
            }
            _ = sleep_until_opt(hard) => {
                eprintln!(
                    "dsync: {}: still running after --timeout {}; stopping it (SIGTERM, SIGKILL after {})",
                    msg.id, duration::show(a.timeout.unwrap_or_default()), duration::show(a.kill_after)
                );
                break Ended::TimedOut(running.terminate(a.kill_after).await?);
            }
        }
    };
    lock(&w.running).remove(&msg.id);
    let took = duration::show(started.elapsed());
    let (status, timed_out) = match ended {
        Ended::Exited(s) => (s, false),
        Ended::TimedOut(s) => (s, true),
    };
    if status.success() && !timed_out {
        match w.client.ack(queue, &msg.receipt).await {
            Ok(r) if r.acked > 0 => {
                lock(&w.counts).acked += 1;
                if a.verbose {
                    eprintln!(
                        "dsync: {} attempt {}: exit 0 in {took}: acked",
                        msg.id, msg.attempts
                    );
                }
            }
            Ok(_) => {
                lock(&w.counts).lost_receipts += 1;
                eprintln!("dsync: {} attempt {}: exit 0 in {took}, but the ack took no effect (delivered again meanwhile)", msg.id, msg.attempts);
            }
            Err(e) if e.is_retryable() => return Err(e.into()),
            Err(e) => {
                lock(&w.counts).lost_receipts += 1;
                eprintln!(
                    "dsync: {} attempt {}: exit 0 in {took}, but the ack was refused: {e}",
                    msg.id, msg.attempts
                );
            }
        }
        return Ok(());
    }
    let delay = backoff(a.backoff, a.max_backoff, msg.attempts);
    let why = if timed_out {
        lock(&w.counts).timed_out += 1;
        format!("timed out after {took} ({})", child::describe(status))
    } else {
        format!("{} after {took}", child::describe(status))
    };
    match w
        .client
        .nack(&NackRequest {
            queue: queue.clone(),
            receipt: msg.receipt.clone(),
            delay_ms: Some(ms(delay)),
        })
        .await
    {
        Ok(r) => {
            let mut counts = lock(&w.counts);
            counts.nacked += 1;
            if r.outcome == "dead_lettered" {
                counts.dead_lettered += 1;
                eprintln!(
                    "dsync: {} attempt {}: {why}: dead-lettered",
                    msg.id, msg.attempts
                );
            } else {
                eprintln!(
                    "dsync: {} attempt {}: {why}: nacked, again in {}",
                    msg.id,
                    msg.attempts,
                    duration::show(delay)
                );
            }
        }
        Err(e) if e.is_retryable() => return Err(e.into()),
        Err(e) => {
            lock(&w.counts).lost_receipts += 1;
            eprintln!(
                "dsync: {} attempt {}: {why}; the nack was refused: {e}",
                msg.id, msg.attempts
            );
        }
    }
    Ok(())
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// One row per queue with its counts and owner.
pub fn render_list(l: &client::QueueList) -> String {
    if l.queues.is_empty() {
        return "no queues\n".into();
    }
    let rows: Vec<Vec<String>> = l
        .queues
        .iter()
        .map(|s| {
            vec![
                s.queue.clone(),
                s.ready.to_string(),
                s.delayed.to_string(),
                s.in_flight.to_string(),
                s.dead_lettered.to_string(),
                s.node.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(
        &["QUEUE", "READY", "DELAYED", "IN FLIGHT", "DEAD", "NODE"],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let s = Duration::from_secs;
        assert_eq!(backoff(s(1), s(60), 1), s(1));
        assert_eq!(backoff(s(1), s(60), 2), s(2));
        assert_eq!(backoff(s(1), s(60), 4), s(8));
        assert_eq!(backoff(s(1), s(60), 10), s(60));
        assert_eq!(backoff(s(1), s(60), u32::MAX), s(60));
        assert_eq!(backoff(Duration::ZERO, s(60), 3), Duration::ZERO);
    }

    #[test]
    fn payloads_are_json_unless_raw() {
        assert_eq!(
            payload(r#"{"a": 1}"#, false).unwrap().as_str(),
            r#"{"a": 1}"#
        );
        assert_eq!(payload("hello", true).unwrap().as_str(), r#""hello""#);
        assert!(payload("hello", false).unwrap_err().contains("--raw"));
        assert!(payload("{\"a\":", false).is_err());
    }
}
