//! Failure detection and views: one heartbeat round pings every peer,
//! feeds the answers to the failure detector
//! ([`crate::membership::Membership`]) and the view agreement ([`Views`]),
//! proposes a view when the live set it wants differs, and applies an
//! accepted view (a new ring of homes; lines, directory entries and
//! home-memory values whose home moved are dropped).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::Ring;
use futures::future::join_all;

use super::{lock, Node, View};
use crate::membership::Change;
use crate::peer::Ping;
use crate::protocol::NodeId;
use crate::view::{Transition, ViewInfo, Views};

impl Node {
    pub fn ping_reply(&self) -> Ping {
        let report = lock(&self.inner.views).report(self.mono_ms());
        let suspects = lock(&self.inner.membership)
            .peers()
            .iter()
            .filter(|(_, p)| !p.alive)
            .map(|(id, _)| id.clone())
            .collect();
        Ping {
            node: self.me().to_string(),
            incarnation: self.inner.incarnation,
            view: report,
            suspects,
        }
    }

    /// A peer pinged us: it is alive, and we adopt its view if newer (its
    /// report does not count towards confirmation: we do not know when it
    /// was made).
    pub fn observe_ping(&self, from: &Ping) {
        let now = self.mono_ms();
        let change = lock(&self.inner.membership).observe(&from.node, from.incarnation, now);
        self.apply_change(change);
        if let Some(r) = &from.view {
            let configured = lock(&self.inner.views).configured().contains(&from.node);
            if configured {
                self.with_views(|v, now| {
                    v.observe_suspects(&from.node, &from.suspects);
                    v.offer(&r.view, now)
                });
            }
        }
    }

    /// Adopt a new configured member list (discovery).
    pub fn set_members(&self, members: &[NodeId]) {
        let now = self.mono_ms();
        let change = lock(&self.inner.membership).set_members(members, now);
        self.apply_change(change);
        self.with_views(|v, _| {
            v.set_configured(members);
            None
        });
    }

    /// One heartbeat round: ping every configured peer, declare the silent
    /// ones dead, count the views they report, and propose a view when the
    /// failure detector disagrees with the accepted one.
    pub async fn heartbeat_round(&self) {
        let peers: Vec<NodeId> = lock(&self.inner.membership)
            .peers()
            .keys()
            .cloned()
            .collect();
        let me = self.ping_reply();
        let sent = self.mono_ms();
        let pings = peers.iter().map(|p| {
            let me = me.clone();
            async move { (p, self.inner.peers.ping(p, &me).await) }
        });
        for (peer, res) in join_all(pings).await {
            match res {
                Ok(reply) if &reply.node == peer => {
                    let now = self.mono_ms();
                    let change = lock(&self.inner.membership).observe_reply(
                        peer,
                        reply.incarnation,
                        sent,
                        now,
                    );
                    self.apply_change(change);
                    self.with_views(|v, now| {
                        v.observe_suspects(peer, &reply.suspects);
                        v.observe_reply(peer, reply.view.as_ref(), sent, now)
                    });
                }
                _ => {}
            }
        }
        let now = self.mono_ms();
        let change = lock(&self.inner.membership).tick(now);
        self.apply_change(change);
        let live = lock(&self.inner.membership).live();
        let wall = self.now_ms();
        self.with_views(|v, now| {
            let p = v.proposal(&live, now, wall)?;
            tracing::info!(view = p.id, live = ?p.live, "proposing a cache membership view");
            v.offer(&p, now)
        });
    }

    /// Run `f` on the views, then apply the transition it returns (if any)
    /// and refresh the confirmation deadline, all under the views lock so
    /// that deadlines and transitions are published in order.
    fn with_views(&self, f: impl FnOnce(&mut Views, u64) -> Option<Transition>) {
        let mut views = lock(&self.inner.views);
        let now = self.mono_ms();
        let t = f(&mut views, now);
        if let Some(t) = t {
            self.inner.authorized_until.store(0, Ordering::Release);
            self.apply_transition(t);
        }
        let until = views.authorized_until(self.mono_ms());
        self.inner.authorized_until.store(until, Ordering::Release);
        self.inner.stats.view_confirmed.set(i64::from(until > now));
    }

    /// A peer restarted (new incarnation): it holds nothing any more. Died
    /// and revived peers change nothing here: only an accepted view moves
    /// homes.
    fn apply_change(&self, change: Change) {
        if change.restarted.is_empty() {
            return;
        }
        tracing::info!(restarted = ?change.restarted, "cache peer restarted");
        lock(&self.inner.lines).retain(|_, line| !change.restarted.contains(&line.home));
        let mut dir = lock(&self.inner.dir);
        for g in &change.restarted {
            dir.forget_node(g);
        }
    }

    /// Adopt a new view: rebuild the ring and drop whatever lost its home
    /// (everything, if a view may have been missed in between).
    fn apply_transition(&self, t: Transition) {
        let continuous = t.continuous();
        tracing::info!(
            from = t.from.as_ref().map(|v| v.id),
            to = t.to.id,
            live = ?t.to.live,
            continuous,
            "cache membership view accepted"
        );
        self.inner.stats.view_changes.inc();
        let ViewInfo { id, live } = t.to;
        let ring = Ring::new(live.clone());
        let old = self.view();
        let view = View {
            id,
            live: live.clone(),
            ring,
            generation: old.generation + 1,
        };
        let view = Arc::new(view);
        // The view first, then the lines: an install that read the old
        // view under the lines lock is dropped below if it must be.
        *self.inner.view.write().unwrap_or_else(|e| e.into_inner()) = view.clone();
        let me = self.me().to_string();
        // Kept: what a continuous change leaves in place, on a node that is
        // still in the view (one left out was declared dead: its homes
        // forgot its copies, and its keys have other homes).
        let stays = continuous && live.contains(&me);
        let keep = |key: &str, home: &str| {
            stays && live.iter().any(|n| n == home) && view.ring.owner(key) == Some(home)
        };
        lock(&self.inner.lines).retain(|key, line| keep(key, &line.home));
        {
            let mut dir = lock(&self.inner.dir);
            if continuous {
                let gone: Vec<NodeId> = old
                    .live
                    .iter()
                    .filter(|n| !live.contains(n))
                    .cloned()
                    .collect();
                for g in &gone {
                    dir.forget_node(g);
                }
            }
            dir.retain(|key| keep(key, &me));
        }
        self.inner.memory.retain_local(|key| keep(key, &me));
    }

    pub fn heartbeat_interval(&self) -> Duration {
        self.inner.cfg.heartbeat
    }
}
