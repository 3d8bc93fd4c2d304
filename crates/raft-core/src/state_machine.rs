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

use serde_json::value::RawValue;
use std::io::Cursor;
use std::sync::{Arc, Mutex, RwLock};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};

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

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, openraft::BasicNode>,
    data: Vec<u8>,
}

/// The state machine store handed to openraft. Clones share state.
pub struct SmStore<SM> {
    state: Arc<RwLock<Applied<SM>>>,
    writer: SnapshotWriter,
    current: Arc<Mutex<Option<StoredSnapshot>>>,
    snapshot_seq: Arc<std::sync::atomic::AtomicU64>,
}

impl<SM> Clone for SmStore<SM> {
    fn clone(&self) -> Self {
        Self {
            state: self.state.clone(),
            writer: self.writer.clone(),
            current: self.current.clone(),
            snapshot_seq: self.snapshot_seq.clone(),
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
    ) -> std::result::Result<Self, String> {
        let stored: Option<StoredSnapshot> = stored
            .map(|b| serde_json::from_slice(&b))
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
            applied.app.restore(bytes)?;
            applied.clock_ms = clock;
            applied.last_applied = s.meta.last_log_id;
            applied.membership = s.meta.last_membership.clone();
        }
        let seq = stored.as_ref().map(|_| 1).unwrap_or(0);
        Ok(Self {
            state: Arc::new(RwLock::new(applied)),
            writer,
            current: Arc::new(Mutex::new(stored)),
            snapshot_seq: Arc::new(std::sync::atomic::AtomicU64::new(seq)),
        })
    }

    /// Shared access to the applied state (for reads).
    pub fn state(&self) -> Arc<RwLock<Applied<SM>>> {
        self.state.clone()
    }

    async fn persist(&self, snap: StoredSnapshot) -> Result<()> {
        let bytes = serde_json::to_vec(&snap)
            .map_err(|e| StorageIOError::write_snapshot(None, AnyError::new(&e)))?;
        self.writer
            .persist(bytes)
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, AnyError::error(e)))?;
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(snap);
        Ok(())
    }
}

impl<SM: StateMachine> RaftSnapshotBuilder<TypeConfig> for SmStore<SM> {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>> {
        let (data, last_applied, membership) = {
            let st = self.state.read().unwrap_or_else(|e| e.into_inner());
            (
                encode(st.clock_ms, &st.app.snapshot()),
                st.last_applied,
                st.membership.clone(),
            )
        };
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
        self.persist(StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        })
        .await?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
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
        for entry in entries {
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
                        let resp = match serde_json::from_str::<SM::Command>(cmd.get()) {
                            Ok(cmd) => {
                                let resp = st.app.apply(cmd, base + pos as u64, now);
                                serde_json::value::to_raw_value(&resp)
                                    .unwrap_or_else(|_| crate::node::json_null())
                            }
                            // Commands are encoded by this binary's own types,
                            // so this only happens across incompatible
                            // versions; every replica skips the command alike.
                            Err(e) => {
                                tracing::error!(index = entry.log_id.index, pos, error = %e, "undecodable command skipped");
                                crate::node::json_null()
                            }
                        };
                        resps.push(resp);
                    }
                    resps
                }
            };
            out.push(resp);
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
        {
            let (clock, bytes) = decode(&data).map_err(|e| {
                StorageIOError::read_snapshot(Some(meta.signature()), AnyError::error(e))
            })?;
            let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
            st.app.restore(bytes).map_err(|e| {
                StorageIOError::read_snapshot(Some(meta.signature()), AnyError::error(e))
            })?;
            st.clock_ms = clock;
            st.last_applied = meta.last_log_id;
            st.membership = meta.last_membership.clone();
        }
        self.persist(StoredSnapshot {
            meta: meta.clone(),
            data,
        })
        .await
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>> {
        let cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        Ok(cur.as_ref().map(|s| Snapshot {
            meta: s.meta.clone(),
            snapshot: Box::new(Cursor::new(s.data.clone())),
        }))
    }
}
