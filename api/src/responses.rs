//! The error answers of the public routes, as OpenAPI response sets
//! (`utoipa::IntoResponses`): each route lists its success answer and one of
//! these sets, so a status is documented once for every route that can give
//! it. Every error body is [`ErrorBody`]. Statuses as answered through the
//! gateway (which adds 401 with `API_TOKENS`, 413 over its body limit, 503
//! when no backend answers or, as `overloaded` with `Retry-After`, when the
//! backend node has the gateway's most calls in flight, and 504 on timeouts).

#![allow(dead_code)] // Variants describe answers; they are never built.

use utoipa::IntoResponses;

use crate::types::ErrorBody;

/// Errors of `POST /api/lock/acquire|release|renew`.
#[derive(IntoResponses)]
pub enum LockWriteErrors {
    /// `malformed_json`, or `invalid_input`: a name empty, too long or not
    /// printable, a resource `.`/`..`, a TTL or wait out of range.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// `unauthorized`: missing or wrong bearer token (gateway with `API_TOKENS`).
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// `not_held` (release, renew): no such hold.
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// `lock_held` (with `holders`), `wait_timeout`, `deadlock` (with `cycle`),
    /// `already_held`, `already_waiting`, `request_id_reused`,
    /// `token_mismatch`, `owner_mismatch`.
    #[response(status = 409)]
    Conflict(ErrorBody),
    /// `body_too_large`.
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// `invalid_field`: a missing, unknown or mistyped field.
    #[response(status = 422)]
    Unprocessable(ErrorBody),
    /// `overloaded`: the leader's write queue is full; `capacity_exceeded`
    /// (acquire, with `limit` and `Retry-After`): the locks held plus waiters
    /// are at the service's limit. Not applied either way; retry after a pause.
    #[response(status = 429)]
    Overloaded(ErrorBody),
    /// `no_leader` / `unavailable`: no lock leader within the retry budget;
    /// `overloaded` (gateway, with `Retry-After`): the node is at the
    /// gateway's in-flight limit.
    #[response(status = 503)]
    Unavailable(ErrorBody),
    /// `timeout` / `backend_timeout`.
    #[response(status = 504)]
    Timeout(ErrorBody),
}

/// Errors of `POST /api/queue/*`.
#[derive(IntoResponses)]
pub enum QueueWriteErrors {
    /// `malformed_json`, `invalid_input` (a name, range or count out of
    /// bounds; a queue `.`/`..`), `invalid_receipt`.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// `unauthorized`.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// `message_not_found` (ack, nack, extend): acked, expired or never existed.
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// `stale_receipt` (ack, nack, extend): the message was redelivered since.
    #[response(status = 409)]
    Conflict(ErrorBody),
    /// `body_too_large`, `payload_too_large`.
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// `invalid_field`: a missing, unknown or mistyped field, or neither/both forms.
    #[response(status = 422)]
    Unprocessable(ErrorBody),
    /// `queue_full` (enqueue): the messages would take the queue or the node
    /// over a storage limit (`limit`: `queue_messages`, `queue_bytes`,
    /// `node_messages` or `node_bytes`; with `max`, `current`, `adding`).
    /// Nothing was enqueued; retry after `Retry-After` seconds, once
    /// consumers have acked.
    #[response(status = 429)]
    QueueFull(ErrorBody),
    /// `unavailable`, `owner_unavailable`, `store_unavailable`.
    #[response(status = 503)]
    Unavailable(ErrorBody),
    /// `timeout` / `backend_timeout`.
    #[response(status = 504)]
    Timeout(ErrorBody),
}

/// Errors of the `GET` routes with a name in the path or a query.
#[derive(IntoResponses)]
pub enum ReadErrors {
    /// `invalid_input`: a name or parameter out of bounds.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// `unauthorized`.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// `not_found`: no such key (cache), or no route (a path segment that is
    /// not a name, such as `.`).
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// `no_leader`, `unavailable`, `store_unavailable`; `overloaded`
    /// (gateway, with `Retry-After`).
    #[response(status = 503)]
    Unavailable(ErrorBody),
    /// `timeout` / `backend_timeout`.
    #[response(status = 504)]
    Timeout(ErrorBody),
}

/// Errors of the cache routes.
#[derive(IntoResponses)]
pub enum CacheErrors {
    /// `malformed_json`, `invalid_input` (key empty, too long or not
    /// printable; TTL out of range), `unknown_node` (a `node` that is not a
    /// cache member).
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// `unauthorized`.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// `not_found`: no such key.
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// `body_too_large`, `value_too_large`.
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// `invalid_field`: a missing, unknown or mistyped field.
    #[response(status = 422)]
    Unprocessable(ErrorBody),
    /// `unavailable`: the node cannot serve (no confirmed view, memory down);
    /// `overloaded` (gateway, with `Retry-After`).
    #[response(status = 503)]
    Unavailable(ErrorBody),
    /// `timeout` / `backend_timeout`.
    #[response(status = 504)]
    Timeout(ErrorBody),
}

/// Errors of the gateway's own views.
#[derive(IntoResponses)]
pub enum ViewErrors {
    /// `unauthorized`.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
}
