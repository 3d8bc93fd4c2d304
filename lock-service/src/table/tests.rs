//! Data-driven tests of the pure lock table: each script in `testscripts/`
//! feeds commands, at explicit times, to one [`LockTable`] and records what
//! came out: the command's outcome, the waiting requests it settled, and on
//! request the table's state. A new case is a few lines of text; the
//! expected output is written with `UPDATE_GOLDENFILES=1` and then read
//! and checked in.
//!
//! Commands (the log index is the command's number in the script, from 1,
//! unless `index=` gives it; `at=` sets the clock, which stays until the
//! next `at=`; an acquire's request id is `#<index>` unless `id=` gives one):
//!
//! - `acquire RES OWNER [shared] [ttl=1000] [wait=0] [id=ID] [node_made]`
//!   (`node_made`: the node, not the client, made the request id)
//! - `release RES OWNER TOKEN [id=ID] [node_made]`
//! - `renew RES OWNER TOKEN [ttl=1000] [id=ID] [node_made]`
//! - `cancel OWNER ID`
//! - `tick`
//! - `reset`: a new table, clock and index back to 0 (one case ends, the
//!   next begins)
//! - `state`: every resource, the deadlines, the counters, the last token
//! - `remembered`: the remembered answers in the order they are forgotten,
//!   and the counts the limits bound
//! - `acquire`, `release` and `renew` take `max_locks=N` and
//!   `max_remembered=N`: the limits the taking node stamped on the command
//! - `snapshot [old]`: the table through its JSON snapshot and back (`old`
//!   drops the request fingerprints, as snapshots written before they were
//!   kept lack them)
//! - `list [prefix=P] [after=A] [limit=N]`: one page of the held and
//!   waited-for resources (holders `owner:mode:token`, waiters in order),
//!   and whether more follow
//! - `aborts`: the deadlocks broken since the last `aborts` (the event
//!   ring's records: cycle, edges with their resources, victim)
//! - `cycle FROM=TO...`: the cycle [`deadlock::find_cycle`] finds in a
//!   wait-for graph given as edges
//!
//! After every command the runner checks the table's bookkeeping: the
//! deadline index holds exactly the ends of the leases and waits, the
//! contended set exactly the resources with a queue, and no resource is
//! empty. A broken invariant fails the script.

use std::collections::{BTreeMap, BTreeSet};
use std::error::Error;
use std::fmt::Write as _;

use goldenscript::{ArgumentConsumer, Command as Script};
use test_each_file::test_each_path;

use super::*;
use crate::deadlock;

test_each_path! { in "lock-service/src/table/testscripts" as scripts => test_goldenscript }

fn test_goldenscript(path: &std::path::Path) {
    goldenscript::run(&mut TableRunner::default(), path).expect("goldenscript failed")
}

#[derive(Default)]
struct TableRunner {
    table: LockTable,
    /// The clock, as set by the last `at=`.
    now: u64,
    /// The number of table commands so far (the default log index).
    commands: u64,
    /// Deadlocks broken since the last `aborts`.
    aborts: Vec<deadlock::Abort>,
}

impl goldenscript::Runner for TableRunner {
    fn run(&mut self, command: &Script) -> Result<String, Box<dyn Error>> {
        let mut args = command.consume_args();
        let mut out = String::new();
        let cmd = match command.name.as_str() {
            "acquire" => {
                let resource = pos(&mut args, "resource")?;
                let owner = pos(&mut args, "owner")?;
                let flags = flags(&mut args, &["shared", "node_made"])?;
                let mode = match flags.contains("shared") {
                    true => Mode::Shared,
                    false => Mode::Exclusive,
                };
                let (index, now) = self.clock(&mut args)?;
                let cmd = TableCommand::Acquire(Acquire {
                    resource,
                    owner,
                    mode,
                    ttl_ms: args.lookup_parse("ttl")?.unwrap_or(1_000),
                    wait_ms: args.lookup_parse("wait")?.unwrap_or(0),
                    request_id: args
                        .lookup_parse("id")?
                        .unwrap_or_else(|| format!("#{index}")),
                    short_memory: flags.contains("node_made"),
                    limits: limits(&mut args)?,
                });
                Some((cmd, index, now))
            }
            "release" => {
                let resource = pos(&mut args, "resource")?;
                let owner = pos(&mut args, "owner")?;
                let token = pos(&mut args, "token")?.parse()?;
                let (index, now) = self.clock(&mut args)?;
                let cmd = TableCommand::Release(Release {
                    resource,
                    owner,
                    token,
                    request_id: args.lookup_parse("id")?,
                    limits: limits(&mut args)?,
                    short_memory: flags(&mut args, &["node_made"])?.contains("node_made"),
                });
                Some((cmd, index, now))
            }
            "renew" => {
                let resource = pos(&mut args, "resource")?;
                let owner = pos(&mut args, "owner")?;
                let token = pos(&mut args, "token")?.parse()?;
                let (index, now) = self.clock(&mut args)?;
                let cmd = TableCommand::Renew(Renew {
                    resource,
                    owner,
                    token,
                    ttl_ms: args.lookup_parse("ttl")?.unwrap_or(1_000),
                    request_id: args.lookup_parse("id")?,
                    limits: limits(&mut args)?,
                    short_memory: flags(&mut args, &["node_made"])?.contains("node_made"),
                });
                Some((cmd, index, now))
            }
            "cancel" => {
                let owner = pos(&mut args, "owner")?;
                let request_id = pos(&mut args, "request id")?;
                let (index, now) = self.clock(&mut args)?;
                Some((
                    TableCommand::Cancel(Cancel { owner, request_id }),
                    index,
                    now,
                ))
            }
            "tick" => {
                let (index, now) = self.clock(&mut args)?;
                Some((TableCommand::Tick, index, now))
            }
            "reset" => {
                *self = Self::default();
                None
            }
            "state" => {
                self.write_state(&mut out)?;
                None
            }
            "remembered" => {
                for (at, owner, rid) in self.table.forget.iter() {
                    let answer = self
                        .table
                        .remembered(owner, rid)
                        .ok_or("forget entry without answer")?;
                    writeln!(out, "{owner}/{rid} until={at}: {}", show(&answer.outcome))?;
                }
                writeln!(
                    out,
                    "placed: {} remembered: {}",
                    self.table.placed(),
                    self.table.remembered_count()
                )?;
                None
            }
            "snapshot" => {
                let old = args.next_pos().map(|a| a.value.as_str()) == Some("old");
                let mut json = serde_json::to_value(&self.table)?;
                if old {
                    for answers in json["requests"]
                        .as_object_mut()
                        .ok_or("no requests")?
                        .values_mut()
                    {
                        for answer in answers.as_object_mut().ok_or("no answers")?.values_mut() {
                            answer.as_object_mut().ok_or("no answer")?.remove("request");
                        }
                    }
                }
                self.table = serde_json::from_value::<LockTable>(json)?.recounted();
                writeln!(out, "restored from snapshot")?;
                None
            }
            "list" => {
                let prefix: String = args.lookup_parse("prefix")?.unwrap_or_default();
                let after: Option<String> = args.lookup_parse("after")?;
                let limit = args.lookup_parse("limit")?.unwrap_or(100);
                let (page, more) = self.table.list(&prefix, after.as_deref(), limit);
                for r in &page {
                    let holders: Vec<String> = r
                        .holders
                        .iter()
                        .map(|h| format!("{}:{}:{}", h.owner, mode(h.mode), h.token))
                        .collect();
                    let waiters: Vec<String> = r
                        .waiters
                        .iter()
                        .map(|w| format!("{}:{}", w.owner, mode(w.mode)))
                        .collect();
                    writeln!(
                        out,
                        "{} held=[{}] waiting=[{}]",
                        r.resource,
                        holders.join(" "),
                        waiters.join(" ")
                    )?;
                }
                writeln!(out, "more: {more}")?;
                None
            }
            "aborts" => {
                for a in self.aborts.drain(..) {
                    let edges: Vec<String> = a
                        .edges
                        .iter()
                        .map(|(w, b, on)| format!("{w}→{b} on {}", on.join(",")))
                        .collect();
                    writeln!(
                        out,
                        "at={} index={} victim={} wait={} resource={} cycle={} edges=[{}]",
                        a.at_ms,
                        a.index,
                        a.victim,
                        a.wait_id,
                        a.resource,
                        a.cycle.join("→"),
                        edges.join("; ")
                    )?;
                }
                None
            }
            "cycle" => {
                let mut graph = deadlock::Graph::new();
                for edge in args.rest_key() {
                    let from = edge.key.clone().unwrap_or_default();
                    graph.entry(from).or_default().insert(edge.value.clone());
                }
                match deadlock::find_cycle(&graph) {
                    Some(cycle) => writeln!(out, "cycle {}", cycle.join(" → "))?,
                    None => writeln!(out, "no cycle")?,
                }
                None
            }
            name => return Err(format!("unknown command {name}").into()),
        };
        args.reject_rest()?;
        if let Some((cmd, index, now)) = cmd {
            let applied = self.table.apply(cmd, index, now);
            self.aborts.extend(applied.deadlocks.iter().cloned());
            writeln!(out, "{}", show(&applied.outcome))?;
            for (wait_id, outcome) in &applied.settled {
                writeln!(out, "  settled wait {wait_id}: {}", show(outcome))?;
            }
            self.check_invariants()?;
        }
        Ok(out)
    }
}

/// The lock table's command type, named apart from goldenscript's.
type TableCommand = Command;

/// `max_locks=N max_remembered=N`: the limits the taking node stamped (one
/// given alone leaves the other unbounded); none when neither is given.
fn limits(args: &mut ArgumentConsumer) -> Result<Option<Limits>, Box<dyn Error>> {
    let max_locks: Option<u64> = args.lookup_parse("max_locks")?;
    let max_remembered: Option<u64> = args.lookup_parse("max_remembered")?;
    Ok(match (max_locks, max_remembered) {
        (None, None) => None,
        (l, r) => Some(Limits {
            max_locks: l.unwrap_or(u64::MAX),
            max_remembered: r.unwrap_or(u64::MAX),
        }),
    })
}

fn pos(args: &mut ArgumentConsumer, what: &str) -> Result<String, Box<dyn Error>> {
    Ok(args
        .next_pos()
        .ok_or(format!("{what} not given"))?
        .value
        .clone())
}

/// The positional flags given, each of which must be one of `known`.
fn flags<'a>(
    args: &mut ArgumentConsumer<'a>,
    known: &[&str],
) -> Result<BTreeSet<&'a str>, Box<dyn Error>> {
    let mut found = BTreeSet::new();
    for a in args.rest_pos() {
        if !known.contains(&a.value.as_str()) {
            return Err(format!("invalid argument '{}'", a.value).into());
        }
        found.insert(a.value.as_str());
    }
    Ok(found)
}

impl TableRunner {
    /// The log index and time of the next command: `index=`, `at=`.
    fn clock(&mut self, args: &mut ArgumentConsumer) -> Result<(u64, u64), Box<dyn Error>> {
        self.commands += 1;
        if let Some(at) = args.lookup_parse("at")? {
            self.now = at;
        }
        let index = args.lookup_parse("index")?.unwrap_or(self.commands);
        Ok((index, self.now))
    }

    fn write_state(&self, out: &mut String) -> Result<(), Box<dyn Error>> {
        let t = &self.table;
        for (name, r) in &t.resources {
            writeln!(out, "{name}:")?;
            for h in &r.holders {
                writeln!(
                    out,
                    "  held {} {} token={} {}..{}",
                    h.owner,
                    mode(h.mode),
                    h.token,
                    h.acquired_at_ms,
                    h.expires_at_ms
                )?;
            }
            for w in &r.queue {
                writeln!(
                    out,
                    "  waiting {} {} wait={} id={} ttl={} {}..{}",
                    w.owner,
                    mode(w.mode),
                    w.wait_id,
                    w.request_id,
                    w.ttl_ms,
                    w.enqueued_at_ms,
                    w.deadline_ms
                )?;
            }
        }
        if t.resources.is_empty() {
            writeln!(out, "no resources")?;
        }
        let deadlines: Vec<String> = t
            .deadlines
            .iter()
            .map(|(at, names)| {
                format!(
                    "{at}:{}",
                    names.iter().cloned().collect::<Vec<_>>().join(",")
                )
            })
            .collect();
        writeln!(out, "deadlines: [{}]", deadlines.join(" "))?;
        let c = t.counters();
        writeln!(
            out,
            "counters: grants={} handoffs={} releases={} expirations={} wait_timeouts={} deadlocks={}",
            c.grants, c.handoffs, c.releases, c.expirations, c.wait_timeouts, c.deadlocks
        )?;
        writeln!(out, "last token: {}", t.last_token())?;
        Ok(())
    }

    /// The table's bookkeeping agrees with its resources.
    fn check_invariants(&self) -> Result<(), Box<dyn Error>> {
        let t = &self.table;
        let mut want: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
        for (name, r) in &t.resources {
            if r.is_empty() {
                return Err(format!("empty resource {name} kept").into());
            }
            let ends = r.holders.iter().map(|h| h.expires_at_ms);
            for at in ends.chain(r.queue.iter().map(|w| w.deadline_ms)) {
                want.entry(at).or_default().insert(name.clone());
            }
        }
        if t.deadlines != want {
            return Err(format!("deadlines {:?}, want {want:?}", t.deadlines).into());
        }
        let contended: BTreeSet<String> = t
            .resources
            .iter()
            .filter(|(_, r)| !r.queue.is_empty())
            .map(|(n, _)| n.clone())
            .collect();
        if t.contended != contended {
            return Err(format!("contended {:?}, want {contended:?}", t.contended).into());
        }
        if t.next_deadline() != want.keys().next().copied() {
            return Err("next_deadline is not the earliest deadline".into());
        }
        let (_, holds, waiters) = t.sizes();
        if t.placed() != (holds + waiters) as u64 {
            return Err(format!("placed {}, want {}", t.placed(), holds + waiters).into());
        }
        let answers: usize = t.requests.values().map(|m| m.len()).sum();
        if answers != t.remembered_count() {
            return Err(format!("{answers} answers, {} to forget", t.remembered_count()).into());
        }
        Ok(())
    }
}

fn mode(m: Mode) -> &'static str {
    match m {
        Mode::Exclusive => "exclusive",
        Mode::Shared => "shared",
    }
}

fn show(o: &Outcome) -> String {
    match o {
        Outcome::Granted(g) => format!(
            "granted {} {} {} token={} expires={}",
            g.resource,
            g.owner,
            mode(g.mode),
            g.token,
            g.expires_at_ms
        ),
        Outcome::Queued { wait_id, resource } => format!("queued on {resource} wait={wait_id}"),
        Outcome::Held { holders } => {
            let by: Vec<String> = holders
                .iter()
                .map(|h| format!("{}({} token={})", h.owner, mode(h.mode), h.token))
                .collect();
            format!("held by {}", by.join(" "))
        }
        Outcome::Deadlock { cycle } => format!("deadlock {}", cycle.join(" → ")),
        Outcome::WaitTimeout => "wait_timeout".into(),
        Outcome::Released => "released".into(),
        Outcome::Renewed { expires_at_ms } => format!("renewed expires={expires_at_ms}"),
        Outcome::NotHeld => "not_held".into(),
        Outcome::TokenMismatch => "token_mismatch".into(),
        Outcome::OwnerMismatch => "owner_mismatch".into(),
        Outcome::AlreadyHeld { token } => format!("already_held token={token}"),
        Outcome::AlreadyWaiting { wait_id } => format!("already_waiting wait={wait_id}"),
        Outcome::RequestIdReused => "request_id_reused".into(),
        Outcome::CapacityExceeded { limit } => format!("capacity_exceeded limit={limit}"),
        Outcome::UnknownRequest => "unknown_request".into(),
        Outcome::Ticked => "ticked".into(),
    }
}

/// Not a script: this is about the persistent maps under the table, that a
/// copy taken for a snapshot keeps its moment while the table goes on, and
/// about the JSON layout older snapshots have.
#[test]
fn a_snapshot_copy_keeps_its_moment_and_remembered_answers_keep_their_json() {
    let acquire = |resource: &str, owner: &str, request_id: &str| {
        TableCommand::Acquire(Acquire {
            resource: resource.into(),
            owner: owner.into(),
            mode: Mode::Exclusive,
            ttl_ms: 1_000,
            wait_ms: 0,
            request_id: request_id.into(),
            short_memory: false,
            limits: None,
        })
    };
    let mut t = LockTable::new();
    t.apply(acquire("r", "a", "c1"), 1, 0);
    let copy = t.clone();
    let at_copy = serde_json::to_value(&copy).unwrap();
    // Commands after the copy (new answers, and forgetting old ones once
    // their memory ends) leave the copy as it was.
    t.apply(acquire("s", "b", "c2"), 2, 5);
    t.apply(TableCommand::Tick, 3, REQUEST_MEMORY_MS + 1);
    assert_eq!(serde_json::to_value(&copy).unwrap(), at_copy);
    assert_ne!(serde_json::to_value(&t).unwrap(), at_copy);
    // The layout of the BTreeMaps these were before: owner → request id →
    // answer, and [forget at, owner, request id] triples in time order.
    assert_eq!(
        at_copy["requests"]["a"]["c1"]["forget_at_ms"],
        REQUEST_MEMORY_MS
    );
    assert!(at_copy["requests"]["a"]["c1"]["request"].is_u64());
    assert_eq!(
        at_copy["forget"],
        serde_json::json!([[REQUEST_MEMORY_MS, "a", "c1"]])
    );
    // And it loads back: a replay of c1 gets the remembered grant.
    let mut restored: LockTable = serde_json::from_value(at_copy).unwrap();
    let again = restored.apply(acquire("r", "a", "c1"), 9, 10);
    assert!(matches!(again.outcome, Outcome::Granted(g) if g.token == 1));
    assert_eq!(restored.last_token(), 1);
}
