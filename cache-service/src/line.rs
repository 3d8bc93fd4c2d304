//! One node's private cache: its MESI lines in an LRU bounded by entries and
//! bytes, plus the bookkeeping that makes late messages harmless. Pure: no
//! I/O, no clock (callers pass `now_ms`).
//!
//! Invariants:
//! - a line is only installed from a grant whose epoch is above both the
//!   line it replaces and the invalidation floor recorded while the request
//!   was in flight, so a fill that an invalidation overtook never lands;
//! - an invalidation for epoch `e` drops only copies granted at or before
//!   `e` (or any copy when forced);
//! - an evicted E or M line stays in the eviction buffer until the home has
//!   seen the eviction notice, so a downgrade that crosses that notice is
//!   still answered with the value (never from stale memory);
//! - an expired value is kept as a line that reads as "absent" (the owner of
//!   an expired M line must still answer for it, or the home would serve an
//!   older value from memory).
//!
//! Tested, with the directory, by the goldenscripts in
//! `directory/testscripts/` (`lines.txt` for this table alone).

use std::collections::HashMap;

use lru::LruCache;

use crate::protocol::{Data, Epoch, LineState, NodeId, Version};

/// One cached copy.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub state: LineState,
    pub data: Data,
    /// Epoch of the home transaction that granted this copy.
    pub grant_epoch: Epoch,
    /// The home that granted it; a copy whose home changes is dropped.
    pub home: NodeId,
    bytes: usize,
}

impl Line {
    pub fn new(state: LineState, data: Data, grant_epoch: Epoch, home: NodeId) -> Self {
        let bytes = data.size_bytes();
        Self {
            state,
            data,
            grant_epoch,
            home,
            bytes,
        }
    }
}

/// An E or M line pushed out by the LRU: the home must hear of it (`Put`).
#[derive(Debug, Clone, PartialEq)]
pub struct Evicted {
    pub key: String,
    pub line: Line,
}

/// What an insertion or a growing write pushed out.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Evictions {
    /// Lines the home must be told about (E and M).
    pub puts: Vec<Evicted>,
    /// Every line evicted, S included.
    pub count: usize,
}

/// A read against the local cache.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// A valid line: its value (`None` when expired: the key reads as absent).
    Hit(LineState, Option<Data>),
    Miss,
}

/// The answer to a downgrade or recall for a given grant epoch.
#[derive(Debug, Clone, PartialEq)]
pub enum Surrender {
    /// The value (and whether it was modified under the grant).
    Data { data: Data, dirty: bool },
    /// The grant has not arrived yet (its reply is still in flight): ask again
    /// once a fill lands.
    Wait,
    /// Nothing for that grant here (never installed, or already given up).
    Nothing,
}

#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Pending {
    /// Requests to the home for this key still awaiting their reply.
    count: u32,
    /// Highest invalidation epoch seen while requests were in flight.
    floor: Epoch,
    /// Highest grant epoch received while requests were in flight.
    max_grant: Epoch,
}

/// Counts of lines per state, and the byte total.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Census {
    pub m: usize,
    pub e: usize,
    pub s: usize,
    pub entries: usize,
    pub bytes: usize,
}

/// The node's cache.
#[derive(Debug)]
pub struct LineTable {
    lru: LruCache<String, Line>,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
    pending: HashMap<String, Pending>,
    evicting: HashMap<String, Line>,
}

impl LineTable {
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        Self {
            lru: LruCache::unbounded(),
            bytes: 0,
            max_entries: max_entries.max(1),
            max_bytes: max_bytes.max(1),
            pending: HashMap::new(),
            evicting: HashMap::new(),
        }
    }

    /// Read `key`; a hit refreshes its LRU position.
    pub fn lookup(&mut self, key: &str, now_ms: u64) -> Lookup {
        self.lookup_if(key, now_ms, |_| true)
    }

    /// Read `key`, counting a line as a hit only if `home_ok` vouches for its
    /// home (the node's lease with that home is current).
    pub fn lookup_if(
        &mut self,
        key: &str,
        now_ms: u64,
        home_ok: impl FnOnce(&str) -> bool,
    ) -> Lookup {
        match self.lru.get(key) {
            Some(line) if home_ok(&line.home) => {
                let data = (!line.data.is_expired(now_ms)).then(|| line.data.clone());
                Lookup::Hit(line.state, data)
            }
            _ => Lookup::Miss,
        }
    }

    /// The line for `key` without touching the LRU order.
    pub fn peek(&self, key: &str) -> Option<&Line> {
        self.lru.peek(key)
    }

    /// A write hit: on E or M the value changes in place with no message (E
    /// goes to M silently). `None` when this node does not own the line.
    pub fn write_owned(
        &mut self,
        key: &str,
        value: serde_json::Value,
        expires_at_ms: Option<u64>,
    ) -> Option<(Version, Evictions)> {
        self.write_owned_if(key, value, expires_at_ms, |_| true)
    }

    /// [`LineTable::write_owned`], only if `home_ok` vouches for the home.
    pub fn write_owned_if(
        &mut self,
        key: &str,
        value: serde_json::Value,
        expires_at_ms: Option<u64>,
        home_ok: impl FnOnce(&str) -> bool,
    ) -> Option<(Version, Evictions)> {
        let line = self.lru.get_mut(key)?;
        if !matches!(line.state, LineState::E | LineState::M) || !home_ok(&line.home) {
            return None;
        }
        let version = line.data.version.next_local(line.grant_epoch);
        line.data = Data {
            value,
            version,
            expires_at_ms,
        };
        line.state = LineState::M;
        let old = line.bytes;
        line.bytes = line.data.size_bytes() + key.len();
        self.bytes = self.bytes - old + line.bytes;
        Some((version, self.shrink(Some(key))))
    }

    /// A request for `key` is about to leave for its home.
    pub fn begin_request(&mut self, key: &str) {
        self.pending.entry(key.to_string()).or_default().count += 1;
    }

    /// Its reply arrived (or the request failed).
    pub fn end_request(&mut self, key: &str) {
        if let Some(p) = self.pending.get_mut(key) {
            p.count = p.count.saturating_sub(1);
            if p.count == 0 {
                self.pending.remove(key);
            }
        }
    }

    /// Install a granted copy unless it is stale. Returns whether it landed
    /// and what the LRU pushed out to make room.
    pub fn install(
        &mut self,
        key: &str,
        state: LineState,
        epoch: Epoch,
        data: Data,
        home: &str,
    ) -> (bool, Evictions) {
        if let Some(p) = self.pending.get_mut(key) {
            // A newer grant already arrived (its line may since have been
            // evicted), or an invalidation covered this one: stale.
            let stale = epoch <= p.floor || epoch < p.max_grant;
            p.max_grant = p.max_grant.max(epoch);
            if stale {
                return (false, Evictions::default());
            }
        }
        if let Some(cur) = self.lru.peek(key) {
            if cur.grant_epoch >= epoch {
                return (false, Evictions::default());
            }
        }
        let mut line = Line::new(state, data, epoch, home.to_string());
        line.bytes += key.len();
        self.bytes += line.bytes;
        if let Some(old) = self.lru.put(key.to_string(), line) {
            self.bytes -= old.bytes;
        }
        (true, self.shrink(None))
    }

    /// Obey an invalidation: drop copies granted at or before `epoch` (any
    /// copy when `force`), and floor pending fills. Returns the dropped state.
    pub fn invalidate(&mut self, key: &str, epoch: Epoch, force: bool) -> Option<LineState> {
        if let Some(p) = self.pending.get_mut(key) {
            p.floor = p.floor.max(epoch);
        }
        if self
            .evicting
            .get(key)
            .is_some_and(|l| force || l.grant_epoch <= epoch)
        {
            self.evicting.remove(key);
        }
        let drop = self
            .lru
            .peek(key)
            .is_some_and(|l| force || l.grant_epoch <= epoch);
        if drop {
            let line = self.lru.pop(key)?;
            self.bytes -= line.bytes;
            Some(line.state)
        } else {
            None
        }
    }

    /// Give up exclusive ownership granted at `epoch`: send the value and
    /// keep an S copy (`recall == false`) or none (`recall == true`).
    pub fn surrender(&mut self, key: &str, epoch: Epoch, recall: bool) -> Surrender {
        let owned = self.lru.peek(key).is_some_and(|l| {
            l.grant_epoch == epoch && matches!(l.state, LineState::E | LineState::M)
        });
        if owned {
            if recall {
                let line = self.lru.pop(key).expect("peeked");
                self.bytes -= line.bytes;
                return Surrender::Data {
                    dirty: line.state == LineState::M,
                    data: line.data,
                };
            }
            let line = self.lru.peek_mut(key).expect("peeked");
            let dirty = line.state == LineState::M;
            line.state = LineState::S;
            return Surrender::Data {
                data: line.data.clone(),
                dirty,
            };
        }
        if self
            .evicting
            .get(key)
            .is_some_and(|l| l.grant_epoch == epoch)
        {
            let line = self.evicting.remove(key).expect("checked");
            return Surrender::Data {
                dirty: line.state == LineState::M,
                data: line.data,
            };
        }
        let granted_later = self.lru.peek(key).is_some_and(|l| l.grant_epoch > epoch);
        match self.pending.get(key) {
            Some(p) if !granted_later && p.max_grant < epoch && p.floor < epoch => Surrender::Wait,
            _ => {
                self.give_up(key, epoch);
                Surrender::Nothing
            }
        }
    }

    /// Answer "nothing" for the grant at `epoch` (it never landed, or its
    /// reply was lost): the home will treat this node as holding nothing up
    /// to `epoch`, so make it so, and keep that grant out if it lands late.
    pub fn give_up(&mut self, key: &str, epoch: Epoch) {
        self.invalidate(key, epoch, false);
    }

    /// The home has processed the eviction notice for the grant at `epoch`.
    pub fn put_done(&mut self, key: &str, epoch: Epoch) {
        if self
            .evicting
            .get(key)
            .is_some_and(|l| l.grant_epoch == epoch)
        {
            self.evicting.remove(key);
        }
    }

    /// Drop every copy (and buffered eviction) for which `keep` says no;
    /// used when the home of keys changes. Returns how many lines went.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &Line) -> bool) -> usize {
        let doomed: Vec<String> = self
            .lru
            .iter()
            .filter(|(k, l)| !keep(k, l))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &doomed {
            if let Some(l) = self.lru.pop(k) {
                self.bytes -= l.bytes;
            }
        }
        self.evicting.retain(|k, l| keep(k, l));
        doomed.len()
    }

    pub fn census(&self) -> Census {
        let mut c = Census {
            entries: self.lru.len(),
            bytes: self.bytes,
            ..Census::default()
        };
        for (_, l) in self.lru.iter() {
            match l.state {
                LineState::M => c.m += 1,
                LineState::E => c.e += 1,
                LineState::S => c.s += 1,
                LineState::I => {}
            }
        }
        c
    }

    /// Evict least-recently-used lines until within bounds, sparing `keep`
    /// unless it alone breaks the bounds.
    fn shrink(&mut self, keep: Option<&str>) -> Evictions {
        let mut out = Evictions::default();
        while self.lru.len() > self.max_entries || self.bytes > self.max_bytes {
            let Some(k) = self.lru.peek_lru().map(|(k, _)| k.clone()) else {
                break;
            };
            if keep == Some(k.as_str()) && self.lru.len() > 1 {
                // The line just written is never the one to go while others
                // remain: promote it and evict the next instead.
                self.lru.promote(k.as_str());
                continue;
            }
            let (k, line) = self.lru.pop_lru().expect("peeked");
            self.bytes -= line.bytes;
            out.count += 1;
            if matches!(line.state, LineState::E | LineState::M) {
                self.evicting.insert(k.clone(), line.clone());
                out.puts.push(Evicted { key: k, line });
            }
        }
        out
    }
}
