//! The delivery rules of one queue, as a pure state machine.
//!
//! No I/O, no clock, no randomness: every operation takes `now_ms` (and the
//! receipt nonces it needs) from the caller. The embedded store runs exactly
//! this code and persists what it reports as changed; the Redis store runs
//! the same rules as Lua scripts (`store/redis.rs`), and one set of
//! goldenscripts (`tests/testscripts/`, run by `tests/delivery.rs`) holds
//! both to the same output.
//!
//! A message is in exactly one state:
//! - **pending** with a `visible_at_ms` — *ready* when `visible_at_ms <= now`,
//!   else *delayed*;
//! - **in flight** with a `deadline_ms` and the receipt of its current
//!   delivery;
//! - **dead** (dead-lettered) since `at_ms`, until re-driven.
//!
//! Invariants:
//! - `attempts` counts deliveries: the first delivery has `attempts == 1`,
//!   each redelivery adds one.
//! - A receipt names one delivery (`{id}.{attempts}.{nonce}`). It is valid
//!   only while that delivery is in flight and `now < deadline_ms`; after the
//!   visibility ends, or once the message was delivered again, it is stale.
//! - When the visibility of a delivery ends without an ack, the message
//!   becomes ready again (at its old deadline, keeping its place), unless it
//!   already had `max_attempts` deliveries (then it is dead-lettered) or its
//!   TTL has passed (then it is dropped and counted as expired).
//! - TTL applies while a message waits: a pending message whose
//!   `expires_at_ms <= now` is never delivered; it is dropped and counted.
//!   Dead-lettered messages do not expire; re-driving clears the TTL and
//!   resets `attempts` to 0.
//! - Every operation but enqueue first runs [`Queue::sweep`] (bounded by
//!   [`SWEEP_LIMIT`]), so timeouts take effect on the next touch of the queue,
//!   by whichever node touches it. Enqueue sweeps only when the messages
//!   would not fit, so TTL-expired messages never hold room a producer is
//!   refused for, and the common enqueue does no extra work.
//! - What the queue stores (messages in every state, and their payload
//!   bytes) stays within the [`Room`] an enqueue is given: an enqueue that
//!   would go over is refused whole ([`crate::limit`]).

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::limit::{Full, Room, Usage};

/// Sequence number of a message within its queue; the id is its hex form.
pub type Seq = u64;

/// Largest payload (its JSON text), per message.
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;
/// Most messages in one batch enqueue.
pub const MAX_BATCH: usize = 100;
/// `max` on dequeue lies in `1..=MAX_DEQUEUE`.
pub const MAX_DEQUEUE: u64 = 100;
/// `visibility_ms` lies in `MIN_VISIBILITY_MS..=MAX_VISIBILITY_MS` (12 h, as SQS).
pub const MIN_VISIBILITY_MS: u64 = 1;
pub const MAX_VISIBILITY_MS: u64 = 12 * 3600 * 1000;
pub const DEFAULT_VISIBILITY_MS: u64 = 30_000;
/// Longest long poll (20 s, as SQS): longer waits only tie up connections.
pub const MAX_WAIT_MS: u64 = 20_000;
/// Longest `delay_ms` on enqueue or nack (1 day).
pub const MAX_DELAY_MS: u64 = 24 * 3600 * 1000;
/// Longest `ttl_ms` (14 days, SQS's longest retention).
pub const MAX_TTL_MS: u64 = 14 * 24 * 3600 * 1000;
/// Default deliveries before a message is dead-lettered.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// Highest configurable `max_attempts`.
pub const MAX_MAX_ATTEMPTS: u32 = 1000;
/// Most timed-out deliveries and expired messages one operation processes;
/// the rest wait for the next operation, so no single step runs long (this
/// matters most inside a Redis script, which blocks the server).
pub const SWEEP_LIMIT: usize = 1000;
/// Most dead letters listed or re-driven by one call.
pub const MAX_DEAD_PAGE: u64 = 1000;

/// The id clients see: the sequence number as 16 hex digits, so ids sort in
/// enqueue order as strings too.
pub fn format_id(seq: Seq) -> String {
    format!("{seq:016x}")
}

/// Inverse of [`format_id`].
pub fn parse_id(id: &str) -> Option<Seq> {
    if id.len() != 16 {
        return None;
    }
    u64::from_str_radix(id, 16).ok()
}

/// The receipt for the `attempts`-th delivery of `seq`.
pub fn make_receipt(seq: Seq, attempts: u32, nonce: u64) -> String {
    format!("{}.{attempts}.{nonce:016x}", format_id(seq))
}

/// The message a receipt names, if the receipt is well formed.
pub fn receipt_seq(receipt: &str) -> Option<Seq> {
    let mut parts = receipt.split('.');
    let id = parse_id(parts.next()?)?;
    let attempts = parts.next()?;
    let nonce = parts.next()?;
    if parts.next().is_some()
        || attempts.is_empty()
        || !attempts.bytes().all(|b| b.is_ascii_digit())
        || nonce.len() != 16
        || !nonce.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return None;
    }
    Some(id)
}

/// Where a message is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageState {
    Pending { visible_at_ms: u64 },
    InFlight { deadline_ms: u64, receipt: String },
    Dead { at_ms: u64 },
}

/// One message with everything needed to rebuild the queue from storage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub seq: Seq,
    /// The payload's JSON text as the client sent it.
    pub payload: String,
    pub enqueued_at_ms: u64,
    pub attempts: u32,
    pub expires_at_ms: Option<u64>,
    pub state: MessageState,
}

impl Message {
    fn expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|x| x <= now_ms)
    }
}

/// A message to enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub payload: String,
    pub delay_ms: u64,
    pub ttl_ms: Option<u64>,
}

/// One delivery handed to a consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: String,
    pub receipt: String,
    pub payload: String,
    pub attempts: u32,
    pub enqueued_at_ms: u64,
}

/// A dead-lettered message as listed to operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub id: String,
    pub payload: String,
    pub attempts: u32,
    pub enqueued_at_ms: u64,
    pub dead_lettered_at_ms: u64,
}

/// Counts per state, as `GET /api/queue/{queue}` reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    pub ready: u64,
    pub delayed: u64,
    pub in_flight: u64,
    pub dead_lettered: u64,
    /// Messages dropped by TTL since the queue was created.
    pub expired_total: u64,
    /// Payload bytes stored, over every state (what
    /// `--max-queue-bytes` bounds).
    pub bytes: u64,
}

impl QueueStats {
    /// Messages stored, over every state (what `--max-queue-messages`
    /// bounds).
    pub fn messages(&self) -> u64 {
        self.ready + self.delayed + self.in_flight + self.dead_lettered
    }
}

/// Side effects an operation had beyond its answer, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Events {
    pub expired: u64,
    pub dead_lettered: u64,
}

impl Events {
    pub fn add(&mut self, other: Events) {
        self.expired += other.expired;
        self.dead_lettered += other.dead_lettered;
    }
}

/// Why a receipt was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptError {
    /// Not of the form `{id}.{attempts}.{nonce}`.
    Malformed,
    /// The message no longer exists: acked, expired, or never was.
    NotFound,
    /// The message exists but this is not its live delivery: it was delivered
    /// again, its visibility ended, or it was dead-lettered.
    Stale,
}

/// What a nack did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NackOutcome {
    /// Pending again, ready at `now + delay_ms`.
    Requeued,
    /// It had had `max_attempts` deliveries: now in the dead-letter list.
    DeadLettered,
    /// Its TTL had passed: dropped.
    Expired,
}

/// Per-queue settings and counters that outlive any one message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueMeta {
    /// The last sequence number handed out (ids start at 1).
    pub last_seq: Seq,
    /// `None` means the service default.
    pub max_attempts: Option<u32>,
    pub expired_total: u64,
}

/// What changed since the last [`Queue::take_changes`]: messages to write
/// (`Some`) or delete (`None`), and the meta if it changed.
#[derive(Debug, Default)]
pub struct Changes {
    pub messages: Vec<(Seq, Option<Message>)>,
    pub meta: Option<QueueMeta>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty() && self.meta.is_none()
    }
}

/// One queue's messages and indexes.
#[derive(Debug, Default)]
pub struct Queue {
    meta: QueueMeta,
    messages: HashMap<Seq, Message>,
    /// (visible_at_ms, seq) of pending messages.
    pending: BTreeSet<(u64, Seq)>,
    /// (deadline_ms, seq) of in-flight messages.
    inflight: BTreeSet<(u64, Seq)>,
    /// (at_ms, seq) of dead-lettered messages.
    dead: BTreeSet<(u64, Seq)>,
    /// (expires_at_ms, seq) of pending messages that have a TTL.
    ttl: BTreeSet<(u64, Seq)>,
    /// Sum of the stored payloads' lengths.
    bytes: u64,
    dirty: BTreeSet<Seq>,
    meta_dirty: bool,
}

impl Queue {
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuild a queue from what storage holds.
    pub fn from_parts(meta: QueueMeta, messages: impl IntoIterator<Item = Message>) -> Self {
        let mut q = Queue {
            meta,
            ..Default::default()
        };
        for m in messages {
            q.meta.last_seq = q.meta.last_seq.max(m.seq);
            q.bytes += m.payload.len() as u64;
            q.index(&m);
            q.messages.insert(m.seq, m);
        }
        q
    }

    pub fn meta(&self) -> &QueueMeta {
        &self.meta
    }

    /// Whether no message is stored.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// What the queue stores: messages in every state and their payload
    /// bytes.
    pub fn usage(&self) -> Usage {
        Usage {
            messages: self.messages.len() as u64,
            bytes: self.bytes,
        }
    }

    fn index(&mut self, m: &Message) {
        match &m.state {
            MessageState::Pending { visible_at_ms } => {
                self.pending.insert((*visible_at_ms, m.seq));
                if let Some(x) = m.expires_at_ms {
                    self.ttl.insert((x, m.seq));
                }
            }
            MessageState::InFlight { deadline_ms, .. } => {
                self.inflight.insert((*deadline_ms, m.seq));
            }
            MessageState::Dead { at_ms } => {
                self.dead.insert((*at_ms, m.seq));
            }
        }
    }

    fn unindex(&mut self, m: &Message) {
        match &m.state {
            MessageState::Pending { visible_at_ms } => {
                self.pending.remove(&(*visible_at_ms, m.seq));
                if let Some(x) = m.expires_at_ms {
                    self.ttl.remove(&(x, m.seq));
                }
            }
            MessageState::InFlight { deadline_ms, .. } => {
                self.inflight.remove(&(*deadline_ms, m.seq));
            }
            MessageState::Dead { at_ms } => {
                self.dead.remove(&(*at_ms, m.seq));
            }
        }
    }

    /// Move a message to a new state (and possibly new fields), keeping the
    /// indexes in step.
    fn update(&mut self, seq: Seq, f: impl FnOnce(&mut Message)) {
        let Some(mut m) = self.messages.remove(&seq) else {
            return;
        };
        self.unindex(&m);
        f(&mut m);
        self.index(&m);
        self.messages.insert(seq, m);
        self.dirty.insert(seq);
    }

    fn remove(&mut self, seq: Seq) -> Option<Message> {
        let m = self.messages.remove(&seq)?;
        self.bytes -= m.payload.len() as u64;
        self.unindex(&m);
        self.dirty.insert(seq);
        Some(m)
    }

    fn count_expired(&mut self, events: &mut Events) {
        events.expired += 1;
        self.meta.expired_total += 1;
        self.meta_dirty = true;
    }

    fn max_attempts(&self, default: u32) -> u32 {
        self.meta.max_attempts.unwrap_or(default)
    }

    /// Apply every timeout due at `now_ms` (bounded by [`SWEEP_LIMIT`]):
    /// deliveries whose visibility ended go back to ready, to the dead-letter
    /// list, or away (TTL); pending messages past their TTL are dropped.
    pub fn sweep(&mut self, now_ms: u64, default_max_attempts: u32) -> Events {
        let mut events = Events::default();
        let max = self.max_attempts(default_max_attempts);
        let due: Vec<(u64, Seq)> = self
            .inflight
            .range(..=(now_ms, Seq::MAX))
            .take(SWEEP_LIMIT)
            .copied()
            .collect();
        for (deadline, seq) in due {
            let Some(m) = self.messages.get(&seq) else {
                continue;
            };
            if m.expired(now_ms) {
                self.remove(seq);
                self.count_expired(&mut events);
            } else if m.attempts >= max {
                self.update(seq, |m| m.state = MessageState::Dead { at_ms: now_ms });
                events.dead_lettered += 1;
            } else {
                self.update(seq, |m| {
                    m.state = MessageState::Pending {
                        visible_at_ms: deadline,
                    }
                });
            }
        }
        let expired: Vec<Seq> = self
            .ttl
            .range(..=(now_ms, Seq::MAX))
            .take(SWEEP_LIMIT)
            .map(|&(_, s)| s)
            .collect();
        for seq in expired {
            self.remove(seq);
            self.count_expired(&mut events);
        }
        events
    }

    /// Add messages if they fit in `room`; returns their ids in order, or
    /// the limit they would break (then nothing was added). When they do
    /// not fit, due timeouts are applied first (the sweep's events are
    /// returned) and the check is made again.
    pub fn enqueue(
        &mut self,
        msgs: Vec<NewMessage>,
        now_ms: u64,
        room: &Room,
        default_max_attempts: u32,
    ) -> (Result<Vec<String>, Full>, Events) {
        let adding = Usage::of(&msgs);
        let mut events = Events::default();
        if room.check(self.usage(), adding).is_err() {
            events = self.sweep(now_ms, default_max_attempts);
            if let Err(full) = room.check(self.usage(), adding) {
                return (Err(full), events);
            }
        }
        let mut ids = Vec::with_capacity(msgs.len());
        for n in msgs {
            self.bytes += n.payload.len() as u64;
            self.meta.last_seq += 1;
            let seq = self.meta.last_seq;
            let m = Message {
                seq,
                payload: n.payload,
                enqueued_at_ms: now_ms,
                attempts: 0,
                expires_at_ms: n.ttl_ms.map(|t| now_ms.saturating_add(t)),
                state: MessageState::Pending {
                    visible_at_ms: now_ms.saturating_add(n.delay_ms),
                },
            };
            self.index(&m);
            self.messages.insert(seq, m);
            self.dirty.insert(seq);
            ids.push(format_id(seq));
        }
        self.meta_dirty = true;
        (Ok(ids), events)
    }

    /// Deliver up to `nonces.len()` ready messages, oldest first, each
    /// invisible to others until `now + visibility_ms`.
    pub fn dequeue(
        &mut self,
        visibility_ms: u64,
        now_ms: u64,
        default_max_attempts: u32,
        nonces: &[u64],
    ) -> (Vec<Delivery>, Events) {
        let mut events = self.sweep(now_ms, default_max_attempts);
        let deadline_ms = now_ms.saturating_add(visibility_ms);
        let mut out = Vec::with_capacity(nonces.len());
        while out.len() < nonces.len() {
            let Some(&(visible_at, seq)) = self.pending.first() else {
                break;
            };
            if visible_at > now_ms {
                break;
            }
            // Past its TTL but beyond this sweep's bound: drop, don't deliver.
            if self.messages.get(&seq).is_some_and(|m| m.expired(now_ms)) {
                self.remove(seq);
                self.count_expired(&mut events);
                continue;
            }
            let nonce = nonces[out.len()];
            let mut delivery = None;
            self.update(seq, |m| {
                m.attempts += 1;
                let receipt = make_receipt(seq, m.attempts, nonce);
                delivery = Some(Delivery {
                    id: format_id(seq),
                    receipt: receipt.clone(),
                    payload: m.payload.clone(),
                    attempts: m.attempts,
                    enqueued_at_ms: m.enqueued_at_ms,
                });
                m.state = MessageState::InFlight {
                    deadline_ms,
                    receipt,
                };
            });
            match delivery {
                Some(d) => out.push(d),
                // Index without a message: cannot happen; never loop on it.
                None => {
                    self.pending.remove(&(visible_at, seq));
                }
            }
        }
        (out, events)
    }

    /// When something may next become deliverable: the earliest ready time of
    /// a pending message or the earliest end of a visibility. `None` when the
    /// queue holds neither.
    pub fn next_wake_ms(&self) -> Option<u64> {
        let p = self.pending.first().map(|&(t, _)| t);
        let i = self.inflight.first().map(|&(t, _)| t);
        match (p, i) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The live delivery a receipt names, or why it is not one.
    fn live(&self, receipt: &str, now_ms: u64) -> Result<Seq, ReceiptError> {
        let seq = receipt_seq(receipt).ok_or(ReceiptError::Malformed)?;
        let m = self.messages.get(&seq).ok_or(ReceiptError::NotFound)?;
        match &m.state {
            MessageState::InFlight {
                deadline_ms,
                receipt: r,
            } if r == receipt && *deadline_ms > now_ms => Ok(seq),
            _ => Err(ReceiptError::Stale),
        }
    }

    /// Acknowledge a delivery: the message is gone for good.
    pub fn ack(
        &mut self,
        receipt: &str,
        now_ms: u64,
        default_max_attempts: u32,
    ) -> (Result<(), ReceiptError>, Events) {
        let events = self.sweep(now_ms, default_max_attempts);
        let res = self.live(receipt, now_ms).map(|seq| {
            self.remove(seq);
        });
        (res, events)
    }

    /// Give a delivery back: ready again after `delay_ms`, or dead-lettered
    /// if it used its last attempt, or dropped if its TTL passed.
    pub fn nack(
        &mut self,
        receipt: &str,
        delay_ms: u64,
        now_ms: u64,
        default_max_attempts: u32,
    ) -> (Result<NackOutcome, ReceiptError>, Events) {
        let mut events = self.sweep(now_ms, default_max_attempts);
        let max = self.max_attempts(default_max_attempts);
        let res = self.live(receipt, now_ms).map(|seq| {
            let m = &self.messages[&seq];
            if m.expired(now_ms) {
                self.remove(seq);
                self.count_expired(&mut events);
                NackOutcome::Expired
            } else if m.attempts >= max {
                self.update(seq, |m| m.state = MessageState::Dead { at_ms: now_ms });
                events.dead_lettered += 1;
                NackOutcome::DeadLettered
            } else {
                self.update(seq, |m| {
                    m.state = MessageState::Pending {
                        visible_at_ms: now_ms.saturating_add(delay_ms),
                    }
                });
                NackOutcome::Requeued
            }
        });
        (res, events)
    }

    /// Move a delivery's deadline to `now + visibility_ms`; returns it.
    pub fn extend(
        &mut self,
        receipt: &str,
        visibility_ms: u64,
        now_ms: u64,
        default_max_attempts: u32,
    ) -> (Result<u64, ReceiptError>, Events) {
        let events = self.sweep(now_ms, default_max_attempts);
        let deadline_ms = now_ms.saturating_add(visibility_ms);
        let res = self.live(receipt, now_ms).map(|seq| {
            self.update(seq, |m| {
                if let MessageState::InFlight { deadline_ms: d, .. } = &mut m.state {
                    *d = deadline_ms;
                }
            });
            deadline_ms
        });
        (res, events)
    }

    /// Counts per state at `now_ms` (after applying due timeouts).
    pub fn stats(&mut self, now_ms: u64, default_max_attempts: u32) -> (QueueStats, Events) {
        let events = self.sweep(now_ms, default_max_attempts);
        let ready = self.pending.range(..=(now_ms, Seq::MAX)).count() as u64;
        let stats = QueueStats {
            ready,
            delayed: self.pending.len() as u64 - ready,
            in_flight: self.inflight.len() as u64,
            dead_lettered: self.dead.len() as u64,
            expired_total: self.meta.expired_total,
            bytes: self.bytes,
        };
        (stats, events)
    }

    /// The oldest `limit` dead letters.
    pub fn dead_letters(&self, limit: usize) -> Vec<DeadLetter> {
        self.dead
            .iter()
            .take(limit)
            .filter_map(|&(at, seq)| {
                let m = self.messages.get(&seq)?;
                Some(DeadLetter {
                    id: format_id(seq),
                    payload: m.payload.clone(),
                    attempts: m.attempts,
                    enqueued_at_ms: m.enqueued_at_ms,
                    dead_lettered_at_ms: at,
                })
            })
            .collect()
    }

    /// Put dead letters back as ready messages with `attempts = 0` and no
    /// TTL: the ones named in `ids` (others are ignored), or else the oldest
    /// `limit`. Returns the ids re-driven.
    pub fn redrive(&mut self, ids: Option<&[Seq]>, limit: usize, now_ms: u64) -> Vec<String> {
        let candidates: Vec<Seq> = match ids {
            Some(ids) => ids.to_vec(),
            None => self.dead.iter().take(limit).map(|&(_, s)| s).collect(),
        };
        let mut chosen = Vec::new();
        for seq in candidates {
            if chosen.len() >= limit {
                break;
            }
            let dead = self
                .messages
                .get(&seq)
                .is_some_and(|m| matches!(m.state, MessageState::Dead { .. }));
            if !dead {
                continue;
            }
            self.update(seq, |m| {
                m.attempts = 0;
                m.expires_at_ms = None;
                m.state = MessageState::Pending {
                    visible_at_ms: now_ms,
                };
            });
            chosen.push(seq);
        }
        chosen.into_iter().map(format_id).collect()
    }

    /// Set this queue's `max_attempts` (`None`: back to the default).
    pub fn set_max_attempts(&mut self, max_attempts: Option<u32>) {
        self.meta.max_attempts = max_attempts;
        self.meta_dirty = true;
    }

    /// What changed since the last call, for the storage adapter to persist.
    pub fn take_changes(&mut self) -> Changes {
        let messages = std::mem::take(&mut self.dirty)
            .into_iter()
            .map(|seq| (seq, self.messages.get(&seq).cloned()))
            .collect();
        let meta = std::mem::take(&mut self.meta_dirty).then(|| self.meta.clone());
        Changes { messages, meta }
    }
}

#[cfg(test)]
mod tests {
    //! The delivery rules themselves are tested by the goldenscripts in
    //! `tests/testscripts/`, run against both stores (`tests/delivery.rs`);
    //! here only the id and receipt formats, and the changes a storage
    //! adapter persists.

    use super::*;

    use crate::limit::Limits;

    const MAX: u32 = DEFAULT_MAX_ATTEMPTS;
    const ROOM: Room = Room {
        queue: Limits::QUEUE_DEFAULT,
        node: None,
    };

    fn msg(p: &str) -> NewMessage {
        NewMessage {
            payload: p.to_string(),
            delay_ms: 0,
            ttl_ms: None,
        }
    }

    fn one(q: &mut Queue, vis: u64, now: u64) -> Option<Delivery> {
        q.dequeue(vis, now, MAX, &[7]).0.pop()
    }

    #[test]
    fn ids_and_receipts_round_trip() {
        assert_eq!(format_id(42), "000000000000002a");
        assert_eq!(parse_id("000000000000002a"), Some(42));
        assert_eq!(parse_id("2a"), None);
        let r = make_receipt(42, 3, 0xabc);
        assert_eq!(receipt_seq(&r), Some(42));
        for bad in [
            "",
            "x",
            "000000000000002a",
            "000000000000002a.1",
            "000000000000002a.x.0000000000000abc",
            "000000000000002a.1.abc",
            "000000000000002a.1.0000000000000abc.9",
        ] {
            assert_eq!(receipt_seq(bad), None, "{bad}");
        }
    }

    #[test]
    fn changes_and_rebuild_round_trip() {
        let mut q = Queue::new();
        q.set_max_attempts(Some(3));
        q.enqueue(vec![msg("1"), msg("2"), msg("3")], 0, &ROOM, MAX)
            .0
            .unwrap();
        let d = one(&mut q, 100, 0).unwrap();
        assert_eq!(q.ack(&d.receipt, 1, MAX).0, Ok(()));
        one(&mut q, 100, 1);
        let mut store: HashMap<Seq, Message> = HashMap::new();
        let changes = q.take_changes();
        for (seq, m) in changes.messages {
            match m {
                Some(m) => store.insert(seq, m),
                None => store.remove(&seq),
            };
        }
        let mut r = Queue::from_parts(changes.meta.unwrap(), store.into_values());
        assert_eq!(r.stats(1, MAX), q.stats(1, MAX));
        assert_eq!(r.meta(), q.meta());
        assert_eq!(r.usage(), q.usage());
        assert!(q.take_changes().is_empty());
        assert_eq!(
            r.enqueue(vec![msg("4")], 2, &ROOM, MAX).0,
            Ok(vec![format_id(4)])
        );
    }

    #[test]
    fn usage_follows_every_state_change() {
        let mut q = Queue::new();
        let lim = ROOM;
        q.enqueue(vec![msg("12"), msg("345")], 0, &lim, MAX)
            .0
            .unwrap();
        assert_eq!(
            q.usage(),
            Usage {
                messages: 2,
                bytes: 5
            }
        );
        // In flight and dead-lettered messages still count.
        let d = one(&mut q, 100, 0).unwrap();
        q.set_max_attempts(Some(1));
        assert_eq!(
            q.nack(&d.receipt, 0, 1, MAX).0,
            Ok(NackOutcome::DeadLettered)
        );
        assert_eq!(
            q.usage(),
            Usage {
                messages: 2,
                bytes: 5
            }
        );
        // Re-driving moves, acking frees.
        q.redrive(None, 10, 2);
        assert_eq!(
            q.usage(),
            Usage {
                messages: 2,
                bytes: 5
            }
        );
        let d = one(&mut q, 100, 2).unwrap();
        assert_eq!(q.ack(&d.receipt, 3, MAX).0, Ok(()));
        assert_eq!(q.usage().messages, 1);
        assert_eq!(q.stats(3, MAX).0.bytes, q.usage().bytes);
    }

    #[test]
    fn a_refused_enqueue_changes_nothing_and_expired_messages_make_room() {
        let mut q = Queue::new();
        let lim = Room {
            queue: Limits {
                max_messages: 2,
                max_bytes: 1000,
            },
            node: None,
        };
        let ttl = NewMessage {
            ttl_ms: Some(10),
            ..msg("1")
        };
        q.enqueue(vec![ttl, msg("2")], 0, &lim, MAX).0.unwrap();
        q.take_changes();
        let (res, events) = q.enqueue(vec![msg("3")], 5, &lim, MAX);
        assert_eq!(res.unwrap_err().limit_name(), "queue_messages");
        assert_eq!(events, Events::default());
        assert!(q.take_changes().is_empty());
        assert_eq!(q.meta().last_seq, 2);
        // At 10 the first message's TTL has passed: the sweep drops it and
        // the enqueue fits.
        let (res, events) = q.enqueue(vec![msg("3")], 10, &lim, MAX);
        assert_eq!(res, Ok(vec![format_id(3)]));
        assert_eq!(events.expired, 1);
        assert_eq!(q.usage().messages, 2);
    }
}
