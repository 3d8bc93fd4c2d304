//! Cycle detection on the wait-for graph between owners.
//!
//! An edge `a → b` means some request of owner `a` cannot be granted before
//! owner `b` lets go (b holds the resource, or waits ahead of a in its FIFO
//! queue with a conflicting mode). A cycle means none of its owners can ever
//! proceed without outside help, so one request in it must be aborted.
//!
//! Determinism: owners are visited in sorted order and successors in sorted
//! order, so every replica finds the same cycle in the same graph.
//!
//! Tested by `table/testscripts/wait_for_graph.txt` (the `cycle` command).

use std::collections::{BTreeMap, BTreeSet};

use crate::table::Owner;

/// The wait-for graph: owner → owners it waits for.
pub type Graph = BTreeMap<Owner, BTreeSet<Owner>>;

/// The first cycle found, as the list of owners along it (each waits for
/// the next, the last waits for the first), or `None`.
pub fn find_cycle(graph: &Graph) -> Option<Vec<Owner>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        OnPath,
        Done,
    }
    let mut marks: BTreeMap<&str, Mark> = BTreeMap::new();
    for start in graph.keys() {
        if marks.contains_key(start.as_str()) {
            continue;
        }
        // Iterative DFS: the path plus, per path node, its successor iterator.
        let mut path: Vec<&str> = vec![start];
        let mut iters = vec![successors(graph, start)];
        marks.insert(start, Mark::OnPath);
        while let Some(it) = iters.last_mut() {
            match it.next() {
                Some(next) => match marks.get(next) {
                    Some(Mark::OnPath) => {
                        let from = path.iter().position(|o| *o == next).unwrap_or(0);
                        return Some(path[from..].iter().map(|s| s.to_string()).collect());
                    }
                    Some(Mark::Done) => {}
                    None => {
                        marks.insert(next, Mark::OnPath);
                        path.push(next);
                        iters.push(successors(graph, next));
                    }
                },
                None => {
                    if let Some(done) = path.pop() {
                        marks.insert(done, Mark::Done);
                    }
                    iters.pop();
                }
            }
        }
    }
    None
}

fn successors<'a>(graph: &'a Graph, owner: &str) -> Box<dyn Iterator<Item = &'a str> + 'a> {
    match graph.get(owner) {
        Some(s) => Box::new(s.iter().map(String::as_str)),
        None => Box::new(std::iter::empty()),
    }
}

/// A deadlock the table broke, as the node's event ring shows it: the
/// cycle, its edges with the resources behind each, and the request that
/// was aborted. Made by the apply, so every replica makes the same one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Abort {
    pub cycle: Vec<Owner>,
    /// `(waiter, blocker, resources)` for each edge of the cycle, in order.
    pub edges: Vec<(Owner, Owner, Vec<String>)>,
    pub victim: Owner,
    pub resource: String,
    pub wait_id: u64,
    /// The replicated clock of the apply.
    pub at_ms: u64,
    /// The log index of the command whose apply broke the cycle (0 until
    /// the apply stamps it).
    pub index: u64,
}
