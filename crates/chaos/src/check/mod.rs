//! Checkers: pure functions over a history, one per promise the services
//! make. Each returns a [`Report`]; a run fails when any report has a
//! violation.
//!
//! The operations each checker reads (`Op::workload`, `Op::f`, `input`,
//! `output`) are listed in its module.

use serde::Serialize;
use serde_json::Value;

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
