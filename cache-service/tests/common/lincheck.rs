//! A linearizability checker for one register (a key that can be read,
//! written and deleted): the Wing–Gong search with Lowe's memoization of
//! (linearized set, state), as Porcupine implements it.
//!
//! Two models: [`Model::Register`] (a read returns the current value or
//! absent after a delete) and [`Model::Cache`], the cache's promise: a read
//! may miss (absent) at any time, but a value it returns must be the
//! current one — an older value after a newer acknowledged write is a
//! violation. An operation whose outcome is unknown (it failed or timed
//! out) has `ret = u64::MAX`: it may take effect at any time after its call.

use std::collections::HashSet;

/// What an operation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Write(u64),
    Delete,
    /// The value read (`None`: absent).
    Read(Option<u64>),
}

/// One completed operation with its call and return times (any clock, ns).
#[derive(Debug, Clone)]
pub struct Event {
    pub client: usize,
    pub call: u64,
    pub ret: u64,
    pub op: Op,
}

type State = Option<u64>;

/// What a read may return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    /// Exactly the current value.
    Register,
    /// The current value, or a miss at any time.
    Cache,
}

fn step(model: Model, state: State, op: &Op) -> Option<State> {
    match op {
        Op::Write(v) => Some(Some(*v)),
        Op::Delete => Some(None),
        Op::Read(None) if model == Model::Cache => Some(state),
        Op::Read(v) => (*v == state).then_some(state),
    }
}

const NIL: usize = usize::MAX;

/// Whether `history` (of one key, starting from "absent") is linearizable
/// as a register.
pub fn check(history: &[Event]) -> bool {
    check_model(Model::Register, history)
}

/// Whether `history` (of one key, starting from "absent") is linearizable
/// under `model`.
pub fn check_model(model: Model, history: &[Event]) -> bool {
    let n = history.len();
    if n == 0 {
        return true;
    }
    // Nodes 1..=2n: a call and a return per op; node 0 is the head sentinel.
    let mut evs: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, e) in history.iter().enumerate() {
        assert!(e.call <= e.ret, "op returns before it is called");
        evs.push((e.call, false, i));
        evs.push((e.ret, true, i));
    }
    // Calls sort before returns at equal times (the more permissive order).
    evs.sort_by_key(|&(t, is_ret, i)| (t, is_ret, i));
    let len = 2 * n + 1;
    let mut next = vec![NIL; len];
    let mut prev = vec![NIL; len];
    let mut op_of = vec![0usize; len];
    let mut is_call = vec![false; len];
    let mut matching = vec![NIL; len];
    let mut call_node = vec![NIL; n];
    for (pos, &(_, is_ret, i)) in evs.iter().enumerate() {
        let node = pos + 1;
        op_of[node] = i;
        is_call[node] = !is_ret;
        if is_ret {
            matching[call_node[i]] = node;
        } else {
            call_node[i] = node;
        }
        prev[node] = node - 1;
        next[node - 1] = node;
    }
    let words = n.div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, State)> = HashSet::new();
    let mut stack: Vec<(usize, State)> = Vec::new();
    let mut state: State = None;
    let mut entry = next[0];

    let lift = |next: &mut Vec<usize>, prev: &mut Vec<usize>, e: usize, m: usize| {
        next[prev[e]] = next[e];
        if next[e] != NIL {
            prev[next[e]] = prev[e];
        }
        next[prev[m]] = next[m];
        if next[m] != NIL {
            prev[next[m]] = prev[m];
        }
    };
    let unlift = |next: &mut Vec<usize>, prev: &mut Vec<usize>, e: usize, m: usize| {
        next[prev[m]] = m;
        if next[m] != NIL {
            prev[next[m]] = m;
        }
        next[prev[e]] = e;
        if next[e] != NIL {
            prev[next[e]] = e;
        }
    };

    while next[0] != NIL {
        if entry == NIL {
            // Only possible after every op was lifted.
            return true;
        }
        if is_call[entry] {
            let i = op_of[entry];
            if let Some(new_state) = step(model, state, &history[i].op) {
                let mut lin = linearized.clone();
                lin[i / 64] |= 1 << (i % 64);
                if cache.insert((lin.clone(), new_state)) {
                    stack.push((entry, state));
                    state = new_state;
                    linearized = lin;
                    lift(&mut next, &mut prev, entry, matching[entry]);
                    entry = next[0];
                    continue;
                }
            }
            entry = next[entry];
        } else {
            let Some((e, s)) = stack.pop() else {
                return false;
            };
            state = s;
            let i = op_of[e];
            linearized[i / 64] &= !(1 << (i % 64));
            unlift(&mut next, &mut prev, e, matching[e]);
            entry = next[e];
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(call: u64, ret: u64, op: Op) -> Event {
        Event {
            client: 0,
            call,
            ret,
            op,
        }
    }

    #[test]
    fn accepts_and_rejects_known_histories() {
        use Op::*;
        // Sequential: write 1, read 1.
        assert!(check(&[ev(0, 1, Write(1)), ev(2, 3, Read(Some(1)))]));
        // Stale read after a completed write.
        assert!(!check(&[
            ev(0, 1, Write(1)),
            ev(2, 3, Write(2)),
            ev(4, 5, Read(Some(1)))
        ]));
        // Concurrent write: either value may be read.
        assert!(check(&[
            ev(0, 10, Write(1)),
            ev(2, 3, Read(None)),
            ev(4, 5, Read(Some(1)))
        ]));
        // New-then-old reads during one write are not linearizable.
        assert!(!check(&[
            ev(0, 1, Write(1)),
            ev(2, 20, Write(2)),
            ev(3, 4, Read(Some(2))),
            ev(5, 6, Read(Some(1)))
        ]));
        // Reading a value never written.
        assert!(!check(&[ev(0, 1, Read(Some(9)))]));
        // Delete makes the key absent.
        assert!(check(&[
            ev(0, 1, Write(1)),
            ev(2, 3, Delete),
            ev(4, 5, Read(None))
        ]));
        assert!(!check(&[
            ev(0, 1, Write(1)),
            ev(2, 3, Delete),
            ev(4, 5, Read(Some(1)))
        ]));
    }

    #[test]
    fn the_cache_model_allows_misses_but_never_an_older_value() {
        use Op::*;
        let cache = |h: &[Event]| check_model(Model::Cache, h);
        // A miss after a write: fine for a cache, not for a register.
        let miss = [ev(0, 1, Write(1)), ev(2, 3, Read(None))];
        assert!(cache(&miss));
        assert!(!check(&miss));
        // The owner-crash bug: v1 read, v2 written, a miss, then v1 again.
        assert!(!cache(&[
            ev(0, 1, Write(1)),
            ev(2, 3, Read(Some(1))),
            ev(4, 5, Write(2)),
            ev(6, 7, Read(None)),
            ev(8, 9, Read(Some(1)))
        ]));
        // Misses interleaved with current values are fine.
        assert!(cache(&[
            ev(0, 1, Write(1)),
            ev(2, 3, Read(None)),
            ev(4, 5, Read(Some(1))),
            ev(6, 7, Write(2)),
            ev(8, 9, Read(None)),
            ev(10, 11, Read(Some(2)))
        ]));
        // New then old during one write is still a violation.
        assert!(!cache(&[
            ev(0, 1, Write(1)),
            ev(2, 20, Write(2)),
            ev(3, 4, Read(Some(2))),
            ev(5, 6, Read(None)),
            ev(7, 8, Read(Some(1)))
        ]));
        // A value never written is a violation.
        assert!(!cache(&[ev(0, 1, Read(Some(9)))]));
    }

    #[test]
    fn an_unknown_outcome_may_take_effect_any_time_after_its_call() {
        use Op::*;
        let cache = |h: &[Event]| check_model(Model::Cache, h);
        // A failed write of 2 may have landed late: reading 2 afterwards is
        // fine, and so is never seeing it.
        assert!(cache(&[
            ev(0, 1, Write(1)),
            ev(2, u64::MAX, Write(2)),
            ev(10, 11, Read(Some(2))),
        ]));
        assert!(cache(&[
            ev(0, 1, Write(1)),
            ev(2, u64::MAX, Write(2)),
            ev(10, 11, Read(Some(1))),
        ]));
        // But not before it was called, nor older after newer.
        assert!(!cache(&[
            ev(0, 1, Write(1)),
            ev(5, u64::MAX, Write(2)),
            ev(2, 3, Read(Some(2))),
        ]));
        assert!(!cache(&[
            ev(0, 1, Write(1)),
            ev(2, u64::MAX, Write(2)),
            ev(10, 11, Read(Some(2))),
            ev(12, 13, Read(Some(1))),
        ]));
    }
}
