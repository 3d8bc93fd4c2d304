//! The node as a requester: the client operations (`get`, `set`,
//! `delete`), the one routing loop that carries them to the key's home
//! (`Node::route_to_home`), installing the home's grant, and the eviction
//! notices for lines the LRU dropped.

use std::time::{Duration, Instant};

use super::{lock, Node, FORWARD_RETRY};
use crate::directory::WritePolicy;
use crate::error::{Error, Result};
use crate::line::{Evictions, Lookup};
use crate::peer::HomeEnvelope;
use crate::protocol::{Data, HomeReply, HomeRequest, LineState};
use crate::view::ViewId;

/// A client operation re-routes when views disagree or a home is
/// unreachable for at most this many failure timeouts (plus a second)
/// before answering 503: long enough to ride out one view change
/// (detection, then settling).
const ROUTE_TIMEOUTS: u32 = 2;
/// Pause between such attempts.
const ROUTE_BACKOFF: Duration = Duration::from_millis(25);
/// Attempts at delivering an eviction notice.
const PUT_ATTEMPTS: u32 = 3;

impl Node {
    /// Read `key`: `(data, hit)`; `data` is `None` when the key has no value.
    pub async fn get(&self, key: &str) -> Result<(Option<Data>, bool)> {
        let mut counted = false;
        let local = || {
            let (now, mono) = (self.now_ms(), self.mono_ms());
            let hit = lock(&self.inner.lines).lookup_if(key, now, |h| {
                self.authorized_at(mono) && self.lease_ok(h, mono)
            });
            if let Lookup::Hit(_, data) = hit {
                self.inner.stats.hits.inc();
                return Some((data, true));
            }
            if !counted {
                self.inner.stats.misses.inc();
                counted = true;
            }
            None
        };
        self.route_to_home(key, HomeRequest::GetS, local, |reply| match reply {
            HomeReply::Line { data, .. } => Ok((Some(data), false)),
            _ => Ok((None, false)),
        })
        .await
    }

    /// Write `key`; returns the new value's version.
    pub async fn set(
        &self,
        key: &str,
        value: serde_json::Value,
        ttl_ms: Option<u64>,
    ) -> Result<crate::protocol::Version> {
        let expires_at_ms = ttl_ms.map(|t| self.now_ms().saturating_add(t));
        if self.inner.cfg.policy == WritePolicy::WriteBack {
            let mono = self.mono_ms();
            let local =
                lock(&self.inner.lines).write_owned_if(key, value.clone(), expires_at_ms, |h| {
                    self.authorized_at(mono) && self.lease_ok(h, mono)
                });
            if let Some((version, ev)) = local {
                self.after_evictions(ev);
                return Ok(version);
            }
        }
        let request = HomeRequest::GetM {
            value,
            expires_at_ms,
        };
        self.route_to_home(
            key,
            request,
            || None,
            |reply| match reply {
                HomeReply::Line { data, .. } => Ok(data.version),
                other => Err(Error::Unavailable(format!(
                    "unexpected home reply {other:?}"
                ))),
            },
        )
        .await
    }

    /// Delete `key` everywhere.
    pub async fn delete(&self, key: &str) -> Result<()> {
        self.route_to_home(key, HomeRequest::Delete, || None, |_| Ok(()))
            .await
    }

    /// The one way a client operation reaches `key`'s home: send `request`
    /// there ([`Node::request`] routes by the current view and installs the
    /// grant), and on a routing error (views disagree, home unreachable, no
    /// confirmed view) pause and route again by whatever view is current
    /// then, until the route deadline ([`Node::backoff`]). The home's reply
    /// becomes the operation's result through `answer`, once.
    ///
    /// Before every attempt `local` may answer from this node's own line
    /// instead (a read hit; a line that a concurrent request installed
    /// during a pause serves too).
    async fn route_to_home<T>(
        &self,
        key: &str,
        request: HomeRequest,
        mut local: impl FnMut() -> Option<T>,
        answer: impl FnOnce(HomeReply) -> Result<T>,
    ) -> Result<T> {
        let deadline = self.route_deadline();
        loop {
            if let Some(done) = local() {
                return Ok(done);
            }
            match self.request(key, request.clone()).await {
                Ok(reply) => return answer(reply),
                Err(e) => self.backoff(deadline, e).await?,
            }
        }
    }

    /// Retry routing errors (views disagree, home unreachable, no confirmed
    /// view) after a pause until `deadline`; give up on anything else.
    async fn backoff(&self, deadline: Instant, e: Error) -> Result<()> {
        match e {
            Error::NotHome { .. } | Error::StaleView { .. } | Error::Unavailable(_)
                if Instant::now() + ROUTE_BACKOFF < deadline =>
            {
                tracing::debug!(error = %e, "retrying at the key's home");
                tokio::time::sleep(ROUTE_BACKOFF).await;
                Ok(())
            }
            Error::NotHome { .. } | Error::StaleView { .. } => Err(Error::Unavailable(format!(
                "no home in a confirmed view answered for this key in time ({e})"
            ))),
            e => Err(e),
        }
    }

    /// Send one request to the key's home and apply the reply locally.
    async fn request(&self, key: &str, req: HomeRequest) -> Result<HomeReply> {
        if !self.authorized() {
            return Err(Error::Unavailable(
                "this node's membership view is not confirmed by a majority of the cache nodes"
                    .into(),
            ));
        }
        let view = self.view();
        let home = view.ring.owner(key).unwrap_or(self.me()).to_string();
        lock(&self.inner.lines).begin_request(key);
        let res = self.to_home(&home, key, view.id, req).await;
        let mut ev = Evictions::default();
        {
            let mut lines = lock(&self.inner.lines);
            match &res {
                Ok(HomeReply::Line { state, epoch, data }) => {
                    // A grant from another view is answered but not cached
                    // (the view is read under the lines lock: a view change
                    // after this drops whatever it must).
                    if self.view().id == view.id {
                        ev = lines.install(key, *state, *epoch, data.clone(), &home).1;
                    } else {
                        lines.invalidate(key, *epoch, false);
                    }
                }
                Ok(HomeReply::Absent { epoch }) => {
                    lines.invalidate(key, *epoch, false);
                }
                _ => {}
            }
            lines.end_request(key);
        }
        self.inner.fills.send_modify(|n| *n += 1);
        self.after_evictions(ev);
        res
    }

    async fn to_home(
        &self,
        home: &str,
        key: &str,
        view: ViewId,
        request: HomeRequest,
    ) -> Result<HomeReply> {
        if home == self.me() {
            self.handle_home(self.me().to_string(), key, view, request)
                .await
        } else {
            let env = HomeEnvelope {
                key: key.to_string(),
                from: self.me().to_string(),
                view,
                request,
            };
            self.inner.peers.home(home, &env).await
        }
    }

    fn after_evictions(&self, ev: Evictions) {
        if ev.count == 0 {
            return;
        }
        self.inner.stats.evictions.inc_by(ev.count as u64);
        for e in ev.puts {
            let node = self.clone();
            tokio::spawn(async move {
                let epoch = e.line.grant_epoch;
                // Under write-back memory holds nothing while a line is
                // exclusive, so a clean E line is written back too.
                let data = (e.line.state == LineState::M
                    || node.policy() == WritePolicy::WriteBack)
                    .then(|| e.line.data.clone());
                for _ in 0..PUT_ATTEMPTS {
                    let req = HomeRequest::Put {
                        epoch,
                        data: data.clone(),
                    };
                    let view = node.view().id;
                    match node.to_home(&e.line.home, &e.key, view, req).await {
                        Ok(_) => break,
                        Err(err) => {
                            tracing::debug!(key = %e.key, error = %err, "eviction notice failed");
                            tokio::time::sleep(FORWARD_RETRY).await;
                        }
                    }
                }
                lock(&node.inner.lines).put_done(&e.key, epoch);
            });
        }
    }

    /// How long a client operation keeps re-routing before answering 503.
    fn route_deadline(&self) -> Instant {
        Instant::now() + self.inner.cfg.failure_timeout * ROUTE_TIMEOUTS + Duration::from_secs(1)
    }
}
