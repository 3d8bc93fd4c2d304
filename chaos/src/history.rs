//! A history: every operation a client performed and every fault the
//! nemesis injected, one JSON object per line, as Jepsen records them.
//!
//! An [`Op`] is written once it completed (or was given up on), so one
//! record holds its invocation and its completion. Times are wall-clock
//! microseconds since the UNIX epoch: every process of a run shares this
//! host's clock, so an operation's times compare directly with the lock
//! service's lease expiries (`expires_at_ms`, the leader's clock).
//!
//! Invariants:
//! - `invoke_us <= complete_us`;
//! - `Outcome::Ok` means the operation certainly took effect (or, for a
//!   read, returned what was there); `Fail` means it certainly did not;
//!   `Unknown` means it may or may not have (a timeout, a cut connection,
//!   a 5xx), and a checker must allow both;
//! - a fault is an `Op` of process [`NEMESIS`], `f = "fault"`, whose
//!   invoke and complete times are when it was injected and healed.

use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The process name of injected faults.
pub const NEMESIS: &str = "nemesis";

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It certainly happened.
    Ok,
    /// It certainly did not happen.
    Fail,
    /// It may or may not have happened.
    Unknown,
}

/// One recorded operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Op {
    /// Unique in its history, in the order operations were invoked.
    pub id: u64,
    /// The client that performed it (one client runs one operation at a
    /// time), or [`NEMESIS`].
    pub process: String,
    /// The workload it belongs to: "lock", "queue", "cache" or "nemesis".
    pub workload: String,
    /// What it was, per workload (see the checkers in [`crate::check`]).
    pub f: String,
    /// Its arguments.
    pub input: Value,
    /// When it was invoked and when it completed, µs since the UNIX epoch.
    pub invoke_us: u64,
    pub complete_us: u64,
    pub outcome: Outcome,
    /// What it returned (`null` when nothing); for a failure or an unknown
    /// outcome, `{"code": …, "message": …}` where known.
    pub output: Value,
}

impl Op {
    pub fn is_fault(&self) -> bool {
        self.process == NEMESIS
    }
}

/// Wall-clock µs since the UNIX epoch.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Collects a run's operations, shared by every client task, and writes
/// each one to the history file as it completes.
#[derive(Clone)]
pub struct Recorder {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    next_id: u64,
    ops: Vec<Op>,
    file: Option<std::io::BufWriter<std::fs::File>>,
}

/// An operation invoked and not yet recorded (see [`Recorder::invoke`]).
#[derive(Debug)]
pub struct Pending {
    id: u64,
    process: String,
    workload: String,
    f: String,
    input: Value,
    invoke_us: u64,
}

impl Recorder {
    /// A recorder that also writes every op to `path` (JSON lines).
    pub fn to_file(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::File::create(path)?;
        Ok(Self::with(Some(std::io::BufWriter::new(file))))
    }

    /// A recorder that only keeps ops in memory.
    pub fn in_memory() -> Self {
        Self::with(None)
    }

    fn with(file: Option<std::io::BufWriter<std::fs::File>>) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                next_id: 0,
                ops: Vec::new(),
                file,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Note an operation's invocation, now.
    pub fn invoke(&self, process: &str, workload: &str, f: &str, input: Value) -> Pending {
        let mut g = self.lock();
        let id = g.next_id;
        g.next_id += 1;
        Pending {
            id,
            process: process.to_string(),
            workload: workload.to_string(),
            f: f.to_string(),
            input,
            invoke_us: now_us(),
        }
    }

    /// Record `p` as completed now with `outcome` and `output`.
    pub fn complete(&self, p: Pending, outcome: Outcome, output: Value) -> Op {
        let op = Op {
            id: p.id,
            process: p.process,
            workload: p.workload,
            f: p.f,
            input: p.input,
            invoke_us: p.invoke_us,
            complete_us: now_us().max(p.invoke_us),
            outcome,
            output,
        };
        let mut g = self.lock();
        if let Some(f) = g.file.as_mut() {
            if let Ok(line) = serde_json::to_string(&op) {
                let _ = writeln!(f, "{line}");
            }
        }
        g.ops.push(op.clone());
        op
    }

    /// Flush the file.
    pub fn flush(&self) {
        if let Some(f) = self.lock().file.as_mut() {
            let _ = f.flush();
        }
    }

    /// Every op recorded so far, in invocation order.
    pub fn ops(&self) -> Vec<Op> {
        let mut ops = self.lock().ops.clone();
        ops.sort_by_key(|o| o.id);
        ops
    }
}

/// Read a history file written by a [`Recorder`], in invocation order.
pub fn load(path: &Path) -> std::io::Result<Vec<Op>> {
    let file = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut ops = Vec::new();
    for (n, line) in file.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let op: Op = serde_json::from_str(&line).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}:{}: {e}", path.display(), n + 1),
            )
        })?;
        ops.push(op);
    }
    ops.sort_by_key(|o| o.id);
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ops_round_trip_through_the_file_in_invocation_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let rec = Recorder::to_file(&path).unwrap();
        let a = rec.invoke("c1", "lock", "acquire", json!({"resource": "r"}));
        let b = rec.invoke("c2", "lock", "acquire", json!({"resource": "r"}));
        rec.complete(b, Outcome::Fail, json!({"code": "lock_held"}));
        rec.complete(a, Outcome::Ok, json!({"token": 3}));
        rec.flush();
        let back = load(&path).unwrap();
        assert_eq!(back, rec.ops());
        assert_eq!(back[0].process, "c1");
        assert_eq!(back[0].output["token"], 3);
        assert!(back.iter().all(|o| o.invoke_us <= o.complete_us));
    }
}
