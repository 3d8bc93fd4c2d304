//! The lock checker: mutual exclusion, growing fencing tokens, the fenced
//! register, holds that do not vanish, and replicas that agree at the end.
//!
//! Operations read (workload `"lock"`; faults and other workloads are
//! ignored):
//! - `acquire`: input `{resource, owner, mode = "exclusive", ttl_ms,
//!   wait_ms, request_id?}`; Ok output `{token, expires_at_ms}`;
//! - `release`: input `{resource, owner, token}`;
//! - `renew`: input `{resource, owner, token, ttl_ms}`; Ok output
//!   `{expires_at_ms}`;
//! - `read`: input `{resource}`; Ok output `{holders: [{owner, mode, token,
//!   expires_at_ms}]}` (a linearizable read);
//! - `fenced_write`: input `{resource, owner, token}`; Ok means the test's
//!   fenced register accepted the token, Fail `{code: "stale_token"}` that
//!   it refused it;
//! - `final_state`: input `{node}`; Ok output `{resources: {name: [[owner,
//!   mode, token], …]}}`, each node's own table after healing.
//!
//! A *grant* is one logical acquire: every attempt that carries the same
//! `(resource, owner, request_id)` is a retry of it (the service answers a
//! retry with the first answer), so the grant was invoked when its first
//! attempt was and completed when its first Ok attempt did. An acquire
//! without a `request_id` is a grant of its own.
//!
//! A *hold* `(resource, owner, token)` is *certainly held* over the
//! half-open interval `[start, end)`: `start` is the grant's Ok completion;
//! `end` is the earliest of the invocation of the first release of that
//! `(resource, owner, token)` (whatever its outcome: it may have taken
//! effect at once) and its lease expiry. The expiry starts at
//! `expires_at_ms × 1000` and moves to a renewal's `expires_at_ms` when an
//! Ok renew of the hold *completed* before the current expiry (a renewal
//! completing later may have come after the lease lapsed and someone else
//! was granted it). An Unknown or Fail acquire is never certainly held.
//! Times are the host's wall clock, the same clock the lock leader stamps
//! leases with, so expiries compare directly with op times.
//!
//! Invariants (each a violation when broken):
//! 1. *Mutual exclusion*: no two holds of one resource with different
//!    `(owner, token)`, at least one of them exclusive, are certainly held
//!    at the same instant. A lease that expired before the next grant
//!    completed is no overlap.
//! 2. *Tokens grow*: for grants A, B of one resource with Ok tokens, if A
//!    completed before B was invoked then `A.token < B.token`. Retries of
//!    one grant must all answer the same token.
//! 3. *Fencing*: for accepted fenced writes A, B of one resource, if A
//!    completed before B was invoked then `A.token <= B.token` (the
//!    register is atomic, so real-time order is its acceptance order; two
//!    overlapping writes may have been accepted either way round). An
//!    accepted write's `(resource, owner, token)` was granted by an Ok
//!    acquire, or the owner had an Unknown acquire of the resource, invoked
//!    no later than the write completed.
//! 4. *No vanishing*: an Ok read whose whole `[invoke, complete]` lies
//!    strictly inside a hold's certainly-held interval lists that
//!    `(owner, token)`.
//! 5. *Agreement*: every Ok `final_state` shows the same holders for every
//!    resource (a resource with no holders equals one not listed), and no
//!    final state or read shows an exclusive holder beside another holder.
//!
//! Equal timestamps count as concurrent (see [`crate::check`]): a grant
//! completing in the microsecond another hold's lease ends is no overlap.
//! An Ok op whose output lacks a field the rules need is reported as a
//! violation (the run recorded something it should not have).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{json, Value};

use super::{name_at, str_at, u64_at, Report, Violations};
use crate::history::{Op, Outcome};

const WORKLOAD: &str = "lock";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Exclusive,
    Shared,
}

impl Mode {
    fn parse(v: Option<&str>) -> Option<Mode> {
        match v {
            None | Some("exclusive") => Some(Mode::Exclusive),
            Some("shared") => Some(Mode::Shared),
            Some(_) => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Mode::Exclusive => "exclusive",
            Mode::Shared => "shared",
        }
    }
}

/// One logical acquire (its attempts grouped by request id).
#[derive(Debug)]
struct Grant {
    resource: String,
    owner: String,
    mode: Mode,
    /// The earliest invocation of any attempt.
    invoke_us: u64,
    /// The first Ok attempt, if any.
    ok: Option<OkGrant>,
    /// Some attempt's outcome is unknown.
    unknown: bool,
}

#[derive(Debug, Clone, Copy)]
struct OkGrant {
    op: u64,
    complete_us: u64,
    token: u64,
    expires_at_ms: u64,
}

/// A hold's certainly-held interval `[start, end)`.
#[derive(Debug, Clone)]
struct Hold {
    owner: String,
    token: u64,
    mode: Mode,
    /// The Ok acquire that granted it.
    op: u64,
    start: u64,
    end: u64,
}

/// `(resource, owner, token)`.
type HoldKey = (String, String, u64);

#[derive(Default)]
struct Stats {
    acquire: [usize; 3],
    release: usize,
    renew_ok: usize,
    read_ok: usize,
    fenced_accepted: usize,
    fenced_refused: usize,
    final_states_ok: usize,
    final_states_not_ok: usize,
    skipped: usize,
}

fn outcome_index(o: Outcome) -> usize {
    match o {
        Outcome::Ok => 0,
        Outcome::Fail => 1,
        Outcome::Unknown => 2,
    }
}

/// Check the lock invariants (see the module docs) over `ops`.
pub fn check(ops: &[Op]) -> Report {
    let mut v = Violations::default();
    let mut stats = Stats::default();
    let ops: Vec<&Op> = ops
        .iter()
        .filter(|o| o.workload == WORKLOAD && !o.is_fault())
        .collect();

    let grants = grants(&ops, &mut v, &mut stats);
    let holds = holds(&ops, &grants, &mut v, &mut stats);

    let mut by_resource: BTreeMap<&str, Vec<&Grant>> = BTreeMap::new();
    for g in &grants {
        by_resource.entry(&g.resource).or_default().push(g);
    }
    for (resource, gs) in &by_resource {
        tokens_grow(resource, gs, &mut v);
    }
    let mut holds_checked = 0;
    for (resource, hs) in &holds {
        holds_checked += hs.len();
        mutual_exclusion(resource, hs, &mut v);
    }
    fencing(&ops, &grants, &mut v, &mut stats);
    no_vanishing(&ops, &holds, &mut v, &mut stats);
    agreement(&ops, &mut v, &mut stats);

    let stats = json!({
        "acquires": {
            "ok": stats.acquire[0], "fail": stats.acquire[1], "unknown": stats.acquire[2],
        },
        "grants": grants.len(),
        "holds_checked": holds_checked,
        "releases": stats.release,
        "renews_ok": stats.renew_ok,
        "reads_ok": stats.read_ok,
        "fenced_writes": {"accepted": stats.fenced_accepted, "refused": stats.fenced_refused},
        "final_states": {"ok": stats.final_states_ok, "not_ok": stats.final_states_not_ok},
        "skipped_unreadable": stats.skipped,
    });
    v.into_report(WORKLOAD, stats)
}

/// Group acquire attempts into grants.
fn grants(ops: &[&Op], v: &mut Violations, stats: &mut Stats) -> Vec<Grant> {
    let mut grants: Vec<Grant> = Vec::new();
    let mut index: HashMap<(String, String, String), usize> = HashMap::new();
    // Ok attempts in completion order, so that a grant's first Ok attempt
    // is the one that sets its token.
    let mut acquires: Vec<&Op> = ops.iter().copied().filter(|o| o.f == "acquire").collect();
    acquires.sort_by_key(|o| (o.complete_us, o.id));
    for op in acquires {
        stats.acquire[outcome_index(op.outcome)] += 1;
        let (Some(resource), Some(owner)) =
            (name_at(&op.input, "resource"), name_at(&op.input, "owner"))
        else {
            unreadable(op, "acquire without resource or owner", v, stats);
            continue;
        };
        let mode_text = str_at(&op.output, "mode").or_else(|| str_at(&op.input, "mode"));
        let Some(mode) = Mode::parse(mode_text) else {
            unreadable(op, "acquire with an unknown mode", v, stats);
            continue;
        };
        let ok = if op.outcome == Outcome::Ok {
            match (
                u64_at(&op.output, "token"),
                u64_at(&op.output, "expires_at_ms"),
            ) {
                (Some(token), Some(expires_at_ms)) => Some(OkGrant {
                    op: op.id,
                    complete_us: op.complete_us,
                    token,
                    expires_at_ms,
                }),
                _ => {
                    unreadable(op, "Ok acquire without token or expires_at_ms", v, stats);
                    continue;
                }
            }
        } else {
            None
        };
        let slot = match name_at(&op.input, "request_id") {
            Some(rid) => *index
                .entry((resource.clone(), owner.clone(), rid))
                .or_insert_with(|| {
                    grants.push(Grant {
                        resource: resource.clone(),
                        owner: owner.clone(),
                        mode,
                        invoke_us: op.invoke_us,
                        ok: None,
                        unknown: false,
                    });
                    grants.len() - 1
                }),
            None => {
                grants.push(Grant {
                    resource: resource.clone(),
                    owner: owner.clone(),
                    mode,
                    invoke_us: op.invoke_us,
                    ok: None,
                    unknown: false,
                });
                grants.len() - 1
            }
        };
        let g = &mut grants[slot];
        g.invoke_us = g.invoke_us.min(op.invoke_us);
        g.unknown |= op.outcome == Outcome::Unknown;
        if let Some(new) = ok {
            match &mut g.ok {
                None => {
                    g.ok = Some(new);
                    g.mode = mode;
                }
                Some(first) if first.token == new.token => {
                    // The same answer again: the lease is only certain up
                    // to the earlier of the two expiries reported.
                    first.expires_at_ms = first.expires_at_ms.min(new.expires_at_ms);
                }
                Some(first) => {
                    let first = *first;
                    v.push(|| {
                        format!(
                            "resource {resource}: retries of one acquire by {owner} (same \
                             request_id) answered different tokens: op {} token {}, op {} token {}",
                            first.op, first.token, new.op, new.token
                        )
                    });
                }
            }
        }
    }
    grants
}

fn unreadable(op: &Op, what: &str, v: &mut Violations, stats: &mut Stats) {
    stats.skipped += 1;
    // Only an Ok op claims something happened; an unreadable failed or
    // unknown op asserts nothing, so skipping it hides nothing.
    if op.outcome == Outcome::Ok {
        v.push(|| format!("op {} ({}): {what}: {}", op.id, op.f, op.output));
    }
}

/// The certainly-held interval of every Ok grant, per resource, sorted by
/// start.
fn holds(
    ops: &[&Op],
    grants: &[Grant],
    v: &mut Violations,
    stats: &mut Stats,
) -> BTreeMap<String, Vec<Hold>> {
    let mut first_release: HashMap<HoldKey, u64> = HashMap::new();
    let mut renewals: HashMap<HoldKey, Vec<(u64, u64)>> = HashMap::new();
    for op in ops {
        let key = || -> Option<HoldKey> {
            Some((
                name_at(&op.input, "resource")?,
                name_at(&op.input, "owner")?,
                u64_at(&op.input, "token")?,
            ))
        };
        match op.f.as_str() {
            "release" => {
                stats.release += 1;
                let Some(key) = key() else {
                    unreadable(op, "release without resource, owner or token", v, stats);
                    continue;
                };
                let at = first_release.entry(key).or_insert(op.invoke_us);
                *at = (*at).min(op.invoke_us);
            }
            "renew" if op.outcome == Outcome::Ok => {
                stats.renew_ok += 1;
                match (key(), u64_at(&op.output, "expires_at_ms")) {
                    (Some(key), Some(exp)) => {
                        renewals.entry(key).or_default().push((op.complete_us, exp))
                    }
                    _ => unreadable(op, "Ok renew without its hold or expires_at_ms", v, stats),
                }
            }
            _ => {}
        }
    }
    let mut holds: BTreeMap<String, Vec<Hold>> = BTreeMap::new();
    for g in grants {
        let Some(ok) = g.ok else { continue };
        let key = (g.resource.clone(), g.owner.clone(), ok.token);
        let mut expiry = ok.expires_at_ms.saturating_mul(1000);
        if let Some(rs) = renewals.get_mut(&key) {
            rs.sort_unstable();
            for &(complete_us, exp_ms) in rs.iter() {
                if complete_us < expiry {
                    expiry = expiry.max(exp_ms.saturating_mul(1000));
                }
            }
        }
        let end = first_release.get(&key).map_or(expiry, |&r| r.min(expiry));
        if ok.complete_us < end {
            holds.entry(g.resource.clone()).or_default().push(Hold {
                owner: g.owner.clone(),
                token: ok.token,
                mode: g.mode,
                op: ok.op,
                start: ok.complete_us,
                end,
            });
        }
    }
    for hs in holds.values_mut() {
        hs.sort_by_key(|h| (h.start, h.op));
    }
    holds
}

fn describe(h: &Hold) -> String {
    format!(
        "{} hold of {} token {} (op {}) certain over [{}, {}) µs",
        h.mode.name(),
        h.owner,
        h.token,
        h.op,
        h.start,
        h.end
    )
}

/// Rule 1: a sweep over holds by start, keeping those still held.
fn mutual_exclusion(resource: &str, holds: &[Hold], v: &mut Violations) {
    let mut active: Vec<&Hold> = Vec::new();
    for h in holds {
        // Half-open intervals: one ending exactly where `h` starts is over.
        active.retain(|a| a.end > h.start);
        for a in &active {
            let conflict = a.mode == Mode::Exclusive || h.mode == Mode::Exclusive;
            if conflict && (a.owner != h.owner || a.token != h.token) {
                v.push(|| {
                    format!(
                        "resource {resource}: two holders at once: {} and {}",
                        describe(a),
                        describe(h)
                    )
                });
            }
        }
        active.push(h);
    }
}

/// `(invoke_us, complete_us, token, op id)` of something that carries a
/// token.
type Tokened = (u64, u64, u64, u64);

/// For each item B, the item A with the largest token among those that
/// completed before B was invoked, when `bad(A.token, B.token)`.
fn real_time_token_order(
    items: &[Tokened],
    bad: impl Fn(u64, u64) -> bool,
) -> Vec<(Tokened, Tokened)> {
    let mut by_complete: Vec<&Tokened> = items.iter().collect();
    by_complete.sort_by_key(|t| (t.1, t.3));
    let mut by_invoke: Vec<&Tokened> = items.iter().collect();
    by_invoke.sort_by_key(|t| (t.0, t.3));
    let mut found = Vec::new();
    let mut max: Option<&Tokened> = None;
    let mut next = 0;
    for b in by_invoke {
        while next < by_complete.len() && by_complete[next].1 < b.0 {
            let a = by_complete[next];
            if max.is_none_or(|m| a.2 > m.2) {
                max = Some(a);
            }
            next += 1;
        }
        if let Some(a) = max {
            if bad(a.2, b.2) {
                found.push((*a, *b));
            }
        }
    }
    found
}

/// Rule 2.
fn tokens_grow(resource: &str, grants: &[&Grant], v: &mut Violations) {
    let items: Vec<Tokened> = grants
        .iter()
        .filter_map(|g| {
            let ok = g.ok?;
            Some((g.invoke_us, ok.complete_us, ok.token, ok.op))
        })
        .collect();
    for (a, b) in real_time_token_order(&items, |a, b| a >= b) {
        v.push(|| {
            format!(
                "resource {resource}: tokens did not grow: op {} was granted token {} \
                 (completed at {} µs) before op {} was invoked (at {} µs) and granted token {}",
                a.3, a.2, a.1, b.3, b.0, b.2
            )
        });
    }
}

/// Rule 3.
fn fencing(ops: &[&Op], grants: &[Grant], v: &mut Violations, stats: &mut Stats) {
    let mut accepted: BTreeMap<String, Vec<Tokened>> = BTreeMap::new();
    let mut grants_of: HashMap<(&str, &str), Vec<&Grant>> = HashMap::new();
    for g in grants {
        grants_of
            .entry((&g.resource, &g.owner))
            .or_default()
            .push(g);
    }
    for op in ops.iter().filter(|o| o.f == "fenced_write") {
        match op.outcome {
            Outcome::Ok => stats.fenced_accepted += 1,
            Outcome::Fail => stats.fenced_refused += 1,
            Outcome::Unknown => {}
        }
        if op.outcome != Outcome::Ok {
            continue;
        }
        let (Some(resource), Some(owner), Some(token)) = (
            name_at(&op.input, "resource"),
            name_at(&op.input, "owner"),
            u64_at(&op.input, "token"),
        ) else {
            unreadable(
                op,
                "fenced_write without resource, owner or token",
                v,
                stats,
            );
            continue;
        };
        let mine = grants_of.get(&(resource.as_str(), owner.as_str()));
        let granted = mine.into_iter().flatten().any(|g| {
            g.invoke_us <= op.complete_us
                && match g.ok {
                    Some(ok) => ok.token == token,
                    None => g.unknown,
                }
        });
        if !granted {
            v.push(|| {
                format!(
                    "resource {resource}: the fenced register accepted token {token} from \
                     {owner} (op {}), a token never granted to {owner} for {resource}",
                    op.id
                )
            });
        }
        accepted
            .entry(resource)
            .or_default()
            .push((op.invoke_us, op.complete_us, token, op.id));
    }
    for (resource, items) in &accepted {
        for (a, b) in real_time_token_order(items, |a, b| a > b) {
            v.push(|| {
                format!(
                    "resource {resource}: the fenced register accepted stale token {} \
                     (op {}, invoked at {} µs) after accepting token {} (op {}, completed at {} µs)",
                    b.2, b.3, b.0, a.2, a.3, a.1
                )
            });
        }
    }
}

/// The `(owner, mode, token)` holders in a read's output or a final state.
type Holders = BTreeSet<(String, String, u64)>;

fn exclusive_beside_another(holders: &Holders) -> bool {
    holders.len() > 1 && holders.iter().any(|(_, mode, _)| mode != "shared")
}

/// Rule 4, and rule 5's "no exclusive beside another" for reads.
fn no_vanishing(
    ops: &[&Op],
    holds: &BTreeMap<String, Vec<Hold>>,
    v: &mut Violations,
    stats: &mut Stats,
) {
    let mut reads: BTreeMap<String, Vec<(&Op, Holders)>> = BTreeMap::new();
    for op in ops
        .iter()
        .filter(|o| o.f == "read" && o.outcome == Outcome::Ok)
    {
        stats.read_ok += 1;
        let Some(resource) = name_at(&op.input, "resource") else {
            unreadable(op, "read without resource", v, stats);
            continue;
        };
        let holders = op.output.get("holders").and_then(|h| {
            h.as_array()?
                .iter()
                .map(|h| {
                    Some((
                        name_at(h, "owner")?,
                        str_at(h, "mode").unwrap_or("exclusive").to_string(),
                        u64_at(h, "token")?,
                    ))
                })
                .collect::<Option<Holders>>()
        });
        let Some(holders) = holders else {
            unreadable(op, "Ok read without a readable holders list", v, stats);
            continue;
        };
        if exclusive_beside_another(&holders) {
            v.push(|| {
                format!(
                    "resource {resource}: read op {} shows an exclusive holder beside another: {holders:?}",
                    op.id
                )
            });
        }
        reads.entry(resource).or_default().push((op, holders));
    }
    for (resource, mut rs) in reads {
        let Some(hs) = holds.get(&resource) else {
            continue;
        };
        rs.sort_by_key(|(op, _)| (op.invoke_us, op.id));
        let mut active: Vec<&Hold> = Vec::new();
        let mut next = 0;
        for (op, holders) in &rs {
            while next < hs.len() && hs[next].start < op.invoke_us {
                active.push(&hs[next]);
                next += 1;
            }
            // Reads come in invocation order: a hold over before this one
            // was invoked cannot contain any later read either.
            active.retain(|h| h.end > op.invoke_us);
            for h in active.iter().filter(|h| h.end > op.complete_us) {
                let listed = holders
                    .iter()
                    .any(|(owner, _, token)| *owner == h.owner && *token == h.token);
                if !listed {
                    v.push(|| {
                        format!(
                            "resource {resource}: read op {} over [{}, {}] µs does not list the {}",
                            op.id,
                            op.invoke_us,
                            op.complete_us,
                            describe(h)
                        )
                    });
                }
            }
        }
    }
}

/// A final state's holders per resource, resources without holders left
/// out; `None` when it cannot be read.
fn final_table(output: &Value) -> Option<BTreeMap<String, Holders>> {
    let mut table = BTreeMap::new();
    for (resource, list) in output.get("resources")?.as_object()? {
        let mut holders = Holders::new();
        for h in list.as_array()? {
            // `[owner, mode, token]`, or the read's `{owner, mode, token}`.
            let holder = match h {
                Value::Array(a) => (
                    a.first()?.as_str()?.to_string(),
                    a.get(1)?.as_str()?.to_string(),
                    a.get(2)?.as_u64()?,
                ),
                _ => (
                    name_at(h, "owner")?,
                    str_at(h, "mode")?.to_string(),
                    u64_at(h, "token")?,
                ),
            };
            holders.insert(holder);
        }
        if !holders.is_empty() {
            table.insert(resource.clone(), holders);
        }
    }
    Some(table)
}

/// Rule 5.
fn agreement(ops: &[&Op], v: &mut Violations, stats: &mut Stats) {
    let mut tables: Vec<(String, u64, BTreeMap<String, Holders>)> = Vec::new();
    for op in ops.iter().filter(|o| o.f == "final_state") {
        if op.outcome != Outcome::Ok {
            // A node that cannot answer after healing has no state to
            // compare; availability reports it.
            stats.final_states_not_ok += 1;
            continue;
        }
        stats.final_states_ok += 1;
        let node = name_at(&op.input, "node").unwrap_or_else(|| format!("of op {}", op.id));
        let Some(table) = final_table(&op.output) else {
            unreadable(op, "final_state without a readable resources map", v, stats);
            continue;
        };
        for (resource, holders) in &table {
            if exclusive_beside_another(holders) {
                v.push(|| {
                    format!(
                        "resource {resource}: node {node} (op {}) ends with an exclusive \
                         holder beside another: {holders:?}",
                        op.id
                    )
                });
            }
        }
        tables.push((node, op.id, table));
    }
    let Some((first_node, first_op, first)) = tables.first() else {
        return;
    };
    let empty = Holders::new();
    for (node, op, table) in &tables[1..] {
        let resources: BTreeSet<&String> = first.keys().chain(table.keys()).collect();
        for resource in resources {
            let a = first.get(resource).unwrap_or(&empty);
            let b = table.get(resource).unwrap_or(&empty);
            if a != b {
                v.push(|| {
                    format!(
                        "resource {resource}: lock nodes disagree at the end: node {first_node} \
                         (op {first_op}) holds {a:?}, node {node} (op {op}) holds {b:?}"
                    )
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::check::testing::{self, H};
    use crate::history::Outcome::{Fail, Ok as Done, Unknown};

    /// Terse lock ops. Times are µs; `exp` is the lease expiry in ms.
    impl H {
        fn acq(&mut self, owner: &str, mode: &str, t: (u64, u64), token: u64, exp: u64) -> u64 {
            self.op(
                owner,
                "lock",
                "acquire",
                t,
                Done,
                json!({"resource": "r", "owner": owner, "mode": mode, "ttl_ms": 1000, "wait_ms": 0}),
                json!({"token": token, "expires_at_ms": exp}),
            )
        }
        fn acq_rid(
            &mut self,
            owner: &str,
            rid: &str,
            t: (u64, u64),
            outcome: Outcome,
            output: Value,
        ) -> u64 {
            self.op(
                owner,
                "lock",
                "acquire",
                t,
                outcome,
                json!({"resource": "r", "owner": owner, "mode": "exclusive", "request_id": rid}),
                output,
            )
        }
        fn rel(&mut self, owner: &str, token: u64, t: (u64, u64), outcome: Outcome) -> u64 {
            self.op(
                owner,
                "lock",
                "release",
                t,
                outcome,
                json!({"resource": "r", "owner": owner, "token": token}),
                Value::Null,
            )
        }
        fn renew(&mut self, owner: &str, token: u64, t: (u64, u64), exp: u64) -> u64 {
            self.op(
                owner,
                "lock",
                "renew",
                t,
                Done,
                json!({"resource": "r", "owner": owner, "token": token, "ttl_ms": 1000}),
                json!({"expires_at_ms": exp}),
            )
        }
        fn read(&mut self, t: (u64, u64), holders: &[(&str, &str, u64)]) -> u64 {
            let holders: Vec<Value> = holders
                .iter()
                .map(|(o, m, t)| json!({"owner": o, "mode": m, "token": t, "expires_at_ms": 0}))
                .collect();
            self.op(
                "reader",
                "lock",
                "read",
                t,
                Done,
                json!({"resource": "r"}),
                json!({ "holders": holders }),
            )
        }
        fn write(&mut self, owner: &str, token: u64, t: (u64, u64), outcome: Outcome) -> u64 {
            let output = match outcome {
                Fail => json!({"code": "stale_token", "seen": token + 1}),
                _ => Value::Null,
            };
            self.op(
                owner,
                "lock",
                "fenced_write",
                t,
                outcome,
                json!({"resource": "r", "owner": owner, "token": token}),
                output,
            )
        }
        fn final_state(&mut self, node: &str, resources: Value) -> u64 {
            self.op(
                "final",
                "lock",
                "final_state",
                (1_000_000, 1_000_001),
                Done,
                json!({ "node": node }),
                json!({ "resources": resources }),
            )
        }
    }

    fn assert_valid(h: &H) {
        testing::assert_valid(check, h);
    }

    /// Fails and every violation mentions `needle`.
    fn assert_violation(h: &H, needle: &str) {
        testing::assert_violation(check, h, needle);
    }

    // Rule 1.

    #[test]
    fn two_overlapping_exclusive_holds_are_a_violation() {
        let mut h = H::default();
        h.acq("a", "exclusive", (0, 10), 1, 1);
        h.acq("b", "exclusive", (5, 20), 2, 1);
        assert_violation(&h, "two holders at once");
    }

    #[test]
    fn a_hold_released_or_expired_before_the_next_grant_is_fine() {
        let mut h = H::default();
        // Released: the release was invoked before b's grant completed.
        h.acq("a", "exclusive", (0, 10), 1, 100);
        h.rel("a", 1, (15, 40), Unknown);
        h.acq("b", "exclusive", (12, 30), 2, 100);
        // Expired: c's lease ends at 200 ms, d's grant completes after it.
        h.acq("c", "exclusive", (150_000, 150_010), 3, 200);
        h.acq("d", "exclusive", (150_020, 200_001), 4, 300);
        assert_valid(&h);
    }

    #[test]
    fn equal_timestamps_at_the_boundary_are_not_an_overlap() {
        let mut h = H::default();
        // a's lease ends at exactly 1000 µs, when b's grant completes;
        // c's release is invoked in the microsecond d's grant completes.
        h.acq("a", "exclusive", (0, 10), 1, 1);
        h.acq("b", "exclusive", (5, 1000), 2, 100);
        h.rel("b", 2, (2000, 2100), Done);
        h.acq("c", "exclusive", (1500, 2000), 3, 100);
        assert_valid(&h);
    }

    #[test]
    fn a_renewal_extends_a_lease_only_when_it_completed_before_the_expiry() {
        // Renewed in time: a is still certainly held when b is granted.
        let mut h = H::default();
        h.acq("a", "exclusive", (0, 10), 1, 1);
        h.renew("a", 1, (500, 900), 5);
        h.acq("b", "exclusive", (1500, 2000), 2, 10);
        assert_violation(&h, "two holders at once");
        // Renewed too late: the lease may have lapsed at 1000 µs.
        let mut h = H::default();
        h.acq("a", "exclusive", (0, 10), 1, 1);
        h.renew("a", 1, (500, 1000), 5);
        h.acq("b", "exclusive", (1500, 2000), 2, 10);
        assert_valid(&h);
    }

    #[test]
    fn shared_holds_coexist_but_not_with_an_exclusive_one() {
        let mut h = H::default();
        h.acq("a", "shared", (0, 10), 1, 1);
        h.acq("b", "shared", (0, 20), 2, 1);
        assert_valid(&h);
        h.acq("c", "exclusive", (0, 30), 3, 1);
        assert_violation(&h, "two holders at once");
    }

    #[test]
    fn an_unknown_acquire_is_never_certainly_held() {
        let mut h = H::default();
        h.acq_rid("a", "a1", (0, 10), Unknown, Value::Null);
        h.acq("b", "exclusive", (5, 20), 2, 1);
        assert_valid(&h);
    }

    // Rule 2.

    #[test]
    fn a_later_grant_with_a_lower_or_equal_token_is_a_violation() {
        let mut h = H::default();
        h.acq("a", "exclusive", (0, 10), 5, 0);
        h.acq("b", "exclusive", (20, 30), 5, 0);
        assert_violation(&h, "tokens did not grow");
    }

    #[test]
    fn concurrent_grants_may_carry_tokens_in_either_order() {
        let mut h = H::default();
        h.acq("a", "exclusive", (0, 10), 7, 0);
        h.acq("b", "exclusive", (10, 30), 3, 0);
        h.acq("c", "exclusive", (40, 50), 8, 0);
        assert_valid(&h);
    }

    #[test]
    fn a_retry_is_invoked_when_its_first_attempt_was() {
        // b's first attempt timed out, its retry answered the token the
        // service granted during the first attempt, before a's grant.
        let mut h = H::default();
        h.acq_rid("b", "b1", (0, 100), Unknown, Value::Null);
        h.acq("a", "exclusive", (0, 50), 9, 0);
        h.acq_rid(
            "b",
            "b1",
            (200, 210),
            Done,
            json!({"token": 4, "expires_at_ms": 0}),
        );
        assert_valid(&h);
        h.acq_rid(
            "b",
            "b1",
            (300, 310),
            Done,
            json!({"token": 5, "expires_at_ms": 0}),
        );
        assert_violation(&h, "answered different tokens");
    }

    // Rule 3.

    #[test]
    fn the_fenced_register_accepting_a_stale_token_is_a_violation() {
        let mut h = H::default();
        h.acq("a", "exclusive", (0, 10), 1, 0);
        h.acq("b", "exclusive", (20, 30), 2, 0);
        h.write("b", 2, (40, 50), Done);
        h.write("a", 1, (60, 70), Done);
        assert_violation(&h, "accepted stale token");
    }

    #[test]
    fn a_refused_stale_write_and_overlapping_writes_are_fine() {
        let mut h = H::default();
        h.acq("a", "exclusive", (0, 10), 1, 0);
        h.acq("b", "exclusive", (20, 30), 2, 0);
        h.write("a", 1, (40, 100), Done);
        h.write("b", 2, (50, 60), Done);
        h.write("a", 1, (110, 120), Fail);
        h.write("b", 2, (130, 140), Done);
        assert_valid(&h);
    }

    #[test]
    fn an_accepted_token_never_granted_to_that_owner_is_a_violation() {
        let mut h = H::default();
        h.acq("a", "exclusive", (0, 10), 1, 0);
        h.write("b", 1, (40, 50), Done);
        assert_violation(&h, "never granted");
        // An unknown acquire by b may have granted it a token.
        let mut h = H::default();
        h.acq_rid("b", "b1", (0, 10), Unknown, Value::Null);
        h.write("b", 1, (40, 50), Done);
        assert_valid(&h);
    }

    // Rule 4.

    #[test]
    fn a_read_inside_a_certain_hold_must_list_it() {
        let mut h = H::default();
        h.acq("a", "exclusive", (0, 10), 1, 1);
        h.read((20, 30), &[("a", "exclusive", 1)]);
        assert_valid(&h);
        h.read((40, 50), &[]);
        assert_violation(&h, "does not list");
    }

    #[test]
    fn a_read_overlapping_a_holds_start_or_end_may_miss_it() {
        let mut h = H::default();
        h.acq("a", "exclusive", (0, 10), 1, 1);
        h.rel("a", 1, (500, 510), Done);
        h.read((5, 30), &[]);
        h.read((10, 30), &[]);
        h.read((400, 500), &[]);
        h.read((600, 700), &[]);
        assert_valid(&h);
    }

    // Rule 5.

    #[test]
    fn final_states_must_agree() {
        let mut h = H::default();
        h.final_state("n1", json!({"r": [["a", "exclusive", 1]], "s": []}));
        h.final_state("n2", json!({"r": [["a", "exclusive", 1]]}));
        assert_valid(&h);
        h.final_state("n3", json!({"r": [["b", "exclusive", 2]]}));
        assert_violation(&h, "disagree");
    }

    #[test]
    fn an_exclusive_holder_beside_another_is_a_violation() {
        let mut h = H::default();
        h.final_state(
            "n1",
            json!({"r": [["a", "exclusive", 1], ["b", "shared", 2]]}),
        );
        assert_violation(&h, "exclusive holder beside another");
        let mut h = H::default();
        h.read((0, 1), &[("a", "shared", 1), ("b", "shared", 2)]);
        assert_valid(&h);
        h.read((0, 1), &[("a", "exclusive", 1), ("b", "exclusive", 2)]);
        assert_violation(&h, "exclusive holder beside another");
    }

    #[test]
    fn unreadable_ok_ops_are_violations_and_other_workloads_are_ignored() {
        let mut h = H::default();
        h.op("x", "queue", "acquire", (0, 1), Done, json!({}), json!({}));
        h.fault("kill", "lock-1", (0, 100));
        h.op(
            "a",
            "lock",
            "acquire",
            (0, 1),
            Unknown,
            json!({}),
            Value::Null,
        );
        assert_valid(&h);
        h.op(
            "a",
            "lock",
            "acquire",
            (0, 1),
            Done,
            json!({"resource": "r", "owner": "a"}),
            json!({}),
        );
        assert_violation(&h, "without token");
    }
}
