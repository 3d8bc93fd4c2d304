//! The durable Raft log: entries, vote, committed index and purge point in
//! a segmented write-ahead log ([`crate::wal`]) under `dir/log/`, written by
//! one group-commit thread, and the newest snapshot in `dir/snapshot.bin`,
//! written apart from it ([`SnapshotWriter`]).
//!
//! Invariants:
//! - openraft is told an append is flushed only after the batch that holds
//!   it was written and `fdatasync`ed;
//! - writes reach disk in the order openraft issued them: one thread takes
//!   them from one FIFO channel, and a batch is a prefix of that order;
//! - fail-stop: the first I/O error poisons the log ([`crate::wal`]); every
//!   later write fails, and [`Durability::failed`] tells the node to stop;
//! - on open, the entries must be contiguous (a hole refuses the open), and
//!   a vote this node had committed for itself comes back uncommitted: a
//!   restarted leader must win a new term before it leads again (see
//!   [`open`]);
//! - everything queued while the previous fsync ran goes into the next
//!   batch, so concurrent appends share one fsync;
//! - `save_vote` returns only once the vote is on disk (a node must never
//!   vote twice in a term after a crash);
//! - a snapshot is written to a temporary file, synced and renamed over the
//!   old one, so a crash leaves the old or the new snapshot, never a mix;
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

use crate::wal::{Record, Wal};
use crate::{NodeId, TypeConfig};
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    AnyError, Entry, LogId, LogState, OptionalSend, RaftLogReader, StorageError, StorageIOError,
    Vote,
};

const LOG_DIR: &str = "log";
const SNAPSHOT_FILE: &str = "snapshot.bin";
/// The file of the format before the segmented log; refused rather than
/// silently ignored.
const OLD_FORMAT_FILE: &str = "raft.redb";

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
    /// Batches made durable (each is one fsync).
    pub fsyncs: AtomicU64,
    /// Largest number of entries that shared one fsync.
    pub max_entries_per_fsync: AtomicU64,
    /// Time spent writing and syncing batches, in microseconds.
    pub write_us: AtomicU64,
    /// The slowest durable batch, in microseconds (a disk stall shows here).
    pub max_write_us: AtomicU64,
    /// Linger windows the proposal batcher opened for a lone command, and
    /// how many of them caught a second one (see `linger`).
    pub linger_windows: AtomicU64,
    pub linger_caught: AtomicU64,
    /// Time linger windows stayed open, in microseconds.
    pub linger_us: AtomicU64,
    /// Entries the batcher proposed, and the client commands they carried.
    pub batches: AtomicU64,
    pub batched_commands: AtomicU64,
}

/// How far the log is durable, and whether it failed.
#[derive(Debug)]
pub struct Durability {
    /// `append` calls made so far.
    submitted: AtomicU64,
    /// `append` calls made durable so far, in order. The proposal batcher
    /// watches it to hand the leader its next entry the moment the previous
    /// one is on disk (see `proposer::batch_proposals`); a follower's append
    /// answer waits for it to catch up with `submitted` (see
    /// [`Durability::all_flushed`]).
    flushed: tokio::sync::watch::Sender<u64>,
    /// The first I/O error of the log; the node stops on it (fail-stop).
    failure: tokio::sync::watch::Sender<Option<String>>,
}

impl Default for Durability {
    fn default() -> Self {
        Self {
            submitted: AtomicU64::new(0),
            flushed: tokio::sync::watch::Sender::new(0),
            failure: tokio::sync::watch::Sender::new(None),
        }
    }
}

impl Durability {
    /// Follow the number of appends made durable.
    pub fn flushed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.flushed.subscribe()
    }

    /// Wait until every append submitted so far is durable; `Err` with the
    /// log's first error if it failed instead.
    ///
    /// A follower's openraft core waits for the flush of each append it
    /// makes, but it answers at once when a request holds nothing it lacks,
    /// and what it already holds may still be in the writer's queue: entries
    /// it appended as a leader whose flush never came before it lost the
    /// leadership. Answering "I have it" for those before they are on disk
    /// would count this node toward a commit that a crash could undo.
    pub async fn all_flushed(&self) -> std::result::Result<(), String> {
        let target = self.submitted.load(Ordering::SeqCst);
        let mut flushed = self.flushed.subscribe();
        let mut failure = self.failure.subscribe();
        tokio::select! {
            r = flushed.wait_for(|n| *n >= target) => r.map(|_| ()).map_err(|e| e.to_string()),
            f = failure.wait_for(|f| f.is_some()) => Err(match f {
                Ok(f) => f.clone().unwrap_or_default(),
                Err(e) => e.to_string(),
            }),
        }
    }

    /// Resolves with the log's first I/O error, once there is one.
    pub async fn failed(&self) -> String {
        let mut failure = self.failure.subscribe();
        let first = match failure.wait_for(|f| f.is_some()).await {
            Ok(f) => f.clone(),
            Err(_) => None,
        };
        match first {
            Some(first) => first,
            // The store is gone; so is the node.
            None => std::future::pending().await,
        }
    }

    /// The first error, if the log failed.
    pub fn failure(&self) -> Option<String> {
        self.failure.borrow().clone()
    }

    fn fail(&self, error: &str) {
        self.failure.send_if_modified(|f| {
            if f.is_some() {
                return false;
            }
            tracing::error!(error, "raft log write failed: this node stops (fail-stop)");
            *f = Some(error.to_string());
            true
        });
    }
}

impl Default for LogStats {
    fn default() -> Self {
        Self {
            appends: AtomicU64::new(0),
            entries: AtomicU64::new(0),
            fsyncs: AtomicU64::new(0),
            max_entries_per_fsync: AtomicU64::new(0),
            write_us: AtomicU64::new(0),
            max_write_us: AtomicU64::new(0),
            linger_windows: AtomicU64::new(0),
            linger_caught: AtomicU64::new(0),
            linger_us: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            batched_commands: AtomicU64::new(0),
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
    /// Mean time of one durable batch (write + fsync), in ms.
    pub mean_write_ms: f64,
    /// The slowest durable batch so far, in ms.
    pub max_write_ms: f64,
    pub linger_windows: u64,
    pub linger_caught: u64,
    /// Mean time a linger window stayed open, in ms.
    pub mean_linger_ms: f64,
    pub batches: u64,
    pub batched_commands: u64,
}

impl LogStats {
    /// Count one durable batch of `entries` entries that started at `started`.
    fn record_batch(
        &self,
        result: &std::io::Result<()>,
        entries: u64,
        started: std::time::Instant,
    ) {
        let took = started.elapsed().as_micros() as u64;
        self.write_us.fetch_add(took, Ordering::Relaxed);
        self.max_write_us.fetch_max(took, Ordering::Relaxed);
        match result {
            Ok(()) => {
                self.fsyncs.fetch_add(1, Ordering::Relaxed);
                self.entries.fetch_add(entries, Ordering::Relaxed);
                self.max_entries_per_fsync
                    .fetch_max(entries, Ordering::Relaxed);
            }
            Err(e) => tracing::error!(error = %e, "raft log write failed"),
        }
    }

    pub fn view(&self) -> LogStatsView {
        LogStatsView {
            appends: self.appends.load(Ordering::Relaxed),
            entries: self.entries.load(Ordering::Relaxed),
            fsyncs: self.fsyncs.load(Ordering::Relaxed),
            max_entries_per_fsync: self.max_entries_per_fsync.load(Ordering::Relaxed),
            mean_write_ms: self.write_us.load(Ordering::Relaxed) as f64
                / 1000.0
                / self.fsyncs.load(Ordering::Relaxed).max(1) as f64,
            max_write_ms: self.max_write_us.load(Ordering::Relaxed) as f64 / 1000.0,
            linger_windows: self.linger_windows.load(Ordering::Relaxed),
            linger_caught: self.linger_caught.load(Ordering::Relaxed),
            mean_linger_ms: self.linger_us.load(Ordering::Relaxed) as f64
                / 1000.0
                / self.linger_windows.load(Ordering::Relaxed).max(1) as f64,
            batches: self.batches.load(Ordering::Relaxed),
            batched_commands: self.batched_commands.load(Ordering::Relaxed),
        }
    }
}

/// The in-memory mirror of what the log holds.
#[derive(Default)]
pub(crate) struct LogMem {
    pub(crate) entries: BTreeMap<u64, Entry<TypeConfig>>,
    pub(crate) last_purged: Option<LogId<NodeId>>,
    pub(crate) vote: Option<Vote<NodeId>>,
    pub(crate) committed: Option<LogId<NodeId>>,
}

enum Op {
    Append {
        entries: Vec<Entry<TypeConfig>>,
        done: LogFlushed<TypeConfig>,
    },
    TruncateFrom(u64),
    PurgeUpto(LogId<NodeId>),
    Vote {
        vote: Vote<NodeId>,
        done: Done,
    },
}

type Done = tokio::sync::oneshot::Sender<std::result::Result<(), String>>;

/// The newest committed-index hint not yet written (see `save_committed`).
/// A slot, not a channel message: openraft reports every commit, and waking
/// the writer thread for each one, only for it to find nothing to write,
/// was a thread wake-up per entry on every node.
type Hint = Arc<Mutex<Option<Option<LogId<NodeId>>>>>;

/// What [`open`] found on disk and the handles to keep writing it.
pub struct Opened {
    pub log: LogStore,
    pub snapshots: SnapshotWriter,
    /// The persisted snapshot, if any (bytes as given to [`SnapshotWriter`]).
    pub snapshot: Option<Vec<u8>>,
    /// The writer thread; it ends once every `LogStore` clone is gone
    /// (after openraft shut down), closing the files.
    pub writer: std::thread::JoinHandle<()>,
}

/// Writes the snapshot file, one write at a time, on a blocking thread of
/// its own rather than the log writer's: a large snapshot (40 MB took
/// ~0.3 s with its fsyncs) queued there held up every log append behind
/// it. No ordering with the log is lost: openraft purges the log only after
/// `persist` has returned, so the snapshot is on disk before any purge is
/// even queued. One write at a time guards the file, even against a write
/// whose caller stopped waiting; which snapshot may replace which (never an
/// older one) is the state machine store's decision.
#[derive(Clone)]
pub struct SnapshotWriter {
    dir: Arc<Path>,
    one_at_a_time: Arc<Mutex<()>>,
}

impl SnapshotWriter {
    /// Write `bytes` as the current snapshot and wait until it is on disk.
    pub async fn persist(&self, bytes: Vec<u8>) -> std::result::Result<(), String> {
        let (dir, lock) = (self.dir.clone(), self.one_at_a_time.clone());
        tokio::task::spawn_blocking(move || {
            let _only = lock.lock().unwrap_or_else(|e| e.into_inner());
            write_snapshot(&dir, &bytes)
                .map_err(|e| format!("writing the snapshot in {}: {e}", dir.display()))
        })
        .await
        .map_err(|e| format!("snapshot write did not finish: {e}"))?
    }
}

/// The log store handed to openraft. Clones share one store.
#[derive(Clone)]
pub struct LogStore {
    mem: Arc<Mutex<LogMem>>,
    tx: mpsc::Sender<Op>,
    hint: Hint,
    stats: Arc<LogStats>,
    durability: Arc<Durability>,
}

/// Open (or create) node `me`'s log and snapshot in `dir`, load them, and
/// start the writer thread that writes the files from then on.
///
/// A vote that node `me` had committed for itself (it was the leader) is
/// loaded uncommitted, so openraft starts it as a follower, not as the
/// leader of its old term. Our openraft patch lets a leader replicate an
/// entry before its own flush; if it crashed before that flush, followers
/// hold an entry under `(term, me, index)` that its own log lacks, and
/// restored as leader of that term it would number its next entry with the
/// same log id: two different commands under one log id, applied by
/// different replicas (issue "raft-core safety", scenario 1). Uncommitted,
/// the vote still keeps it from voting for anyone below its term, and
/// openraft only ever campaigns for a higher term, which needs a quorum whose
/// logs are no newer than its own. The vote on disk is left as it is: the
/// next vote this node saves is higher.
pub fn open(dir: &Path, me: NodeId) -> std::result::Result<Opened, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    if dir.join(OLD_FORMAT_FILE).exists() && !dir.join(LOG_DIR).exists() {
        return Err(format!(
            "{} holds a Raft log in the old single-file format ({OLD_FORMAT_FILE}); \
             this version keeps it under {LOG_DIR}/ — start this node with an empty data dir \
             (it catches up from the other members)",
            dir.display()
        ));
    }
    let mut mem = LogMem::default();
    let wal = Wal::open(&dir.join(LOG_DIR), |r| mem.replay(r))
        .map_err(|e| format!("opening the raft log in {}: {e}", dir.display()))?;
    mem.check_contiguous()
        .map_err(|e| format!("the raft log in {} is damaged: {e}", dir.display()))?;
    if let Some(v) = mem.vote {
        if v.is_committed() && v.leader_id().voted_for() == Some(me) {
            tracing::info!(
                vote = %v,
                "this node led before the restart; it follows until it wins a new term"
            );
            mem.vote = Some(Vote::new(v.leader_id().term, me));
        }
    }
    let snapshot_path = dir.join(SNAPSHOT_FILE);
    let snapshot = match std::fs::read(&snapshot_path) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("reading {}: {e}", snapshot_path.display())),
    };
    let stats = Arc::new(LogStats::default());
    let durability = Arc::new(Durability::default());
    let (tx, rx) = mpsc::channel();
    let hint = Hint::default();
    let writer = {
        let (stats, hint, durability) = (stats.clone(), hint.clone(), durability.clone());
        std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || writer(wal, rx, stats, hint, durability))
            .map_err(|e| format!("spawning log writer: {e}"))?
    };
    Ok(Opened {
        log: LogStore {
            mem: Arc::new(Mutex::new(mem)),
            tx: tx.clone(),
            hint,
            stats,
            durability,
        },
        snapshots: SnapshotWriter {
            dir: Arc::from(dir),
            one_at_a_time: Arc::default(),
        },
        snapshot,
        writer,
    })
}

impl LogMem {
    /// Rebuild the mirror from one replayed record.
    pub(crate) fn replay(&mut self, r: Record) {
        match r {
            Record::Header {
                vote,
                committed,
                purged,
            } => {
                self.vote = vote;
                self.committed = committed;
                if let Some(p) = purged {
                    self.purge(p);
                }
            }
            Record::Entries(es) => {
                for e in es {
                    self.entries.insert(e.log_id.index, e);
                }
            }
            Record::Truncate(from) => {
                self.entries.split_off(&from);
            }
            Record::Purge(p) => self.purge(p),
            Record::Vote(v) => self.vote = Some(v),
            Record::Committed(c) => self.committed = c,
        }
    }

    fn purge(&mut self, upto: LogId<NodeId>) {
        self.entries = self.entries.split_off(&(upto.index + 1));
        self.last_purged = Some(upto);
    }

    /// The replayed entries must follow the purge point and each other
    /// without a gap. A hole (a batch lost while a later one was kept, as
    /// when a write went on after a failed one) would let this node report
    /// a log it does not have; it must not start on it.
    pub(crate) fn check_contiguous(&self) -> std::result::Result<(), String> {
        let mut expected = self.last_purged.map(|p| p.index + 1);
        for index in self.entries.keys() {
            if let Some(want) = expected {
                if *index != want {
                    return Err(format!(
                        "entry {want} is missing (the next one on disk is {index})"
                    ));
                }
            }
            expected = Some(index + 1);
        }
        Ok(())
    }
}

/// A read-only view of the local log's end. Unlike a [`LogStore`] clone it
/// does not keep the writer thread alive.
#[derive(Clone)]
pub struct LogTail(Arc<Mutex<LogMem>>);

impl LogTail {
    /// Index of the newest entry in the local log (appended, maybe not yet
    /// committed).
    pub fn last_index(&self) -> Option<u64> {
        let mem = self.0.lock().unwrap_or_else(|e| e.into_inner());
        mem.entries.last_key_value().map(|(i, _)| *i)
    }

    /// Id of the newest entry in the local log, or of the snapshot's last
    /// entry when the log behind it was purged.
    pub fn last_log_id(&self) -> Option<LogId<NodeId>> {
        let mem = self.0.lock().unwrap_or_else(|e| e.into_inner());
        mem.entries
            .last_key_value()
            .map(|(_, e)| e.log_id)
            .or(mem.last_purged)
    }
}

impl LogStore {
    pub fn tail(&self) -> LogTail {
        LogTail(self.mem.clone())
    }

    pub fn stats(&self) -> Arc<LogStats> {
        self.stats.clone()
    }

    pub fn durability(&self) -> Arc<Durability> {
        self.durability.clone()
    }

    fn mem(&self) -> std::sync::MutexGuard<'_, LogMem> {
        self.mem.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn send(&self, op: Op) -> Result<()> {
        if let Some(first) = self.durability.failure() {
            return Err(StorageIOError::write_logs(AnyError::error(format!(
                "the raft log failed earlier: {first}"
            )))
            .into());
        }
        self.tx.send(op).map_err(|_| {
            // The writer thread is gone (it panicked): nothing will ever be
            // flushed again, so the log has failed.
            self.durability.fail("the log writer thread stopped");
            StorageIOError::write_logs(AnyError::error("log writer stopped")).into()
        })
    }
}

/// Who waits for a batch, and how to tell them.
enum Ack {
    Flushed(LogFlushed<TypeConfig>),
    Done(Done),
}

/// The group-commit loop: block for one op, take everything else already
/// queued, write it all as one batch with one fsync, then acknowledge.
///
/// The committed-index hint never costs a batch of its own: the newest one
/// waits in the `hint` slot and rides along with the next durable batch (or
/// is written when the store closes).
fn writer(
    mut wal: Wal,
    rx: mpsc::Receiver<Op>,
    stats: Arc<LogStats>,
    hint: Hint,
    durability: Arc<Durability>,
) {
    // A panic here would leave every waiter waiting: report it as the
    // log's failure on the way out.
    struct FailOnPanic(Arc<Durability>);
    impl Drop for FailOnPanic {
        fn drop(&mut self) {
            if std::thread::panicking() {
                self.0.fail("the log writer thread panicked");
            }
        }
    }
    let _guard = FailOnPanic(durability.clone());
    let take_hint = || hint.lock().unwrap_or_else(|e| e.into_inner()).take();
    while let Ok(first) = rx.recv() {
        // Taken before the queue is drained: openraft queues an entry
        // before it reports the entry committed, so every entry this hint
        // covers is in this batch or an earlier one, and the hint (written
        // after the batch's entries) never points past the log on disk.
        let mut committed = take_hint();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_OPS {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        if batch.len() == MAX_BATCH_OPS {
            // Ops are left in the queue, so the hint may cover some of
            // them: keep it for the next batch unless a newer one came.
            let mut slot = hint.lock().unwrap_or_else(|e| e.into_inner());
            if slot.is_none() {
                *slot = committed.take();
            } else {
                committed = None;
            }
        }
        let mut records = Vec::with_capacity(batch.len() + 1);
        let mut acks = Vec::with_capacity(batch.len());
        let mut purged = None;
        let (mut appends, mut entries) = (0u64, 0u64);
        for op in batch {
            match op {
                Op::Append { entries: es, done } => {
                    appends += 1;
                    entries += es.len() as u64;
                    records.push(Record::Entries(es));
                    acks.push(Ack::Flushed(done));
                }
                Op::TruncateFrom(from) => records.push(Record::Truncate(from)),
                Op::PurgeUpto(id) => {
                    records.push(Record::Purge(id));
                    purged = Some(id.index);
                }
                Op::Vote { vote, done } => {
                    records.push(Record::Vote(vote));
                    acks.push(Ack::Done(done));
                }
            }
        }
        if let Some(c) = committed {
            records.push(Record::Committed(c));
        }
        let started = std::time::Instant::now();
        let result = write_batch(&mut wal, &records, purged);
        stats.record_batch(&result, entries, started);
        let result = result.map_err(|e| e.to_string());
        match &result {
            // Counted before the acknowledgements go out, so that a
            // follower's append answer, sent once openraft hears of its
            // flush, finds it counted (see `Durability::all_flushed`).
            Ok(()) if appends > 0 => durability.flushed.send_modify(|n| *n += appends),
            Ok(()) => {}
            Err(e) => durability.fail(e),
        }
        for ack in acks {
            match ack {
                Ack::Flushed(done) => {
                    done.log_io_completed(result.clone().map_err(std::io::Error::other))
                }
                Ack::Done(done) => {
                    let _ = done.send(result.clone());
                }
            }
        }
    }
    if let Some(c) = take_hint() {
        if let Err(e) = wal.append(&[Record::Committed(c)]) {
            tracing::warn!(error = %e, "committed-index hint not written at close");
        }
    }
}

/// Make one batch durable: every log record in one append; old segments go
/// once their entries are purged.
fn write_batch(wal: &mut Wal, records: &[Record], purged: Option<u64>) -> std::io::Result<()> {
    if !records.is_empty() {
        wal.append(records)?;
    }
    if let Some(index) = purged {
        wal.drop_purged(index)?;
    }
    Ok(())
}

fn write_snapshot(dir: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!("{SNAPSHOT_FILE}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut f, bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(SNAPSHOT_FILE))?;
    std::fs::File::open(dir)?.sync_all()
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
        let (done, rx) = tokio::sync::oneshot::channel();
        self.send(Op::Vote { vote: *vote, done })?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StorageIOError::write_vote(AnyError::error(e)).into()),
            Err(_) => Err(StorageIOError::write_vote(AnyError::error("log writer stopped")).into()),
        }
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>> {
        Ok(self.mem().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<()> {
        self.mem().committed = committed;
        // The committed index is a hint that speeds up restart (entries up to
        // it are re-applied without waiting for a leader); it need not be
        // fsynced on its own, it rides along with the next batch.
        *self.hint.lock().unwrap_or_else(|e| e.into_inner()) = Some(committed);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>> {
        Ok(self.mem().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // The mirror keeps one copy, the writer encodes the other off this
        // (openraft core's) task.
        //
        // Every append goes through the writer thread, a follower's too. A
        // follower's used to be written and synced on the calling task,
        // which saved two thread wake-ups per replication round trip, but
        // that task runs on the node's runtime (one thread in the usual
        // deployment), so a slow fsync froze everything else the node does:
        // its HTTP routes, its pre-votes, its health answer.
        let entries: Vec<_> = entries.into_iter().collect();
        {
            let mut mem = self.mem();
            for entry in &entries {
                mem.entries.insert(entry.log_id.index, entry.clone());
            }
        }
        self.stats.appends.fetch_add(1, Ordering::Relaxed);
        self.durability.submitted.fetch_add(1, Ordering::SeqCst);
        self.send(Op::Append {
            entries,
            done: callback,
        })
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<()> {
        self.mem().entries.split_off(&log_id.index);
        self.send(Op::TruncateFrom(log_id.index))
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<()> {
        self.mem().purge(log_id);
        self.send(Op::PurgeUpto(log_id))
    }
}

#[cfg(test)]
mod tests {
    use openraft::storage::RaftLogStorage;
    use openraft::{CommittedLeaderId, LogId, Vote};

    fn reopen_committed(dir: &std::path::Path) -> Option<u64> {
        let mut store = super::open(dir, 1).unwrap().log;
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(store.read_committed())
            .unwrap()
            .map(|l| l.index)
    }

    #[test]
    fn the_committed_hint_rides_with_the_next_durable_write_and_is_written_at_close() {
        let dir = tempfile::tempdir().unwrap();
        let at = |index| Some(LogId::new(CommittedLeaderId::new(1, 1), index));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let super::Opened {
            mut log,
            snapshots,
            writer,
            ..
        } = super::open(dir.path(), 1).unwrap();
        rt.block_on(async {
            log.save_committed(at(5)).await.unwrap();
            // A vote is a durable write of its own: the hint goes with it.
            log.save_vote(&Vote::new(1, 1)).await.unwrap();
        });
        // What a crash now would leave: read the files while still open.
        assert_eq!(reopen_committed(dir.path()), Some(5));
        // This one has no write to ride on until the store closes.
        rt.block_on(log.save_committed(at(7))).unwrap();
        drop((log, snapshots));
        writer.join().unwrap();
        assert_eq!(reopen_committed(dir.path()), Some(7));
    }

    #[test]
    fn stats_report_the_mean_and_the_slowest_durable_batch() {
        use std::time::{Duration, Instant};
        let stats = super::LogStats::default();
        let ago = |ms| Instant::now() - Duration::from_millis(ms);
        stats.record_batch(&Ok(()), 3, ago(1));
        stats.record_batch(&Ok(()), 1, ago(5));
        let v = stats.view();
        assert_eq!((v.fsyncs, v.entries, v.max_entries_per_fsync), (2, 4, 3));
        assert!(v.max_write_ms >= 5.0 && v.max_write_ms < 50.0, "{v:?}");
        assert!(
            v.mean_write_ms >= 3.0 && v.mean_write_ms < v.max_write_ms,
            "{v:?}"
        );
        // A failed write counts toward the time but not the fsyncs.
        stats.record_batch(&Err(std::io::Error::other("disk")), 1, ago(9));
        let v = stats.view();
        assert_eq!(v.fsyncs, 2);
        assert!(v.max_write_ms >= 9.0, "{v:?}");
    }

    fn entry(index: u64) -> openraft::Entry<crate::TypeConfig> {
        openraft::Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: openraft::EntryPayload::Blank,
        }
    }

    /// Write records straight into node's log dir, as an older or faulty
    /// build could have left them.
    fn write_raw(dir: &std::path::Path, records: &[crate::wal::Record]) {
        let mut wal = crate::wal::Wal::open(&dir.join(super::LOG_DIR), |_| {}).unwrap();
        wal.append(records).unwrap();
    }

    #[test]
    fn a_log_with_a_hole_refuses_to_open() {
        use crate::wal::Record;
        let dir = tempfile::tempdir().unwrap();
        write_raw(
            dir.path(),
            &[
                Record::Entries(vec![entry(1), entry(2)]),
                Record::Entries(vec![entry(4)]),
            ],
        );
        let err = super::open(dir.path(), 1).err().unwrap();
        assert!(err.contains("entry 3 is missing"), "{err}");
        // Entries right after the purge point are fine; a gap after it is not.
        let dir = tempfile::tempdir().unwrap();
        write_raw(
            dir.path(),
            &[
                Record::Entries(vec![entry(1), entry(2), entry(3)]),
                Record::Purge(LogId::new(CommittedLeaderId::new(1, 1), 2)),
            ],
        );
        assert!(super::open(dir.path(), 1).is_ok());
        write_raw(dir.path(), &[Record::Entries(vec![entry(5)])]);
        assert!(super::open(dir.path(), 1).is_err());
    }

    #[test]
    fn a_restarted_leader_comes_back_with_its_vote_uncommitted_a_follower_keeps_its_own() {
        use crate::wal::Record;
        let dir = tempfile::tempdir().unwrap();
        write_raw(dir.path(), &[Record::Vote(Vote::new_committed(3, 1))]);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let vote = |me| {
            let mut log = super::open(dir.path(), me).unwrap().log;
            rt.block_on(log.read_vote()).unwrap().unwrap()
        };
        // Node 1 led term 3: it must win a new term before it leads again.
        assert_eq!(vote(1), Vote::new(3, 1));
        assert!(!vote(1).is_committed());
        // Node 2 followed node 1 in term 3: nothing to undo.
        assert_eq!(vote(2), Vote::new_committed(3, 1));
    }

    #[tokio::test]
    async fn all_flushed_waits_for_every_submitted_append_and_fails_with_the_log() {
        let d = std::sync::Arc::new(super::Durability::default());
        assert_eq!(d.all_flushed().await, Ok(()), "nothing submitted");
        d.submitted
            .fetch_add(2, std::sync::atomic::Ordering::SeqCst);
        let waiting = tokio::spawn({
            let d = d.clone();
            async move { d.all_flushed().await }
        });
        d.flushed.send_modify(|n| *n += 1);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "one of two appends is not on disk");
        d.flushed.send_modify(|n| *n += 1);
        assert_eq!(waiting.await.unwrap(), Ok(()));
        d.submitted
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        d.fail("EIO");
        d.fail("a later error is not the first");
        assert_eq!(d.all_flushed().await, Err("EIO".to_string()));
        assert_eq!(d.failed().await, "EIO");
    }

    #[test]
    fn a_data_dir_in_the_old_single_file_format_is_refused_with_a_clear_message() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(super::OLD_FORMAT_FILE), b"old").unwrap();
        let err = super::open(dir.path(), 1).err().unwrap();
        assert!(err.contains("old single-file format"), "{err}");
        assert!(!dir.path().join(super::LOG_DIR).exists(), "nothing created");
    }
}
