//! Transition tables for the directory together with the node-side line
//! tables: a tiny synchronous cluster (home `h`, nodes `a`, `b`, `c`) where
//! forwards are delivered immediately unless a test holds them back to
//! stage a race.

use super::*;
use crate::line::{LineTable, Lookup, Surrender};
use serde_json::json;

const NODES: [&str; 3] = ["a", "b", "c"];

struct Sim {
    dir: Directory,
    lines: HashMap<String, LineTable>,
    memory: Option<Data>,
    write_backs: usize,
    now: u64,
}

impl Sim {
    fn new(policy: WritePolicy) -> Self {
        let lines = NODES
            .iter()
            .map(|n| (n.to_string(), LineTable::new(100, 1 << 20)))
            .collect();
        Self {
            dir: Directory::new(policy),
            lines,
            memory: None,
            write_backs: 0,
            now: 0,
        }
    }

    fn live() -> Vec<NodeId> {
        NODES.iter().map(|n| n.to_string()).collect()
    }

    fn deliver(&mut self, to: &str, f: Forward) -> ForwardReply {
        let t = self.lines.get_mut(to).unwrap();
        match f {
            Forward::Invalidate { epoch, force } => {
                t.invalidate("k", epoch, force);
                ForwardReply::ack()
            }
            Forward::Downgrade { epoch } | Forward::Recall { epoch } => {
                match t.surrender("k", epoch, matches!(f, Forward::Recall { .. })) {
                    Surrender::Data { data, dirty } => ForwardReply {
                        data: Some(data),
                        dirty,
                    },
                    Surrender::Wait => panic!("sim delivers grants synchronously"),
                    Surrender::Nothing => ForwardReply::ack(),
                }
            }
        }
    }

    fn apply_memory(&mut self, op: MemoryOp) {
        match op {
            MemoryOp::None => {}
            MemoryOp::Write(d) => {
                self.write_backs += 1;
                self.memory = Some(d)
            }
            MemoryOp::Delete => self.memory = None,
        }
    }

    /// Run one home transaction to completion; returns the home's reply
    /// (not yet applied at the requester).
    fn transact(&mut self, from: &str, req: HomeRequest) -> HomeReply {
        self.now += 1;
        let plan = self
            .dir
            .begin("k", from, &req, &Self::live(), self.now)
            .unwrap();
        let replies: Vec<(NodeId, ForwardReply)> = plan
            .forwards
            .into_iter()
            .map(|(n, f)| {
                let r = self.deliver(&n, f);
                (n, r)
            })
            .collect();
        let mem = if self.dir.needs_memory("k", &replies) {
            self.memory.clone()
        } else {
            None
        };
        let out = self.dir.finish("k", &replies, mem, self.now).unwrap();
        self.apply_memory(out.memory);
        out.reply
    }

    fn receive(&mut self, at: &str, reply: &HomeReply) -> Option<Data> {
        let t = self.lines.get_mut(at).unwrap();
        let out = match reply {
            HomeReply::Line { state, epoch, data } => {
                t.install("k", *state, *epoch, data.clone(), "h");
                Some(data.clone())
            }
            HomeReply::Absent { epoch } => {
                t.invalidate("k", *epoch, false);
                None
            }
            HomeReply::PutAck => None,
        };
        t.end_request("k");
        out
    }

    fn read(&mut self, at: &str) -> Option<serde_json::Value> {
        if let Lookup::Hit(_, d) = self.lines.get_mut(at).unwrap().lookup("k", self.now) {
            return d.map(|d| d.value);
        }
        self.lines.get_mut(at).unwrap().begin_request("k");
        let r = self.transact(at, HomeRequest::GetS);
        self.receive(at, &r).map(|d| d.value)
    }

    fn write(&mut self, at: &str, v: i64) {
        let policy = self.dir.policy();
        if policy == WritePolicy::WriteBack
            && self
                .lines
                .get_mut(at)
                .unwrap()
                .write_owned("k", json!(v), None)
                .is_some()
        {
            return;
        }
        self.lines.get_mut(at).unwrap().begin_request("k");
        let r = self.transact(
            at,
            HomeRequest::GetM {
                value: json!(v),
                expires_at_ms: None,
            },
        );
        self.receive(at, &r);
    }

    fn delete(&mut self, at: &str) {
        self.lines.get_mut(at).unwrap().begin_request("k");
        let r = self.transact(at, HomeRequest::Delete);
        self.receive(at, &r);
    }

    fn states(&self) -> String {
        NODES
            .iter()
            .map(|n| {
                self.lines[*n]
                    .peek("k")
                    .map_or(LineState::I, |l| l.state)
                    .as_str()
            })
            .collect()
    }

    fn holders(&self) -> String {
        match &self.dir.entry("k").unwrap().holders {
            Holders::Uncached => "-".into(),
            Holders::Shared { sharers } => {
                format!("S{}", sharers.iter().cloned().collect::<String>())
            }
            Holders::Exclusive { owner } => format!("X{owner}"),
        }
    }
}

/// One step of a script: `r a` read at a, `w a 5` write 5 at a, `d a` delete.
fn run(sim: &mut Sim, script: &str) -> Vec<Option<serde_json::Value>> {
    let mut reads = Vec::new();
    for step in script.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        let parts: Vec<&str> = step.split_whitespace().collect();
        match parts[..] {
            ["r", n] => reads.push(sim.read(n)),
            ["w", n, v] => sim.write(n, v.parse().unwrap()),
            ["d", n] => sim.delete(n),
            _ => panic!("bad step {step}"),
        }
    }
    reads
}

#[test]
fn textbook_transitions_write_back() {
    // (script, node states a b c after it, directory holders, reads)
    let cases: &[(&str, &str, &str, &str)] = &[
        // read miss with nobody holding the key, nothing in memory
        ("r a", "III", "-", "[null]"),
        // write from I -> M
        ("w a 1", "MII", "Xa", "[]"),
        // write hit on M stays M, silently
        ("w a 1; w a 2", "MII", "Xa", "[]"),
        // read miss on a line held in M elsewhere: owner writes back, both S
        ("w a 1; r b", "SSI", "Sab", "[1]"),
        // read miss with sharers present -> S
        ("w a 1; r b; r c", "SSS", "Sabc", "[1,1]"),
        // write from S invalidates every other copy -> M
        ("w a 1; r b; r c; w b 2", "IMI", "Xb", "[1,1]"),
        // a deleted key reads as absent everywhere
        ("w a 1; r b; d c; r a; r b", "III", "-", "[1,null,null]"),
        // E granted when nobody else holds; write hit on E -> M silently
        (
            "w a 1; r b; d c; w c 9; r c; r a; w a 5",
            "MII",
            "Xa",
            "[1,9,9]",
        ),
        // delete -> I everywhere
        ("w a 1; r b; r c; d b", "III", "-", "[1,1]"),
        // delete of an M line held elsewhere
        ("w a 1; d c", "III", "-", "[]"),
        // write on C after reads on B: everyone then reads the newest
        (
            "w a 1; r b; r c; w c 2; r a; r b; r c",
            "SSS",
            "Sabc",
            "[1,1,2,2,2]",
        ),
    ];
    for (script, states, holders, reads) in cases {
        let mut sim = Sim::new(WritePolicy::WriteBack);
        let got = run(&mut sim, script);
        assert_eq!(sim.states(), *states, "states after `{script}`");
        assert_eq!(sim.holders(), *holders, "holders after `{script}`");
        assert_eq!(
            serde_json::to_string(&got).unwrap(),
            *reads,
            "reads of `{script}`"
        );
    }
}

#[test]
fn read_miss_with_only_memory_gives_e() {
    let mut sim = Sim::new(WritePolicy::WriteBack);
    run(&mut sim, "w a 1; r b");
    // Memory now has 1 (written back by the downgrade).
    assert_eq!(sim.memory.as_ref().unwrap().value, json!(1));
    assert_eq!(sim.write_backs, 1);
    run(&mut sim, "d c");
    sim.memory = Some(Data {
        value: json!(42),
        version: Version::granted(1),
        expires_at_ms: None,
    });
    assert_eq!(run(&mut sim, "r b"), vec![Some(json!(42))]);
    assert_eq!(sim.states(), "IEI");
    assert_eq!(sim.holders(), "Xb");
}

#[test]
fn write_through_never_dirties_a_line() {
    let cases: &[(&str, &str, &str)] = &[
        ("w a 1", "EII", "Xa"),
        ("w a 1; w a 2", "EII", "Xa"),
        ("w a 1; r b", "SSI", "Sab"),
        ("w a 1; r b; w c 3", "IIE", "Xc"),
    ];
    for (script, states, holders) in cases {
        let mut sim = Sim::new(WritePolicy::WriteThrough);
        run(&mut sim, script);
        assert_eq!(sim.states(), *states, "{script}");
        assert_eq!(sim.holders(), *holders, "{script}");
    }
    let mut sim = Sim::new(WritePolicy::WriteThrough);
    run(&mut sim, "w a 1; w a 2");
    assert_eq!(sim.memory.as_ref().unwrap().value, json!(2));
    assert_eq!(run(&mut sim, "r b"), vec![Some(json!(2))]);
}

#[test]
fn eviction_of_m_writes_back_and_a_late_notice_is_ignored() {
    let mut sim = Sim::new(WritePolicy::WriteBack);
    run(&mut sim, "w a 1; w a 2");
    let epoch = sim.dir.entry("k").unwrap().epoch;
    let data = sim.lines["a"].peek("k").unwrap().data.clone();
    let op = sim.dir.put("k", "a", epoch, Some(data.clone()), 10);
    assert_eq!(op, MemoryOp::Write(data.clone()));
    assert_eq!(sim.holders(), "-");
    // The same notice again (or one for an old grant): nothing happens.
    assert_eq!(sim.dir.put("k", "a", epoch, Some(data), 10), MemoryOp::None);
    // An E eviction writes nothing.
    let mut sim = Sim::new(WritePolicy::WriteBack);
    sim.memory = Some(Data {
        value: json!(3),
        version: Version::granted(1),
        expires_at_ms: None,
    });
    run(&mut sim, "r a");
    let epoch = sim.dir.entry("k").unwrap().epoch;
    assert_eq!(sim.dir.put("k", "a", epoch, None, 10), MemoryOp::None);
    assert_eq!(sim.holders(), "-");
}

#[test]
fn downgrade_crossing_an_eviction_notice_gets_the_buffered_value() {
    // a holds M, evicts it (notice in flight); b reads before the home sees
    // the notice: the value must come from a's buffer, not stale memory.
    let mut sim = Sim::new(WritePolicy::WriteBack);
    sim.lines.insert("a".into(), LineTable::new(1, 1 << 20));
    run(&mut sim, "w a 1; w a 2");
    let epoch = sim.dir.entry("k").unwrap().epoch;
    // Filling another key pushes k out of a's one-entry cache.
    let (_, ev) = sim.lines.get_mut("a").unwrap().install(
        "other",
        LineState::S,
        1,
        Data {
            value: json!(0),
            version: Version::default(),
            expires_at_ms: None,
        },
        "h",
    );
    assert_eq!(ev.puts.len(), 1);
    assert_eq!(run(&mut sim, "r b"), vec![Some(json!(2))]);
    // Now the notice arrives: stale, ignored; memory keeps the written-back 2.
    let op = sim
        .dir
        .put("k", "a", epoch, Some(ev.puts[0].line.data.clone()), 10);
    assert_eq!(op, MemoryOp::None);
    assert_eq!(sim.memory.as_ref().unwrap().value, json!(2));
}

#[test]
fn busy_key_refuses_a_second_transaction() {
    let mut dir = Directory::new(WritePolicy::WriteBack);
    let live = Sim::live();
    dir.begin("k", "a", &HomeRequest::GetS, &live, 1).unwrap();
    let w = HomeRequest::GetM {
        value: json!(1),
        expires_at_ms: None,
    };
    assert_eq!(dir.begin("k", "b", &w, &live, 1), Err(DirError::Busy));
    assert!(matches!(
        dir.entry("k").unwrap().transient,
        Some(Transient::Reading { .. })
    ));
    dir.finish("k", &[], None, 2).unwrap();
    assert!(dir.begin("k", "b", &w, &live, 3).is_ok());
}

#[test]
fn first_touch_invalidates_everywhere_and_epochs_grow() {
    let mut dir = Directory::new(WritePolicy::WriteBack);
    let live = Sim::live();
    let plan = dir.begin("k", "a", &HomeRequest::GetS, &live, 5).unwrap();
    assert_eq!(plan.forwards.len(), 3);
    assert!(plan
        .forwards
        .iter()
        .all(|(_, f)| matches!(f, Forward::Invalidate { force: true, .. })));
    let e0 = dir.entry("k").unwrap().epoch;
    dir.finish("k", &[], None, 5).unwrap();
    let e1 = dir.entry("k").unwrap().epoch;
    assert!(e1 > e0);
    let plan = dir.begin("k", "a", &HomeRequest::GetS, &live, 5).unwrap();
    assert!(plan.forwards.is_empty(), "second touch sends nothing");
}

#[test]
fn race_two_writers_on_two_nodes_at_once() {
    // a and b both hold S; both write at once. The home serializes: a's GetM
    // first (invalidating b while b's own GetM is in flight), then b's.
    let mut sim = Sim::new(WritePolicy::WriteBack);
    run(&mut sim, "w c 0; r a; r b");
    sim.lines.get_mut("a").unwrap().begin_request("k");
    sim.lines.get_mut("b").unwrap().begin_request("k");
    let ra = sim.transact(
        "a",
        HomeRequest::GetM {
            value: json!(1),
            expires_at_ms: None,
        },
    );
    // b's request was queued behind a's; a second begin would be refused
    // while a's was in flight (see busy_key_refuses_a_second_transaction).
    let rb = sim.transact(
        "b",
        HomeRequest::GetM {
            value: json!(2),
            expires_at_ms: None,
        },
    );
    // b's transaction invalidated a before a's grant reply arrived.
    sim.receive("b", &rb);
    sim.receive("a", &ra);
    assert_eq!(sim.states(), "IMI", "a's late grant must not land");
    assert_eq!(sim.holders(), "Xb");
    assert_eq!(
        run(&mut sim, "r a; r c"),
        vec![Some(json!(2)), Some(json!(2))]
    );
    // And in the other delivery order the outcome is the same.
    let mut sim = Sim::new(WritePolicy::WriteBack);
    run(&mut sim, "w c 0; r a; r b");
    sim.lines.get_mut("a").unwrap().begin_request("k");
    sim.lines.get_mut("b").unwrap().begin_request("k");
    let ra = sim.transact(
        "a",
        HomeRequest::GetM {
            value: json!(1),
            expires_at_ms: None,
        },
    );
    let rb = sim.transact(
        "b",
        HomeRequest::GetM {
            value: json!(2),
            expires_at_ms: None,
        },
    );
    sim.receive("a", &ra);
    sim.receive("b", &rb);
    assert_eq!(sim.states(), "IMI");
    assert_eq!(run(&mut sim, "r c"), vec![Some(json!(2))]);
}

#[test]
fn race_invalidation_arrives_before_fill_reply() {
    // b reads (granted S at some epoch), then c writes; c's invalidation of b
    // reaches b before b's fill reply does. b must not install the old value.
    let mut sim = Sim::new(WritePolicy::WriteBack);
    run(&mut sim, "w a 1; r a");
    sim.lines.get_mut("b").unwrap().begin_request("k");
    let fill = sim.transact("b", HomeRequest::GetS);
    // c's write: its invalidation of b is delivered now (before the fill).
    run(&mut sim, "w c 2");
    let served = sim.receive("b", &fill);
    assert_eq!(served.unwrap().value, json!(1), "the read itself returns 1");
    assert_eq!(sim.states(), "IIM", "the stale fill was not installed");
    assert_eq!(run(&mut sim, "r b"), vec![Some(json!(2))]);
}

#[test]
fn race_downgrade_arrives_before_the_exclusive_grant() {
    // a's write is granted M, but b's read reaches a (as a downgrade) before
    // a's grant reply: a answers "wait" until the grant lands.
    let mut t = LineTable::new(10, 1 << 20);
    t.begin_request("k");
    assert_eq!(t.surrender("k", 7, false), Surrender::Wait);
    t.install(
        "k",
        LineState::M,
        7,
        Data {
            value: json!(1),
            version: Version::granted(7),
            expires_at_ms: None,
        },
        "h",
    );
    t.end_request("k");
    assert!(matches!(
        t.surrender("k", 7, false),
        Surrender::Data { dirty: true, .. }
    ));
}

#[test]
fn delete_requester_drops_its_own_copy_and_late_fills() {
    let mut sim = Sim::new(WritePolicy::WriteBack);
    run(&mut sim, "w a 1; r b");
    // b has a read in flight (granted before the delete) when b deletes.
    sim.lines.get_mut("b").unwrap().begin_request("k");
    let fill = sim.transact("b", HomeRequest::GetS);
    run(&mut sim, "d b");
    sim.receive("b", &fill);
    assert_eq!(sim.states(), "III");
    assert_eq!(run(&mut sim, "r a; r b"), vec![None, None]);
}

#[test]
fn forgetting_a_dead_node() {
    let mut sim = Sim::new(WritePolicy::WriteBack);
    run(&mut sim, "w a 1; r b; r c");
    sim.dir.forget_node("b");
    assert_eq!(sim.holders(), "Sac");
    let mut sim = Sim::new(WritePolicy::WriteBack);
    run(&mut sim, "w a 1");
    sim.dir.forget_node("a");
    assert_eq!(sim.holders(), "-");
    sim.dir.retain(|_| false);
    assert!(sim.dir.is_empty());
}

#[test]
fn expired_values_read_as_absent_and_are_deleted_on_write_back() {
    let mut sim = Sim::new(WritePolicy::WriteBack);
    sim.lines.get_mut("a").unwrap().begin_request("k");
    let r = sim.transact(
        "a",
        HomeRequest::GetM {
            value: json!(1),
            expires_at_ms: Some(50),
        },
    );
    sim.receive("a", &r);
    sim.memory = Some(Data {
        value: json!("old"),
        version: Version::granted(1),
        expires_at_ms: None,
    });
    sim.now = 100;
    assert_eq!(run(&mut sim, "r a; r b"), vec![None, None]);
    assert!(
        sim.memory.is_none(),
        "expired dirty value deleted from memory"
    );
}

#[test]
fn race_delete_reply_in_flight_while_another_node_writes() {
    // Found by the linearizability test: b holds S and deletes; the home
    // finishes the delete, then c writes before b has seen the delete's
    // reply. b's old copy must already be gone (the delete invalidates the
    // requester too), or b would serve it after c's write completed.
    let mut sim = Sim::new(WritePolicy::WriteThrough);
    run(&mut sim, "w a 1; r b");
    assert_eq!(sim.states(), "SSI");
    sim.lines.get_mut("b").unwrap().begin_request("k");
    let del = sim.transact("b", HomeRequest::Delete);
    assert_eq!(sim.states(), "III", "every copy gone before the reply");
    run(&mut sim, "w c 2");
    assert_eq!(run(&mut sim, "r b"), vec![Some(json!(2))]);
    sim.receive("b", &del);
    assert_eq!(run(&mut sim, "r b"), vec![Some(json!(2))]);
}

/// Issue 21: under write-back, memory holds no value while a node holds the
/// key exclusively, so losing that node (it crashed or was suspected, and
/// the home forgets it) leaves a miss, never the value before its writes.
#[test]
fn write_back_memory_is_empty_while_a_line_is_exclusive() {
    let mem = |sim: &Sim| sim.memory.as_ref().map(|d| d.value.clone());
    let mut sim = Sim::new(WritePolicy::WriteBack);
    run(&mut sim, "w a 1; r b");
    assert_eq!(mem(&sim), Some(json!(1)), "downgrade wrote back");
    run(&mut sim, "w a 2");
    assert_eq!(sim.states(), "MII");
    assert_eq!(mem(&sim), None, "granting M deleted the older value");
    // a crashes: the home forgets it; b reads a miss, not 1.
    sim.lines.insert("a".into(), LineTable::new(100, 1 << 20));
    sim.dir.forget_node("a");
    assert_eq!(run(&mut sim, "r b"), vec![None]);

    // A read that grants E from memory empties memory too (E may turn M
    // silently); the clean value comes back on the downgrade.
    let mut sim = Sim::new(WritePolicy::WriteBack);
    run(&mut sim, "w a 1; r b; d c");
    sim.memory = Some(Data {
        value: json!(5),
        version: Version::granted(1),
        expires_at_ms: None,
    });
    assert_eq!(run(&mut sim, "r b"), vec![Some(json!(5))]);
    assert_eq!((sim.states().as_str(), mem(&sim)), ("IEI", None));
    assert_eq!(run(&mut sim, "r c"), vec![Some(json!(5))]);
    assert_eq!(sim.states(), "ISS");
    assert_eq!(mem(&sim), Some(json!(5)), "clean E value written back");
    // The owner of a silently modified E line is lost: a miss.
    let mut sim = Sim::new(WritePolicy::WriteBack);
    run(&mut sim, "w a 1; r b; d c");
    sim.memory = Some(Data {
        value: json!(5),
        version: Version::granted(1),
        expires_at_ms: None,
    });
    run(&mut sim, "r b; w b 6");
    assert_eq!(sim.states(), "IMI");
    sim.lines.insert("b".into(), LineTable::new(100, 1 << 20));
    sim.dir.forget_node("b");
    assert_eq!(run(&mut sim, "r c"), vec![None]);
}

#[test]
fn write_through_keeps_memory_current_for_exclusive_lines() {
    let mut sim = Sim::new(WritePolicy::WriteThrough);
    run(&mut sim, "w a 1; r b; w a 2");
    assert_eq!(sim.states(), "EII");
    assert_eq!(sim.memory.as_ref().unwrap().value, json!(2));
    sim.lines.insert("a".into(), LineTable::new(100, 1 << 20));
    sim.dir.forget_node("a");
    assert_eq!(run(&mut sim, "r b"), vec![Some(json!(2))]);
}
