//! Availability: how the services answered while faults were active and
//! how fast they came back. This report only measures; it is always valid.
//!
//! Operations read: every client operation (any workload except the
//! nemesis; operations of process `"final"`, the after-healing reads that
//! other checkers use, are left out because they measure nothing about
//! faults), and the faults: process `"nemesis"`, `f = "fault"`, input
//! `{kind, target}`, injected at `invoke_us`, healed at `complete_us`.
//!
//! Stats:
//! - `workloads.<w>`: Ok/Fail/Unknown counts overall, `during_faults` (the
//!   op's `[invoke, complete]` overlaps some fault's `[injected, healed]`)
//!   and `outside_faults`, each with `failed_share`, the share of ops that
//!   were not Ok (Fail or Unknown);
//! - `faults`: per fault its id, kind, target, duration and
//!   `recovery_ms.<w>`: the time from the heal to the completion of the
//!   first Ok op of workload `w` invoked at or after the heal (`null` when
//!   none was);
//! - `faults_by_kind`: how many of each kind, and the worst recovery seen
//!   per workload for that kind.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::{str_at, Report, Violations};
use crate::history::{Op, Outcome};

/// The process of the after-healing checks (`final_state`, `drain`).
const FINAL: &str = "final";

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    ok: usize,
    fail: usize,
    unknown: usize,
}

impl Counts {
    fn add(&mut self, o: Outcome) {
        match o {
            Outcome::Ok => self.ok += 1,
            Outcome::Fail => self.fail += 1,
            Outcome::Unknown => self.unknown += 1,
        }
    }

    fn json(self) -> Value {
        let total = self.ok + self.fail + self.unknown;
        let failed_share = if total == 0 {
            0.0
        } else {
            (self.fail + self.unknown) as f64 / total as f64
        };
        json!({
            "ok": self.ok, "fail": self.fail, "unknown": self.unknown,
            "total": total, "failed_share": failed_share,
        })
    }
}

#[derive(Debug, Default)]
struct PerWorkload {
    all: Counts,
    during: Counts,
    outside: Counts,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Measure availability (see the module docs) over `ops`.
pub fn check(ops: &[Op]) -> Report {
    let mut faults: Vec<&Op> = ops.iter().filter(|o| o.is_fault()).collect();
    faults.sort_by_key(|f| (f.invoke_us, f.id));
    let clients: Vec<&Op> = ops
        .iter()
        .filter(|o| !o.is_fault() && o.process != FINAL)
        .collect();

    // Fault windows merged into disjoint spans, so "during a fault" is one
    // binary search per op however many faults overlap.
    let mut spans: Vec<(u64, u64)> = Vec::new();
    for f in &faults {
        let (start, end) = (f.invoke_us, f.complete_us.max(f.invoke_us));
        match spans.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => spans.push((start, end)),
        }
    }
    let during = |op: &Op| {
        // The last span starting no later than the op completes.
        let i = spans.partition_point(|s| s.0 <= op.complete_us);
        i > 0 && spans[i - 1].1 >= op.invoke_us
    };

    let mut workloads: BTreeMap<&str, PerWorkload> = BTreeMap::new();
    // Ok ops per workload by invocation, for the recovery search.
    let mut ok_by_invoke: BTreeMap<&str, Vec<(u64, u64)>> = BTreeMap::new();
    for op in &clients {
        let w = workloads.entry(op.workload.as_str()).or_default();
        w.all.add(op.outcome);
        if during(op) {
            w.during.add(op.outcome);
        } else {
            w.outside.add(op.outcome);
        }
        if op.outcome == Outcome::Ok {
            ok_by_invoke
                .entry(op.workload.as_str())
                .or_default()
                .push((op.invoke_us, op.complete_us));
        }
    }
    for list in ok_by_invoke.values_mut() {
        list.sort_unstable();
    }

    let mut fault_stats = Vec::new();
    let mut by_kind: BTreeMap<String, (usize, BTreeMap<&str, f64>)> = BTreeMap::new();
    for f in &faults {
        let kind = str_at(&f.input, "kind").unwrap_or("unknown").to_string();
        let healed = f.complete_us.max(f.invoke_us);
        let mut recovery = Map::new();
        let entry = by_kind.entry(kind.clone()).or_default();
        entry.0 += 1;
        for (w, list) in &ok_by_invoke {
            let i = list.partition_point(|&(invoke, _)| invoke < healed);
            // The first Ok op invoked after the heal need not be the first
            // to complete: take the earliest completion among those.
            let first = list[i..].iter().map(|&(_, complete)| complete).min();
            let value = first.map(|c| ms(c.saturating_sub(healed)));
            if let Some(r) = value {
                let worst = entry.1.entry(w).or_insert(0.0);
                *worst = worst.max(r);
            }
            recovery.insert((*w).to_string(), json!(value));
        }
        fault_stats.push(json!({
            "id": f.id,
            "kind": kind,
            "target": f.input.get("target").cloned().unwrap_or(Value::Null),
            "injected_us": f.invoke_us,
            "healed_us": healed,
            "duration_ms": ms(healed - f.invoke_us),
            "recovery_ms": recovery,
        }));
    }

    let workloads: Map<String, Value> = workloads
        .into_iter()
        .map(|(w, c)| {
            (
                w.to_string(),
                json!({
                    "all": c.all.json(),
                    "during_faults": c.during.json(),
                    "outside_faults": c.outside.json(),
                }),
            )
        })
        .collect();
    let by_kind: Map<String, Value> = by_kind
        .into_iter()
        .map(|(k, (n, worst))| (k, json!({"count": n, "worst_recovery_ms": worst})))
        .collect();
    let stats = json!({
        "workloads": workloads,
        "faults": fault_stats,
        "faults_by_kind": by_kind,
    });
    Violations::default().into_report("availability", stats)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::check::testing::H;
    use crate::history::Outcome::{Fail, Ok as Done, Unknown};

    impl H {
        fn client(&mut self, workload: &str, t: (u64, u64), outcome: Outcome) -> u64 {
            self.op("c", workload, "x", t, outcome, json!({}), Value::Null)
        }
    }

    #[test]
    fn counts_split_by_fault_windows_and_recovery_is_measured_from_the_heal() {
        let mut h = H::default();
        h.fault("kill", "lock-1", (1_000, 5_000));
        h.fault("pause", "queue-2", (4_000, 6_000));
        // Before, across the start, inside, after.
        h.client("lock", (0, 500), Done);
        h.client("lock", (900, 1_100), Unknown);
        h.client("lock", (2_000, 3_000), Fail);
        h.client("lock", (6_000, 6_500), Fail);
        h.client("lock", (7_000, 9_000), Done);
        h.client("lock", (7_500, 8_000), Done);
        h.client("queue", (5_500, 5_600), Done);
        // The final checks are not client traffic.
        h.op(
            "final",
            "lock",
            "final_state",
            (20_000, 20_001),
            Done,
            json!({}),
            Value::Null,
        );
        let r = check(&h.0);
        assert!(r.valid);
        let lock = &r.stats["workloads"]["lock"];
        assert_eq!(lock["all"]["total"], 6);
        assert_eq!(lock["during_faults"]["unknown"], 1);
        assert_eq!(lock["during_faults"]["fail"], 2);
        assert_eq!(lock["during_faults"]["failed_share"], 1.0);
        assert_eq!(lock["outside_faults"]["ok"], 3);
        let kill = &r.stats["faults"][0];
        assert_eq!(kill["kind"], "kill");
        assert_eq!(kill["duration_ms"], 4.0);
        // The first Ok lock op invoked after 5000 µs completes at 8000.
        assert_eq!(kill["recovery_ms"]["lock"], 3.0);
        assert_eq!(kill["recovery_ms"]["queue"], 0.6);
        // No queue op was invoked after the pause healed.
        assert_eq!(r.stats["faults"][1]["recovery_ms"]["queue"], Value::Null);
        assert_eq!(r.stats["faults_by_kind"]["pause"]["count"], 1);
    }

    #[test]
    fn a_history_without_faults_counts_everything_outside() {
        let mut h = H::default();
        h.client("cache", (0, 1), Done);
        h.client("cache", (0, 1), Fail);
        let r = check(&h.0);
        assert!(r.valid);
        assert_eq!(r.stats["workloads"]["cache"]["outside_faults"]["total"], 2);
        assert_eq!(
            r.stats["workloads"]["cache"]["outside_faults"]["failed_share"],
            0.5
        );
        assert_eq!(r.stats["faults"], json!([]));
    }
}
