//! The cache checker: per key, is the history linearizable as a register
//! whose reads may also miss?
//!
//! Operations read (workload `"cache"`; faults and other workloads are
//! ignored):
//! - `cache_set`: input `{key, value, node}`, values unique per key;
//! - `cache_get`: input `{key, node}`, Ok output `{value}`: a u64, or
//!   `null` for a miss.
//!
//! The model, per key: a register that starts empty; a set writes its
//! value; a get that returns a value must return the register's current
//! value; a miss is consistent with any state (eviction, a lost home, a
//! dropped line). So an older value after a newer write is a violation,
//! a miss never is. The invariant is that every key's history has a
//! linearization in this model:
//! - an Ok op takes effect at one instant between its invocation and its
//!   completion;
//! - an Unknown set takes effect at one instant after its invocation, or
//!   never (it is given completion time +∞);
//! - Fail ops did nothing and Unknown or Fail gets returned nothing: both
//!   are left out;
//! - equal timestamps are concurrent (an invocation sorts before a
//!   completion at the same microsecond).
//!
//! The search is Wing & Gong's, with Lowe's memoization, as Porcupine
//! implements it: keys are checked separately (linearizability is
//! compositional, so a history is linearizable iff each key's is); a
//! depth-first search picks, at each step, a pending op whose invocation
//! precedes the earliest pending completion and that the model allows in
//! the current state, and backtracks when a completion is reached with its
//! op not yet placed. Configurations already explored, (set of placed
//! ops, register value), are remembered and not explored again. The set
//! is remembered by a 128-bit Zobrist hash (the XOR of a fixed random word
//! per op), which costs O(1) per step instead of O(n/64) words per step
//! and per remembered configuration; two different configurations share a
//! hash with probability 2⁻¹²⁸ per pair.
//!
//! These reductions keep the search small and do not change the answer:
//! - a miss is dropped: it fits any state at any instant and changes
//!   nothing, so a history is linearizable with it iff without it;
//! - an Unknown set whose value no Ok get returned is dropped: linearizing
//!   it "never" is always allowed, and any linearization that places it
//!   only puts misses behind it, so dropping it loses nothing;
//! - a set is not placed while the register's current value still has
//!   reads left to place: when each value is written once, an overwritten
//!   value never comes back, so that branch is dead. Without this prune,
//!   k concurrent Unknown sets that are read later cost 2^k
//!   configurations (every subset of them placed early); with it, the
//!   search follows the reads;
//! - a read that fits the current value, and a set nobody read placed
//!   when the current value has no reads left, are placed greedily, with
//!   no alternative tried: if any linearization extends the configuration,
//!   one places that op next (an exchange argument, in `search`). This
//!   keeps concurrent reads of one value, and concurrent unread sets, from
//!   multiplying configurations.
//!
//! Measured in a debug build on generated 3000-op keys: 8 to 64
//! concurrent clients check in 10–50 ms when linearizable; a violation
//! the patterns below miss takes the search about 0.1 s with 32 clients,
//! and with 64 clients on one key may exhaust the budget.
//!
//! The search is bounded by [`DEFAULT_BUDGET`] steps per key. A key whose
//! search runs out is reported as "unknown (search budget exhausted)" in
//! the stats, not as a violation. For a key that is not linearizable the
//! report names the smallest evidence it can find: a read of a value never
//! written, a stale read (the read, its write and a newer write that
//! completed in between), a new-then-old pair of reads, or else the op the
//! deepest branch of the search could not place and the value the register
//! held there.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{json, Value};

use super::{name_at, u64_at, Report, Violations};
use crate::history::{Op, Outcome};

const WORKLOAD: &str = "cache";

/// Search steps allowed per key. A step places or rejects one candidate
/// op; a few-thousand-op key with a handful of concurrent clients takes a
/// few tens of thousands, so this leaves room for histories with many
/// unknown writes while bounding a pathological key to well under a
/// second (release) of search.
pub const DEFAULT_BUDGET: u64 = 2_000_000;

/// What the outcome reason is called when the search gives up.
pub const BUDGET_EXHAUSTED: &str = "unknown (search budget exhausted)";

/// Completion time of an op that may take effect at any later time.
const NEVER: u64 = u64::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Write(u64),
    /// A read that returned this value (misses are dropped before).
    Read(u64),
}

/// One op of one key, as the search sees it.
#[derive(Debug, Clone, Copy)]
struct KeyOp {
    id: u64,
    call: u64,
    ret: u64,
    kind: Kind,
}

/// The register: empty, or a value.
type State = Option<u64>;

fn step(state: State, kind: Kind) -> Option<State> {
    match kind {
        Kind::Write(v) => Some(Some(v)),
        Kind::Read(v) => (state == Some(v)).then_some(state),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Linearizable,
    /// The deepest branch could not place `ops[stuck]` with the register
    /// holding `state` after `placed` ops.
    NotLinearizable {
        stuck: usize,
        state: State,
        placed: usize,
        /// When `stuck` is a write: an unplaced read of `state`, which the
        /// write would have overwritten for good.
        blocker: Option<usize>,
    },
    Exhausted,
}

/// A fixed pseudo-random word per op (splitmix64), for Zobrist hashing.
fn zobrist(i: usize) -> u128 {
    let mix = |mut z: u64| {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let i = i as u64;
    (u128::from(mix(2 * i)) << 64) | u128::from(mix(2 * i + 1))
}

const NIL: usize = usize::MAX;

/// Wing–Gong search over one key's ops (see the module docs); returns the
/// verdict and the steps taken.
fn search(ops: &[KeyOp], budget: u64) -> (Verdict, u64) {
    let n = ops.len();
    if n == 0 {
        return (Verdict::Linearizable, 0);
    }
    // Nodes 1..=2n are the calls and returns in time order; node 0 is the
    // head of the doubly linked list of events not yet placed.
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, op) in ops.iter().enumerate() {
        events.push((op.call, false, i));
        events.push((op.ret.max(op.call), true, i));
    }
    // A call before a return at the same instant: concurrent.
    events.sort_unstable();
    let len = 2 * n + 1;
    let mut next = vec![NIL; len];
    let mut prev = vec![NIL; len];
    let mut op_of = vec![0usize; len];
    let mut is_call = vec![false; len];
    let mut ret_node = vec![NIL; len];
    let mut call_node = vec![NIL; n];
    for (pos, &(_, is_ret, i)) in events.iter().enumerate() {
        let node = pos + 1;
        op_of[node] = i;
        is_call[node] = !is_ret;
        if is_ret {
            ret_node[call_node[i]] = node;
        } else {
            call_node[i] = node;
        }
        prev[node] = node - 1;
        next[node - 1] = node;
    }
    let unlink = |next: &mut [usize], prev: &mut [usize], x: usize| {
        next[prev[x]] = next[x];
        if next[x] != NIL {
            prev[next[x]] = prev[x];
        }
    };
    let relink = |next: &mut [usize], prev: &mut [usize], x: usize| {
        next[prev[x]] = x;
        if next[x] != NIL {
            prev[next[x]] = x;
        }
    };

    // The prune: with values unique per write, a value once overwritten
    // never comes back, so a write may not be placed while the current
    // value still has reads to place. `pending_reads[v]` counts the reads
    // of `v` not yet placed; `unique` holds the values written once (for
    // the others the argument fails and the prune is off).
    let mut writes_of: HashMap<u64, usize> = HashMap::new();
    for op in ops {
        if let Kind::Write(v) = op.kind {
            *writes_of.entry(v).or_default() += 1;
        }
    }
    let unique: HashSet<u64> = writes_of
        .iter()
        .filter(|&(_, &n)| n == 1)
        .map(|(&v, _)| v)
        .collect();
    let mut pending_reads: HashMap<u64, usize> = HashMap::new();
    for op in ops {
        if let Kind::Read(v) = op.kind {
            *pending_reads.entry(v).or_default() += 1;
        }
    }
    // Writes of a value nobody read.
    let unread: Vec<bool> = ops
        .iter()
        .map(|op| matches!(op.kind, Kind::Write(v) if !pending_reads.contains_key(&v)))
        .collect();
    let reads_left = |pending: &HashMap<u64, usize>, state: State| {
        state.map_or(0, |v| pending.get(&v).copied().unwrap_or(0))
    };
    let adjust = |pending: &mut HashMap<u64, usize>, kind: Kind, placed: bool| {
        if let Kind::Read(v) = kind {
            if let Some(n) = pending.get_mut(&v) {
                *n = if placed { *n - 1 } else { *n + 1 };
            }
        }
    };

    let z: Vec<u128> = (0..n).map(zobrist).collect();
    let mut seen: HashSet<(u128, State)> = HashSet::new();
    // (call node placed, state before it, placed greedily)
    let mut stack: Vec<(usize, State, bool)> = Vec::new();
    let mut state: State = None;
    let mut hash: u128 = 0;
    let mut entry = next[0];
    let mut steps = 0u64;
    let mut deepest: Option<(usize, usize, State, Option<usize>)> = None;

    while next[0] != NIL {
        steps += 1;
        if steps > budget {
            return (Verdict::Exhausted, steps);
        }
        // Whether this configuration is dead: every candidate was tried.
        let mut dead = entry == NIL || !is_call[entry];
        if !dead {
            let i = op_of[entry];
            let kind = ops[i].kind;
            let left = reads_left(&pending_reads, state);
            let allowed = match kind {
                Kind::Write(_) => left == 0 || !state.is_some_and(|v| unique.contains(&v)),
                Kind::Read(_) => true,
            };
            match step(state, kind).filter(|_| allowed) {
                Some(after) => {
                    let h = hash ^ z[i];
                    // Some ops are placed greedily: if any extension of
                    // this configuration exists, one exists with the op
                    // next, so when placing it fails (now or as a
                    // configuration explored before) the configuration
                    // fails. That holds for a read that fits (only reads
                    // of the same value can come before it in any
                    // extension) and for a write nobody read when the
                    // current value has no reads left (moving it forward
                    // changes no value any read sees).
                    let greedy = match kind {
                        Kind::Read(_) => true,
                        Kind::Write(_) => unread[i] && left == 0,
                    };
                    if seen.insert((h, after)) {
                        stack.push((entry, state, greedy));
                        state = after;
                        hash = h;
                        adjust(&mut pending_reads, kind, true);
                        // Lift the op out of the list: its return last.
                        unlink(&mut next, &mut prev, entry);
                        unlink(&mut next, &mut prev, ret_node[entry]);
                        entry = next[0];
                        continue;
                    }
                    if greedy {
                        dead = true;
                    } else {
                        entry = next[entry];
                    }
                }
                None => entry = next[entry],
            }
        }
        if !dead {
            continue;
        }
        // A return whose op is not placed (or a greedy read that led
        // nowhere): back up to the last choice that has alternatives.
        if deepest.is_none_or(|(placed, ..)| stack.len() > placed) {
            let stuck = if entry == NIL { 0 } else { op_of[entry] };
            // Only when the depth record grows (at most n times), and the
            // walk stops at the first read found.
            let mut blocker = None;
            if matches!(ops[stuck].kind, Kind::Write(_)) && reads_left(&pending_reads, state) > 0 {
                let mut x = next[0];
                while x != NIL && blocker.is_none() {
                    let i = op_of[x];
                    if is_call[x] && state.is_some_and(|v| ops[i].kind == Kind::Read(v)) {
                        blocker = Some(i);
                    }
                    x = next[x];
                }
            }
            deepest = Some((stack.len(), stuck, state, blocker));
        }
        loop {
            let Some((call, before, greedy)) = stack.pop() else {
                let (placed, stuck, state, blocker) = deepest.unwrap_or((0, 0, None, None));
                return (
                    Verdict::NotLinearizable {
                        stuck,
                        state,
                        placed,
                        blocker,
                    },
                    steps,
                );
            };
            let i = op_of[call];
            state = before;
            hash ^= z[i];
            adjust(&mut pending_reads, ops[i].kind, false);
            // Undo in reverse order of the lift.
            relink(&mut next, &mut prev, ret_node[call]);
            relink(&mut next, &mut prev, call);
            entry = next[call];
            if !greedy {
                break;
            }
        }
    }
    (Verdict::Linearizable, steps)
}

fn fmt_t(t: u64) -> String {
    if t == NEVER {
        "∞".to_string()
    } else {
        t.to_string()
    }
}

/// The write of each value, when exactly one op wrote it.
fn writers(ops: &[KeyOp]) -> HashMap<u64, Option<&KeyOp>> {
    let mut writers: HashMap<u64, Option<&KeyOp>> = HashMap::new();
    for op in ops {
        if let Kind::Write(v) = op.kind {
            writers
                .entry(v)
                .and_modify(|w| *w = None)
                .or_insert(Some(op));
        }
    }
    writers
}

/// Small patterns that each prove one key's ops not linearizable, found in
/// O(n log n) before any search: a read of a value not written in time, a
/// stale read, a new-then-old pair of reads. Each names the op ids
/// involved. The patterns about writes use only values written once.
fn pattern(ops: &[KeyOp]) -> Option<String> {
    let writers = writers(ops);
    let reads: Vec<(&KeyOp, u64)> = ops
        .iter()
        .filter_map(|op| match op.kind {
            Kind::Read(v) => Some((op, v)),
            Kind::Write(_) => None,
        })
        .collect();

    // A value never written, or written only after the read completed.
    let mut first_call: HashMap<u64, u64> = HashMap::new();
    for op in ops {
        if let Kind::Write(v) = op.kind {
            let c = first_call.entry(v).or_insert(op.call);
            *c = (*c).min(op.call);
        }
    }
    for &(r, v) in &reads {
        if first_call.get(&v).is_none_or(|&c| c > r.ret) {
            return Some(format!(
                "read op {} returned {v}, which no set wrote before it completed",
                r.id
            ));
        }
    }

    // A stale read: w wrote v, a newer write w2 was invoked after w
    // completed and completed before r was invoked, and r returned v.
    let mut by_ret: Vec<&KeyOp> = ops
        .iter()
        .filter(|o| matches!(o.kind, Kind::Write(_)) && o.ret != NEVER)
        .collect();
    by_ret.sort_by_key(|o| o.ret);
    // prefix[k]: the write with the latest call among by_ret[..=k].
    let mut prefix: Vec<&KeyOp> = Vec::with_capacity(by_ret.len());
    for &w in &by_ret {
        let best = match prefix.last() {
            Some(&b) if b.call >= w.call => b,
            _ => w,
        };
        prefix.push(best);
    }
    for &(r, v) in &reads {
        let Some(Some(w)) = writers.get(&v) else {
            continue;
        };
        let k = by_ret.partition_point(|o| o.ret < r.call);
        if k == 0 {
            continue;
        }
        let w2 = prefix[k - 1];
        if w2.call > w.ret {
            let v2 = match w2.kind {
                Kind::Write(v2) | Kind::Read(v2) => v2,
            };
            return Some(format!(
                "stale read: op {} (set {v}, [{}, {}]) was followed by op {} (set {v2}, [{}, {}]), \
                 yet read op {} ([{}, {}]) returned {v}",
                w.id,
                w.call,
                fmt_t(w.ret),
                w2.id,
                w2.call,
                w2.ret,
                r.id,
                r.call,
                r.ret
            ));
        }
    }

    // New then old: r1 returned v2 and completed before r2, which
    // returned v1, was invoked; and v1's write completed before v2's was
    // invoked.
    let mut reads_by_ret: Vec<(&KeyOp, &KeyOp, u64)> = reads
        .iter()
        .filter_map(|&(r, v)| Some((r, (*writers.get(&v)?)?, v)))
        .collect();
    reads_by_ret.sort_by_key(|(r, _, _)| r.ret);
    let mut latest: Vec<(&KeyOp, &KeyOp, u64)> = Vec::with_capacity(reads_by_ret.len());
    for &x in &reads_by_ret {
        let best = match latest.last() {
            Some(&b) if b.1.call >= x.1.call => b,
            _ => x,
        };
        latest.push(best);
    }
    for &(r2, w1, v1) in &reads_by_ret {
        let k = reads_by_ret.partition_point(|(r, _, _)| r.ret < r2.call);
        if k == 0 {
            continue;
        }
        let (r1, w2, v2) = latest[k - 1];
        if w2.call > w1.ret {
            return Some(format!(
                "new then old: read op {} returned {v2} (set by op {}) and completed before \
                 read op {} returned {v1} (set by op {}, which completed before op {} was invoked)",
                r1.id, w2.id, r2.id, w1.id, w2.id
            ));
        }
    }
    None
}

/// The search's own account of why `ops` (one key) is not linearizable:
/// the op its deepest branch could not place, and what the register held.
fn search_evidence(
    ops: &[KeyOp],
    stuck: usize,
    state: State,
    placed: usize,
    blocker: Option<usize>,
) -> String {
    let writers = writers(ops);
    let Some(op) = ops.get(stuck) else {
        return "no linearization exists".to_string();
    };
    let what = match op.kind {
        Kind::Read(v) => format!("read op {} (returned {v}", op.id),
        Kind::Write(v) => format!("set op {} (wrote {v}", op.id),
    };
    let held = match state {
        None => "was empty".to_string(),
        Some(v) => match writers.get(&v) {
            Some(Some(w)) => format!("held {v} (set by op {})", w.id),
            _ => format!("held {v}"),
        },
    };
    let because = match blocker.and_then(|b| ops.get(b)) {
        Some(r) => format!(
            ", which read op {} ([{}, {}]) had yet to return, so no order of the \
             concurrent ops puts it after that read",
            r.id, r.call, r.ret
        ),
        None => " and no concurrent op explains it".to_string(),
    };
    format!(
        "no linearization: {what}, [{}, {}]) cannot be placed; in the deepest attempt \
         ({placed} of {} ops placed) the register {held}{because}",
        op.call,
        fmt_t(op.ret),
        ops.len()
    )
}

#[derive(Default)]
struct Stats {
    sets: [usize; 3],
    unknown_sets_dropped: usize,
    reads_value: usize,
    misses: usize,
    gets_ignored: usize,
    skipped: usize,
    steps_total: u64,
    steps_max: u64,
}

/// Check every key with [`DEFAULT_BUDGET`].
pub fn check(ops: &[Op]) -> Report {
    check_with_budget(ops, DEFAULT_BUDGET)
}

/// Check every key, allowing `budget` search steps per key.
pub fn check_with_budget(ops: &[Op], budget: u64) -> Report {
    let mut v = Violations::default();
    let mut stats = Stats::default();
    let mut keys: BTreeMap<String, Vec<KeyOp>> = BTreeMap::new();
    for op in ops
        .iter()
        .filter(|o| o.workload == WORKLOAD && !o.is_fault())
    {
        let unreadable = |what: &str, v: &mut Violations, stats: &mut Stats| {
            stats.skipped += 1;
            // Only an Ok op claims something happened.
            if op.outcome == Outcome::Ok {
                v.push(|| {
                    format!(
                        "op {} ({}): {what}: {} → {}",
                        op.id, op.f, op.input, op.output
                    )
                });
            }
        };
        let Some(key) = name_at(&op.input, "key") else {
            unreadable("no key", &mut v, &mut stats);
            continue;
        };
        match op.f.as_str() {
            "cache_set" => {
                stats.sets[match op.outcome {
                    Outcome::Ok => 0,
                    Outcome::Fail => 1,
                    Outcome::Unknown => 2,
                }] += 1;
                let ret = match op.outcome {
                    Outcome::Ok => op.complete_us,
                    Outcome::Unknown => NEVER,
                    Outcome::Fail => continue,
                };
                let Some(value) = u64_at(&op.input, "value") else {
                    unreadable("a set without a u64 value", &mut v, &mut stats);
                    continue;
                };
                keys.entry(key).or_default().push(KeyOp {
                    id: op.id,
                    call: op.invoke_us,
                    ret,
                    kind: Kind::Write(value),
                });
            }
            "cache_get" => {
                if op.outcome != Outcome::Ok {
                    stats.gets_ignored += 1;
                    continue;
                }
                match op.output.get("value") {
                    Some(Value::Null) => stats.misses += 1,
                    Some(value) => match value.as_u64() {
                        Some(value) => {
                            stats.reads_value += 1;
                            keys.entry(key).or_default().push(KeyOp {
                                id: op.id,
                                call: op.invoke_us,
                                ret: op.complete_us,
                                kind: Kind::Read(value),
                            });
                        }
                        None => {
                            unreadable("a get of a value that is not a u64", &mut v, &mut stats)
                        }
                    },
                    None => unreadable(
                        "an Ok get without a value (null for a miss)",
                        &mut v,
                        &mut stats,
                    ),
                }
            }
            _ => {}
        }
    }

    let mut linearizable = 0;
    let mut not_linearizable = Vec::new();
    let mut unknown = Vec::new();
    for (key, mut key_ops) in keys {
        let read: HashSet<u64> = key_ops
            .iter()
            .filter_map(|o| match o.kind {
                Kind::Read(v) => Some(v),
                Kind::Write(_) => None,
            })
            .collect();
        let before = key_ops.len();
        key_ops.retain(|o| match o.kind {
            Kind::Write(v) => o.ret != NEVER || read.contains(&v),
            Kind::Read(_) => true,
        });
        stats.unknown_sets_dropped += before - key_ops.len();
        if let Some(why) = pattern(&key_ops) {
            v.push(|| format!("key {key}: not linearizable: {why}"));
            not_linearizable.push(key);
            continue;
        }
        let (verdict, steps) = search(&key_ops, budget);
        stats.steps_total += steps;
        stats.steps_max = stats.steps_max.max(steps);
        match verdict {
            Verdict::Linearizable => linearizable += 1,
            Verdict::Exhausted => unknown.push(json!({
                "key": key, "ops": key_ops.len(), "outcome": BUDGET_EXHAUSTED,
            })),
            Verdict::NotLinearizable {
                stuck,
                state,
                placed,
                blocker,
            } => {
                let why = search_evidence(&key_ops, stuck, state, placed, blocker);
                v.push(|| format!("key {key}: not linearizable: {why}"));
                not_linearizable.push(key);
            }
        }
    }

    let stats = json!({
        "sets": {"ok": stats.sets[0], "fail": stats.sets[1], "unknown": stats.sets[2]},
        "unknown_sets_never_read": stats.unknown_sets_dropped,
        "gets_with_value": stats.reads_value,
        "misses": stats.misses,
        "gets_failed_or_unknown": stats.gets_ignored,
        "skipped_unreadable": stats.skipped,
        "keys": {
            "linearizable": linearizable,
            "not_linearizable": not_linearizable,
            "unknown": unknown,
        },
        "search_steps": {"total": stats.steps_total, "max_per_key": stats.steps_max},
    });
    v.into_report(WORKLOAD, stats)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::check::testing::{self, H};
    use crate::history::Outcome::{Fail, Ok as Done, Unknown};

    impl H {
        fn set(&mut self, value: u64, t: (u64, u64), outcome: Outcome) -> u64 {
            self.op(
                "c",
                "cache",
                "cache_set",
                t,
                outcome,
                json!({"key": "k", "value": value, "node": "n1"}),
                Value::Null,
            )
        }
        /// An Ok get of `value` (`None`: a miss).
        fn get(&mut self, value: Option<u64>, t: (u64, u64)) -> u64 {
            self.op(
                "c",
                "cache",
                "cache_get",
                t,
                Done,
                json!({"key": "k", "node": "n2"}),
                json!({ "value": value }),
            )
        }
    }

    fn assert_valid(h: &H) -> Report {
        testing::assert_valid(check, h)
    }

    fn assert_violation(h: &H, needle: &str) -> Report {
        testing::assert_violation(check, h, needle)
    }

    #[test]
    fn sequential_reads_of_the_latest_value_and_misses_are_fine() {
        let mut h = H::default();
        h.set(1, (0, 10), Done);
        h.get(Some(1), (20, 30));
        h.get(None, (40, 50));
        h.set(2, (60, 70), Done);
        h.get(None, (80, 90));
        h.get(Some(2), (100, 110));
        let r = assert_valid(&h);
        assert_eq!(r.stats["misses"], 2);
        assert_eq!(r.stats["keys"]["linearizable"], 1);
    }

    #[test]
    fn a_stale_read_after_a_newer_write_completed_is_a_violation() {
        let mut h = H::default();
        let w1 = h.set(1, (0, 10), Done);
        let w2 = h.set(2, (20, 30), Done);
        h.get(None, (35, 36));
        let r = h.get(Some(1), (40, 50));
        let rep = assert_violation(&h, "stale read");
        let msg = &rep.violations[0];
        for id in [w1, w2, r] {
            assert!(msg.contains(&format!("op {id} ")), "{msg}");
        }
    }

    #[test]
    fn a_read_concurrent_with_the_newer_write_may_see_either_value() {
        let mut h = H::default();
        h.set(1, (0, 10), Done);
        h.set(2, (20, 60), Done);
        h.get(Some(2), (30, 40));
        h.get(Some(2), (45, 50));
        h.get(None, (45, 50));
        h.get(Some(1), (25, 30));
        assert_valid(&h);
        // Equal timestamps are concurrent: a read invoked in the
        // microsecond a newer write completed may still precede it.
        let mut h = H::default();
        h.set(1, (0, 10), Done);
        h.set(2, (20, 30), Done);
        h.get(Some(1), (30, 40));
        assert_valid(&h);
    }

    #[test]
    fn new_then_old_during_one_write_is_a_violation() {
        let mut h = H::default();
        h.set(1, (0, 10), Done);
        h.set(2, (20, 200), Done);
        h.get(Some(2), (30, 40));
        h.get(None, (50, 60));
        h.get(Some(1), (70, 80));
        assert_violation(&h, "new then old");
    }

    #[test]
    fn a_violation_no_pattern_names_is_found_by_the_search() {
        // Two concurrent sets, the second still running during the first
        // reads; the reads see 1, then 2, then 1 again, and no order of
        // the two sets explains it.
        let mut h = H::default();
        h.set(1, (0, 10), Done);
        h.set(2, (0, 45), Done);
        h.get(Some(1), (20, 30));
        h.get(Some(2), (40, 50));
        let ok = check(&h.0);
        assert!(ok.valid, "{ok:#?}");
        h.get(Some(1), (60, 70));
        let r = assert_violation(&h, "no linearization");
        let msg = &r.violations[0];
        assert!(
            msg.contains("set op 1 ") && msg.contains("read op 4 "),
            "{msg}"
        );
        assert!(r.stats["search_steps"]["total"].as_u64() > Some(0));
    }

    #[test]
    fn a_value_written_twice_may_come_back() {
        // Values should be unique per key; when they are not, the prune
        // that relies on it is off and the answer is still right.
        let mut h = H::default();
        h.set(1, (0, 10), Done);
        h.get(Some(1), (11, 12));
        h.set(2, (20, 30), Done);
        h.get(Some(2), (31, 32));
        h.set(1, (40, 50), Done);
        h.get(Some(1), (60, 70));
        assert_valid(&h);
        h.get(Some(2), (80, 90));
        assert_violation(&h, "not linearizable");
    }

    #[test]
    fn a_value_never_written_or_failed_is_a_violation() {
        let mut h = H::default();
        h.set(1, (0, 10), Fail);
        h.get(Some(1), (20, 30));
        assert_violation(&h, "which no set wrote");
        // Nor may a read see a write invoked after it completed.
        let mut h = H::default();
        h.get(Some(1), (0, 5));
        h.set(1, (10, 20), Done);
        assert_violation(&h, "which no set wrote");
    }

    #[test]
    fn an_unknown_write_may_take_effect_late_or_never() {
        // Late: seen long after it timed out.
        let mut h = H::default();
        h.set(1, (0, 10), Done);
        h.set(2, (20, 30), Unknown);
        h.get(Some(1), (40, 50));
        h.get(Some(2), (60, 70));
        assert_valid(&h);
        // Never: not seen at all; dropped before the search.
        let mut h = H::default();
        h.set(1, (0, 10), Done);
        h.set(2, (20, 30), Unknown);
        h.get(Some(1), (40, 50));
        let r = assert_valid(&h);
        assert_eq!(r.stats["unknown_sets_never_read"], 1);
        // But once seen, an older value may not come back.
        let mut h = H::default();
        h.set(1, (0, 10), Done);
        h.set(2, (20, 30), Unknown);
        h.get(Some(2), (40, 50));
        h.get(Some(1), (60, 70));
        assert_violation(&h, "not linearizable");
    }

    #[test]
    fn failed_and_unknown_gets_are_ignored() {
        let mut h = H::default();
        h.set(1, (0, 10), Done);
        h.op(
            "c",
            "cache",
            "cache_get",
            (20, 30),
            Unknown,
            json!({"key": "k"}),
            Value::Null,
        );
        h.op(
            "c",
            "cache",
            "cache_get",
            (20, 30),
            Fail,
            json!({"key": "k"}),
            json!({"code": "x"}),
        );
        let r = assert_valid(&h);
        assert_eq!(r.stats["gets_failed_or_unknown"], 2);
    }

    #[test]
    fn keys_are_checked_apart_and_other_workloads_are_ignored() {
        let mut h = H::default();
        h.set(1, (0, 10), Done);
        h.op(
            "c",
            "cache",
            "cache_set",
            (20, 30),
            Done,
            json!({"key": "j", "value": 2}),
            Value::Null,
        );
        // j's value 2 says nothing about k.
        h.get(Some(1), (40, 50));
        h.op(
            "c",
            "queue",
            "cache_get",
            (40, 50),
            Done,
            json!({"key": "k"}),
            json!({"value": 9}),
        );
        assert_valid(&h);
        h.op(
            "c",
            "cache",
            "cache_get",
            (40, 50),
            Done,
            json!({"key": "j"}),
            json!({"value": 1}),
        );
        assert_violation(&h, "key j:");
    }

    #[test]
    fn an_ok_get_without_a_value_is_unreadable() {
        let mut h = H::default();
        h.op(
            "c",
            "cache",
            "cache_get",
            (0, 1),
            Done,
            json!({"key": "k"}),
            json!({}),
        );
        assert_violation(&h, "without a value");
    }

    /// Every set concurrent with every other, and each read seeing some
    /// value: hard for the search when nothing pins the order.
    fn tangled(n: u64) -> H {
        let mut h = H::default();
        for v in 0..n {
            h.set(v, (v, 1_000_000 + v), Unknown);
        }
        // Reads that force the order n-1, n-2, …, 0.
        for v in (0..n).rev() {
            let t = 10 * (n - v);
            h.get(Some(v), (1000 + t, 1000 + t + 1));
        }
        h
    }

    #[test]
    fn the_search_gives_up_at_its_budget_without_a_violation() {
        let h = tangled(40);
        let r = check_with_budget(&h.0, 10);
        assert!(r.valid, "{r:#?}");
        assert_eq!(r.stats["keys"]["unknown"][0]["outcome"], BUDGET_EXHAUSTED);
        // With the default budget this one is decided.
        let r = check(&h.0);
        assert!(r.valid, "{r:#?}");
        assert_eq!(r.stats["keys"]["linearizable"], 1);
    }

    /// A small deterministic generator (xorshift).
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// A linearizable history of `n` ops on one key by `procs` clients:
    /// each op takes effect at a random instant inside its interval;
    /// 20 % of reads miss; 5 % of sets time out (and then take effect or
    /// not).
    fn random_history(seed: u64, procs: u64, n: usize) -> H {
        let mut rng = Rng(seed);
        let mut cursor = vec![0u64; procs as usize];
        // (effect time, index into ops, is set, value or whether it lands)
        let mut planned = Vec::new();
        let mut h = H::default();
        for i in 0..n {
            let p = rng.below(procs) as usize;
            let call = cursor[p] + rng.below(50);
            let ret = call + 1 + rng.below(200);
            cursor[p] = ret;
            let at = call + rng.below(ret - call + 1);
            let is_set = rng.below(3) == 0;
            let lands = rng.below(2) == 0;
            let unknown = is_set && rng.below(20) == 0;
            planned.push((at, i, is_set, unknown, lands, call, ret));
        }
        planned.sort();
        let mut state = None;
        let mut ops = vec![None; n];
        for &(_, i, is_set, unknown, lands, call, ret) in &planned {
            if is_set {
                let v = i as u64;
                if !unknown || lands {
                    state = Some(v);
                }
                let outcome = if unknown { Unknown } else { Done };
                ops[i] = Some((call, ret, true, Some(v), outcome));
            } else {
                let seen = if rng.below(5) == 0 { None } else { state };
                ops[i] = Some((call, ret, false, seen, Done));
            }
        }
        for (call, ret, is_set, v, outcome) in ops.into_iter().flatten() {
            if is_set {
                h.set(v.unwrap_or(0), (call, ret), outcome);
            } else {
                h.get(v, (call, ret));
            }
        }
        h
    }

    #[test]
    fn random_linearizable_histories_of_thousands_of_ops_check_quickly() {
        for seed in 1..=4 {
            let h = random_history(seed, 8, 3000);
            let r = check(&h.0);
            assert!(r.valid, "seed {seed}: {:#?}", r.violations);
            assert_eq!(r.stats["keys"]["linearizable"], 1, "seed {seed}: {r:#?}");
        }
    }

    #[test]
    fn a_single_stale_read_in_thousands_of_ops_is_found() {
        let mut h = random_history(7, 8, 3000);
        // Make a late read return the first value ever set and completed
        // long before: stale by then.
        let first =
            h.0.iter()
                .find(|o| o.f == "cache_set" && o.outcome == Done)
                .map(|o| o.input["value"].clone())
                .unwrap();
        let late = h.0.iter_mut().rev().find(|o| o.f == "cache_get").unwrap();
        late.output = json!({ "value": first });
        let r = check(&h.0);
        assert!(!r.valid, "{r:#?}");
        assert_eq!(r.stats["keys"]["not_linearizable"], json!(["k"]));
    }
}
