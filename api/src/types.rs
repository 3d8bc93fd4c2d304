//! The wire types of the public API (as served by the gateway and by each
//! service): the services decode requests and encode answers with them, the
//! client sends and decodes them, and the gateway's OpenAPI document is
//! generated from them.
//!
//! - Requests refuse unknown fields (`additionalProperties: false` in the
//!   document) and serialize only the fields the caller set; the services
//!   apply their defaults when they turn a request into their domain type.
//! - Every limit a service enforces is stated on the field (`minLength`,
//!   `maxLength`, `pattern`, `minimum`, `maximum`), with the values of
//!   [`crate::limits`]; `limits::document` (a test) holds the document to them.
//! - Responses decode leniently: fields a service may leave out are `Option`
//!   or `#[serde(default)]`, so a newer service that adds a field does not
//!   break an older client.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use utoipa::ToSchema;

use crate::payload::Payload;

/// A fencing token: grows with every grant across the whole lock cluster.
pub type FencingToken = u64;

// ---------------------------------------------------------------- errors

/// The JSON error body every service and the gateway answer with.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// `code` is stable and machine-readable (`lock_held`, `no_leader`,
/// `invalid_input`, `unauthorized`, …); extra fields (holders, cycle,
/// leader_addr) ride along beside `code` and `message`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    /// Error-specific details, e.g. `holders`, `cycle`, `leader_addr`, `backend`.
    #[serde(flatten)]
    #[schema(ignore)]
    pub details: serde_json::Map<String, Value>,
}

// ---------------------------------------------------------------- locks

/// Exclusive holds are alone; shared holds coexist.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LockMode {
    #[default]
    Exclusive,
    Shared,
}

/// `POST /api/lock/acquire`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcquireRequest {
    /// The lock's name (a URL path segment in `GET /api/lock/{resource}`, so not `.` or `..`).
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^(?!\.\.?$)[^\x00-\x1F\x7F-\x9F]*$"
    )]
    pub resource: String,
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*$"
    )]
    pub owner: String,
    /// Default `exclusive`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<LockMode>,
    /// Lease length; default 30000.
    #[serde(
        default,
        deserialize_with = "crate::int::opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(minimum = 100, maximum = 86400000)]
    pub ttl_ms: Option<u64>,
    /// Block up to this long for the grant; default 0 (answer at once).
    #[serde(
        default,
        deserialize_with = "crate::int::opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(minimum = 0, maximum = 300000)]
    pub wait_ms: Option<u64>,
    /// Makes retries safe: the same (owner, request_id) returns the first
    /// answer. The gateway fills one in when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*$"
    )]
    pub request_id: Option<String>,
    /// How long retries of this `request_id` may still come, in ms; default
    /// 600000 (the answer is remembered for 10 minutes). Up to 30000 the
    /// answer is kept only 30 s (plus the wait): what a caller that retries
    /// briefly, such as the gateway, says, so that its answers do not fill
    /// the lock service's memory for 10 minutes.
    #[serde(
        default,
        deserialize_with = "crate::int::opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(minimum = 0, maximum = 600000)]
    pub retry_window_ms: Option<u64>,
}

/// 200 answer to an acquire.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct LockGrant {
    pub granted: bool,
    pub resource: String,
    pub owner: String,
    #[serde(default)]
    pub mode: LockMode,
    pub token: FencingToken,
    pub expires_at_ms: u64,
}

/// `POST /api/lock/release`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^(?!\.\.?$)[^\x00-\x1F\x7F-\x9F]*$"
    )]
    pub resource: String,
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*$"
    )]
    pub owner: String,
    #[serde(deserialize_with = "crate::int::de")]
    pub token: FencingToken,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*$"
    )]
    pub request_id: Option<String>,
    /// How long retries of this `request_id` may still come, in ms; default
    /// 600000 (the answer is remembered for 10 minutes). Up to 30000 the
    /// answer is kept only 30 s (plus the wait): what a caller that retries
    /// briefly, such as the gateway, says, so that its answers do not fill
    /// the lock service's memory for 10 minutes.
    #[serde(
        default,
        deserialize_with = "crate::int::opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(minimum = 0, maximum = 600000)]
    pub retry_window_ms: Option<u64>,
}

/// `POST /api/lock/renew`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^(?!\.\.?$)[^\x00-\x1F\x7F-\x9F]*$"
    )]
    pub resource: String,
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*$"
    )]
    pub owner: String,
    #[serde(deserialize_with = "crate::int::de")]
    pub token: FencingToken,
    /// New lease length from now; default 30000.
    #[serde(
        default,
        deserialize_with = "crate::int::opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(minimum = 100, maximum = 86400000)]
    pub ttl_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*$"
    )]
    pub request_id: Option<String>,
    /// How long retries of this `request_id` may still come, in ms; default
    /// 600000 (the answer is remembered for 10 minutes). Up to 30000 the
    /// answer is kept only 30 s (plus the wait): what a caller that retries
    /// briefly, such as the gateway, says, so that its answers do not fill
    /// the lock service's memory for 10 minutes.
    #[serde(
        default,
        deserialize_with = "crate::int::opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(minimum = 0, maximum = 600000)]
    pub retry_window_ms: Option<u64>,
}

/// 200 answer to a release.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct ReleaseResponse {
    pub released: bool,
    #[serde(default)]
    pub resource: String,
    #[serde(default)]
    pub owner: String,
    #[serde(default)]
    pub token: FencingToken,
}

/// 200 answer to a renew.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct RenewResponse {
    pub expires_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<FencingToken>,
}

/// One hold on a resource.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct LockHolder {
    pub owner: String,
    #[serde(default)]
    pub mode: LockMode,
    pub token: FencingToken,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acquired_at_ms: Option<u64>,
    pub expires_at_ms: u64,
}

/// One queued waiter on a resource.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct LockWaiter {
    pub owner: String,
    #[serde(default)]
    pub mode: LockMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enqueued_at_ms: Option<u64>,
    /// When the wait ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
}

/// `GET /api/lock/{resource}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct LockState {
    #[serde(default)]
    pub resource: String,
    #[serde(default)]
    pub held: bool,
    #[serde(default)]
    pub holders: Vec<LockHolder>,
    #[serde(default)]
    pub waiters: Vec<LockWaiter>,
    /// The replicated clock the answer was read at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_ms: Option<u64>,
}

/// `GET /api/locks`: one page of the resources that are held or waited
/// for, sorted by name, each as `GET /api/lock/{resource}` shows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct LockList {
    #[serde(default)]
    pub locks: Vec<LockState>,
    /// The cursor of the next page (pass it as `after`); absent on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// The replicated clock the page was read at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_ms: Option<u64>,
}

/// `?prefix=&after=&limit=` of the list routes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ListQuery {
    /// Only names that start with this (empty or absent: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// The cursor: only names after this one (the `next` of the previous page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// Page size, 1 to 1000; default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// Locks only: `stale` reads the answering node's state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<String>,
}

// ---------------------------------------------------------------- queues

/// One message of a batch enqueue. Decoded from a JSON object only (see
/// the crate's `schema` module), never from an array of its fields.
#[derive(Debug, Clone, Default, Serialize, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMessage {
    /// Any JSON value (its text at most 262144 bytes), delivered verbatim.
    pub payload: Payload,
    /// Invisible for this long first; default 0.
    #[serde(
        default,
        deserialize_with = "crate::int::opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(minimum = 0, maximum = 86400000)]
    pub delay_ms: Option<u64>,
    /// Dropped when nobody took it within this long; default never.
    #[serde(
        default,
        deserialize_with = "crate::int::opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(minimum = 1, maximum = 1209600000)]
    pub ttl_ms: Option<u64>,
}

/// `POST /api/queue/enqueue`: either `payload` (one message, with its
/// `delay_ms`/`ttl_ms`) or `messages` (a batch), never both. The document
/// states the two forms as a `oneOf` (see the crate's `schema` module).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EnqueueRequest {
    pub queue: String,
    /// Present (even `null`) means the single form.
    #[serde(
        default,
        deserialize_with = "crate::payload::present",
        skip_serializing_if = "Option::is_none"
    )]
    pub payload: Option<Payload>,
    #[serde(
        default,
        deserialize_with = "crate::int::opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub delay_ms: Option<u64>,
    #[serde(
        default,
        deserialize_with = "crate::int::opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub ttl_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<NewMessage>>,
}

/// 201 answer to an enqueue: `id` for one message, `ids` for a batch.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct EnqueueResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ids: Option<Vec<String>>,
}

/// `POST /api/queue/dequeue`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DequeueRequest {
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^(?!\.\.?$)[^\x00-\x1F\x7F-\x9F]*$"
    )]
    pub queue: String,
    /// Default 1.
    #[serde(
        default,
        deserialize_with = "crate::int::opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(minimum = 1, maximum = 100)]
    pub max: Option<u32>,
    /// Default 30000.
    #[serde(
        default,
        deserialize_with = "crate::int::opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(minimum = 1, maximum = 43200000)]
    pub visibility_ms: Option<u64>,
    /// Long-poll up to this long; default 0.
    #[serde(
        default,
        deserialize_with = "crate::int::opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(minimum = 0, maximum = 20000)]
    pub wait_ms: Option<u64>,
}

/// A delivered message; ack it with its `receipt`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct Message {
    pub id: String,
    pub receipt: String,
    pub payload: Payload,
    pub attempts: u32,
    pub enqueued_at_ms: u64,
}

/// 200 answer to a dequeue (possibly empty).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct DequeueResponse {
    #[serde(default)]
    pub messages: Vec<Message>,
}

/// `POST /api/queue/ack`: `receipt` or `receipts`, never both (a `oneOf`
/// in the document, see the crate's `schema` module). A malformed single `receipt` is
/// 400 `invalid_receipt`; in `receipts` it is reported in `failed`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    pub queue: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipts: Option<Vec<String>>,
}

/// `POST /api/queue/nack`: make the message visible again (after `delay_ms`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NackRequest {
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^(?!\.\.?$)[^\x00-\x1F\x7F-\x9F]*$"
    )]
    pub queue: String,
    #[schema(pattern = r"^[0-9a-fA-F]{16}\.[0-9]+\.[0-9a-fA-F]{16}$")]
    pub receipt: String,
    /// Visible again after this long; default 0.
    #[serde(
        default,
        deserialize_with = "crate::int::opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(minimum = 0, maximum = 86400000)]
    pub delay_ms: Option<u64>,
}

/// `POST /api/queue/extend`: push the visibility deadline out.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtendRequest {
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^(?!\.\.?$)[^\x00-\x1F\x7F-\x9F]*$"
    )]
    pub queue: String,
    #[schema(pattern = r"^[0-9a-fA-F]{16}\.[0-9]+\.[0-9a-fA-F]{16}$")]
    pub receipt: String,
    /// Hidden for this long from now.
    #[schema(minimum = 1, maximum = 43200000)]
    #[serde(deserialize_with = "crate::int::de")]
    pub visibility_ms: u64,
}

/// `GET /api/queue/{queue}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct QueueStats {
    #[serde(default)]
    pub queue: String,
    #[serde(default)]
    pub ready: u64,
    #[serde(default)]
    pub delayed: u64,
    #[serde(default)]
    pub in_flight: u64,
    #[serde(default)]
    pub dead_lettered: u64,
    /// Messages dropped by their TTL so far.
    #[serde(default)]
    pub expired_total: u64,
    /// The queue node that answered (the queue's owner).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// `GET /api/queues`: one page of known queues with their counts, sorted
/// by name. On a queue node, the queues that node owns; through the
/// gateway, every node's, each queue once (from its owner).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct QueueList {
    #[serde(default)]
    pub queues: Vec<QueueStats>,
    /// The cursor of the next page (pass it as `after`); absent on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// Queue nodes that did not answer (gateway): the queues they own are
    /// missing from this page.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unavailable: Vec<String>,
}

/// 200 answer to an ack: how many receipts took effect; with `receipts`,
/// the ones that did not (each with status, code and message).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct AckResponse {
    pub acked: u64,
    #[serde(default)]
    pub failed: Vec<Value>,
}

/// 200 answer to a nack: `requeued`, `dead_lettered` or `expired`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct NackResponse {
    pub outcome: String,
}

/// 200 answer to an extend.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct ExtendResponse {
    pub visible_until_ms: u64,
}

/// A message in a dead-letter list.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct DeadLetter {
    pub id: String,
    pub payload: Payload,
    pub attempts: u32,
    pub enqueued_at_ms: u64,
    #[serde(default)]
    pub dead_lettered_at_ms: u64,
}

/// `GET /api/queue/{queue}/dead?limit=`: the oldest dead letters.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct DeadLetters {
    #[serde(default)]
    pub queue: String,
    #[serde(default)]
    pub messages: Vec<DeadLetter>,
}

/// `POST /api/queue/redrive`: move dead letters (all up to `max`, or the
/// given `ids`) back to ready.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedriveRequest {
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^(?!\.\.?$)[^\x00-\x1F\x7F-\x9F]*$"
    )]
    pub queue: String,
    /// Message ids (16 hex digits each).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_items = 1, max_items = 1000, value_type = Option<Vec<MessageId>>)]
    pub ids: Option<Vec<String>>,
    /// At most this many; default 100.
    #[serde(
        default,
        deserialize_with = "crate::int::opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(minimum = 1, maximum = 1000)]
    pub max: Option<u64>,
}

/// A queue message id: 16 hex digits.
#[derive(ToSchema)]
#[schema(pattern = r"^[0-9a-fA-F]{16}$")]
pub struct MessageId(pub String);

/// 200 answer to a redrive: the ids moved back.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct RedriveResponse {
    #[serde(default)]
    pub redriven: Vec<String>,
}

/// `POST /api/queue/config`: per-queue `max_attempts` (`null` resets to
/// the service default). The answer echoes the setting.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^(?!\.\.?$)[^\x00-\x1F\x7F-\x9F]*$"
    )]
    pub queue: String,
    /// Deliveries before a message is dead-lettered; `null`: the service default.
    #[schema(minimum = 1, maximum = 1000)]
    #[serde(default, deserialize_with = "crate::int::opt")]
    pub max_attempts: Option<u32>,
}

// ---------------------------------------------------------------- events

/// What an event records.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Lock service: a deadlock was broken by aborting a waiting request.
    Deadlock,
    /// Lock service: this node saw a new leader (or lost it).
    LeaderChange,
    /// Queue service: messages moved to a dead-letter list.
    DeadLettered,
    /// Queue service: dead letters moved back to ready.
    Redrive,
}

/// A wait-for edge: `waiter` waits for `blocker` on `resources`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct WaitForEdge {
    pub waiter: String,
    pub blocker: String,
    #[serde(default)]
    pub resources: Vec<String>,
}

/// A broken deadlock: the cycle of owners, its edges, and the aborted request.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct DeadlockEvent {
    /// Owners along the cycle; each waits for the next, the last for the first.
    pub cycle: Vec<String>,
    #[serde(default)]
    pub edges: Vec<WaitForEdge>,
    /// The owner whose request was aborted (answered 409 `deadlock`).
    pub victim: String,
    /// The resource it was waiting for.
    pub resource: String,
    pub wait_id: u64,
    /// The log index of the command whose apply broke the cycle.
    pub index: u64,
}

/// A leader change as one lock node saw it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct LeaderEvent {
    pub term: u64,
    /// The new leader; absent when the node lost its leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_leader_id: Option<u64>,
}

/// Messages dead-lettered or redriven on a queue.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct QueueEvent {
    pub queue: String,
    pub count: u64,
    /// Ids moved (redrive; at most the first 100).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<String>,
}

/// One notable event from a service node's in-memory ring.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct Event {
    /// When it happened, ms since the Unix epoch (deadlocks: the
    /// replicated clock of the apply).
    pub at_ms: u64,
    /// `lock` or `queue`.
    pub service: String,
    /// The node whose ring held it.
    pub node: String,
    pub kind: EventKind,
    /// One line for people.
    pub summary: String,
    /// The same event as seen by several nodes has the same key (a
    /// deadlock is applied on every replica); the gateway lists it once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadlock: Option<DeadlockEvent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<LeaderEvent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueueEvent>,
}

/// `GET /api/events`: the newest events first. Each node keeps its last
/// 256 in memory (lost on restart); the gateway merges every lock and queue
/// node's.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct EventList {
    #[serde(default)]
    pub events: Vec<Event>,
    /// Nodes that did not answer (gateway).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unavailable: Vec<String>,
}

/// `?limit=` of `GET /api/events`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct EventQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
}

// ---------------------------------------------------------------- cache

/// `POST /api/cache/set`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CacheSetRequest {
    #[schema(
        min_length = 1,
        max_length = 512,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*$"
    )]
    pub key: String,
    /// Any JSON value (its encoding at most 1048576 bytes).
    pub value: Value,
    /// Dropped after this long; default never.
    #[serde(
        default,
        deserialize_with = "crate::int::opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(minimum = 1, maximum = 31536000000.0)]
    pub ttl_ms: Option<u64>,
}

/// `GET /api/cache/get?key=` when the key has a value (else 404 `not_found`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct CacheValue {
    #[serde(default)]
    pub key: String,
    pub value: Value,
    /// Grows with every write of the key.
    #[serde(default)]
    pub version: CacheVersion,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
    /// Whether the answering node had the line cached (else it fetched it).
    #[serde(default)]
    pub hit: bool,
}

/// 200 answer to a set.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct CacheSetResponse {
    #[serde(default)]
    pub key: String,
    pub version: CacheVersion,
}

/// A value's version: ordered by `(epoch, seq)`; grows with every write.
#[derive(
    Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, ToSchema,
)]
pub struct CacheVersion {
    #[serde(default)]
    pub epoch: u64,
    #[serde(default)]
    pub seq: u64,
}

/// 200 answer to a delete.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct CacheDeleteResponse {
    #[serde(default)]
    pub key: String,
    pub deleted: bool,
}

// ---------------------------------------------------------------- gateway views

/// One backend node as the gateway sees it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct NodeStatus {
    pub addr: String,
    /// Its `/health` answered 200.
    pub healthy: bool,
    /// Why not, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Health of one backend service.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct ServiceHealth {
    pub ok: bool,
    /// Human-readable reason when not ok (no leader, no healthy node, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default)]
    pub nodes: Vec<NodeStatus>,
}

/// `GET /health` on the gateway (200 when `ok`, else 503 with the same body).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct HealthReport {
    /// `"ok"` or `"degraded"`.
    pub status: String,
    /// Names of the services that are down (`lock`, `queue`, `cache`).
    #[serde(default)]
    pub down: Vec<String>,
    pub lock: ServiceHealth,
    pub queue: ServiceHealth,
    pub cache: ServiceHealth,
}

/// One lock node's own view, from its `GET /cluster`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct LockNodeView {
    pub addr: String,
    pub reachable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_log_index: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_index: Option<u64>,
}

/// The lock cluster as the gateway sees it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct LockClusterView {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_addr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<u64>,
    /// Raft members by node id, as the cluster reports them.
    #[serde(default)]
    pub members: BTreeMap<String, String>,
    /// The lock nodes the gateway is configured with.
    #[serde(default)]
    pub nodes: Vec<LockNodeView>,
}

/// The queue ring as the gateway routes by it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct QueueClusterView {
    /// Ring members (sorted): the nodes queues are placed on.
    #[serde(default)]
    pub members: Vec<String>,
    #[serde(default)]
    pub nodes: Vec<NodeStatus>,
}

/// A cache peer and whether the cache cluster considers it alive.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct CachePeer {
    pub addr: String,
    pub alive: bool,
}

/// The cache nodes the gateway spreads clients over.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct CacheClusterView {
    /// Nodes the gateway knows (from its configuration / DNS).
    #[serde(default)]
    pub members: Vec<String>,
    /// Peers and their liveness as reported by the cache cluster itself
    /// (merged over the nodes that answered; alive if any says so).
    #[serde(default)]
    pub peers: Vec<CachePeer>,
    #[serde(default)]
    pub nodes: Vec<NodeStatus>,
}

/// `GET /cluster` on the gateway.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct ClusterView {
    pub lock: LockClusterView,
    pub queue: QueueClusterView,
    pub cache: CacheClusterView,
}

/// Per-service forwarding counters in `GET /stats`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct ServiceStats {
    /// Client requests routed to this service.
    pub requests: u64,
    /// Of those, answered with a gateway-made error (backend unreachable or timed out).
    pub errors: u64,
    /// Extra backend attempts (leader changes, failover to the next owner/node).
    pub retries: u64,
    /// Backend members right now.
    pub members: Vec<String>,
}

/// `GET /stats` on the gateway.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct GatewayStats {
    pub uptime_ms: u64,
    /// Requests refused before reaching a backend (auth, body limit, bad input).
    pub rejected: u64,
    /// The lock leader the gateway currently sends to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_leader: Option<String>,
    pub leader_changes: u64,
    pub lock: ServiceStats,
    pub queue: ServiceStats,
    pub cache: ServiceStats,
    /// The gateway's limit of calls outstanding to any one backend node.
    #[serde(default)]
    pub max_in_flight_per_backend: u64,
    /// Calls outstanding now, per backend node (nodes with none left out).
    #[serde(default)]
    pub in_flight: std::collections::BTreeMap<String, u64>,
    /// Calls refused with 503 `overloaded` because their backend node was at
    /// the limit.
    #[serde(default)]
    pub shed: u64,
}

/// `?consistency=` of `GET /api/lock/{resource}`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    /// A read-index read: reflects every write acknowledged before it.
    #[default]
    Linearizable,
    /// The answering node's own state, possibly behind.
    Stale,
}
