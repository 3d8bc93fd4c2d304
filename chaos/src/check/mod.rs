//! Checkers: pure functions over a history, one per promise the services
//! make. Each returns a [`Report`]; a run fails when any report has a
//! violation.
//!
//! - [`lock`]: one exclusive holder at a time, growing fencing tokens, a
//!   fenced register that never takes a stale token, holds that do not
//!   vanish, lock nodes that agree at the end.
//! - [`queue`]: Jepsen's total queue: nothing acknowledged is lost, nothing
//!   never enqueued appears, nothing acked comes back; duplicates counted.
//! - [`cache`]: per-key linearizability of a register whose reads may miss.
//! - [`availability`]: measures only: ok/fail/unknown during and outside
//!   faults, and the time to recover after each fault.
//!
//! The operations each checker reads (`Op::workload`, `Op::f`, `input`,
//! `output`) are listed in its module. Every checker ignores the
//! operations of other workloads, and treats a record it cannot read (a
//! missing field, a wrong type) as a violation or a skipped op that it
//! counts, never as a reason to panic: the history comes from a run that
//! may itself have gone wrong.
//!
//! Time comparisons share one convention: `a` precedes `b` in real time
//! only when `a.complete_us < b.invoke_us`. Equal timestamps are treated
//! as concurrent, because two events in the same microsecond may have
//! happened in either order; a checker never reports a violation that
//! rests on the order of two equal timestamps.

use serde::Serialize;
use serde_json::Value;

use crate::history::Op;

pub mod availability;
pub mod cache;
pub mod lock;
pub mod queue;

/// What a checker found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub checker: String,
    /// No violation found.
    pub valid: bool,
    /// Each violation, described so a person can find it in the history
    /// (operation ids, resources, keys, values).
    pub violations: Vec<String>,
    /// Counts worth printing (operations checked, duplicates, …).
    pub stats: Value,
}

/// Every checker over one history, in a fixed order (lock, queue, cache,
/// availability).
pub fn check_all(ops: &[Op]) -> Vec<Report> {
    vec![
        lock::check(ops),
        queue::check(ops),
        cache::check(ops),
        availability::check(ops),
    ]
}

/// The most violations a report lists one by one. A broken run can produce
/// thousands of the same kind; the first ones locate the bug and the rest
/// are only counted (`violations_total` in the stats).
const MAX_LISTED: usize = 100;

/// Violations found so far: the first [`MAX_LISTED`] described, all
/// counted.
#[derive(Debug, Default)]
pub(crate) struct Violations {
    listed: Vec<String>,
    total: usize,
}

impl Violations {
    pub(crate) fn push(&mut self, msg: impl FnOnce() -> String) {
        self.total += 1;
        if self.listed.len() < MAX_LISTED {
            self.listed.push(msg());
        }
    }

    /// The report; `stats` gains `violations_total` when it is an object.
    pub(crate) fn into_report(self, checker: &str, mut stats: Value) -> Report {
        if let Value::Object(map) = &mut stats {
            map.insert("violations_total".into(), self.total.into());
        }
        let mut violations = self.listed;
        if self.total > violations.len() {
            violations.push(format!(
                "... and {} more violations not listed",
                self.total - violations.len()
            ));
        }
        Report {
            checker: checker.to_string(),
            valid: self.total == 0,
            violations,
            stats,
        }
    }
}

/// `v[field]` as a u64, if it is one.
pub(crate) fn u64_at(v: &Value, field: &str) -> Option<u64> {
    v.get(field).and_then(Value::as_u64)
}

/// `v[field]` as a string, if it is one.
pub(crate) fn str_at<'a>(v: &'a Value, field: &str) -> Option<&'a str> {
    v.get(field).and_then(Value::as_str)
}

/// A name (resource, queue, key) as text: a string as itself, any other
/// JSON by its rendering, so that a history using numbers as names still
/// groups correctly.
pub(crate) fn name_at(v: &Value, field: &str) -> Option<String> {
    match v.get(field)? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// Terse histories for the checkers' tests.
#[cfg(test)]
pub(crate) mod testing {
    use serde_json::Value;

    use super::Report;
    use crate::history::{Op, Outcome};

    /// `checker` finds `h` valid.
    pub(crate) fn assert_valid(checker: fn(&[Op]) -> Report, h: &H) -> Report {
        let r = checker(&h.0);
        assert!(r.valid, "{r:#?}");
        r
    }

    /// `checker` finds violations in `h`, and every one mentions `needle`.
    pub(crate) fn assert_violation(checker: fn(&[Op]) -> Report, h: &H, needle: &str) -> Report {
        let r = checker(&h.0);
        assert!(!r.valid, "expected a violation: {r:#?}");
        assert!(
            r.violations.iter().all(|m| m.contains(needle)),
            "expected only '{needle}' violations: {:#?}",
            r.violations
        );
        r
    }

    /// A history under construction; ids are given in push order.
    #[derive(Default)]
    pub(crate) struct H(pub Vec<Op>);

    impl H {
        /// Append an op and return its id.
        #[allow(clippy::too_many_arguments)]
        pub(crate) fn op(
            &mut self,
            process: &str,
            workload: &str,
            f: &str,
            (invoke_us, complete_us): (u64, u64),
            outcome: Outcome,
            input: Value,
            output: Value,
        ) -> u64 {
            let id = self.0.len() as u64;
            self.0.push(Op {
                id,
                process: process.to_string(),
                workload: workload.to_string(),
                f: f.to_string(),
                input,
                invoke_us,
                complete_us,
                outcome,
                output,
            });
            id
        }

        /// A fault injected at `t.0` and healed at `t.1`.
        pub(crate) fn fault(&mut self, kind: &str, target: &str, t: (u64, u64)) -> u64 {
            self.op(
                crate::history::NEMESIS,
                "nemesis",
                "fault",
                t,
                Outcome::Ok,
                serde_json::json!({"kind": kind, "target": target}),
                Value::Null,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_all_runs_every_checker_and_an_empty_history_is_valid() {
        let reports = check_all(&[]);
        let names: Vec<_> = reports.iter().map(|r| r.checker.as_str()).collect();
        assert_eq!(names, ["lock", "queue", "cache", "availability"]);
        assert!(reports.iter().all(|r| r.valid), "{reports:#?}");
    }

    #[test]
    fn violations_beyond_the_cap_are_counted_not_listed() {
        let mut v = Violations::default();
        for i in 0..MAX_LISTED + 5 {
            v.push(|| format!("v{i}"));
        }
        let r = v.into_report("x", serde_json::json!({}));
        assert!(!r.valid);
        assert_eq!(r.violations.len(), MAX_LISTED + 1);
        assert_eq!(r.stats["violations_total"], MAX_LISTED + 5);
    }
}
