//! What a node reports about itself and the cluster: one key's state on
//! every node (`GET /api/cache/line`), the counters as JSON, the peers and
//! the accepted view (`GET /cluster`).

use futures::future::join_all;

use super::{lock, Node};
use crate::error::Error;
use crate::metrics::StateLabel;
use crate::peer::LocalView;
use crate::protocol::{LineState, NodeId};

impl Node {
    /// This node's own state for `key` (and its directory entry if home).
    pub fn local_view(&self, key: &str) -> LocalView {
        let line = lock(&self.inner.lines).peek(key).cloned();
        let directory = lock(&self.inner.dir)
            .entry(key)
            .map(|e| serde_json::to_value(e).unwrap_or_default());
        LocalView {
            node: self.me().to_string(),
            state: line
                .as_ref()
                .map_or(LineState::I, |l| l.state)
                .as_str()
                .to_string(),
            version: line.as_ref().map(|l| l.data.version),
            grant_epoch: line.as_ref().map(|l| l.grant_epoch),
            directory,
        }
    }

    /// Every node's view of `key`, for `GET /api/cache/line`.
    pub async fn line_everywhere(&self, key: &str) -> serde_json::Value {
        let view = self.view();
        let members: Vec<(NodeId, bool)> = {
            let m = lock(&self.inner.membership);
            let mut v: Vec<(NodeId, bool)> = m
                .peers()
                .iter()
                .map(|(id, p)| (id.clone(), p.alive))
                .collect();
            v.push((self.me().to_string(), true));
            v.sort();
            v
        };
        let home = view.ring.owner(key).unwrap_or(self.me()).to_string();
        let asks = members.iter().map(|(id, alive)| async move {
            let local = if id == self.me() {
                Ok(self.local_view(key))
            } else if *alive {
                self.inner.peers.local(id, key).await
            } else {
                Err(Error::Unavailable("dead".into()))
            };
            (id.clone(), *alive, local)
        });
        let mut nodes = Vec::new();
        let mut directory = serde_json::Value::Null;
        for (id, alive, local) in join_all(asks).await {
            match local {
                Ok(v) => {
                    if id == home {
                        directory = v.directory.clone().unwrap_or_default();
                    }
                    nodes.push(serde_json::json!({
                        "node": id, "alive": alive, "state": v.state,
                        "version": v.version, "grant_epoch": v.grant_epoch,
                    }));
                }
                Err(_) => nodes.push(serde_json::json!({
                    "node": id, "alive": false, "state": "I",
                })),
            }
        }
        serde_json::json!({ "key": key, "home": home, "directory": directory, "nodes": nodes })
    }

    /// Counters and line census as JSON.
    pub fn stats_json(&self) -> serde_json::Value {
        let census = lock(&self.inner.lines).census();
        let s = &self.inner.stats;
        for (state, n) in [("M", census.m), ("E", census.e), ("S", census.s)] {
            s.lines
                .get_or_create(&StateLabel {
                    state: state.into(),
                })
                .set(n as i64);
        }
        let (mem_entries, mem_bytes) = self.inner.memory.local_usage();
        s.memory_entries.set(mem_entries as i64);
        s.memory_bytes.set(mem_bytes as i64);
        let view = self.view();
        let (hits, misses) = (s.hits.get(), s.misses.get());
        let total = hits + misses;
        serde_json::json!({
            "node": self.me(),
            "hits": hits,
            "misses": misses,
            "hit_rate": if total == 0 { 0.0 } else { hits as f64 / total as f64 },
            "evictions": s.evictions.get(),
            "invalidations_sent": s.invalidations_sent.get(),
            "invalidations_received": s.invalidations_received.get(),
            "write_backs": s.write_backs.get(),
            "lines": { "M": census.m, "E": census.e, "S": census.s },
            "entries": census.entries,
            "bytes": census.bytes,
            "max_entries": self.inner.cfg.max_entries,
            "max_bytes": self.inner.cfg.max_bytes,
            "directory_entries": lock(&self.inner.dir).len(),
            "memory_backend": self.inner.memory.backend(),
            "memory_local_entries": mem_entries,
            "memory_local_bytes": mem_bytes,
            "max_memory_entries": self.inner.cfg.memory_bounds.max_entries,
            "max_memory_bytes": self.inner.cfg.memory_bounds.max_bytes,
            "memory_evictions": s.memory_evictions.get(),
            "write_policy": self.inner.cfg.policy,
            "view_generation": view.generation,
            "view": view.id,
            "view_confirmed": self.authorized(),
            "view_changes": s.view_changes.get(),
        })
    }

    /// Peers and whether they are considered up, for `GET /cluster`.
    pub fn peers_json(&self) -> Vec<serde_json::Value> {
        let m = lock(&self.inner.membership);
        let mut v = vec![serde_json::json!({"addr": self.me(), "alive": true})];
        for (id, p) in m.peers() {
            v.push(serde_json::json!({"addr": id, "alive": p.alive}));
        }
        v
    }

    /// Accepted view, confirmation and configured members, for `/cluster`.
    pub fn view_json(&self) -> serde_json::Value {
        let views = lock(&self.inner.views);
        let view = self.view();
        serde_json::json!({
            "id": view.id,
            "live": view.live,
            "confirmed": self.authorized(),
            "configured": views.configured(),
            "quorum": views.quorum(),
            "generation": view.generation,
        })
    }
}
