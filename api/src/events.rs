//! The bounded in-memory ring of recent notable events each service node
//! keeps for `GET /api/events` (deadlock aborts and leader changes on lock
//! nodes, dead-lettering and redrives on queue nodes).
//!
//! - At most its capacity ([`crate::limits::list::EVENT_RING`] on every
//!   node): the oldest event makes room for a new one.
//! - Per node and in memory only: a restarted node starts empty (a lock
//!   node re-applying its log since the last snapshot records those
//!   entries' deadlocks again, with their original times).
//! - Read newest first.

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::types::Event;

/// A ring of the newest events.
#[derive(Debug)]
pub struct EventRing {
    events: Mutex<VecDeque<Event>>,
    capacity: usize,
}

impl Default for EventRing {
    fn default() -> Self {
        Self::new(crate::limits::list::EVENT_RING)
    }
}

impl EventRing {
    /// An empty ring that keeps the newest `capacity` events.
    pub fn new(capacity: usize) -> Self {
        Self {
            events: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
            capacity: capacity.max(1),
        }
    }

    /// Keep `event`, dropping the oldest when full.
    pub fn push(&self, event: Event) {
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        while events.len() >= self.capacity {
            events.pop_front();
        }
        events.push_back(event);
    }

    /// The newest `limit` events, newest first.
    pub fn newest(&self, limit: usize) -> Vec<Event> {
        let events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        events.iter().rev().take(limit).cloned().collect()
    }

    /// Events kept now.
    pub fn len(&self) -> usize {
        self.events.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no event is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most events kept.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// Merge event lists from several nodes: newest first, an event seen by
/// several nodes (the same `key`, as a replicated deadlock) once (its
/// earliest sighting), at most `limit`.
pub fn merge(lists: impl IntoIterator<Item = Vec<Event>>, limit: usize) -> Vec<Event> {
    let mut all: Vec<Event> = lists.into_iter().flatten().collect();
    // Oldest first, so the first sighting of a key is the one kept.
    all.sort_by(|a, b| (a.at_ms, &a.node).cmp(&(b.at_ms, &b.node)));
    let mut seen = std::collections::HashSet::new();
    all.retain(|e| match &e.key {
        Some(k) => seen.insert((e.service.clone(), k.clone())),
        None => true,
    });
    all.reverse();
    all.truncate(limit);
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::EventKind;

    fn ev(at_ms: u64, node: &str, key: Option<&str>) -> Event {
        Event {
            at_ms,
            service: "lock".into(),
            node: node.into(),
            kind: EventKind::Deadlock,
            summary: String::new(),
            key: key.map(str::to_string),
            deadlock: None,
            leader: None,
            queue: None,
        }
    }

    #[test]
    fn the_ring_keeps_the_newest_and_reads_newest_first() {
        let ring = EventRing::new(3);
        for t in 1..=5 {
            ring.push(ev(t, "a", None));
        }
        let at: Vec<u64> = ring.newest(10).iter().map(|e| e.at_ms).collect();
        assert_eq!(at, vec![5, 4, 3]);
        assert_eq!(ring.newest(2).len(), 2);
        assert_eq!((ring.len(), ring.capacity()), (3, 3));
    }

    #[test]
    fn merge_orders_by_time_dedups_by_key_and_bounds() {
        let a = vec![ev(30, "a", Some("d1")), ev(10, "a", None)];
        let b = vec![ev(31, "b", Some("d1")), ev(20, "b", None)];
        let merged = merge([a, b], 10);
        let got: Vec<(u64, &str)> = merged.iter().map(|e| (e.at_ms, e.node.as_str())).collect();
        assert_eq!(got, vec![(30, "a"), (20, "b"), (10, "a")]);
        assert_eq!(merge([merged.clone()], 2).len(), 2);
    }
}
