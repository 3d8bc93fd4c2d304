//! The openraft state machine adapter around an application's
//! [`StateMachine`].
//!
//! It decodes each committed command, hands it to the application with the
//! entry's index and the leader's stamp, and keeps the bookkeeping openraft
//! needs (last applied log id, membership). Snapshots are the application's
//! bytes plus the stamp clock, persisted in the node's data dir so a node
//! restarts from its newest snapshot and replays only the log after it.
//!
//! Determinism: the clock passed to `apply` is `max(stamp, previous clock)`,
//! carried inside snapshots, so leader changes and clock skew between
//! leaders never move time backwards for the application.
//!
//! Every applied entry leaves a digest ([`AppliedDigests`]), so tests (and
//! operators, over `/internal/raft/applied`) can check that all replicas
//! applied the same command at every index.

use serde_json::value::RawValue;
use std::collections::VecDeque;
use std::io::Cursor;
use std::sync::{Arc, Mutex, RwLock};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership,
};
use serde::Deserialize;

use crate::log_store::SnapshotWriter;
use crate::{NodeId, StateMachine, TypeConfig, MAX_BATCH};

type Result<T> = std::result::Result<T, StorageError<NodeId>>;

/// The application state plus what openraft needs to know about it.
pub struct Applied<SM> {
    pub app: SM,
    pub last_applied: Option<LogId<NodeId>>,
    pub membership: StoredMembership<NodeId, openraft::BasicNode>,
    /// The clock the application last saw.
    pub clock_ms: u64,
}

#[derive(Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, openraft::BasicNode>,
    data: Vec<u8>,
}

/// First bytes of a snapshot file: then the meta's length (u32 LE), the
/// data's length (u64 LE) and CRC32 (u32 LE), the meta as JSON, and the
/// data as it is. The first format was the whole
/// `StoredSnapshot` as JSON, where the data, a byte vector, became an array
/// of decimal numbers: 3.6 bytes on disk per byte of state, each formatted
/// and parsed one by one (a 10 MB table made a 36 MB file). Files in that
/// format (they start with `{`) still load.
const SNAPSHOT_MAGIC: &[u8; 8] = b"dssnap1\n";

impl StoredSnapshot {
    fn to_bytes(&self) -> std::result::Result<Vec<u8>, String> {
        let meta = serde_json::to_vec(&self.meta).map_err(|e| e.to_string())?;
        let len = u32::try_from(meta.len()).map_err(|_| "snapshot meta over 4 GiB".to_string())?;
        let mut out = Vec::with_capacity(SNAPSHOT_MAGIC.len() + 16 + meta.len() + self.data.len());
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(self.data.len() as u64).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&self.data).to_le_bytes());
        out.extend_from_slice(&meta);
        out.extend_from_slice(&self.data);
        Ok(out)
    }

    fn from_bytes(bytes: &[u8]) -> std::result::Result<Self, String> {
        let Some(rest) = bytes.strip_prefix(SNAPSHOT_MAGIC.as_slice()) else {
            return serde_json::from_slice(bytes).map_err(|e| e.to_string());
        };
        let (header, rest) = rest
            .split_first_chunk::<16>()
            .ok_or("snapshot ends inside its header")?;
        let field = |at: usize, n: usize| {
            let mut b = [0u8; 8];
            b[..n].copy_from_slice(&header[at..at + n]);
            u64::from_le_bytes(b)
        };
        let (meta_len, data_len, crc) = (field(0, 4) as usize, field(4, 8), field(12, 4));
        if rest.len() as u64 != meta_len as u64 + data_len {
            return Err(format!(
                "snapshot holds {} bytes after its header, its header says {}",
                rest.len(),
                meta_len as u64 + data_len
            ));
        }
        let (meta, data) = rest.split_at(meta_len);
        if u64::from(crc32fast::hash(data)) != crc {
            return Err("snapshot data fails its checksum".into());
        }
        Ok(Self {
            meta: serde_json::from_slice(meta).map_err(|e| e.to_string())?,
            data: data.to_vec(),
        })
    }
}

/// When this node builds its next snapshot (openraft's own policy is off;
/// the node asks openraft when [`SnapshotPlan::applied`] says so).
///
/// After `every` entries, as before, but not before the commands applied
/// since the last snapshot add up to as many bytes as that snapshot had.
/// A snapshot costs its whole size (encoded under the state lock, written,
/// synced), so a state much larger than the log it lets go of, like the
/// lock table's remembered answers under load, was rewritten every few
/// seconds (every 10,000 entries, ~5 s at 16 clients). With the size rule
/// snapshot writes stay within the log writes they save.
#[derive(Debug)]
pub(crate) struct SnapshotPlan {
    every: u64,
    entries_since: u64,
    bytes_since: u64,
    last_bytes: u64,
    /// A snapshot was asked for and not built yet.
    asked: bool,
}

impl SnapshotPlan {
    fn new(every: u64, last_bytes: u64) -> Self {
        Self {
            every,
            entries_since: 0,
            bytes_since: 0,
            last_bytes,
            asked: false,
        }
    }

    /// Count applied entries and their command bytes; true when a snapshot
    /// is due and has not been asked for yet.
    fn applied(&mut self, entries: u64, bytes: u64) -> bool {
        self.entries_since += entries;
        self.bytes_since += bytes;
        let due =
            !self.asked && self.entries_since >= self.every && self.bytes_since >= self.last_bytes;
        self.asked |= due;
        due
    }

    /// A snapshot of `bytes` now covers everything applied.
    fn taken(&mut self, bytes: u64) {
        *self = Self::new(self.every, bytes);
    }
}

/// How many applied entries keep their digest.
const DIGESTS_KEPT: usize = 65_536;

/// Digests of the most recently applied entries (`DIGESTS_KEPT`), by
/// index, in apply order. A digest is FNV-1a (64 bits) over the entry's log
/// id and payload (the leader's stamp and each command's JSON as
/// replicated), so two replicas that applied different commands at one
/// index disagree here. After a restart it starts empty and fills again as
/// the log after the snapshot is re-applied. Clones share one ring.
#[derive(Clone, Default)]
pub struct AppliedDigests(Arc<Mutex<VecDeque<(u64, u64)>>>);

impl AppliedDigests {
    fn record(&self, entry: &Entry<TypeConfig>) {
        let mut h = Fnv::default();
        let id = entry.log_id;
        h.write(&id.leader_id.term.to_le_bytes());
        h.write(&id.leader_id.node_id.to_le_bytes());
        h.write(&id.index.to_le_bytes());
        match &entry.payload {
            EntryPayload::Blank => h.write(b"blank"),
            EntryPayload::Membership(m) => {
                h.write(b"membership");
                h.write(format!("{m:?}").as_bytes());
            }
            EntryPayload::Normal(req) => {
                h.write(&req.ts_ms.to_le_bytes());
                for cmd in &req.cmds {
                    h.write(cmd.get().as_bytes());
                    h.write(&[0xff]);
                }
            }
        }
        let mut ring = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if ring.len() == DIGESTS_KEPT {
            ring.pop_front();
        }
        ring.push_back((id.index, h.0));
    }

    /// Up to `limit` digests of entries applied at index `from` or later,
    /// oldest first, as `(index, hex digest)`.
    pub fn since(&self, from: u64, limit: usize) -> Vec<(u64, String)> {
        let ring = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let start = ring.partition_point(|(i, _)| *i < from);
        ring.range(start..)
            .take(limit)
            .map(|(i, d)| (*i, format!("{d:016x}")))
            .collect()
    }
}

/// 64-bit FNV-1a: a stable hash (std's `DefaultHasher` may change between
/// Rust releases, and digests are compared across processes).
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// The state machine store handed to openraft. Clones share state.
pub struct SmStore<SM> {
    state: Arc<RwLock<Applied<SM>>>,
    writer: SnapshotWriter,
    current: Arc<Mutex<Option<StoredSnapshot>>>,
    /// Held for the whole of a persist, so the check that the snapshot is
    /// newer than `current` and the write that makes it current are one
    /// step (see [`Self::persist`]).
    persisting: Arc<tokio::sync::Mutex<()>>,
    snapshot_seq: Arc<std::sync::atomic::AtomicU64>,
    plan: Arc<Mutex<SnapshotPlan>>,
    /// Woken when the plan says a snapshot is due.
    snapshot_due: Arc<tokio::sync::Notify>,
    digests: AppliedDigests,
}

impl<SM> Clone for SmStore<SM> {
    fn clone(&self) -> Self {
        Self {
            state: self.state.clone(),
            writer: self.writer.clone(),
            current: self.current.clone(),
            persisting: self.persisting.clone(),
            snapshot_seq: self.snapshot_seq.clone(),
            plan: self.plan.clone(),
            snapshot_due: self.snapshot_due.clone(),
            digests: self.digests.clone(),
        }
    }
}

/// Snapshot bytes: the clock (8 bytes, big endian) then the application's
/// own bytes.
fn encode(clock_ms: u64, app: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + app.len());
    out.extend_from_slice(&clock_ms.to_be_bytes());
    out.extend_from_slice(app);
    out
}

fn decode(data: &[u8]) -> std::result::Result<(u64, &[u8]), String> {
    if data.len() < 8 {
        return Err("snapshot shorter than its header".into());
    }
    let (head, rest) = data.split_at(8);
    let mut clock = [0u8; 8];
    clock.copy_from_slice(head);
    Ok((u64::from_be_bytes(clock), rest))
}

impl<SM: StateMachine> SmStore<SM> {
    /// Open the store, restoring `app` from the newest persisted snapshot.
    pub fn open(
        app: SM,
        stored: Option<Vec<u8>>,
        writer: SnapshotWriter,
        snapshot_every: u64,
    ) -> std::result::Result<Self, String> {
        let stored: Option<StoredSnapshot> = stored
            .map(|b| StoredSnapshot::from_bytes(&b))
            .transpose()
            .map_err(|e| format!("reading snapshot: {e}"))?;
        let mut applied = Applied {
            app,
            last_applied: None,
            membership: StoredMembership::default(),
            clock_ms: 0,
        };
        if let Some(s) = &stored {
            let (clock, bytes) = decode(&s.data)?;
            applied.app.restore(SM::decode(bytes)?);
            applied.clock_ms = clock;
            applied.last_applied = s.meta.last_log_id;
            applied.membership = s.meta.last_membership.clone();
        }
        let seq = stored.as_ref().map(|_| 1).unwrap_or(0);
        let last_bytes = stored.as_ref().map_or(0, |s| s.data.len() as u64);
        Ok(Self {
            state: Arc::new(RwLock::new(applied)),
            writer,
            current: Arc::new(Mutex::new(stored)),
            persisting: Arc::default(),
            snapshot_seq: Arc::new(std::sync::atomic::AtomicU64::new(seq)),
            plan: Arc::new(Mutex::new(SnapshotPlan::new(snapshot_every, last_bytes))),
            snapshot_due: Arc::default(),
            digests: AppliedDigests::default(),
        })
    }

    /// Shared access to the applied state (for reads).
    pub fn state(&self) -> Arc<RwLock<Applied<SM>>> {
        self.state.clone()
    }

    /// What this replica applied, by index.
    pub fn digests(&self) -> AppliedDigests {
        self.digests.clone()
    }

    /// Notified whenever a snapshot is due (see `SnapshotPlan`).
    pub fn snapshot_due(&self) -> Arc<tokio::sync::Notify> {
        self.snapshot_due.clone()
    }

    fn snapshot_taken(&self, bytes: usize) {
        self.plan
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .taken(bytes as u64);
    }

    /// Make `snap` the current snapshot, on disk first, unless the current
    /// one is as new or newer: then it is dropped and `false` returned.
    ///
    /// A build runs on a task of its own while the state machine goes on,
    /// and openraft does not hold back a snapshot sent by the leader
    /// meanwhile, so a build copied at index 10 can finish after an
    /// install at index 20. Written last, it would replace the newer file
    /// while the log has already been purged up to 20: after a restart the
    /// node would start from 10 with 11..20 gone from its log. The file
    /// image (a copy and a CRC of the whole state) is made on a blocking
    /// thread.
    async fn persist(&self, snap: StoredSnapshot) -> Result<bool> {
        let io = |e: String| StorageIOError::write_snapshot(None, AnyError::error(e));
        let _one_at_a_time = self.persisting.lock().await;
        let newest = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|c| c.meta.last_log_id);
        if let Some(newest) = newest {
            if snap.meta.last_log_id <= newest {
                tracing::info!(
                    snapshot = ?snap.meta.last_log_id,
                    current = ?newest,
                    "snapshot not kept: the current one is as new"
                );
                return Ok(false);
            }
        }
        let (snap, bytes) = tokio::task::spawn_blocking(move || {
            let bytes = snap.to_bytes();
            (snap, bytes)
        })
        .await
        .map_err(|e| io(e.to_string()))?;
        self.writer.persist(bytes.map_err(io)?).await.map_err(io)?;
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(snap);
        Ok(true)
    }
}

/// Run `work` on a thread of its own at a lower CPU priority (nice 10).
///
/// Encoding a snapshot is the one large batch of CPU work a node does, and
/// every member encodes at about the same log index, so where members share
/// cores it should yield to the runtime threads that answer clients and
/// heartbeats. (On this 2-core host 4 × 40-s load runs could not tell it
/// from normal priority: no elections either way.)
async fn in_background<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> std::result::Result<T, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("snapshot-build".into())
        .spawn(move || {
            // On Linux a thread id names just this thread.
            let tid = rustix::thread::gettid();
            if let Err(e) = rustix::process::setpriority_process(Some(tid), 10) {
                tracing::debug!(error = %e, "snapshot thread keeps normal priority");
            }
            let _ = tx.send(work());
        })
        .map_err(|e| format!("starting the snapshot thread: {e}"))?;
    rx.await
        .map_err(|_| "the snapshot thread ended without a result".to_string())
}

impl<SM: StateMachine> RaftSnapshotBuilder<TypeConfig> for SmStore<SM> {
    /// Only the copy is made under the state lock, on openraft's task;
    /// encoding runs on a background thread, the file image and the write
    /// on blocking threads. Done
    /// all under the lock on the runtime, a 40 MB lock table stalled its
    /// node for 0.4-0.8 s (encoding 0.2-0.5 s, the write on the log writer
    /// thread the rest), and the cluster changed leaders during the load
    /// run that built it.
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>> {
        let started = std::time::Instant::now();
        let (job, clock_ms, last_applied, membership) = {
            let st = self.state.read().unwrap_or_else(|e| e.into_inner());
            (
                st.app.snapshot(),
                st.clock_ms,
                st.last_applied,
                st.membership.clone(),
            )
        };
        let copied = started.elapsed();
        let (data, sent) = in_background(move || {
            let data = encode(clock_ms, &job());
            let sent = data.clone();
            (data, sent)
        })
        .await
        .map_err(|e| StorageIOError::write_snapshot(None, AnyError::error(e)))?;
        let encoded = started.elapsed();
        self.snapshot_taken(data.len());
        let seq = self
            .snapshot_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let snapshot_id = match last_applied {
            Some(l) => format!("{}-{}-{seq}", l.leader_id, l.index),
            None => format!("none-{seq}"),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
            snapshot_id,
        };
        let bytes = data.len();
        // If a newer snapshot was installed meanwhile, this one is not
        // kept, and openraft, which compares the two, ignores it too.
        self.persist(StoredSnapshot {
            meta: meta.clone(),
            data,
        })
        .await?;
        tracing::info!(
            bytes,
            copy_ms = copied.as_secs_f64() * 1e3,
            encode_ms = (encoded - copied).as_secs_f64() * 1e3,
            total_ms = started.elapsed().as_secs_f64() * 1e3,
            "snapshot built"
        );
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(sent)),
        })
    }
}

impl<SM: StateMachine> RaftStateMachine<TypeConfig> for SmStore<SM> {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(
        Option<LogId<NodeId>>,
        StoredMembership<NodeId, openraft::BasicNode>,
    )> {
        let st = self.state.read().unwrap_or_else(|e| e.into_inner());
        Ok((st.last_applied, st.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Vec<Box<RawValue>>>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        let mut bytes = 0u64;
        for entry in entries {
            self.digests.record(&entry);
            st.last_applied = Some(entry.log_id);
            let resp = match entry.payload {
                EntryPayload::Blank => Vec::new(),
                EntryPayload::Membership(m) => {
                    st.membership = StoredMembership::new(Some(entry.log_id), m);
                    Vec::new()
                }
                EntryPayload::Normal(req) => {
                    let now = st.clock_ms.max(req.ts_ms);
                    st.clock_ms = now;
                    let base = entry.log_id.index * MAX_BATCH as u64;
                    let mut resps = Vec::with_capacity(req.cmds.len());
                    for (pos, cmd) in req.cmds.into_iter().enumerate() {
                        bytes += cmd.get().len() as u64;
                        let resp = match serde_json::from_str::<SM::Command>(cmd.get()) {
                            Ok(cmd) => {
                                let resp = st.app.apply(cmd, base + pos as u64, now);
                                serde_json::value::to_raw_value(&resp)
                                    .unwrap_or_else(|_| crate::rpc::json_null())
                            }
                            // Commands are encoded by this binary's own types,
                            // so this only happens across incompatible
                            // versions; every replica skips the command alike.
                            Err(e) => {
                                tracing::error!(index = entry.log_id.index, pos, error = %e, "undecodable command skipped");
                                crate::rpc::json_null()
                            }
                        };
                        resps.push(resp);
                    }
                    resps
                }
            };
            out.push(resp);
        }
        drop(st);
        let due = self
            .plan
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .applied(out.len() as u64, bytes);
        if due {
            self.snapshot_due.notify_one();
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<()> {
        let data = snapshot.into_inner();
        let read =
            |e: String| StorageIOError::read_snapshot(Some(meta.signature()), AnyError::error(e));
        // Reading a large state takes a while (0.2-0.5 s for 40 MB): off
        // the lock and the runtime, so that this node's applies, reads and
        // heartbeats are not held up meanwhile.
        let (data, decoded) = tokio::task::spawn_blocking(move || {
            let decoded = decode(&data).and_then(|(clock, bytes)| Ok((clock, SM::decode(bytes)?)));
            (data, decoded)
        })
        .await
        .map_err(|e| read(e.to_string()))?;
        let (clock, image) = decoded.map_err(read)?;
        let replaced = {
            let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
            let replaced = st.app.restore(image);
            st.clock_ms = clock;
            st.last_applied = meta.last_log_id;
            st.membership = meta.last_membership.clone();
            replaced
        };
        // Freeing the state it replaced takes a while too.
        tokio::task::spawn_blocking(move || drop(replaced));
        self.snapshot_taken(data.len());
        self.persist(StoredSnapshot {
            meta: meta.clone(),
            data,
        })
        .await?;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>> {
        let cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        Ok(cur.as_ref().map(|s| Snapshot {
            meta: s.meta.clone(),
            snapshot: Box::new(Cursor::new(s.data.clone())),
        }))
    }
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;

    use super::*;

    fn stored() -> StoredSnapshot {
        StoredSnapshot {
            meta: SnapshotMeta {
                last_log_id: Some(LogId::new(CommittedLeaderId::new(3, 1), 42)),
                last_membership: StoredMembership::default(),
                snapshot_id: "3-1-42-1".into(),
            },
            data: encode(1_234, br#"{"table":"\u0000 and every other byte"}"#),
        }
    }

    #[test]
    fn a_snapshot_is_due_after_enough_entries_and_as_many_bytes_as_the_last() {
        let mut plan = SnapshotPlan::new(100, 0);
        assert!(!plan.applied(99, 10_000), "not before `every` entries");
        assert!(plan.applied(1, 10), "then due");
        assert!(!plan.applied(500, 1 << 20), "asked once until taken");
        // The state grew: a 1 MB snapshot waits for 1 MB of commands.
        plan.taken(1 << 20);
        assert!(!plan.applied(1_000, 600 << 10));
        assert!(!plan.applied(1_000, 400 << 10));
        assert!(plan.applied(1, 24 << 10), "1 MB applied since");
        // A small state is snapshotted by entry count alone.
        plan.taken(100);
        assert!(!plan.applied(99, 99));
        assert!(plan.applied(1, 1));
    }

    #[test]
    fn a_snapshot_file_holds_its_data_as_is() {
        let s = stored();
        let bytes = s.to_bytes().unwrap();
        assert_eq!(
            bytes.len(),
            8 + 16 + serde_json::to_vec(&s.meta).unwrap().len() + s.data.len()
        );
        let back = StoredSnapshot::from_bytes(&bytes).unwrap();
        assert_eq!(back.meta, s.meta);
        assert_eq!(back.data, s.data);
        // A file cut short or changed is refused, not read as another state.
        for cut in [3, 10, 20, bytes.len() - 1] {
            assert!(
                StoredSnapshot::from_bytes(&bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(StoredSnapshot::from_bytes(&flipped).is_err());
    }

    /// A state machine that sums its commands.
    struct Sum(u64);

    impl StateMachine for Sum {
        type Command = u64;
        type Response = u64;
        type Image = u64;
        fn apply(&mut self, cmd: u64, _seq: u64, _now_ms: u64) -> u64 {
            self.0 += cmd;
            self.0
        }
        fn snapshot(&self) -> crate::SnapshotJob {
            let v = self.0;
            Box::new(move || v.to_string().into_bytes())
        }
        fn decode(bytes: &[u8]) -> std::result::Result<u64, String> {
            let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
            text.parse()
                .map_err(|e: std::num::ParseIntError| e.to_string())
        }
        fn restore(&mut self, image: u64) -> u64 {
            std::mem::replace(&mut self.0, image)
        }
    }

    fn meta_at(index: u64) -> SnapshotMeta<NodeId, openraft::BasicNode> {
        SnapshotMeta {
            last_log_id: Some(LogId::new(CommittedLeaderId::new(2, 1), index)),
            last_membership: StoredMembership::default(),
            snapshot_id: format!("2-1-{index}"),
        }
    }

    #[tokio::test]
    async fn a_snapshot_older_than_the_current_one_is_not_kept_on_disk_or_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let opened = crate::log_store::open(dir.path(), 1).unwrap();
        let mut sm = SmStore::open(Sum(0), None, opened.snapshots.clone(), 1_000).unwrap();
        // The leader's snapshot at 20 is installed while a build of this
        // node's own state at 10 is still running; the build ends last.
        let newer = meta_at(20);
        let installed = Box::new(Cursor::new(encode(7, b"20")));
        sm.install_snapshot(&newer, installed).await.unwrap();
        let late = StoredSnapshot {
            meta: meta_at(10),
            data: encode(5, b"10"),
        };
        assert!(!sm.persist(late).await.unwrap(), "the older one is dropped");
        let current = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta, newer);
        assert_eq!(sm.state().read().unwrap().app.0, 20);
        // A newer one still replaces it.
        let newest = StoredSnapshot {
            meta: meta_at(30),
            data: encode(9, b"30"),
        };
        assert!(sm.persist(newest).await.unwrap());
        drop((sm, opened.log, opened.snapshots));
        opened.writer.join().unwrap();
        // What a restart reads.
        let again = crate::log_store::open(dir.path(), 1).unwrap();
        let on_disk = StoredSnapshot::from_bytes(&again.snapshot.unwrap()).unwrap();
        assert_eq!(on_disk.meta, meta_at(30));
    }

    #[test]
    fn applied_digests_tell_different_commands_at_one_index_apart() {
        let normal = |index, cmd: &str| Entry::<TypeConfig> {
            log_id: LogId::new(CommittedLeaderId::new(2, 1), index),
            payload: EntryPayload::Normal(crate::Request {
                ts_ms: 7,
                cmds: vec![RawValue::from_string(cmd.to_string()).unwrap()],
            }),
        };
        let (a, b) = (AppliedDigests::default(), AppliedDigests::default());
        for i in 1..=3 {
            a.record(&normal(i, "1"));
            b.record(&normal(i, if i == 2 { "2" } else { "1" }));
        }
        let (da, db) = (a.since(0, 10), b.since(0, 10));
        assert_eq!(da.len(), 3);
        assert_eq!(da[0], db[0]);
        assert_ne!(da[1], db[1], "another command at index 2");
        assert_eq!(da[2], db[2]);
        assert_eq!(a.since(2, 1), vec![da[1].clone()]);
        assert!(a.since(4, 10).is_empty());
    }

    #[test]
    fn a_snapshot_file_in_the_first_json_format_still_loads() {
        let s = stored();
        let old = serde_json::to_vec(&serde_json::json!({"meta": s.meta, "data": s.data})).unwrap();
        let back = StoredSnapshot::from_bytes(&old).unwrap();
        assert_eq!(back.meta, s.meta);
        assert_eq!(back.data, s.data);
    }
}
