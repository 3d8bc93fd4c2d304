//! The durable Raft log: entries, vote, committed index and purge point in
//! one redb file, written by a single group-commit thread.
//!
//! Invariants:
//! - openraft is told an append is flushed only after the transaction that
//!   holds it committed with `Durability::Immediate` (redb fsyncs);
//! - writes reach disk in the order openraft issued them, because one thread
//!   takes them from one FIFO channel; a batch is a prefix of that order;
//! - everything queued while the previous fsync ran goes into the next
//!   transaction, so concurrent appends share one fsync;
//! - `save_vote` returns only once the vote is on disk (a node must never
//!   vote twice in a term after a crash);
//! - reads are served from an in-memory mirror of the unpurged log, which is
//!   updated before the write is queued, so openraft can replicate an entry
//!   the moment it appended it.

// openraft fixes the error type of the storage traits; it is large but not ours to box.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    AnyError, Entry, LogId, LogState, OptionalSend, RaftLogReader, StorageError, StorageIOError,
    Vote,
};
use redb::{Database, ReadableTable, TableDefinition};

use crate::{NodeId, TypeConfig};

pub(crate) const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_snapshot");
const KEY_SNAPSHOT: &str = "current";

const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_PURGED: &str = "last_purged";

/// Most operations folded into one transaction; bounds the latency of the
/// first writer in a very long queue.
const MAX_BATCH_OPS: usize = 4096;

type Result<T> = std::result::Result<T, StorageError<NodeId>>;

/// Counters that show how well fsyncs are shared.
#[derive(Debug)]
pub struct LogStats {
    /// `append` calls from openraft.
    pub appends: AtomicU64,
    /// Entries written to disk.
    pub entries: AtomicU64,
    /// Transactions committed (each is one fsync).
    pub fsyncs: AtomicU64,
    /// Largest number of entries that shared one fsync.
    pub max_entries_per_fsync: AtomicU64,
    /// `append` calls made durable so far; the proposal batcher watches it
    /// to hand the leader its next entry the moment the previous one is on
    /// disk (see `node::batch_proposals`).
    flushed: tokio::sync::watch::Sender<u64>,
}

impl Default for LogStats {
    fn default() -> Self {
        Self {
            appends: AtomicU64::new(0),
            entries: AtomicU64::new(0),
            fsyncs: AtomicU64::new(0),
            max_entries_per_fsync: AtomicU64::new(0),
            flushed: tokio::sync::watch::Sender::new(0),
        }
    }
}

/// A snapshot of [`LogStats`] for reporting.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct LogStatsView {
    pub appends: u64,
    pub entries: u64,
    pub fsyncs: u64,
    pub max_entries_per_fsync: u64,
}

impl LogStats {
    /// Follow the number of appends made durable.
    pub fn flushed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.flushed.subscribe()
    }

    pub fn view(&self) -> LogStatsView {
        LogStatsView {
            appends: self.appends.load(Ordering::Relaxed),
            entries: self.entries.load(Ordering::Relaxed),
            fsyncs: self.fsyncs.load(Ordering::Relaxed),
            max_entries_per_fsync: self.max_entries_per_fsync.load(Ordering::Relaxed),
        }
    }
}

#[derive(Default)]
struct LogMem {
    entries: BTreeMap<u64, Entry<TypeConfig>>,
    last_purged: Option<LogId<NodeId>>,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
}

enum Op {
    Append {
        entries: Vec<(u64, Vec<u8>)>,
        done: LogFlushed<TypeConfig>,
    },
    TruncateFrom(u64),
    PurgeUpto {
        index: u64,
        log_id: Vec<u8>,
    },
    Meta {
        key: &'static str,
        value: Vec<u8>,
        done: Option<Done>,
    },
    Snapshot {
        bytes: Vec<u8>,
        done: Done,
    },
}

type Done = tokio::sync::oneshot::Sender<std::result::Result<(), String>>;

/// What [`open`] found on disk and the handles to keep writing it.
pub struct Opened {
    pub log: LogStore,
    pub snapshots: SnapshotWriter,
    /// The persisted snapshot, if any (bytes as given to [`SnapshotWriter`]).
    pub snapshot: Option<Vec<u8>>,
    /// The writer thread; it ends once every `LogStore` and
    /// `SnapshotWriter` clone is gone (after openraft shut down), closing
    /// the file.
    pub writer: std::thread::JoinHandle<()>,
}

/// Persists snapshots through the same writer thread (the only owner of the
/// database file), so they are ordered with log writes.
#[derive(Clone)]
pub struct SnapshotWriter {
    tx: mpsc::Sender<Op>,
}

impl SnapshotWriter {
    /// Write `bytes` as the current snapshot and wait until it is on disk.
    pub async fn persist(&self, bytes: Vec<u8>) -> std::result::Result<(), String> {
        let (done, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send(Op::Snapshot { bytes, done })
            .map_err(|_| "log writer stopped".to_string())?;
        rx.await.map_err(|_| "log writer stopped".to_string())?
    }
}

/// The log store handed to openraft. Clones share one store.
#[derive(Clone)]
pub struct LogStore {
    mem: Arc<Mutex<LogMem>>,
    tx: mpsc::Sender<Op>,
    stats: Arc<LogStats>,
}

/// Open (or create) `dir/raft.redb`, load the log and the snapshot, and
/// start the writer thread that owns the file from then on.
pub fn open(dir: &Path) -> std::result::Result<Opened, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let path = dir.join("raft.redb");
    let db = Database::create(&path).map_err(|e| format!("opening {}: {e}", path.display()))?;
    let (mem, snapshot) = load(&db).map_err(|e| format!("loading raft log: {e}"))?;
    let stats = Arc::new(LogStats::default());
    let (tx, rx) = mpsc::channel();
    let writer_stats = stats.clone();
    let writer = std::thread::Builder::new()
        .name("raft-log-writer".into())
        .spawn(move || writer(db, rx, writer_stats))
        .map_err(|e| format!("spawning log writer: {e}"))?;
    Ok(Opened {
        log: LogStore {
            mem: Arc::new(Mutex::new(mem)),
            tx: tx.clone(),
            stats,
        },
        snapshots: SnapshotWriter { tx },
        snapshot,
        writer,
    })
}

impl LogStore {
    pub fn stats(&self) -> Arc<LogStats> {
        self.stats.clone()
    }

    fn mem(&self) -> std::sync::MutexGuard<'_, LogMem> {
        self.mem.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn send(&self, op: Op) -> Result<()> {
        self.tx
            .send(op)
            .map_err(|_| StorageIOError::write_logs(AnyError::error("log writer stopped")).into())
    }

    async fn write_meta(&self, key: &'static str, value: Vec<u8>) -> Result<()> {
        let (done, rx) = tokio::sync::oneshot::channel();
        self.send(Op::Meta {
            key,
            value,
            done: Some(done),
        })?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StorageIOError::write(AnyError::error(e)).into()),
            Err(_) => Err(StorageIOError::write(AnyError::error("log writer stopped")).into()),
        }
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    // Serializing our own plain data types cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

type Loaded = (LogMem, Option<Vec<u8>>);

fn load(db: &Database) -> std::result::Result<Loaded, Box<dyn std::error::Error>> {
    let txn = db.begin_write()?;
    {
        // Make sure every table exists so read transactions never fail.
        txn.open_table(LOGS)?;
        txn.open_table(META)?;
        txn.open_table(SNAPSHOT)?;
    }
    txn.commit()?;
    let txn = db.begin_read()?;
    let meta = txn.open_table(META)?;
    let get = |k: &str| -> std::result::Result<Option<Vec<u8>>, redb::StorageError> {
        Ok(meta.get(k)?.map(|v| v.value().to_vec()))
    };
    let mut mem = LogMem::default();
    if let Some(v) = get(KEY_VOTE)? {
        mem.vote = serde_json::from_slice(&v)?;
    }
    if let Some(v) = get(KEY_COMMITTED)? {
        mem.committed = serde_json::from_slice(&v)?;
    }
    if let Some(v) = get(KEY_PURGED)? {
        mem.last_purged = serde_json::from_slice(&v)?;
    }
    let logs = txn.open_table(LOGS)?;
    for row in logs.iter()? {
        let (k, v) = row?;
        let entry: Entry<TypeConfig> = serde_json::from_slice(v.value())?;
        mem.entries.insert(k.value(), entry);
    }
    let snapshot = txn
        .open_table(SNAPSHOT)?
        .get(KEY_SNAPSHOT)?
        .map(|v| v.value().to_vec());
    Ok((mem, snapshot))
}

/// The group-commit loop: block for one op, take everything else already
/// queued, write it all in one transaction, fsync once, then acknowledge.
///
/// The committed-index hint never costs a transaction of its own: the
/// newest one waits in `hint` and rides along with the next durable batch
/// (or is written when the store closes).
fn writer(db: Database, rx: mpsc::Receiver<Op>, stats: Arc<LogStats>) {
    let mut hint: Option<Vec<u8>> = None;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_OPS {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        batch.retain_mut(|op| match op {
            Op::Meta {
                key: KEY_COMMITTED,
                value,
                ..
            } => {
                hint = Some(std::mem::take(value));
                false
            }
            _ => true,
        });
        if batch.is_empty() {
            continue;
        }
        let (appends, entries) = batch.iter().fold((0u64, 0u64), |(a, e), op| match op {
            Op::Append { entries, .. } => (a + 1, e + entries.len() as u64),
            _ => (a, e),
        });
        let result = write_batch(&db, &batch, hint.take()).map_err(|e| e.to_string());
        match &result {
            Ok(()) => {
                stats.fsyncs.fetch_add(1, Ordering::Relaxed);
                stats.entries.fetch_add(entries, Ordering::Relaxed);
                stats
                    .max_entries_per_fsync
                    .fetch_max(entries, Ordering::Relaxed);
            }
            Err(e) => tracing::error!(error = %e, "raft log write failed"),
        }
        for op in batch {
            match op {
                Op::Append { done, .. } => done.log_io_completed(
                    result
                        .clone()
                        .map_err(|e| std::io::Error::other(e.to_string())),
                ),
                Op::Meta {
                    done: Some(done), ..
                }
                | Op::Snapshot { done, .. } => {
                    let _ = done.send(result.clone());
                }
                _ => {}
            }
        }
        if result.is_ok() && appends > 0 {
            stats.flushed.send_modify(|n| *n += appends);
        }
    }
    if hint.is_some() {
        if let Err(e) = write_batch(&db, &[], hint) {
            tracing::warn!(error = %e, "committed-index hint not written at close");
        }
    }
}

fn write_batch(
    db: &Database,
    batch: &[Op],
    committed_hint: Option<Vec<u8>>,
) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let txn = db.begin_write()?;
    {
        let mut logs = txn.open_table(LOGS)?;
        let mut meta = txn.open_table(META)?;
        let mut snapshot = txn.open_table(SNAPSHOT)?;
        if let Some(hint) = &committed_hint {
            meta.insert(KEY_COMMITTED, hint.as_slice())?;
        }
        for op in batch {
            match op {
                Op::Append { entries, .. } => {
                    for (index, bytes) in entries {
                        logs.insert(*index, bytes.as_slice())?;
                    }
                }
                Op::TruncateFrom(from) => {
                    logs.retain_in(*from.., |_, _| false)?;
                }
                Op::PurgeUpto { index, log_id } => {
                    logs.retain_in(..=*index, |_, _| false)?;
                    meta.insert(KEY_PURGED, log_id.as_slice())?;
                }
                Op::Meta { key, value, .. } => {
                    meta.insert(*key, value.as_slice())?;
                }
                Op::Snapshot { bytes, .. } => {
                    snapshot.insert(KEY_SNAPSHOT, bytes.as_slice())?;
                }
            }
        }
    }
    // Durability::Immediate (redb's default) returns only after fsync.
    txn.commit()?;
    Ok(())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>> {
        Ok(self
            .mem()
            .entries
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>> {
        let mem = self.mem();
        let last = mem
            .entries
            .last_key_value()
            .map(|(_, e)| e.log_id)
            .or(mem.last_purged);
        Ok(LogState {
            last_purged_log_id: mem.last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<()> {
        self.mem().vote = Some(*vote);
        self.write_meta(KEY_VOTE, to_json(vote)).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>> {
        Ok(self.mem().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<()> {
        self.mem().committed = committed;
        // The committed index is a hint that speeds up restart (entries up to
        // it are re-applied without waiting for a leader); it need not be
        // fsynced on its own, it rides along with the next batch.
        self.send(Op::Meta {
            key: KEY_COMMITTED,
            value: to_json(&committed),
            done: None,
        })
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>> {
        Ok(self.mem().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut encoded = Vec::new();
        {
            let mut mem = self.mem();
            for entry in entries {
                encoded.push((entry.log_id.index, to_json(&entry)));
                mem.entries.insert(entry.log_id.index, entry);
            }
        }
        self.stats.appends.fetch_add(1, Ordering::Relaxed);
        self.send(Op::Append {
            entries: encoded,
            done: callback,
        })
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<()> {
        self.mem().entries.split_off(&log_id.index);
        self.send(Op::TruncateFrom(log_id.index))
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<()> {
        {
            let mut mem = self.mem();
            let keep = mem.entries.split_off(&(log_id.index + 1));
            mem.entries = keep;
            mem.last_purged = Some(log_id);
        }
        self.send(Op::PurgeUpto {
            index: log_id.index,
            log_id: to_json(&Some(log_id)),
        })
    }
}
