//! The delivery rules as goldenscripts: each script in `testscripts/` runs
//! against the embedded store (which runs the pure `delivery::Queue`) and
//! then against a throwaway redis-server (which runs the same rules as Lua
//! scripts), and both must give the one expected output written in the
//! script. Time is explicit: every store call takes the script's clock.
//!
//! `UPDATE_GOLDENFILES=1` rewrites a script's output from the embedded run;
//! the Redis run is then still held to it.
//!
//! Commands (times are milliseconds after an arbitrary fixed start, `at=`
//! sets the clock and it stays until the next `at=`; messages are named by
//! their sequence number, the id's value; a receipt is named
//! `[QUEUE/]SEQ.ATTEMPT`, the delivery it was handed out with, in the
//! command's queue unless QUEUE is given; any other receipt text is sent
//! as it is):
//!
//! - `enqueue Q PAYLOAD... [count=N] [delay=MS] [ttl=MS]`: payloads are
//!   JSON text; `count=N` adds N more, with payloads `"0"`, `"1"`, ...
//! - `dequeue Q [max=1] [vis=1000] [summary]`: one line per delivery, or
//!   with `summary` runs of consecutive ids; then the next wake time, if any
//! - `ack Q RECEIPT... [last]`: one answer per receipt (`last`: every
//!   receipt of the last dequeue); repeated answers are counted
//! - `nack Q RECEIPT [delay=0]`, `extend Q RECEIPT [vis=1000]`
//! - `stats Q`, `dead Q [limit=10]`, `redrive Q [SEQ...] [limit=10]`
//! - `max_attempts Q N|default`, `queues`, `ping`
//! - `reopen [messages=N] [bytes=N]`: close the store and open it again
//!   with these per-queue limits (default: the service's defaults); the
//!   embedded store reloads from disk, Redis keeps its data. An enqueue
//!   over a limit prints `full LIMIT: max=… current=… adding=…`.
//!
//! Every command that sweeps prints the sweep's events when there were any.
//! Queues are independent, so a script may set the clock back to start a
//! case on a new queue.

mod support;

use std::collections::HashMap;
use std::error::Error;
use std::fmt::Write as _;
use std::path::Path;

use goldenscript::{ArgumentConsumer, Command};
use queue_service::delivery::{
    format_id, make_receipt, parse_id, receipt_seq, Delivery, Events, NackOutcome, NewMessage,
    ReceiptError, Seq, DEFAULT_MAX_ATTEMPTS,
};
use queue_service::limit::{Limits, StoreLimits};
use queue_service::store::QueueStore;
use test_each_file::test_each_path;

test_each_path! { in "queue-service/tests/testscripts" as scripts => test_goldenscript }

/// An arbitrary fixed start time: the stores see `T0 + at`.
const T0: u64 = 1_700_000_000_000;

fn test_goldenscript(path: &Path) {
    // The embedded run checks the script's output (or writes it).
    let mut embedded = StoreRunner::new(support::embedded_store(DEFAULT_MAX_ATTEMPTS));
    goldenscript::run(&mut embedded, path).expect("goldenscript failed (embedded)");
    // The Redis run must give the same output, never rewriting it.
    let golden = std::fs::read_to_string(path).expect("read script");
    let mut redis = StoreRunner::new(support::redis_store(DEFAULT_MAX_ATTEMPTS));
    let got = goldenscript::generate(&mut redis, &golden).expect("goldenscript failed (redis)");
    if got != golden {
        let line = got
            .lines()
            .zip(golden.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| got.lines().count().min(golden.lines().count()));
        panic!(
            "the Redis store's output differs from {} at line {}:\n--- expected (embedded)\n{}\n--- redis\n{}",
            path.display(),
            line + 1,
            golden.lines().skip(line).take(5).collect::<Vec<_>>().join("\n"),
            got.lines().skip(line).take(5).collect::<Vec<_>>().join("\n"),
        );
    }
}

struct StoreRunner {
    rt: tokio::runtime::Runtime,
    /// `None` only while `reopen` swaps it.
    store: Option<support::TestStore>,
    /// The clock, after T0.
    now: u64,
    /// Receipts handed out, by `QUEUE/SEQ.ATTEMPT`.
    receipts: HashMap<String, String>,
    /// The receipts of the last dequeue.
    last: Vec<String>,
}

impl StoreRunner {
    fn new(store: support::TestStore) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        Self {
            rt,
            store: Some(store),
            now: 0,
            receipts: HashMap::new(),
            last: Vec::new(),
        }
    }

    fn store(&self) -> &dyn QueueStore {
        &*self.store.as_ref().expect("a store").store
    }

    /// Set the clock from `at=`; the stores' time for this command.
    fn clock(&mut self, args: &mut ArgumentConsumer) -> Result<u64, Box<dyn Error>> {
        if let Some(at) = args.lookup_parse("at")? {
            self.now = at;
        }
        Ok(T0 + self.now)
    }

    /// The receipt a script names, or the text itself.
    fn receipt(&self, queue: &str, name: &str) -> String {
        let key = match name.contains('/') {
            true => name.to_string(),
            false => format!("{queue}/{name}"),
        };
        self.receipts
            .get(&key)
            .cloned()
            .unwrap_or_else(|| name.to_string())
    }

    /// Remember a delivery's receipt, after checking its form.
    fn record(&mut self, queue: &str, d: &Delivery) -> Result<Seq, Box<dyn Error>> {
        let seq = parse_id(&d.id).ok_or(format!("malformed id {}", d.id))?;
        if format_id(seq) != d.id || receipt_seq(&d.receipt) != Some(seq) {
            return Err(format!("receipt {} does not name {}", d.receipt, d.id).into());
        }
        let prefix = make_receipt(seq, d.attempts, 0);
        let prefix = &prefix[..prefix.len() - 16];
        if !d.receipt.starts_with(prefix) {
            return Err(format!("receipt {} is not of attempt {}", d.receipt, d.attempts).into());
        }
        self.receipts
            .insert(format!("{queue}/{seq}.{}", d.attempts), d.receipt.clone());
        self.last.push(d.receipt.clone());
        Ok(seq)
    }
}

impl goldenscript::Runner for StoreRunner {
    fn run(&mut self, command: &Command) -> Result<String, Box<dyn Error>> {
        let mut out = String::new();
        let mut args = command.consume_args();
        match command.name.as_str() {
            "enqueue" => {
                let queue = pos(&mut args, "queue")?;
                let now = self.clock(&mut args)?;
                let delay_ms = args.lookup_parse("delay")?.unwrap_or(0);
                let ttl_ms = args.lookup_parse("ttl")?;
                let count: usize = args.lookup_parse("count")?.unwrap_or(0);
                let payloads = args.rest_pos().into_iter().map(|a| a.value.clone());
                let generated = (0..count).map(|i| format!("\"{i}\""));
                let msgs: Vec<NewMessage> = payloads
                    .chain(generated)
                    .map(|payload| NewMessage {
                        payload,
                        delay_ms,
                        ttl_ms,
                    })
                    .collect();
                args.reject_rest()?;
                let (res, ev) = self.rt.block_on(self.store().enqueue(&queue, msgs, now))?;
                let ids = match res {
                    Ok(ids) => ids,
                    Err(full) => {
                        writeln!(
                            out,
                            "full {}: max={} current={} adding={}",
                            full.limit_name(),
                            full.limit,
                            full.used,
                            full.adding
                        )?;
                        events(&mut out, ev)?;
                        return Ok(out);
                    }
                };
                let seqs = ids
                    .iter()
                    .map(|id| parse_id(id).filter(|s| format_id(*s) == *id))
                    .collect::<Option<Vec<_>>>()
                    .ok_or(format!("malformed ids {ids:?}"))?;
                writeln!(out, "enqueued {}", runs(&seqs))?;
                events(&mut out, ev)?;
            }
            "dequeue" => {
                let queue = pos(&mut args, "queue")?;
                let now = self.clock(&mut args)?;
                let max = args.lookup_parse("max")?.unwrap_or(1);
                let vis = args.lookup_parse("vis")?.unwrap_or(1_000);
                let (summary, others) = flag(&mut args, "summary");
                if let Some(other) = others.first() {
                    return Err(format!("invalid argument '{other}'").into());
                }
                args.reject_rest()?;
                let got = self
                    .rt
                    .block_on(self.store().dequeue(&queue, max, vis, now))?;
                self.last.clear();
                let mut seqs = Vec::new();
                for d in &got.deliveries {
                    let seq = self.record(&queue, d)?;
                    seqs.push((seq, d.attempts));
                    if !summary {
                        writeln!(
                            out,
                            "{seq} attempt={} payload={} enqueued={}",
                            d.attempts,
                            d.payload,
                            d.enqueued_at_ms - T0
                        )?;
                    }
                }
                if got.deliveries.is_empty() {
                    writeln!(out, "nothing")?;
                } else if summary {
                    let mut by_attempt: Vec<(u32, Vec<Seq>)> = Vec::new();
                    for (seq, attempts) in seqs {
                        match by_attempt.last_mut() {
                            Some((a, v)) if *a == attempts => v.push(seq),
                            _ => by_attempt.push((attempts, vec![seq])),
                        }
                    }
                    for (attempts, seqs) in by_attempt {
                        writeln!(out, "{} attempt={attempts}: {}", seqs.len(), runs(&seqs))?;
                    }
                }
                if let Some(wake) = got.next_wake_ms {
                    writeln!(out, "next wake {}", wake - T0)?;
                }
                events(&mut out, got.events)?;
            }
            "ack" => {
                let queue = pos(&mut args, "queue")?;
                let now = self.clock(&mut args)?;
                let (last, named) = flag(&mut args, "last");
                let mut receipts = Vec::new();
                if last {
                    receipts.extend(self.last.iter().cloned());
                }
                for name in named {
                    receipts.push(self.receipt(&queue, &name));
                }
                args.reject_rest()?;
                let (res, ev) = self.rt.block_on(self.store().ack(&queue, receipts, now))?;
                let answers: Vec<String> = res
                    .iter()
                    .map(|r| r.map_or_else(receipt_error, |()| "ok".to_string()))
                    .collect();
                writeln!(out, "{}", counted(&answers))?;
                events(&mut out, ev)?;
            }
            "nack" => {
                let queue = pos(&mut args, "queue")?;
                let receipt = self.receipt(&queue, &pos(&mut args, "receipt")?);
                let now = self.clock(&mut args)?;
                let delay = args.lookup_parse("delay")?.unwrap_or(0);
                args.reject_rest()?;
                let (res, ev) = self
                    .rt
                    .block_on(self.store().nack(&queue, &receipt, delay, now))?;
                match res {
                    Ok(NackOutcome::Requeued) => writeln!(out, "requeued")?,
                    Ok(NackOutcome::DeadLettered) => writeln!(out, "dead_lettered")?,
                    Ok(NackOutcome::Expired) => writeln!(out, "expired")?,
                    Err(e) => writeln!(out, "{}", receipt_error(e))?,
                }
                events(&mut out, ev)?;
            }
            "extend" => {
                let queue = pos(&mut args, "queue")?;
                let receipt = self.receipt(&queue, &pos(&mut args, "receipt")?);
                let now = self.clock(&mut args)?;
                let vis = args.lookup_parse("vis")?.unwrap_or(1_000);
                args.reject_rest()?;
                let (res, ev) = self
                    .rt
                    .block_on(self.store().extend(&queue, &receipt, vis, now))?;
                match res {
                    Ok(deadline) => writeln!(out, "deadline {}", deadline - T0)?,
                    Err(e) => writeln!(out, "{}", receipt_error(e))?,
                }
                events(&mut out, ev)?;
            }
            "stats" => {
                let queue = pos(&mut args, "queue")?;
                let now = self.clock(&mut args)?;
                args.reject_rest()?;
                let (s, ev) = self.rt.block_on(self.store().stats(&queue, now))?;
                writeln!(
                    out,
                    "ready={} delayed={} in_flight={} dead_lettered={} expired_total={} bytes={}",
                    s.ready, s.delayed, s.in_flight, s.dead_lettered, s.expired_total, s.bytes
                )?;
                events(&mut out, ev)?;
            }
            "dead" => {
                let queue = pos(&mut args, "queue")?;
                let limit = args.lookup_parse("limit")?.unwrap_or(10);
                args.reject_rest()?;
                let dead = self.rt.block_on(self.store().dead_letters(&queue, limit))?;
                for d in &dead {
                    let seq = parse_id(&d.id).ok_or(format!("malformed id {}", d.id))?;
                    writeln!(
                        out,
                        "{seq} attempts={} payload={} enqueued={} dead_lettered={}",
                        d.attempts,
                        d.payload,
                        d.enqueued_at_ms - T0,
                        d.dead_lettered_at_ms - T0
                    )?;
                }
                if dead.is_empty() {
                    writeln!(out, "no dead letters")?;
                }
            }
            "redrive" => {
                let queue = pos(&mut args, "queue")?;
                let now = self.clock(&mut args)?;
                let limit = args.lookup_parse("limit")?.unwrap_or(10);
                let ids: Vec<Seq> = args
                    .rest_pos()
                    .into_iter()
                    .map(|a| a.parse())
                    .collect::<Result<_, _>>()?;
                let ids = (!ids.is_empty()).then_some(ids);
                args.reject_rest()?;
                let done = self
                    .rt
                    .block_on(self.store().redrive(&queue, ids, limit, now))?;
                let seqs = done
                    .iter()
                    .map(|id| parse_id(id))
                    .collect::<Option<Vec<_>>>()
                    .ok_or(format!("malformed ids {done:?}"))?;
                writeln!(out, "redriven {}", runs(&seqs))?;
            }
            "max_attempts" => {
                let queue = pos(&mut args, "queue")?;
                let n = match pos(&mut args, "max attempts")?.as_str() {
                    "default" => None,
                    n => Some(n.parse()?),
                };
                args.reject_rest()?;
                self.rt.block_on(self.store().set_max_attempts(&queue, n))?;
            }
            "reopen" => {
                let defaults = Limits::QUEUE_DEFAULT;
                let queue = Limits {
                    max_messages: args
                        .lookup_parse("messages")?
                        .unwrap_or(defaults.max_messages),
                    max_bytes: args.lookup_parse("bytes")?.unwrap_or(defaults.max_bytes),
                };
                args.reject_rest()?;
                let limits = StoreLimits {
                    queue,
                    ..StoreLimits::default()
                };
                let store = self.store.take().expect("a store");
                self.store = Some(store.reopen(limits));
                writeln!(
                    out,
                    "reopened: max {} messages, {} bytes per queue",
                    queue.max_messages, queue.max_bytes
                )?;
            }
            "ping" => {
                args.reject_rest()?;
                self.rt.block_on(self.store().ping())?;
                writeln!(out, "pong")?;
            }
            "queues" => {
                args.reject_rest()?;
                let names = self.rt.block_on(self.store().queues())?;
                writeln!(out, "{}", names.join(" "))?;
            }
            name => return Err(format!("unknown command {name}").into()),
        }
        Ok(out)
    }
}

fn pos(args: &mut ArgumentConsumer, what: &str) -> Result<String, Box<dyn Error>> {
    Ok(args
        .next_pos()
        .ok_or(format!("{what} not given"))?
        .value
        .clone())
}

/// The remaining positional arguments, less the flag `name`, and whether
/// it was given.
fn flag(args: &mut ArgumentConsumer, name: &str) -> (bool, Vec<String>) {
    let rest = args.rest_pos();
    let found = rest.iter().any(|a| a.value == name);
    let others = rest
        .into_iter()
        .filter(|a| a.value != name)
        .map(|a| a.value.clone())
        .collect();
    (found, others)
}

fn receipt_error(e: ReceiptError) -> String {
    match e {
        ReceiptError::Malformed => "malformed",
        ReceiptError::NotFound => "not_found",
        ReceiptError::Stale => "stale",
    }
    .to_string()
}

fn events(out: &mut String, ev: Events) -> std::fmt::Result {
    if ev != Events::default() {
        writeln!(
            out,
            "events: expired={} dead_lettered={}",
            ev.expired, ev.dead_lettered
        )?;
    }
    Ok(())
}

/// Sequence numbers as runs: `1-3 5`.
fn runs(seqs: &[Seq]) -> String {
    let mut parts: Vec<(Seq, Seq)> = Vec::new();
    for &s in seqs {
        match parts.last_mut() {
            Some((_, end)) if *end + 1 == s => *end = s,
            _ => parts.push((s, s)),
        }
    }
    let parts: Vec<String> = parts
        .into_iter()
        .map(|(a, b)| match a == b {
            true => a.to_string(),
            false => format!("{a}-{b}"),
        })
        .collect();
    match parts.is_empty() {
        true => "nothing".into(),
        false => parts.join(" "),
    }
}

/// Answers in order, a repeated one counted: `ok ×3 stale`.
fn counted(answers: &[String]) -> String {
    let mut parts: Vec<(String, usize)> = Vec::new();
    for a in answers {
        match parts.last_mut() {
            Some((b, n)) if b == a => *n += 1,
            _ => parts.push((a.clone(), 1)),
        }
    }
    parts
        .into_iter()
        .map(|(a, n)| match n {
            1 => a,
            n => format!("{a} ×{n}"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}
