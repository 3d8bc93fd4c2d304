//! Backend membership from a list of `host:port` specs.
//!
//! A spec that is already an `ip:port` is static. A spec that names a host is
//! resolved through DNS and re-resolved every `refresh`: under compose a
//! scaled service name (`queue-service:7101`) resolves to one address per
//! replica, so `--scale queue-service=5` changes the member list (and every
//! ring built from it) without editing any configuration.
//!
//! Invariants:
//! - the published list is sorted and deduplicated, so two processes that
//!   see the same addresses build the same ring;
//! - a failed lookup keeps that spec's last known addresses rather than
//!   dropping them (a DNS hiccup must not reshuffle every queue).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// How often names are re-resolved unless the caller says otherwise.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(2);

/// A live, sorted member list.
#[derive(Clone, Debug)]
pub struct Members {
    rx: watch::Receiver<Arc<Vec<String>>>,
}

impl Members {
    /// A fixed member list (no resolution, no background task).
    pub fn fixed<I, S>(members: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let (_tx, rx) = watch::channel(Arc::new(normalize(
            members.into_iter().map(Into::into).collect(),
        )));
        Self { rx }
    }

    /// Resolve `specs` now and, if any of them is a name, keep re-resolving
    /// every `refresh` in a background task (which ends when every `Members`
    /// clone is dropped). Must be called inside a Tokio runtime.
    pub async fn spawn(specs: Vec<String>, refresh: Duration) -> Self {
        let specs: Vec<String> = specs
            .into_iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if specs.iter().all(|s| s.parse::<SocketAddr>().is_ok()) {
            return Self::fixed(specs);
        }
        let mut known: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let first = resolve_all(&specs, &mut known).await;
        let (tx, rx) = watch::channel(Arc::new(first));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(refresh);
            tick.tick().await;
            loop {
                tick.tick().await;
                if tx.is_closed() {
                    break;
                }
                let next = resolve_all(&specs, &mut known).await;
                tx.send_if_modified(|cur| {
                    if **cur != next {
                        tracing::info!(members = ?next, "membership changed");
                        *cur = Arc::new(next);
                        true
                    } else {
                        false
                    }
                });
            }
        });
        Self { rx }
    }

    /// The members as of now.
    pub fn current(&self) -> Arc<Vec<String>> {
        self.rx.borrow().clone()
    }

    /// A receiver that is notified whenever the list changes.
    pub fn watch(&self) -> watch::Receiver<Arc<Vec<String>>> {
        self.rx.clone()
    }
}

/// Split a comma-separated list into trimmed, non-empty specs.
pub fn parse_list(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn normalize(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v.dedup();
    v
}

async fn resolve_all(specs: &[String], known: &mut BTreeMap<String, Vec<String>>) -> Vec<String> {
    let mut out = Vec::new();
    for spec in specs {
        if spec.parse::<SocketAddr>().is_ok() {
            out.push(spec.clone());
            continue;
        }
        match tokio::net::lookup_host(spec.as_str()).await {
            Ok(addrs) => {
                let addrs: Vec<String> = addrs
                    .filter(SocketAddr::is_ipv4)
                    .map(|a| a.to_string())
                    .collect();
                if !addrs.is_empty() {
                    known.insert(spec.clone(), addrs);
                }
            }
            Err(e) => tracing::warn!(%spec, error = %e, "lookup failed; keeping last known"),
        }
        if let Some(addrs) = known.get(spec) {
            out.extend(addrs.iter().cloned());
        }
    }
    normalize(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn static_lists_are_sorted_and_deduped() {
        let m = Members::spawn(
            parse_list("127.0.0.1:3, 127.0.0.1:1,,127.0.0.1:3"),
            DEFAULT_REFRESH,
        )
        .await;
        assert_eq!(*m.current(), vec!["127.0.0.1:1", "127.0.0.1:3"]);
    }

    #[tokio::test]
    async fn names_resolve_to_addresses() {
        let m = Members::spawn(vec!["localhost:7101".into()], DEFAULT_REFRESH).await;
        let cur = m.current();
        assert!(cur.contains(&"127.0.0.1:7101".to_string()), "{cur:?}");
    }

    #[tokio::test]
    async fn unresolvable_names_yield_nothing_rather_than_failing() {
        let m = Members::spawn(
            vec!["no-such-host.invalid:1".into(), "127.0.0.1:2".into()],
            DEFAULT_REFRESH,
        )
        .await;
        assert_eq!(*m.current(), vec!["127.0.0.1:2"]);
    }
}
