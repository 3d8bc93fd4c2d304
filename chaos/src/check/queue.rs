//! The queue checker: Jepsen's total queue, plus "an acked message never
//! comes back".
//!
//! Operations read (workload `"queue"`; faults and other workloads are
//! ignored):
//! - `enqueue`: input `{queue, value}` (values unique), Ok output `{id}`;
//! - `dequeue`: input `{queue}`, Ok output `{messages: [{id, value,
//!   receipt, attempts}]}`;
//! - `ack`: input `{queue, receipt, value}` (without `value`, the value
//!   the receipt was delivered with);
//! - `drain` (process `"final"`): input `{queue}`, Ok output `{values}`:
//!   everything left in the queue after healing, ready, in flight or
//!   dead-lettered.
//!
//! A value is *delivered* when an Ok dequeue or an Ok drain of its queue
//! returns it. Values are told apart per queue: a value enqueued on one
//! queue and delivered from another is unexpected there.
//!
//! Invariants (each a violation when broken):
//! - *Nothing lost*: every value whose enqueue was Ok is delivered at least
//!   once. A queue with no Ok drain still counts its undelivered values as
//!   lost (as Jepsen does: the drain is part of the workload), and the
//!   message says the drain is missing.
//! - *Nothing unexpected*: every delivered value was carried by some
//!   enqueue of that queue (whatever its outcome) invoked no later than the
//!   delivery completed.
//! - *Acked stays acked*: no dequeue or drain invoked after an Ok ack of a
//!   message returns that message (told apart by message id where the
//!   history records one: an enqueue retried after a lost answer may store
//!   its value in two messages, and acking one says nothing of the other;
//!   by value where it does not).
//!
//! Not violations, only counted: duplicates (a value dequeued more than
//! once: at-least-once delivery redelivers what was not acked in time),
//! values dequeued and then still present in the drain (dequeued, never
//! acked), and values delivered whose every enqueue failed (a `Fail`
//! enqueue "certainly did not happen", so the runner should look at these
//! if any appear).

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Value};

use super::{name_at, u64_at, Report, Violations};
use crate::history::{Op, Outcome};

const WORKLOAD: &str = "queue";

/// `(queue, value)`.
type Item = (String, u64);

/// What happened to one value.
#[derive(Debug, Default)]
struct Fate {
    /// Enqueue attempts: `(op id, invoke_us, outcome)`.
    enqueues: Vec<(u64, u64, Outcome)>,
    /// Ok dequeues that returned it: `(op id, invoke_us, complete_us,
    /// message id)`.
    dequeued: Vec<(u64, u64, u64, Option<String>)>,
    /// Ok drains that listed it: `(op id, invoke_us, complete_us, message
    /// id)`.
    drained: Vec<(u64, u64, u64, Option<String>)>,
    /// Per acked message, the earliest completion of an Ok ack:
    /// `(complete_us, op id, message id)`.
    acked: Vec<(u64, u64, Option<String>)>,
}

/// Is a delivery of message `delivered` one of the acked message `acked`?
/// By message id when both are known: one value can travel in two
/// messages (an enqueue retried after its answer was lost stores it
/// twice, which at-least-once allows), and acking one of them says
/// nothing of the other. By value alone when an id is missing.
fn same_message(acked: &Option<String>, delivered: &Option<String>) -> bool {
    match (acked, delivered) {
        (Some(a), Some(d)) => a == d,
        _ => true,
    }
}

#[derive(Default)]
struct Stats {
    enqueue: [usize; 3],
    dequeue_ok: usize,
    ack_ok: usize,
    drains_ok: usize,
    skipped: usize,
}

/// A message's value: `value`, or a payload that is the value or holds it.
fn message_value(m: &Value) -> Option<u64> {
    u64_at(m, "value").or_else(|| {
        let p = m.get("payload")?;
        p.as_u64().or_else(|| u64_at(p, "value"))
    })
}

fn unreadable(op: &Op, what: &str, v: &mut Violations, stats: &mut Stats) {
    stats.skipped += 1;
    // Only an Ok op claims something happened.
    if op.outcome == Outcome::Ok {
        v.push(|| format!("op {} ({}): {what}: {}", op.id, op.f, op.output));
    }
}

/// Check the queue invariants (see the module docs) over `ops`.
pub fn check(ops: &[Op]) -> Report {
    let mut v = Violations::default();
    let mut stats = Stats::default();
    let mut fates: BTreeMap<Item, Fate> = BTreeMap::new();
    let mut drained_queues: HashMap<String, usize> = HashMap::new();
    // Receipts seen in dequeues, so an ack without a value (or an id)
    // still counts: `(queue, receipt)` → `(value, message id)`.
    let mut receipts: HashMap<(String, String), (u64, Option<String>)> = HashMap::new();
    let mut acks: Vec<&Op> = Vec::new();

    for op in ops
        .iter()
        .filter(|o| o.workload == WORKLOAD && !o.is_fault())
    {
        let Some(queue) = name_at(&op.input, "queue") else {
            unreadable(op, "no queue in the input", &mut v, &mut stats);
            continue;
        };
        match op.f.as_str() {
            "enqueue" => {
                stats.enqueue[match op.outcome {
                    Outcome::Ok => 0,
                    Outcome::Fail => 1,
                    Outcome::Unknown => 2,
                }] += 1;
                let Some(value) = u64_at(&op.input, "value") else {
                    unreadable(op, "enqueue without a value", &mut v, &mut stats);
                    continue;
                };
                fates.entry((queue, value)).or_default().enqueues.push((
                    op.id,
                    op.invoke_us,
                    op.outcome,
                ));
            }
            "dequeue" if op.outcome == Outcome::Ok => {
                stats.dequeue_ok += 1;
                let Some(messages) = op.output.get("messages").and_then(Value::as_array) else {
                    unreadable(op, "Ok dequeue without messages", &mut v, &mut stats);
                    continue;
                };
                for m in messages {
                    let Some(value) = message_value(m) else {
                        unreadable(op, "a message without a value", &mut v, &mut stats);
                        continue;
                    };
                    let id = name_at(m, "id");
                    if let Some(receipt) = name_at(m, "receipt") {
                        receipts.insert((queue.clone(), receipt), (value, id.clone()));
                    }
                    fates
                        .entry((queue.clone(), value))
                        .or_default()
                        .dequeued
                        .push((op.id, op.invoke_us, op.complete_us, id));
                }
            }
            "drain" if op.outcome == Outcome::Ok => {
                stats.drains_ok += 1;
                let Some(values) = op.output.get("values").and_then(Value::as_array) else {
                    unreadable(op, "Ok drain without values", &mut v, &mut stats);
                    continue;
                };
                *drained_queues.entry(queue.clone()).or_default() += 1;
                // `ids`, when recorded, names each value's message.
                let ids = op.output.get("ids").and_then(Value::as_array);
                for (i, value) in values.iter().enumerate() {
                    let Some(value) = value.as_u64().or_else(|| message_value(value)) else {
                        unreadable(op, "a drained value that is not a u64", &mut v, &mut stats);
                        continue;
                    };
                    let id = ids
                        .and_then(|ids| ids.get(i))
                        .and_then(Value::as_str)
                        .map(str::to_string);
                    fates
                        .entry((queue.clone(), value))
                        .or_default()
                        .drained
                        .push((op.id, op.invoke_us, op.complete_us, id));
                }
            }
            "ack" if op.outcome == Outcome::Ok => acks.push(op),
            _ => {}
        }
    }
    // Acks after every dequeue was read, so a receipt can name its value.
    for op in acks {
        stats.ack_ok += 1;
        let Some(queue) = name_at(&op.input, "queue") else {
            continue;
        };
        let by_receipt =
            name_at(&op.input, "receipt").and_then(|r| receipts.get(&(queue.clone(), r)).cloned());
        let value = u64_at(&op.input, "value").or(by_receipt.as_ref().map(|r| r.0));
        let id = name_at(&op.input, "id").or(by_receipt.and_then(|r| r.1));
        let Some(value) = value else {
            unreadable(
                op,
                "ack of an unknown value and receipt",
                &mut v,
                &mut stats,
            );
            continue;
        };
        let fate = fates.entry((queue, value)).or_default();
        match fate.acked.iter_mut().find(|a| a.2 == id) {
            Some(a) if op.complete_us < a.0 => *a = (op.complete_us, op.id, id),
            Some(_) => {}
            None => fate.acked.push((op.complete_us, op.id, id)),
        }
    }

    let mut delivered = 0;
    let mut lost = 0;
    let mut duplicates = 0;
    let mut unexpected = 0;
    let mut dequeued_then_drained = 0;
    let mut delivered_after_failed_enqueue = 0;
    let mut acked_then_redelivered = 0;
    for ((queue, value), fate) in &fates {
        let deliveries = fate.dequeued.iter().chain(&fate.drained);
        let enqueued_ok = fate.enqueues.iter().any(|e| e.2 == Outcome::Ok);
        if fate.dequeued.is_empty() && fate.drained.is_empty() {
            if enqueued_ok {
                lost += 1;
                let drained = drained_queues.contains_key(queue);
                v.push(|| {
                    format!(
                        "queue {queue}: value {value} lost: its enqueue was Ok (op {}) and no \
                         dequeue{} returned it",
                        fate.enqueues
                            .iter()
                            .find(|e| e.2 == Outcome::Ok)
                            .map_or(0, |e| e.0),
                        if drained {
                            " or drain"
                        } else {
                            " (and the queue has no Ok drain)"
                        }
                    )
                });
            }
            continue;
        }
        delivered += 1;
        duplicates += fate.dequeued.len().saturating_sub(1);
        if !fate.dequeued.is_empty() && !fate.drained.is_empty() {
            dequeued_then_drained += 1;
        }
        if !fate.enqueues.is_empty() && fate.enqueues.iter().all(|e| e.2 == Outcome::Fail) {
            delivered_after_failed_enqueue += 1;
        }
        // The earliest an enqueue could have happened; a delivery that
        // completed before it is of something that was not there yet.
        let first_enqueue = fate.enqueues.iter().map(|e| e.1).min();
        for &(op, _, complete, _) in deliveries.clone() {
            if first_enqueue.is_none_or(|e| complete < e) {
                unexpected += 1;
                v.push(|| match first_enqueue {
                    None => format!(
                        "queue {queue}: op {op} delivered value {value}, which no enqueue carried"
                    ),
                    Some(e) => format!(
                        "queue {queue}: op {op} delivered value {value} (completed at {complete} \
                         µs) before any enqueue of it was invoked (at {e} µs)"
                    ),
                });
            }
        }
        for (acked_at, ack, acked_id) in &fate.acked {
            let (acked_at, ack) = (*acked_at, *ack);
            for (op, invoke, _, id) in deliveries.clone() {
                let (op, invoke) = (*op, *invoke);
                if acked_at < invoke && same_message(acked_id, id) {
                    acked_then_redelivered += 1;
                    v.push(|| {
                        format!(
                            "queue {queue}: value {value} acked (op {ack}, completed at \
                             {acked_at} µs) and delivered again by op {op} (invoked at {invoke} µs)"
                        )
                    });
                }
            }
        }
    }

    let stats = json!({
        "enqueued": {
            "ok": stats.enqueue[0], "fail": stats.enqueue[1], "unknown": stats.enqueue[2],
        },
        "dequeues_ok": stats.dequeue_ok,
        "acks_ok": stats.ack_ok,
        "drains_ok": stats.drains_ok,
        "delivered": delivered,
        "lost": lost,
        "duplicates": duplicates,
        "unexpected": unexpected,
        "acked_then_redelivered": acked_then_redelivered,
        "dequeued_then_drained": dequeued_then_drained,
        "delivered_after_failed_enqueue": delivered_after_failed_enqueue,
        "skipped_unreadable": stats.skipped,
    });
    v.into_report(WORKLOAD, stats)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::check::testing::{self, H};
    use crate::history::Outcome::{Fail, Ok as Done, Unknown};

    impl H {
        fn enq(&mut self, value: u64, t: (u64, u64), outcome: Outcome) -> u64 {
            self.op(
                "p",
                "queue",
                "enqueue",
                t,
                outcome,
                json!({"queue": "q", "value": value}),
                json!({"id": format!("m{value}")}),
            )
        }
        /// An Ok dequeue of `values`, receipt `r<value>`.
        fn deq(&mut self, values: &[u64], t: (u64, u64)) -> u64 {
            let messages: Vec<Value> = values
                .iter()
                .map(|v| json!({"id": format!("m{v}"), "value": v, "receipt": format!("r{v}"), "attempts": 1}))
                .collect();
            self.op(
                "c",
                "queue",
                "dequeue",
                t,
                Done,
                json!({"queue": "q"}),
                json!({ "messages": messages }),
            )
        }
        fn ack(&mut self, input: Value, t: (u64, u64)) -> u64 {
            self.op("c", "queue", "ack", t, Done, input, Value::Null)
        }
        fn drain(&mut self, values: &[u64], t: (u64, u64)) -> u64 {
            self.op(
                "final",
                "queue",
                "drain",
                t,
                Done,
                json!({"queue": "q"}),
                json!({ "values": values }),
            )
        }
    }

    fn assert_valid(h: &H) -> Report {
        testing::assert_valid(check, h)
    }

    fn assert_violation(h: &H, needle: &str) -> Report {
        testing::assert_violation(check, h, needle)
    }

    #[test]
    fn every_ok_enqueue_delivered_once_or_in_the_drain_is_valid() {
        let mut h = H::default();
        h.enq(1, (0, 10), Done);
        h.enq(2, (0, 10), Done);
        h.enq(3, (0, 10), Unknown);
        h.enq(4, (0, 10), Unknown);
        h.deq(&[1, 3], (20, 30));
        h.ack(json!({"queue": "q", "receipt": "r1", "value": 1}), (40, 50));
        h.drain(&[2], (100, 110));
        let r = assert_valid(&h);
        assert_eq!(r.stats["delivered"], 3);
        assert_eq!(r.stats["enqueued"]["unknown"], 2);
    }

    #[test]
    fn an_ok_enqueue_never_delivered_is_lost() {
        let mut h = H::default();
        h.enq(1, (0, 10), Done);
        h.enq(2, (0, 10), Done);
        h.deq(&[1], (20, 30));
        h.drain(&[], (100, 110));
        let r = assert_violation(&h, "value 2 lost");
        assert_eq!(r.stats["lost"], 1);
        // Without a drain the same value is lost, and the message says why.
        let mut h = H::default();
        h.enq(2, (0, 10), Done);
        assert_violation(&h, "no Ok drain");
    }

    #[test]
    fn a_value_never_enqueued_is_unexpected() {
        let mut h = H::default();
        h.enq(1, (0, 10), Done);
        h.deq(&[1, 9], (20, 30));
        let r = assert_violation(&h, "no enqueue carried");
        assert_eq!(r.stats["unexpected"], 1);
        // Nor may a value come out before it was put in.
        let mut h = H::default();
        h.deq(&[1], (0, 5));
        h.enq(1, (10, 20), Unknown);
        assert_violation(&h, "before any enqueue");
    }

    #[test]
    fn a_value_from_a_failed_or_unknown_enqueue_is_not_unexpected() {
        let mut h = H::default();
        h.enq(1, (0, 10), Fail);
        h.enq(2, (0, 10), Unknown);
        h.deq(&[1, 2], (5, 30));
        let r = assert_valid(&h);
        assert_eq!(r.stats["delivered_after_failed_enqueue"], 1);
    }

    #[test]
    fn duplicates_are_counted_not_failed() {
        let mut h = H::default();
        h.enq(1, (0, 10), Done);
        h.deq(&[1], (20, 30));
        h.deq(&[1], (40, 50));
        h.deq(&[1], (60, 70));
        h.drain(&[1], (100, 110));
        let r = assert_valid(&h);
        assert_eq!(r.stats["duplicates"], 2);
        assert_eq!(r.stats["dequeued_then_drained"], 1);
    }

    #[test]
    fn a_value_delivered_after_its_ack_completed_is_a_violation() {
        let mut h = H::default();
        h.enq(1, (0, 10), Done);
        h.deq(&[1], (20, 30));
        // The ack names only the receipt; the checker finds the value.
        h.ack(json!({"queue": "q", "receipt": "r1"}), (40, 50));
        h.deq(&[1], (60, 70));
        let r = assert_violation(&h, "acked (op 2");
        assert_eq!(r.stats["acked_then_redelivered"], 1);
        // In the drain too.
        let mut h = H::default();
        h.enq(1, (0, 10), Done);
        h.deq(&[1], (20, 30));
        h.ack(json!({"queue": "q", "receipt": "r1", "value": 1}), (40, 50));
        h.drain(&[1], (60, 70));
        assert_violation(&h, "delivered again");
    }

    #[test]
    fn a_delivery_concurrent_with_the_ack_is_fine() {
        let mut h = H::default();
        h.enq(1, (0, 10), Done);
        h.deq(&[1], (20, 30));
        h.ack(json!({"queue": "q", "receipt": "r1", "value": 1}), (40, 50));
        h.deq(&[1], (50, 70));
        h.drain(&[], (100, 110));
        assert_valid(&h);
    }

    #[test]
    fn queues_are_told_apart_and_other_workloads_ignored() {
        let mut h = H::default();
        h.enq(1, (0, 10), Done);
        h.op(
            "x",
            "lock",
            "dequeue",
            (0, 1),
            Done,
            json!({"queue": "q"}),
            json!({"messages": [{"value": 7}]}),
        );
        h.op(
            "c",
            "queue",
            "dequeue",
            (20, 30),
            Done,
            json!({"queue": "other"}),
            json!({"messages": [{"value": 1}]}),
        );
        h.drain(&[1], (100, 110));
        assert_violation(&h, "queue other: op 2 delivered value 1");
    }

    #[test]
    fn a_value_enqueued_twice_may_come_back_in_its_other_message_after_an_ack() {
        // The enqueue's first attempt stored message m7a and its answer
        // was lost; the retry stored m7b. Acking m7b says nothing of m7a.
        let mut h = H::default();
        h.enq(7, (0, 10), Done);
        let one = |id: &str, r: &str| json!({"id": id, "value": 7, "receipt": r, "attempts": 1});
        h.op(
            "c",
            "queue",
            "dequeue",
            (20, 30),
            Done,
            json!({"queue": "q"}),
            json!({"messages": [one("m7b", "r7b")]}),
        );
        h.ack(json!({"queue": "q", "receipt": "r7b"}), (40, 50));
        h.op(
            "c",
            "queue",
            "dequeue",
            (60, 70),
            Done,
            json!({"queue": "q"}),
            json!({"messages": [one("m7a", "r7a")]}),
        );
        h.op(
            "final",
            "queue",
            "drain",
            (80, 90),
            Done,
            json!({"queue": "q"}),
            json!({"values": [7], "ids": ["m7a"]}),
        );
        assert_valid(&h);
        // The acked message itself coming back is still a violation.
        h.op(
            "c",
            "queue",
            "dequeue",
            (100, 110),
            Done,
            json!({"queue": "q"}),
            json!({"messages": [one("m7b", "r7c")]}),
        );
        let r = assert_violation(&h, "acked (op");
        assert_eq!(r.stats["acked_then_redelivered"], 1);
    }
}
