//! The node as a holder of a line: forwards from the key's home answered
//! (invalidate at once; downgrade or recall once the grant they refer to
//! has landed here).

use std::time::Instant;

use super::{lock, Node};
use crate::error::{Error, Result};
use crate::line::Surrender;
use crate::protocol::{Forward, ForwardReply};
use crate::view::ViewId;

impl Node {
    /// Obey a forward from a key's home acting in `view`; refuse one from
    /// a view older than this node's (its home may have been deposed).
    pub async fn handle_forward(
        &self,
        key: &str,
        view: ViewId,
        fwd: Forward,
    ) -> Result<ForwardReply> {
        let mine = self.view().id;
        if view < mine {
            return Err(Error::StaleView { mine, theirs: view });
        }
        Ok(self.obey(key, fwd).await)
    }

    async fn obey(&self, key: &str, fwd: Forward) -> ForwardReply {
        match fwd {
            Forward::Invalidate { epoch, force } => {
                self.inner.stats.invalidations_received.inc();
                lock(&self.inner.lines).invalidate(key, epoch, force);
                ForwardReply::ack()
            }
            Forward::Downgrade { epoch } | Forward::Recall { epoch } => {
                let recall = matches!(fwd, Forward::Recall { .. });
                let deadline = Instant::now() + self.inner.cfg.forward_wait;
                let mut fills = self.inner.fills.subscribe();
                loop {
                    fills.borrow_and_update();
                    let answer = lock(&self.inner.lines).surrender(key, epoch, recall);
                    match answer {
                        Surrender::Data { data, dirty } => {
                            return ForwardReply {
                                data: Some(data),
                                dirty,
                            }
                        }
                        Surrender::Nothing => return ForwardReply::ack(),
                        Surrender::Wait => {
                            let left = deadline.saturating_duration_since(Instant::now());
                            if left.is_zero()
                                || tokio::time::timeout(left, fills.changed()).await.is_err()
                            {
                                tracing::warn!(key, epoch, "grant never arrived; answering empty");
                                lock(&self.inner.lines).give_up(key, epoch);
                                return ForwardReply::ack();
                            }
                        }
                    }
                }
            }
        }
    }
}
