//! One page of the table for `GET /api/locks`: the resources that are held
//! or waited for, in name order, from a cursor.
//!
//! - A page is at most `limit` resources, so reading one costs the page, not
//!   the table: the walk starts at the cursor (or the prefix) in the ordered
//!   map and stops at the first name without the prefix.
//! - The cursor is a resource name: the next page holds the names after it.
//!   A cursor whose resource was released since is still a place in the
//!   order, so pages neither repeat nor skip a resource that stays.

use std::ops::Bound;

use super::{LockTable, ResourceView};

impl LockTable {
    /// Up to `limit` resources whose names start with `prefix` and sort
    /// after `after`, in name order, and whether more follow.
    pub fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> (Vec<ResourceView>, bool) {
        let start = match after {
            Some(a) if a >= prefix => Bound::Excluded(a),
            _ => Bound::Included(prefix),
        };
        let mut names = self
            .resources
            .range::<str, _>((start, Bound::Unbounded))
            .take_while(|(name, _)| name.starts_with(prefix));
        let page = names
            .by_ref()
            .take(limit)
            .map(|(name, r)| ResourceView {
                resource: name.clone(),
                holders: r.holders.clone(),
                waiters: r.queue.iter().cloned().collect(),
            })
            .collect();
        (page, names.next().is_some())
    }
}
