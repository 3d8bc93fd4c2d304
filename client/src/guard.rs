//! [`LockGuard`]: a held lock whose lease is renewed in the background.
//!
//! Invariants:
//! - the guard renews at a third of the TTL, so two renewals can fail in a row
//!   (a leader change, a dropped connection) before the lease runs out;
//! - the lease is considered lost as soon as the service refuses a renewal
//!   (404 not held, 409 token/owner mismatch: someone else has it now), or when
//!   the local deadline — the send time of the last successful renewal plus
//!   the TTL — passes without one. The local deadline errs on the early side,
//!   so the guard never reports "held" for a lease the server already expired
//!   (up to clock-rate differences);
//! - loss is published on a `watch` channel and is final;
//! - `release()` stops renewing and releases; dropping the guard stops renewing
//!   and releases best-effort in the background.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::client::Client;
use crate::error::Error;
use crate::types::{LockGrant, ReleaseRequest, ReleaseResponse, RenewRequest};

/// Lease length the guard asks for when the caller sets none.
pub const DEFAULT_TTL_MS: u64 = 30_000;

/// Shortest pause between renew attempts after a failed one.
const MIN_RETRY: Duration = Duration::from_millis(50);

/// Where a guarded lock stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockStatus {
    /// Held; the lease runs until `expires_at_ms` (server clock).
    Held { expires_at_ms: u64 },
    /// Lost: refused renewal or lease ran out. Final.
    Lost { reason: String },
    /// Released by `release()`. Final.
    Released,
}

/// A held lock. See the module docs.
#[derive(Debug)]
pub struct LockGuard {
    client: Client,
    grant: LockGrant,
    status_tx: watch::Sender<LockStatus>,
    status: watch::Receiver<LockStatus>,
    renewer: Option<JoinHandle<()>>,
}

impl LockGuard {
    pub(crate) fn start(client: Client, grant: LockGrant, ttl_ms: u64) -> Self {
        let (status_tx, status) = watch::channel(LockStatus::Held {
            expires_at_ms: grant.expires_at_ms,
        });
        let renewer = tokio::spawn(renew_loop(
            client.clone(),
            grant.clone(),
            ttl_ms,
            status_tx.clone(),
        ));
        Self {
            client,
            grant,
            status_tx,
            status,
            renewer: Some(renewer),
        }
    }

    /// The grant as the service answered it.
    pub fn grant(&self) -> &LockGrant {
        &self.grant
    }

    /// The fencing token: pass it to whatever the lock protects.
    pub fn token(&self) -> u64 {
        self.grant.token
    }

    pub fn status(&self) -> LockStatus {
        self.status.borrow().clone()
    }

    pub fn is_held(&self) -> bool {
        matches!(*self.status.borrow(), LockStatus::Held { .. })
    }

    /// A receiver that changes on every renewal and on loss.
    pub fn watch(&self) -> watch::Receiver<LockStatus> {
        self.status.clone()
    }

    /// Resolves with the reason once the lock is lost (never, while held).
    pub async fn lost(&self) -> String {
        let mut rx = self.status.clone();
        loop {
            if let LockStatus::Lost { reason } = &*rx.borrow_and_update() {
                return reason.clone();
            }
            if rx.changed().await.is_err() {
                // The sender lives in `self`; it cannot be gone while we borrow it.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Stop renewing and release the lock.
    pub async fn release(mut self) -> Result<ReleaseResponse, Error> {
        if let Some(task) = self.renewer.take() {
            task.abort();
        }
        let res = self.client.release(&self.release_request()).await;
        self.status_tx.send_replace(LockStatus::Released);
        res
    }

    fn release_request(&self) -> ReleaseRequest {
        ReleaseRequest {
            resource: self.grant.resource.clone(),
            owner: self.grant.owner.clone(),
            token: self.grant.token,
            request_id: Some(uuid::Uuid::new_v4().to_string()),
            // A fresh id per call, never sent again: nothing to remember long.
            retry_window_ms: Some(api::limits::lock::SHORT_RETRY_WINDOW_MS),
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let Some(task) = self.renewer.take() else {
            return; // released explicitly
        };
        task.abort();
        if !self.is_held() {
            return;
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let client = self.client.clone();
            let req = self.release_request();
            handle.spawn(async move {
                if let Err(e) = client.release(&req).await {
                    tracing::debug!(error = %e, resource = %req.resource, "release on drop failed");
                }
            });
        }
    }
}

async fn renew_loop(
    client: Client,
    grant: LockGrant,
    ttl_ms: u64,
    status: watch::Sender<LockStatus>,
) {
    let ttl = Duration::from_millis(ttl_ms);
    let period = (ttl / 3).max(Duration::from_millis(1));
    // The acquire was sent before `start`; count the lease from now minus
    // nothing would be optimistic by one round trip, which `period` absorbs.
    let mut deadline = Instant::now() + ttl;
    let mut next = Instant::now() + period;
    loop {
        tokio::time::sleep_until(next).await;
        if Instant::now() >= deadline {
            status.send_replace(LockStatus::Lost {
                reason: "lease expired before a renewal succeeded".into(),
            });
            return;
        }
        let sent = Instant::now();
        let req = RenewRequest {
            resource: grant.resource.clone(),
            owner: grant.owner.clone(),
            token: grant.token,
            ttl_ms: Some(ttl_ms),
            request_id: Some(uuid::Uuid::new_v4().to_string()),
            // A fresh id per call, never sent again: nothing to remember long.
            retry_window_ms: Some(api::limits::lock::SHORT_RETRY_WINDOW_MS),
        };
        // Never wait past the deadline for one answer.
        let res = tokio::time::timeout_at(deadline, client.renew(&req)).await;
        match res {
            Ok(Ok(r)) => {
                deadline = sent + ttl;
                next = sent + period;
                status.send_replace(LockStatus::Held {
                    expires_at_ms: r.expires_at_ms,
                });
            }
            Ok(Err(e)) if !e.is_retryable() => {
                status.send_replace(LockStatus::Lost {
                    reason: format!("renewal refused: {e}"),
                });
                return;
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, resource = %grant.resource, "renewal failed; retrying");
                next = Instant::now() + (period / 4).max(MIN_RETRY);
            }
            Err(_elapsed) => {
                next = Instant::now();
            }
        }
    }
}
