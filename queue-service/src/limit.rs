//! Bounds on what the queue service stores, so a node cannot be driven out
//! of memory by producers that outrun their consumers.
//!
//! Two scopes, each bounded in messages and in payload bytes:
//! - **queue**: what one queue stores, in every state (ready, delayed, in
//!   flight, dead-lettered). Enforced by both stores, inside the same atomic
//!   step as the enqueue (the pure [`crate::delivery::Queue`] for the
//!   embedded store, the enqueue Lua script for Redis).
//! - **node**: what one node stores across all its queues. Enforced by the
//!   embedded store only, where it is the node's memory: every stored
//!   message is held in memory (and on disk). With Redis the node holds no
//!   messages; Redis's own `maxmemory` bounds Redis.
//!
//! Invariants:
//! - an enqueue (one message or a batch) that would take any use past its
//!   limit is refused as a whole; nothing stored is changed by the refusal;
//! - only enqueue adds to use: dequeue, ack, nack, extend and re-drive of
//!   dead letters move messages within their queue or remove them, so they
//!   are never refused, and an ack frees room at once;
//! - bytes are the payloads' JSON text as stored (what the byte limits bound
//!   is the part of the memory that grows with message size; the per-message
//!   overhead is bounded through the message limits).

use std::fmt;

use serde::Serialize;

use crate::delivery::NewMessage;

/// Default most messages one queue stores. On the embedded store a message
/// costs ~360 B of RSS besides its payload (measured: ~455 B per message of
/// 100 B, ~1.36 KB per message of 1000 B).
pub const DEFAULT_MAX_QUEUE_MESSAGES: u64 = 100_000;
/// Default most payload bytes one queue stores (64 MiB).
pub const DEFAULT_MAX_QUEUE_BYTES: u64 = 64 * 1024 * 1024;
/// Default most messages one embedded-store node stores across its queues.
/// With the byte limit below the node's RSS stays under ~10 MB + 250,000 ×
/// 360 B + 128 MiB ≈ 235 MB, leaving a 512 MB container room for request
/// buffers and the allocator's slack.
pub const DEFAULT_MAX_NODE_MESSAGES: u64 = 250_000;
/// Default most payload bytes one embedded-store node stores (128 MiB).
pub const DEFAULT_MAX_NODE_BYTES: u64 = 128 * 1024 * 1024;
/// What a refused enqueue's `Retry-After` says, in seconds: room appears as
/// soon as consumers ack, so a short wait is the right first guess.
pub const RETRY_AFTER_SECS: u64 = 1;

/// How much is stored, or would be added.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub messages: u64,
    pub bytes: u64,
}

impl Usage {
    /// What enqueueing `msgs` adds.
    pub fn of(msgs: &[NewMessage]) -> Self {
        Usage {
            messages: msgs.len() as u64,
            bytes: msgs.iter().map(|m| m.payload.len() as u64).sum(),
        }
    }

    pub fn add(&mut self, other: Usage) {
        self.messages += other.messages;
        self.bytes += other.bytes;
    }

    pub fn sub(&mut self, other: Usage) {
        self.messages = self.messages.saturating_sub(other.messages);
        self.bytes = self.bytes.saturating_sub(other.bytes);
    }
}

/// The most one scope may store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limits {
    pub max_messages: u64,
    pub max_bytes: u64,
}

impl Limits {
    /// The per-queue defaults.
    pub const QUEUE_DEFAULT: Limits = Limits {
        max_messages: DEFAULT_MAX_QUEUE_MESSAGES,
        max_bytes: DEFAULT_MAX_QUEUE_BYTES,
    };
    /// The per-node defaults.
    pub const NODE_DEFAULT: Limits = Limits {
        max_messages: DEFAULT_MAX_NODE_MESSAGES,
        max_bytes: DEFAULT_MAX_NODE_BYTES,
    };

    /// Whether `adding` fits beside `used`; if not, the first limit it
    /// breaks (messages before bytes).
    pub fn check(&self, scope: Scope, used: Usage, adding: Usage) -> Result<(), Full> {
        let over = |resource, limit: u64, used: u64, adding: u64| {
            (used.saturating_add(adding) > limit).then_some(Full {
                scope,
                resource,
                limit,
                used,
                adding,
            })
        };
        match over(
            Resource::Messages,
            self.max_messages,
            used.messages,
            adding.messages,
        )
        .or_else(|| over(Resource::Bytes, self.max_bytes, used.bytes, adding.bytes))
        {
            Some(full) => Err(full),
            None => Ok(()),
        }
    }
}

/// What one enqueue must fit in: its queue's limits and, on a store that
/// enforces them, the node's (with what the node stores in its other
/// queues, so that room a sweep of this queue frees counts for both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room {
    pub queue: Limits,
    /// The node's limits and what the node stores outside this queue.
    pub node: Option<(Limits, Usage)>,
}

impl Room {
    /// Whether `adding` fits beside `queue_used` (what the queue stores);
    /// if not, the first limit it breaks: the queue's before the node's, as
    /// the more specific.
    pub fn check(&self, queue_used: Usage, adding: Usage) -> Result<(), Full> {
        self.queue.check(Scope::Queue, queue_used, adding)?;
        if let Some((limits, mut node_used)) = self.node {
            node_used.add(queue_used);
            limits.check(Scope::Node, node_used, adding)?;
        }
        Ok(())
    }
}

/// The limits a store enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    /// Per queue, on both stores.
    pub queue: Limits,
    /// Per node, on the embedded store only (the Redis store ignores it).
    pub node: Limits,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            queue: Limits::QUEUE_DEFAULT,
            node: Limits::NODE_DEFAULT,
        }
    }
}

/// Which use a limit bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// One queue.
    Queue,
    /// Every queue this node stores.
    Node,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    Messages,
    Bytes,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Queue => "queue",
            Scope::Node => "node",
        }
    }
}

impl Resource {
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Messages => "messages",
            Resource::Bytes => "bytes",
        }
    }
}

/// An enqueue refused because it would go over a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full {
    pub scope: Scope,
    pub resource: Resource,
    /// The limit's value.
    pub limit: u64,
    /// What the scope stores now.
    pub used: u64,
    /// What the refused enqueue would have added.
    pub adding: u64,
}

impl Full {
    /// The limit's name as on `/metrics` and in the error body:
    /// `queue_messages`, `queue_bytes`, `node_messages`, `node_bytes`.
    pub fn limit_name(&self) -> &'static str {
        match (self.scope, self.resource) {
            (Scope::Queue, Resource::Messages) => "queue_messages",
            (Scope::Queue, Resource::Bytes) => "queue_bytes",
            (Scope::Node, Resource::Messages) => "node_messages",
            (Scope::Node, Resource::Bytes) => "node_bytes",
        }
    }
}

impl fmt::Display for Full {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whose, flag) = match (self.scope, self.resource) {
            (Scope::Queue, Resource::Messages) => ("queue", "--max-queue-messages"),
            (Scope::Queue, Resource::Bytes) => ("queue", "--max-queue-bytes"),
            (Scope::Node, Resource::Messages) => ("node", "--max-node-messages"),
            (Scope::Node, Resource::Bytes) => ("node", "--max-node-bytes"),
        };
        let what = match self.resource {
            Resource::Messages => "messages",
            Resource::Bytes => "payload bytes",
        };
        let stored = match self.scope {
            Scope::Queue => "the queue stores",
            Scope::Node => "this node stores across its queues",
        };
        write!(
            f,
            "{whose} is full: {stored} {used} {what} and this enqueue adds {adding}, \
             over the {whose} limit of {limit} {what} ({flag}); nothing was enqueued. \
             Retry after consumers ack messages",
            used = self.used,
            adding = self.adding,
            limit = self.limit,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits {
        max_messages: 3,
        max_bytes: 10,
    };

    fn u(messages: u64, bytes: u64) -> Usage {
        Usage { messages, bytes }
    }

    #[test]
    fn fits_up_to_the_limit_and_not_beyond() {
        assert_eq!(L.check(Scope::Queue, u(2, 9), u(1, 1)), Ok(()));
        assert_eq!(
            L.check(Scope::Queue, u(3, 9), u(1, 1)),
            Err(Full {
                scope: Scope::Queue,
                resource: Resource::Messages,
                limit: 3,
                used: 3,
                adding: 1
            })
        );
        let full = L.check(Scope::Node, u(1, 9), u(1, 2)).unwrap_err();
        assert_eq!(
            (full.resource, full.limit, full.used),
            (Resource::Bytes, 10, 9)
        );
        assert_eq!(full.limit_name(), "node_bytes");
    }

    #[test]
    fn the_queue_is_checked_before_the_node() {
        let room = Room {
            queue: L,
            node: Some((
                Limits {
                    max_messages: 5,
                    max_bytes: 100,
                },
                u(4, 0),
            )),
        };
        assert_eq!(
            room.check(u(1, 0), u(1, 1)).unwrap_err().limit_name(),
            "node_messages"
        );
        assert_eq!(
            room.check(u(3, 0), u(1, 1)).unwrap_err().limit_name(),
            "queue_messages"
        );
        assert_eq!(room.check(u(0, 0), u(1, 1)), Ok(()));
    }

    #[test]
    fn messages_are_checked_before_bytes() {
        let full = L.check(Scope::Queue, u(3, 10), u(1, 1)).unwrap_err();
        assert_eq!(full.limit_name(), "queue_messages");
    }

    #[test]
    fn the_message_names_the_limit_and_its_value() {
        let full = L.check(Scope::Node, u(0, 0), u(1, 11)).unwrap_err();
        let text = full.to_string();
        assert!(text.contains("node limit of 10 payload bytes"), "{text}");
        assert!(text.contains("--max-node-bytes"), "{text}");
    }

    #[test]
    fn usage_adds_and_subtracts() {
        let msgs = [NewMessage {
            payload: "\"abc\"".into(),
            delay_ms: 0,
            ttl_ms: None,
        }];
        let mut total = Usage::of(&msgs);
        assert_eq!(total, u(1, 5));
        total.add(u(2, 5));
        total.sub(u(1, 20));
        assert_eq!(total, u(2, 0));
    }
}
