//! Inbound `/internal/raft/*` routes: the peer side of [`crate::network`]
//! plus forwarded writes and read-index requests from followers. Every route
//! requires the cluster token when one is configured.

use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use common::{ApiError, ApiJson};
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde_json::value::RawValue;

use crate::rpc::{decode_chunk, ForwardReply, PreVoteRequest, PreVoteResponse};
use crate::{NodeId, RaftNode, StateMachine, TypeConfig};

/// Largest internal request body: a snapshot chunk is 1 MiB of data plus
/// its header; append batches of up to `MAX_BATCH` commands per entry can
/// be larger.
const INTERNAL_BODY_LIMIT: usize = 16 << 20;

/// The internal router for a node; merge it into the service's router.
pub fn router<SM: StateMachine>(node: RaftNode<SM>) -> Router {
    let token = node.token().clone();
    Router::new()
        .route("/internal/raft/append", post(append::<SM>))
        .route("/internal/raft/vote", post(vote::<SM>))
        .route("/internal/raft/prevote", post(pre_vote::<SM>))
        .route("/internal/raft/snapshot", post(snapshot::<SM>))
        .route("/internal/raft/write", post(write::<SM>))
        .route("/internal/raft/read-index", post(read_index::<SM>))
        .route("/internal/raft/applied", get(applied::<SM>))
        .layer(DefaultBodyLimit::max(INTERNAL_BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(
            token,
            common::server::require_cluster_token,
        ))
        .with_state(node)
}

/// An append (or heartbeat) from the leader. "I hold these entries" goes
/// back only once everything this node's log took so far is on its disk:
/// openraft answers at once when the request holds nothing new, and what
/// it holds may still wait in the writer's queue (entries it appended as a
/// leader before it lost the leadership; see `Durability::all_flushed`).
/// A node whose log failed answers 503, which the leader takes as
/// unreachable.
async fn append<SM: StateMachine>(
    State(node): State<RaftNode<SM>>,
    ApiJson(req): ApiJson<AppendEntriesRequest<TypeConfig>>,
) -> Result<Json<Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>>, ApiError> {
    let res = node.raft().append_entries(req).await;
    // Anything but a refusal by vote means the sender is our leader and
    // openraft renewed its lease. Noted before the flush wait: it records
    // hearing the leader, not durability, and a slow disk must not make
    // this node grant pre-votes as if the leader were silent.
    if matches!(&res, Ok(r) if !matches!(r, AppendEntriesResponse::HigherVote(_))) {
        node.heard_from_leader();
    }
    if let Ok(AppendEntriesResponse::Success | AppendEntriesResponse::PartialSuccess(_)) = &res {
        node.log_flushed()
            .await
            .map_err(|e| ApiError::unavailable(format!("this node's raft log failed: {e}")))?;
    }
    Ok(Json(res))
}

async fn vote<SM: StateMachine>(
    State(node): State<RaftNode<SM>>,
    ApiJson(req): ApiJson<VoteRequest<NodeId>>,
) -> Json<Result<VoteResponse<NodeId>, RaftError<NodeId>>> {
    Json(node.raft().vote(req).await)
}

async fn pre_vote<SM: StateMachine>(
    State(node): State<RaftNode<SM>>,
    ApiJson(req): ApiJson<PreVoteRequest>,
) -> Json<Result<PreVoteResponse, RaftError<NodeId>>> {
    Json(Ok(node.pre_vote(&req)))
}

/// A snapshot chunk as [`crate::rpc::encode_chunk`] writes it, or as
/// one JSON request, which is how builds before it sent chunks (so a
/// cluster can be upgraded one node at a time).
async fn snapshot<SM: StateMachine>(
    State(node): State<RaftNode<SM>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<
    Json<Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>>,
    ApiError,
> {
    let json = headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let req = if json {
        serde_json::from_slice::<InstallSnapshotRequest<TypeConfig>>(&body)
            .map_err(|e| ApiError::invalid(format!("invalid snapshot chunk: {e}")))?
    } else {
        decode_chunk(&body).map_err(ApiError::invalid)?
    };
    let leader_vote = req.vote;
    let res = node.raft().install_snapshot(req).await;
    // A snapshot stream is the leader talking too (it sends no appends to
    // this node meanwhile): our vote equal to its vote means accepted.
    if matches!(&res, Ok(r) if r.vote == leader_vote) {
        node.heard_from_leader();
    }
    Ok(Json(res))
}

async fn write<SM: StateMachine>(
    State(node): State<RaftNode<SM>>,
    ApiJson(cmd): ApiJson<Box<RawValue>>,
) -> Json<ForwardReply<Box<RawValue>>> {
    Json(node.propose_local(cmd).await)
}

#[derive(serde::Deserialize)]
struct AppliedQuery {
    #[serde(default)]
    from: u64,
    #[serde(default = "applied_limit")]
    limit: usize,
}

fn applied_limit() -> usize {
    10_000
}

/// Digests of the entries this replica applied (see
/// `state_machine::AppliedDigests`): `{"entries": [[index, "hex"], …]}`
/// from index `from`, at most `limit` (≤ 100,000).
async fn applied<SM: StateMachine>(
    State(node): State<RaftNode<SM>>,
    q: Result<Query<AppliedQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::invalid(e.body_text()))?;
    let entries = node.applied_digests(q.from, q.limit.min(100_000));
    Ok(Json(
        serde_json::json!({ "id": node.id(), "entries": entries }),
    ))
}

async fn read_index<SM: StateMachine>(
    State(node): State<RaftNode<SM>>,
) -> Json<ForwardReply<Option<u64>>> {
    Json(node.read_index_local().await)
}
