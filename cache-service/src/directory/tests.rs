//! Data-driven tests of the MESI protocol's pure cores: the home's
//! [`Directory`] and the nodes' [`LineTable`]s, in a tiny synchronous
//! cluster (home `h`, nodes `a`, `b`, `c`, one key `k` for the cluster
//! commands). Each script in `testscripts/` is commands and the output they
//! must give; `UPDATE_GOLDENFILES=1` writes the output, to be read and
//! checked in.
//!
//! Cluster commands (a transaction advances the clock by 1 unless `at=`
//! sets it; forwards are delivered at once, replies to `request` are held
//! until `receive`, eviction notices until `notice`):
//!
//! - `read N`, `write N VALUE [expires=T]`, `delete N`: one operation at
//!   node N, from its cache when it can, else a home transaction whose reply
//!   lands at once
//! - `request N gets|getm|delete [value=V] [expires=T]`: a home transaction
//!   whose reply is held; `receive N` delivers N's oldest held reply
//! - `begin N gets|getm|delete [value=V]`: only the home's begin (the plan
//!   is printed, nothing is sent); `finish`: the home's finish with no
//!   replies and no memory value
//! - `notice N [again]`: N's oldest held eviction notice reaches the home
//!   (`again`: the last one, once more); N then hears the home took it
//! - `memory VALUE|none`, `forget N`, `crash N` (a new empty cache, and the
//!   home forgets N), `retain_none` (the home keeps no idle entry)
//! - `cache N [entries=100] [bytes=1048576]`: a new empty cache at N
//! - `state`: every node's line for `k`, the home's holders and memory
//!
//! Line commands, on node N's cache alone (`home=h` unless given):
//!
//! - `install N KEY M|E|S epoch=E [value=1] [size=BYTES] [expires=T] [home=H]`
//! - `lookup N KEY [lease=H]` (only a line of home H hits), `line N KEY`
//! - `write_owned N KEY VALUE [lease=H]`
//! - `invalidate N KEY epoch=E [force]`, `surrender N KEY epoch=E [recall]`
//! - `begin_request N KEY`, `end_request N KEY`, `put_done N KEY epoch=E`
//! - `retain N drop_home=H`, `census N`

use std::collections::VecDeque;
use std::error::Error;
use std::fmt::Write as _;

use goldenscript::{ArgumentConsumer, Command};
use serde_json::json;
use test_each_file::test_each_path;

use super::*;
use crate::line::{Evictions, LineTable, Lookup, Surrender};

test_each_path! { in "cache-service/src/directory/testscripts" as scripts => test_goldenscript }

fn test_goldenscript(path: &std::path::Path) {
    goldenscript::run(&mut Sim::default(), path).expect("goldenscript failed")
}

const NODES: [&str; 3] = ["a", "b", "c"];
const KEY: &str = "k";
const HOME: &str = "h";

/// An eviction notice on its way to the home.
#[derive(Clone)]
struct Notice {
    key: String,
    epoch: Epoch,
    data: Option<Data>,
}

struct Sim {
    dir: Directory,
    lines: HashMap<String, LineTable>,
    memory: Option<Data>,
    now: u64,
    /// Home replies held back, per node, oldest first.
    replies: HashMap<String, VecDeque<HomeReply>>,
    /// Eviction notices not yet at the home, per node.
    notices: HashMap<String, VecDeque<Notice>>,
    last_notice: HashMap<String, Notice>,
}

impl Default for Sim {
    fn default() -> Self {
        Self::new(WritePolicy::WriteBack)
    }
}

impl Sim {
    fn new(policy: WritePolicy) -> Self {
        Self {
            dir: Directory::new(policy),
            lines: NODES
                .iter()
                .map(|n| (n.to_string(), LineTable::new(100, 1 << 20)))
                .collect(),
            memory: None,
            now: 0,
            replies: HashMap::new(),
            notices: HashMap::new(),
            last_notice: HashMap::new(),
        }
    }

    fn live() -> Vec<NodeId> {
        NODES.iter().map(|n| n.to_string()).collect()
    }

    fn table(&mut self, node: &str) -> Result<&mut LineTable, Box<dyn Error>> {
        self.lines
            .get_mut(node)
            .ok_or_else(|| format!("no node {node}").into())
    }

    /// Hold the E and M lines an insertion pushed out, as notices to send.
    fn evicted(&mut self, node: &str, ev: Evictions, out: &mut String) -> std::fmt::Result {
        for p in ev.puts {
            // As the node does: under write-back memory holds nothing while
            // a line is exclusive, so a clean E line is written back too.
            let write_back = self.dir.policy() == WritePolicy::WriteBack;
            let data = (p.line.state == LineState::M || write_back).then(|| p.line.data.clone());
            writeln!(
                out,
                "{node}: evicted {} ({}), notice held",
                p.key,
                p.line.state.as_str()
            )?;
            self.notices
                .entry(node.to_string())
                .or_default()
                .push_back(Notice {
                    key: p.key,
                    epoch: p.line.grant_epoch,
                    data,
                });
        }
        Ok(())
    }

    fn deliver(&mut self, to: &str, f: Forward) -> Result<ForwardReply, Box<dyn Error>> {
        let t = self.table(to)?;
        Ok(match f {
            Forward::Invalidate { epoch, force } => {
                t.invalidate(KEY, epoch, force);
                ForwardReply::ack()
            }
            Forward::Downgrade { epoch } | Forward::Recall { epoch } => {
                match t.surrender(KEY, epoch, matches!(f, Forward::Recall { .. })) {
                    Surrender::Data { data, dirty } => ForwardReply {
                        data: Some(data),
                        dirty,
                    },
                    Surrender::Wait => return Err("the sim delivers grants at once".into()),
                    Surrender::Nothing => ForwardReply::ack(),
                }
            }
        })
    }

    fn apply_memory(&mut self, op: MemoryOp) {
        match op {
            MemoryOp::None => {}
            MemoryOp::Write(d) => self.memory = Some(d),
            MemoryOp::Delete => self.memory = None,
        }
    }

    /// Run one home transaction to completion; returns the home's reply
    /// (not yet at the requester).
    fn transact(&mut self, from: &str, req: HomeRequest) -> Result<HomeReply, Box<dyn Error>> {
        self.now += 1;
        let plan = self.dir.begin(KEY, from, &req, &Self::live(), self.now)?;
        let mut replies = Vec::new();
        for (n, f) in plan.forwards {
            let r = self.deliver(&n, f)?;
            replies.push((n, r));
        }
        let mem = if self.dir.needs_memory(KEY, &replies) {
            self.memory.clone()
        } else {
            None
        };
        let out = self.dir.finish(KEY, &replies, mem, self.now)?;
        self.apply_memory(out.memory);
        Ok(out.reply)
    }

    /// A reply lands at `at`; returns the value it carries.
    fn receive(
        &mut self,
        at: &str,
        reply: &HomeReply,
        out: &mut String,
    ) -> Result<Option<Data>, Box<dyn Error>> {
        let t = self.table(at)?;
        let (got, ev) = match reply {
            HomeReply::Line { state, epoch, data } => {
                let (installed, ev) = t.install(KEY, *state, *epoch, data.clone(), HOME);
                if !installed {
                    writeln!(out, "{at}: stale grant, not installed")?;
                }
                (Some(data.clone()), ev)
            }
            HomeReply::Absent { epoch } => {
                t.invalidate(KEY, *epoch, false);
                (None, Evictions::default())
            }
            HomeReply::PutAck => (None, Evictions::default()),
        };
        self.table(at)?.end_request(KEY);
        self.evicted(at, ev, out)?;
        Ok(got)
    }

    fn request(args: &mut ArgumentConsumer) -> Result<HomeRequest, Box<dyn Error>> {
        let op = args
            .next_pos()
            .ok_or("request kind not given")?
            .value
            .clone();
        let value = args.lookup_parse::<String>("value")?;
        let expires_at_ms = args.lookup_parse("expires")?;
        Ok(match op.as_str() {
            "gets" => HomeRequest::GetS,
            "getm" => HomeRequest::GetM {
                value: json_value(value.as_deref().unwrap_or("1"))?,
                expires_at_ms,
            },
            "delete" => HomeRequest::Delete,
            op => return Err(format!("unknown request {op}").into()),
        })
    }

    fn write_state(&self, out: &mut String) -> std::fmt::Result {
        let lines: Vec<String> = NODES
            .iter()
            .map(|n| match self.lines[*n].peek(KEY) {
                None => format!("{n}=I"),
                Some(l) => format!("{n}={}({})", l.state.as_str(), l.data.value),
            })
            .collect();
        let holders = match self.dir.entry(KEY).map(|e| &e.holders) {
            None => "no entry".to_string(),
            Some(Holders::Uncached) => "uncached".to_string(),
            Some(Holders::Shared { sharers }) => {
                format!(
                    "shared by {}",
                    sharers.iter().cloned().collect::<Vec<_>>().join(",")
                )
            }
            Some(Holders::Exclusive { owner }) => format!("exclusive at {owner}"),
        };
        let memory = self
            .memory
            .as_ref()
            .map_or("none".to_string(), |d| d.value.to_string());
        writeln!(
            out,
            "lines {}; home: {holders}; memory: {memory}",
            lines.join(" ")
        )
    }
}

fn json_value(s: &str) -> Result<serde_json::Value, Box<dyn Error>> {
    Ok(serde_json::from_str(s)?)
}

fn pos(args: &mut ArgumentConsumer, what: &str) -> Result<String, Box<dyn Error>> {
    Ok(args
        .next_pos()
        .ok_or(format!("{what} not given"))?
        .value
        .clone())
}

/// Whether the positional flag `name` is among the remaining positionals
/// (which must all be known flags).
fn flag(args: &mut ArgumentConsumer, name: &str) -> Result<bool, Box<dyn Error>> {
    let mut found = false;
    for a in args.rest_pos() {
        if a.value != name {
            return Err(format!("invalid argument '{}'", a.value).into());
        }
        found = true;
    }
    Ok(found)
}

fn show_reply(r: &HomeReply) -> String {
    match r {
        HomeReply::Line { state, epoch, data } => {
            format!("{} {} (epoch {epoch})", state.as_str(), data.value)
        }
        HomeReply::Absent { epoch } => format!("absent (epoch {epoch})"),
        HomeReply::PutAck => "put ack".into(),
    }
}

fn show_memory(op: &MemoryOp) -> String {
    match op {
        MemoryOp::None => "memory unchanged".into(),
        MemoryOp::Write(d) => format!("memory ← {}", d.value),
        MemoryOp::Delete => "memory deleted".into(),
    }
}

fn show_forward(n: &str, f: &Forward) -> String {
    match f {
        Forward::Invalidate { epoch, force } => {
            let force = if *force { " force" } else { "" };
            format!("{n} invalidate ≤{epoch}{force}")
        }
        Forward::Downgrade { epoch } => format!("{n} downgrade {epoch}"),
        Forward::Recall { epoch } => format!("{n} recall {epoch}"),
    }
}

impl goldenscript::Runner for Sim {
    fn run(&mut self, command: &Command) -> Result<String, Box<dyn Error>> {
        let mut out = String::new();
        let mut args = command.consume_args();
        if let Some(at) = args.lookup_parse("at")? {
            self.now = at;
        }
        match command.name.as_str() {
            "policy" => {
                let policy = match pos(&mut args, "policy")?.as_str() {
                    "write-back" => WritePolicy::WriteBack,
                    "write-through" => WritePolicy::WriteThrough,
                    p => return Err(format!("unknown policy {p}").into()),
                };
                *self = Sim::new(policy);
            }
            "read" => {
                let n = pos(&mut args, "node")?;
                let now = self.now;
                if let Lookup::Hit(state, d) = self.table(&n)?.lookup(KEY, now) {
                    let v = d.map_or("absent".to_string(), |d| d.value.to_string());
                    writeln!(out, "{n}: hit {} → {v}", state.as_str())?;
                } else {
                    self.table(&n)?.begin_request(KEY);
                    let r = self.transact(&n, HomeRequest::GetS)?;
                    writeln!(out, "{n}: GetS → {}", show_reply(&r))?;
                    self.receive(&n, &r, &mut out)?;
                }
            }
            "write" => {
                let n = pos(&mut args, "node")?;
                let value = json_value(&pos(&mut args, "value")?)?;
                let expires_at_ms = args.lookup_parse("expires")?;
                let write_back = self.dir.policy() == WritePolicy::WriteBack;
                let hit = match write_back {
                    true => self
                        .table(&n)?
                        .write_owned(KEY, value.clone(), expires_at_ms),
                    false => None,
                };
                if let Some((version, ev)) = hit {
                    writeln!(
                        out,
                        "{n}: write hit → M (version {}.{})",
                        version.epoch, version.seq
                    )?;
                    self.evicted(&n, ev, &mut out)?;
                } else {
                    self.table(&n)?.begin_request(KEY);
                    let r = self.transact(
                        &n,
                        HomeRequest::GetM {
                            value,
                            expires_at_ms,
                        },
                    )?;
                    writeln!(out, "{n}: GetM → {}", show_reply(&r))?;
                    self.receive(&n, &r, &mut out)?;
                }
            }
            "delete" => {
                let n = pos(&mut args, "node")?;
                self.table(&n)?.begin_request(KEY);
                let r = self.transact(&n, HomeRequest::Delete)?;
                writeln!(out, "{n}: Delete → {}", show_reply(&r))?;
                self.receive(&n, &r, &mut out)?;
            }
            "request" => {
                let n = pos(&mut args, "node")?;
                let req = Self::request(&mut args)?;
                self.table(&n)?.begin_request(KEY);
                let r = self.transact(&n, req)?;
                writeln!(out, "{n}: reply {} held", show_reply(&r))?;
                self.replies.entry(n).or_default().push_back(r);
            }
            "receive" => {
                let n = pos(&mut args, "node")?;
                let r = self
                    .replies
                    .get_mut(&n)
                    .and_then(VecDeque::pop_front)
                    .ok_or(format!("no reply held for {n}"))?;
                let got = self.receive(&n, &r, &mut out)?;
                let v = got.map_or("absent".to_string(), |d| d.value.to_string());
                writeln!(out, "{n}: received {} → {v}", show_reply(&r))?;
            }
            "begin" => {
                let n = pos(&mut args, "node")?;
                let req = Self::request(&mut args)?;
                match self.dir.begin(KEY, &n, &req, &Self::live(), self.now) {
                    Ok(plan) if plan.forwards.is_empty() => writeln!(out, "no forwards")?,
                    Ok(plan) => {
                        for (to, f) in &plan.forwards {
                            writeln!(out, "{}", show_forward(to, f))?;
                        }
                    }
                    Err(e) => writeln!(out, "refused: {e}")?,
                }
                if let Some(e) = self.dir.entry(KEY) {
                    writeln!(
                        out,
                        "epoch {}, in flight: {:?}",
                        e.epoch,
                        e.transient.is_some()
                    )?;
                }
            }
            "finish" => {
                let o = self.dir.finish(KEY, &[], None, self.now)?;
                let epoch = self.dir.entry(KEY).map_or(0, |e| e.epoch);
                writeln!(
                    out,
                    "{}; {}; epoch {epoch}",
                    show_reply(&o.reply),
                    show_memory(&o.memory)
                )?;
                self.apply_memory(o.memory);
            }
            "notice" => {
                let n = pos(&mut args, "node")?;
                let again = flag(&mut args, "again")?;
                let notice = match again {
                    true => self.last_notice.get(&n).cloned(),
                    false => self.notices.get_mut(&n).and_then(VecDeque::pop_front),
                }
                .ok_or(format!("no notice from {n}"))?;
                let op = self
                    .dir
                    .put(&notice.key, &n, notice.epoch, notice.data.clone(), self.now);
                writeln!(
                    out,
                    "{n}: put {} (epoch {}) → {}",
                    notice.key,
                    notice.epoch,
                    show_memory(&op)
                )?;
                self.apply_memory(op);
                self.table(&n)?.put_done(&notice.key, notice.epoch);
                self.last_notice.insert(n, notice);
            }
            "memory" => {
                let v = pos(&mut args, "value")?;
                self.memory = match v.as_str() {
                    "none" => None,
                    v => Some(Data {
                        value: json_value(v)?,
                        version: Version::granted(1),
                        expires_at_ms: None,
                    }),
                };
            }
            "forget" => {
                let n = pos(&mut args, "node")?;
                self.dir.forget_node(&n);
            }
            "crash" => {
                let n = pos(&mut args, "node")?;
                self.lines.insert(n.clone(), LineTable::new(100, 1 << 20));
                self.notices.remove(&n);
                self.replies.remove(&n);
                self.dir.forget_node(&n);
            }
            "retain_none" => {
                self.dir.retain(|_| false);
                writeln!(out, "home entries: {}", self.dir.len())?;
            }
            "cache" => {
                let n = pos(&mut args, "node")?;
                let entries = args.lookup_parse("entries")?.unwrap_or(100);
                let bytes = args.lookup_parse("bytes")?.unwrap_or(1 << 20);
                self.lines.insert(n, LineTable::new(entries, bytes));
            }
            "state" => self.write_state(&mut out)?,
            // Line commands.
            "install" => {
                let n = pos(&mut args, "node")?;
                let key = pos(&mut args, "key")?;
                let state = match pos(&mut args, "state")?.as_str() {
                    "M" => LineState::M,
                    "E" => LineState::E,
                    "S" => LineState::S,
                    s => return Err(format!("cannot install state {s}").into()),
                };
                let epoch = args.lookup_parse("epoch")?.ok_or("epoch not given")?;
                let value = match args.lookup_parse::<usize>("size")? {
                    Some(size) => json!("x".repeat(size)),
                    None => {
                        json_value(&args.lookup_parse::<String>("value")?.unwrap_or("1".into()))?
                    }
                };
                let data = Data {
                    value,
                    version: Version::granted(epoch),
                    expires_at_ms: args.lookup_parse("expires")?,
                };
                let home = args.lookup_parse::<String>("home")?.unwrap_or(HOME.into());
                let (installed, ev) = self.table(&n)?.install(&key, state, epoch, data, &home);
                match installed {
                    true => writeln!(out, "{n}: installed {key}")?,
                    false => writeln!(out, "{n}: {key} stale, not installed")?,
                }
                if ev.count > ev.puts.len() {
                    writeln!(
                        out,
                        "{n}: {} S line(s) evicted silently",
                        ev.count - ev.puts.len()
                    )?;
                }
                self.evicted(&n, ev, &mut out)?;
            }
            "lookup" => {
                let n = pos(&mut args, "node")?;
                let key = pos(&mut args, "key")?;
                let lease = args.lookup_parse::<String>("lease")?;
                let now = self.now;
                let got = self
                    .table(&n)?
                    .lookup_if(&key, now, |h| lease.as_deref().is_none_or(|l| l == h));
                match got {
                    Lookup::Hit(state, Some(d)) => {
                        writeln!(out, "hit {} {}", state.as_str(), d.value)?
                    }
                    Lookup::Hit(state, None) => {
                        writeln!(out, "hit {} absent (expired)", state.as_str())?
                    }
                    Lookup::Miss => writeln!(out, "miss")?,
                }
            }
            "line" => {
                let n = pos(&mut args, "node")?;
                let key = pos(&mut args, "key")?;
                match self.table(&n)?.peek(&key) {
                    None => writeln!(out, "{key}: no line")?,
                    Some(l) => writeln!(
                        out,
                        "{key}: {} {} version {}.{} granted {} by {}",
                        l.state.as_str(),
                        l.data.value,
                        l.data.version.epoch,
                        l.data.version.seq,
                        l.grant_epoch,
                        l.home
                    )?,
                }
            }
            "write_owned" => {
                let n = pos(&mut args, "node")?;
                let key = pos(&mut args, "key")?;
                let value = json_value(&pos(&mut args, "value")?)?;
                let lease = args.lookup_parse::<String>("lease")?;
                let got = self.table(&n)?.write_owned_if(&key, value, None, |h| {
                    lease.as_deref().is_none_or(|l| l == h)
                });
                match got {
                    Some((v, ev)) => {
                        writeln!(out, "written, version {}.{}", v.epoch, v.seq)?;
                        self.evicted(&n, ev, &mut out)?;
                    }
                    None => writeln!(out, "not owned")?,
                }
            }
            "invalidate" => {
                let n = pos(&mut args, "node")?;
                let key = pos(&mut args, "key")?;
                let epoch = args.lookup_parse("epoch")?.ok_or("epoch not given")?;
                let force = flag(&mut args, "force")?;
                match self.table(&n)?.invalidate(&key, epoch, force) {
                    Some(s) => writeln!(out, "dropped {}", s.as_str())?,
                    None => writeln!(out, "nothing dropped")?,
                }
            }
            "surrender" => {
                let n = pos(&mut args, "node")?;
                let key = pos(&mut args, "key")?;
                let epoch = args.lookup_parse("epoch")?.ok_or("epoch not given")?;
                let recall = flag(&mut args, "recall")?;
                match self.table(&n)?.surrender(&key, epoch, recall) {
                    Surrender::Data { data, dirty } => {
                        let dirty = if dirty { "dirty" } else { "clean" };
                        writeln!(out, "data {} {dirty}", data.value)?
                    }
                    Surrender::Wait => writeln!(out, "wait")?,
                    Surrender::Nothing => writeln!(out, "nothing")?,
                }
            }
            "begin_request" => {
                let n = pos(&mut args, "node")?;
                let key = pos(&mut args, "key")?;
                self.table(&n)?.begin_request(&key);
            }
            "end_request" => {
                let n = pos(&mut args, "node")?;
                let key = pos(&mut args, "key")?;
                self.table(&n)?.end_request(&key);
            }
            "put_done" => {
                let n = pos(&mut args, "node")?;
                let key = pos(&mut args, "key")?;
                let epoch = args.lookup_parse("epoch")?.ok_or("epoch not given")?;
                self.table(&n)?.put_done(&key, epoch);
            }
            "retain" => {
                let n = pos(&mut args, "node")?;
                let home = args
                    .lookup_parse::<String>("drop_home")?
                    .ok_or("drop_home not given")?;
                let dropped = self.table(&n)?.retain(|_, l| l.home != home);
                writeln!(out, "dropped {dropped}")?;
            }
            "census" => {
                let n = pos(&mut args, "node")?;
                let c = self.table(&n)?.census();
                writeln!(
                    out,
                    "entries={} bytes={} M={} E={} S={}",
                    c.entries, c.bytes, c.m, c.e, c.s
                )?;
            }
            name => return Err(format!("unknown command {name}").into()),
        }
        args.reject_rest()?;
        Ok(out)
    }
}
