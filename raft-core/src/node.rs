//! The node handle a replicated service holds.
//!
//! `RaftNode::start` opens the data dir (log, vote, snapshot), restores the
//! application, starts openraft, and bootstraps the cluster with every
//! configured peer when the log is empty. Bootstrapping with the same member
//! list on every node and on every restart is safe: openraft refuses it once
//! the node has any log, and identical initial configurations never split.
//! Members take turns at it in id order (see `start`), so that a new
//! cluster holds one election, not two.
//!
//! Writes go through [`RaftNode::write`] on any node: the leader proposes
//! them (stamped with its clock), a follower forwards them to the leader over
//! `/internal/raft/write`. While no leader is known the call waits for one,
//! up to [`WRITE_RETRY_WINDOW`]. A forwarded write that timed out may still
//! commit, so retried commands must be idempotent (the lock service carries a
//! request id in every command for this).
//!
//! Reads call [`RaftNode::read_barrier`] first for linearizability: the
//! leader confirms its leadership with a quorum (read index); a follower asks
//! the leader for that index and waits until it has applied that far.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use common::server::ClusterToken;
use openraft::error::{CheckIsLeaderError, InitializeError, RaftError};
use openraft::metrics::RaftServerMetrics;
use openraft::{BasicNode, Config, Raft, RaftMetrics, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot, watch};

use crate::election::{pre_vote_verdict, Campaigner, Heard};
use crate::log_store::{Durability, LogStats, LogStatsView, LogTail};
use crate::network::{http_client, Faults, Network};
use crate::proposer::{batch_proposals, Proposal};
use crate::rpc::{ForwardReply, PreVoteRequest, PreVoteResponse};
use crate::state_machine::{Applied, AppliedDigests, SmStore};
use crate::{Error, NodeId, StateMachine, TypeConfig};

/// How long a write or read barrier keeps retrying while there is no
/// reachable leader (covers one or two elections).
pub const WRITE_RETRY_WINDOW: Duration = Duration::from_secs(3);

// Defined by the proposer, which does the waiting; re-exported where it
// always was.
pub use crate::proposer::COMMIT_TIMEOUT;

/// Timeout of one forwarded write or read-index call to the leader.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);

/// Raft timing. Defaults: heartbeat 30 ms, election timeout 100–200 ms.
///
/// `election_max_ms` is also openraft's leader lease: a voter refuses to
/// elect anyone else until it has heard nothing from its leader for that
/// long, and [`crate::election`] campaigns right after it (openraft's own
/// random election timer is off; `election_min_ms` still bounds how long one
/// append may take). So a crashed leader is replaced about
/// `election_max_ms` after its last heartbeat. openraft ticks every 1.5 ×
/// heartbeat (45 ms), so the lease spans four heartbeats: a loaded node that
/// misses one or two does not start an election.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            heartbeat_ms: 30,
            election_min_ms: 100,
            election_max_ms: 200,
        }
    }
}

/// Everything a node needs to start.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub id: NodeId,
    /// Every member (this node included): id → `host:port` of its HTTP server.
    pub peers: BTreeMap<NodeId, String>,
    pub data_dir: PathBuf,
    pub timing: Timing,
    /// Build a snapshot after this many log entries since the last one,
    /// once the commands applied since add up to the last snapshot's size
    /// (see `state_machine::SnapshotPlan`).
    pub snapshot_every: u64,
    /// Entries kept in the log behind a snapshot (lets slow followers catch
    /// up by log rather than by snapshot).
    pub keep_logs: u64,
    pub cluster_token: Option<String>,
    /// Bounds on proposals waiting on this node (see [`ProposalBounds`]).
    pub proposals: ProposalBounds,
}

/// How much a leader takes on before it refuses new commands.
///
/// Entries in flight are a memory bound, not a tuning knob: the flush gate
/// of `proposer::batch_proposals` decides when the next entry goes out. The queue
/// bound is what a caller meets under sustained overload: past it a write
/// is refused at once with [`Error::Overloaded`] (the lock service answers
/// 429) instead of waiting in an ever longer queue, whose callers would
/// time out while the node still did their work.
#[derive(Debug, Clone, Copy)]
pub struct ProposalBounds {
    /// Entries appended but not yet committed (or timed out).
    pub in_flight: usize,
    /// Commands waiting for a place in an entry.
    pub queued: usize,
}

impl Default for ProposalBounds {
    fn default() -> Self {
        Self {
            in_flight: 64,
            queued: 10_000,
        }
    }
}

impl NodeConfig {
    pub fn new(id: NodeId, peers: BTreeMap<NodeId, String>, data_dir: PathBuf) -> Self {
        Self {
            id,
            peers,
            data_dir,
            timing: Timing::default(),
            snapshot_every: 10_000,
            keep_logs: 1_000,
            cluster_token: None,
            proposals: ProposalBounds::default(),
        }
    }
}

/// A node's view of the cluster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    pub leader_id: Option<NodeId>,
    pub leader_addr: Option<String>,
    pub term: u64,
    pub state: String,
    pub members: BTreeMap<NodeId, String>,
    pub last_log_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub snapshot_index: Option<u64>,
}

struct Inner<SM> {
    id: NodeId,
    raft: Raft<TypeConfig>,
    state: Arc<RwLock<Applied<SM>>>,
    client: reqwest::Client,
    token: ClusterToken,
    faults: Faults,
    log_stats: Arc<LogStats>,
    durability: Arc<Durability>,
    digests: AppliedDigests,
    /// The local log's end, for the read index.
    log: LogTail,
    proposals: mpsc::Sender<Proposal>,
    heard: Heard,
    /// The leader lease (`election_max_ms`).
    lease: Duration,
    writer: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Seconds from a [`RaftNode::write`] call to its applied answer.
    write_latency: common::metrics::Histogram,
}

/// A running Raft node. Clones are handles to the same node.
pub struct RaftNode<SM> {
    inner: Arc<Inner<SM>>,
}

impl<SM> Clone for RaftNode<SM> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<SM: StateMachine> RaftNode<SM> {
    /// Open the data dir, restore `app`, start openraft and bootstrap.
    pub async fn start(config: NodeConfig, app: SM) -> Result<Self, Error> {
        let opened = crate::log_store::open(&config.data_dir, config.id).map_err(Error::Storage)?;
        let log_stats = opened.log.stats();
        let durability = opened.log.durability();
        let log = opened.log.tail();
        let sm = SmStore::open(
            app,
            opened.snapshot,
            opened.snapshots,
            config.snapshot_every,
        )
        .map_err(Error::Storage)?;
        let state = sm.state();
        let digests = sm.digests();
        let snapshot_due = sm.snapshot_due();
        let raft_config = Config {
            cluster_name: "distributed-sync".into(),
            heartbeat_interval: config.timing.heartbeat_ms,
            election_timeout_min: config.timing.election_min_ms,
            election_timeout_max: config.timing.election_max_ms,
            install_snapshot_timeout: 2_000,
            // The state machine's own plan asks for snapshots (size-aware).
            snapshot_policy: SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: config.keep_logs,
            snapshot_max_chunk_size: 1 << 20,
            // Elections start only from `election::Campaigner`, after a
            // pre-vote.
            enable_elect: false,
            ..Default::default()
        }
        .validate()
        .map_err(|e| Error::InvalidInput(format!("raft config: {e}")))?;
        let client = http_client();
        let token = ClusterToken(config.cluster_token.clone());
        let faults = Faults::default();
        let network = Network {
            token: token.clone(),
            faults: faults.clone(),
        };
        let raft = Raft::new(
            config.id,
            Arc::new(raft_config),
            network.clone(),
            opened.log,
            sm,
        )
        .await
        .map_err(|e| Error::Storage(format!("starting raft: {e}")))?;

        let members: BTreeMap<NodeId, BasicNode> = config
            .peers
            .iter()
            .map(|(id, addr)| (*id, BasicNode { addr: addr.clone() }))
            .collect();
        // Members bootstrap in id order, one lease apart: the first at once,
        // each other one only if it has heard from no candidate by its turn.
        // When all of them bootstrapped at once, each campaigned for term 1,
        // and if a lower id won, the higher one's own term-1 vote still
        // outranked the winner (openraft orders leaders of a term by id): it
        // refused the winner's appends and the cluster held a second election
        // ~200 ms after it first had a leader.
        let rank = config
            .peers
            .keys()
            .position(|p| *p == config.id)
            .unwrap_or(0);
        if rank == 0 {
            bootstrap(&raft, members, config.id).await?;
        } else {
            let turn = Duration::from_millis(config.timing.election_max_ms) * rank as u32;
            let (raft, id) = (raft.clone(), config.id);
            tokio::spawn(async move {
                tokio::time::sleep(turn).await;
                if let Err(e) = bootstrap(&raft, members, id).await {
                    tracing::warn!(id, error = %e, "bootstrap failed");
                }
            });
        }
        let trigger = raft.clone();
        tokio::spawn(async move {
            loop {
                snapshot_due.notified().await;
                if let Err(e) = trigger.trigger().snapshot().await {
                    tracing::debug!(error = %e, "snapshot not triggered; raft stopped");
                    return;
                }
            }
        });
        let heard = Heard::default();
        let lease = Duration::from_millis(config.timing.election_max_ms);
        tokio::spawn(
            Campaigner {
                raft: raft.clone(),
                me: config.id,
                heard: heard.clone(),
                lease,
                log: log.clone(),
                network,
            }
            .run(),
        );
        let (proposals, proposal_rx) = mpsc::channel(config.proposals.queued.max(1));
        tokio::spawn(batch_proposals(
            raft.clone(),
            log_stats.clone(),
            durability.clone(),
            proposal_rx,
            config.proposals.in_flight.max(1),
        ));
        Ok(Self {
            inner: Arc::new(Inner {
                id: config.id,
                proposals,
                heard,
                lease,
                raft,
                state,
                client,
                token,
                faults,
                log_stats,
                durability,
                digests,
                log,
                writer: std::sync::Mutex::new(Some(opened.writer)),
                write_latency: common::metrics::latency_histogram(),
            }),
        })
    }

    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// The underlying openraft handle (for the inbound RPC routes).
    pub fn raft(&self) -> &Raft<TypeConfig> {
        &self.inner.raft
    }

    /// Record that an append from a leader was accepted (see
    /// [`crate::election`]).
    pub(crate) fn heard_from_leader(&self) {
        self.inner.heard.now();
    }

    /// This node's answer to a pre-vote: would it vote for the candidate
    /// now? Changes nothing (see [`crate::election`]).
    pub(crate) fn pre_vote(&self, req: &PreVoteRequest) -> PreVoteResponse {
        let verdict = pre_vote_verdict(
            self.is_leader(),
            self.inner.heard.get().elapsed(),
            self.inner.lease,
            self.inner.log.last_log_id(),
            req.last_log_id,
        );
        if let Err(why) = &verdict {
            tracing::debug!(
                id = self.inner.id,
                candidate = req.candidate,
                why,
                "pre-vote refused"
            );
        }
        PreVoteResponse {
            granted: verdict.is_ok(),
            reason: verdict.err(),
        }
    }

    pub(crate) fn token(&self) -> &ClusterToken {
        &self.inner.token
    }

    /// Fault injection: drop outbound traffic to chosen peers.
    pub fn faults(&self) -> &Faults {
        &self.inner.faults
    }

    /// Log write counters (fsyncs, entries, appends).
    pub fn log_stats(&self) -> LogStatsView {
        self.inner.log_stats.view()
    }

    /// Wait until every append this node's log has taken is on disk (see
    /// [`Durability::all_flushed`]); `Err` if the log failed.
    pub(crate) async fn log_flushed(&self) -> Result<(), String> {
        self.inner.durability.all_flushed().await
    }

    /// Digests of the entries applied from index `from` on, at most `limit`
    /// (see [`AppliedDigests`]).
    pub fn applied_digests(&self, from: u64, limit: usize) -> Vec<(u64, String)> {
        self.inner.digests.since(from, limit)
    }

    /// Resolves when this node can no longer serve safely: its log failed
    /// (fail-stop: a write or sync error, after which nothing can be
    /// reported durable) or openraft's core stopped on a fatal error. The
    /// process should then exit; a supervisor restarts it from its disk.
    pub async fn fatal(&self) -> String {
        let mut metrics = self.inner.raft.metrics();
        let core = async move {
            loop {
                let stopped = match &metrics.borrow_and_update().running_state {
                    Ok(()) => None,
                    Err(e) => Some(format!("the raft core stopped: {e}")),
                };
                if let Some(why) = stopped {
                    return why;
                }
                if metrics.changed().await.is_err() {
                    return "the raft core stopped".to_string();
                }
            }
        };
        tokio::select! {
            why = self.inner.durability.failed() => format!("the raft log failed: {why}"),
            why = core => why,
        }
    }

    /// Openraft's metrics stream (leader, term, applied index, …).
    pub fn metrics(&self) -> watch::Receiver<RaftMetrics<NodeId, BasicNode>> {
        self.inner.raft.metrics()
    }

    /// Role, vote, leader and membership only. Unlike [`Self::metrics`],
    /// which changes several times per log entry (append, flush, commit,
    /// apply), this changes only with them, so it is what a task that waits
    /// for leadership or a leader change should watch.
    pub fn server_metrics(&self) -> watch::Receiver<RaftServerMetrics<NodeId, BasicNode>> {
        self.inner.raft.server_metrics()
    }

    pub fn is_leader(&self) -> bool {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader
    }

    /// The current leader's id and address, if known.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        let id = m.current_leader?;
        let addr = m
            .membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())?;
        Some((id, addr))
    }

    /// Read the applied application state (no consistency check; call
    /// [`Self::read_barrier`] first for a linearizable read).
    pub fn read<R>(&self, f: impl FnOnce(&SM, u64) -> R) -> R {
        let st = self.inner.state.read().unwrap_or_else(|e| e.into_inner());
        f(&st.app, st.clock_ms)
    }

    pub fn status(&self) -> Status {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        let members: BTreeMap<NodeId, String> = m
            .membership_config
            .membership()
            .nodes()
            .map(|(id, n)| (*id, n.addr.clone()))
            .collect();
        Status {
            id: m.id,
            leader_id: m.current_leader,
            leader_addr: m.current_leader.and_then(|l| members.get(&l).cloned()),
            term: m.current_term,
            state: format!("{:?}", m.state),
            members,
            last_log_index: m.last_log_index,
            applied_index: m.last_applied.map(|l| l.index),
            snapshot_index: m.snapshot.map(|l| l.index),
        }
    }

    /// Replicate `cmd` and return the application's response. Any node
    /// accepts it; see the module docs for forwarding and retries.
    pub async fn write(&self, cmd: SM::Command) -> Result<SM::Response, Error> {
        let start = Instant::now();
        let answer = self.write_once_known(cmd).await;
        if answer.is_ok() {
            self.inner
                .write_latency
                .observe(start.elapsed().as_secs_f64());
        }
        answer
    }

    /// Seconds from each successful [`RaftNode::write`] call on this node to
    /// its applied answer: proposal, replication to a majority, fsync and
    /// apply, plus the hop to the leader when this node follows (commit
    /// latency as a client of this node sees it). A handle: register it.
    pub fn write_latency(&self) -> common::metrics::Histogram {
        self.inner.write_latency.clone()
    }

    /// [`RaftNode::write`]'s body: propose, forward, retry until the
    /// outcome is known or the retry window ends.
    async fn write_once_known(&self, cmd: SM::Command) -> Result<SM::Response, Error> {
        let value = serde_json::value::to_raw_value(&cmd)
            .map_err(|e| Error::InvalidInput(e.to_string()))?;
        let deadline = Instant::now() + WRITE_RETRY_WINDOW;
        let mut metrics = self.inner.raft.server_metrics();
        // Set once an attempt may have been proposed without our knowing
        // its fate (a commit timeout, a forward cut off mid-way). A
        // `NotLeader` answer is not such a case: openraft gives it to a
        // write it never appended or whose entry was truncated.
        let mut unknown: Option<Error> = None;
        loop {
            let attempt = match self.propose_local(value.clone()).await {
                ForwardReply::Ok(v) => return decode(&v),
                ForwardReply::NotLeader(Some((_, addr))) => {
                    self.forward::<Box<RawValue>>("write", &addr, &value).await
                }
                other => other,
            };
            let last = match attempt {
                ForwardReply::Ok(v) => return decode(&v),
                // Refused, so this attempt was not proposed: say so at once
                // (retrying would only add to the load), unless an earlier
                // attempt may have been; then only "unknown" is true.
                ForwardReply::Overloaded(why) => match &unknown {
                    None => return Err(Error::Overloaded(why)),
                    Some(earlier) => earlier.clone(),
                },
                ForwardReply::NotLeader(leader) => Error::NotLeader { leader },
                ForwardReply::Unavailable(why) => {
                    unknown = Some(Error::Unavailable(why.clone()));
                    Error::Unavailable(why)
                }
            };
            if Instant::now() >= deadline {
                return Err(last);
            }
            // Wait for the cluster to change (a leader elected) or a short
            // pause, whichever comes first, then try again.
            let _ = tokio::time::timeout(Duration::from_millis(50), metrics.changed()).await;
        }
    }

    /// Propose on this node only (batched with concurrent proposals). Used
    /// by [`Self::write`] and by the leader's forwarded-write route.
    pub(crate) async fn propose_local(&self, cmd: Box<RawValue>) -> ForwardReply<Box<RawValue>> {
        let (tx, rx) = oneshot::channel();
        match self.inner.proposals.try_send((cmd, tx)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                return ForwardReply::Overloaded(format!(
                    "{} commands already wait to be proposed; retry after a pause",
                    self.inner.proposals.max_capacity()
                ));
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return ForwardReply::Unavailable("node is shutting down".into());
            }
        }
        rx.await
            .unwrap_or_else(|_| ForwardReply::Unavailable("node is shutting down".into()))
    }

    async fn forward<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        addr: &str,
        body: &impl Serialize,
    ) -> ForwardReply<T> {
        let url = format!("http://{addr}/internal/raft/{path}");
        let req = self.inner.token.apply(
            self.inner
                .client
                .post(url)
                .json(body)
                .timeout(FORWARD_TIMEOUT),
        );
        match req.send().await {
            Ok(resp) if resp.status().is_success() => match resp.json().await {
                Ok(reply) => reply,
                Err(e) => ForwardReply::Unavailable(format!("bad reply from leader: {e}")),
            },
            Ok(resp) => ForwardReply::Unavailable(format!("leader answered {}", resp.status())),
            Err(e) => ForwardReply::Unavailable(format!("leader {addr} unreachable: {e}")),
        }
    }

    /// Block until this node has applied everything committed before the
    /// call started (read index), so a read after it is linearizable.
    pub async fn read_barrier(&self) -> Result<(), Error> {
        let deadline = Instant::now() + WRITE_RETRY_WINDOW;
        let mut metrics = self.inner.raft.server_metrics();
        loop {
            let attempt = match self.read_index_local().await {
                ForwardReply::NotLeader(Some((_, addr))) => {
                    self.forward::<Option<u64>>("read-index", &addr, &serde_json::Value::Null)
                        .await
                }
                other => other,
            };
            let last = match attempt {
                ForwardReply::Ok(index) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    return self
                        .inner
                        .raft
                        .wait(Some(left.max(Duration::from_millis(100))))
                        .applied_index_at_least(index, "read barrier")
                        .await
                        .map(|_| ())
                        .map_err(|e| Error::Unavailable(format!("catching up: {e}")));
                }
                ForwardReply::NotLeader(leader) => Error::NotLeader { leader },
                ForwardReply::Unavailable(why) | ForwardReply::Overloaded(why) => {
                    Error::Unavailable(why)
                }
            };
            if Instant::now() >= deadline {
                return Err(last);
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), metrics.changed()).await;
        }
    }

    /// The leader's read index, confirmed by a quorum; `NotLeader` elsewhere.
    ///
    /// openraft 0.9 answers `max(committed, first entry of this leader's
    /// term)`. A leader restarted with its vote used to keep its term and
    /// propose no new entry, with only the restart hint as `committed`, so
    /// that answer could miss entries committed before the restart (a stale
    /// "linearizable" read; the full-restart test caught it). A restarted
    /// node now has to win a new term first (see `log_store::open`), whose
    /// blank entry covers that, but the guard stays: the local last index is
    /// never below anything committed, so reading at the larger of the two
    /// is always safe; it costs at most one commit of wait when entries are
    /// in flight.
    pub(crate) async fn read_index_local(&self) -> ForwardReply<Option<u64>> {
        match self.inner.raft.get_read_log_id().await {
            Ok((read, _applied)) => {
                ForwardReply::Ok(read.map(|l| l.index).max(self.inner.log.last_index()))
            }
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                ForwardReply::NotLeader(f.leader_id.zip(f.leader_node.map(|n| n.addr)))
            }
            Err(e) => ForwardReply::Unavailable(e.to_string()),
        }
    }

    /// Stop openraft, then wait for the log writer to flush and close the
    /// data file (so the same data dir can be opened again at once).
    pub async fn shutdown(&self) {
        let _ = self.inner.raft.shutdown().await;
        let writer = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(w) = writer {
            // The thread ends when openraft's store handles are dropped,
            // which follows shutdown promptly; bound the wait regardless.
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                tokio::task::spawn_blocking(move || w.join()),
            )
            .await;
        }
    }
}

/// Make this node a member of a new cluster of `members`, unless it already
/// has a log or has voted (it is in a cluster already).
async fn bootstrap(
    raft: &Raft<TypeConfig>,
    members: BTreeMap<NodeId, BasicNode>,
    id: NodeId,
) -> Result<(), Error> {
    match raft.initialize(members).await {
        Ok(()) => tracing::info!(id, "bootstrapped a new cluster"),
        Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {
            tracing::info!(id, "log or vote present; part of the cluster already")
        }
        Err(e) => return Err(Error::Storage(format!("bootstrap: {e}"))),
    }
    Ok(())
}

fn decode<T: serde::de::DeserializeOwned>(v: &RawValue) -> Result<T, Error> {
    serde_json::from_str(v.get()).map_err(|e| Error::Storage(format!("undecodable response: {e}")))
}
