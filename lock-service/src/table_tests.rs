//! Table-driven tests of the pure lock table: each case is a script of
//! commands at given times with the outcome each must produce and the
//! settlements of other requests it must cause.

use super::table::*;

/// One step: (time, command, expected outcome, expected settlements).
struct Step {
    at: u64,
    cmd: Command,
    want: Want,
    settled: Vec<(WaitId, Want)>,
}

/// Outcome patterns that ignore exact tokens and expiry unless given.
#[derive(Debug, Clone)]
enum Want {
    Granted {
        owner: &'static str,
        token: Option<Token>,
    },
    Queued,
    Held(usize),
    Deadlock(&'static [&'static str]),
    Exact(Outcome),
}

fn check(got: &Outcome, want: &Want) -> bool {
    match (got, want) {
        (Outcome::Granted(g), Want::Granted { owner, token }) => {
            g.owner == *owner && token.is_none_or(|t| t == g.token)
        }
        (Outcome::Queued { .. }, Want::Queued) => true,
        (Outcome::Held { holders }, Want::Held(n)) => holders.len() == *n,
        (Outcome::Deadlock { cycle }, Want::Deadlock(c)) => {
            cycle.iter().map(String::as_str).collect::<Vec<_>>() == *c
        }
        (o, Want::Exact(w)) => o == w,
        _ => false,
    }
}

fn acq(res: &str, owner: &str, mode: Mode, ttl: u64, wait: u64, rid: &str) -> Command {
    Command::Acquire(Acquire {
        resource: res.into(),
        owner: owner.into(),
        mode,
        ttl_ms: ttl,
        wait_ms: wait,
        request_id: rid.into(),
        node_made_id: false,
    })
}

/// A fresh request id per call: distinct requests unless a test replays
/// one on purpose (with `acq` and an explicit id).
fn rid() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!(
        "r{}",
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

fn x(res: &str, owner: &str, wait: u64) -> Command {
    acq(res, owner, Mode::Exclusive, 1_000, wait, &rid())
}

fn s(res: &str, owner: &str, wait: u64) -> Command {
    acq(res, owner, Mode::Shared, 1_000, wait, &rid())
}

fn rel(res: &str, owner: &str, token: Token) -> Command {
    Command::Release(Release {
        resource: res.into(),
        owner: owner.into(),
        token,
        request_id: None,
        node_made_id: false,
    })
}

fn renew(res: &str, owner: &str, token: Token, ttl: u64) -> Command {
    Command::Renew(Renew {
        resource: res.into(),
        owner: owner.into(),
        token,
        ttl_ms: ttl,
        request_id: None,
        node_made_id: false,
    })
}

fn step(at: u64, cmd: Command, want: Want) -> Step {
    Step {
        at,
        cmd,
        want,
        settled: vec![],
    }
}

fn step_s(at: u64, cmd: Command, want: Want, settled: Vec<(WaitId, Want)>) -> Step {
    Step {
        at,
        cmd,
        want,
        settled,
    }
}

fn granted(owner: &'static str, token: Token) -> Want {
    Want::Granted {
        owner,
        token: Some(token),
    }
}

/// Run a script; log indexes are the step numbers starting at 1.
fn run(name: &str, steps: Vec<Step>) -> LockTable {
    let mut t = LockTable::new();
    for (i, st) in steps.into_iter().enumerate() {
        let index = i as u64 + 1;
        let got = t.apply(st.cmd.clone(), index, st.at);
        assert!(
            check(&got.outcome, &st.want),
            "{name} step {index} {:?}: got {:?}, want {:?}",
            st.cmd,
            got.outcome,
            st.want
        );
        assert_eq!(
            got.settled.len(),
            st.settled.len(),
            "{name} step {index}: settled {:?}, want {:?}",
            got.settled,
            st.settled
        );
        for ((id, o), (wid, w)) in got.settled.iter().zip(&st.settled) {
            assert!(
                id == wid && check(o, w),
                "{name} step {index}: settled {:?}, want {:?}",
                got.settled,
                st.settled
            );
        }
    }
    t
}

#[test]
fn exclusive_and_shared_basics() {
    run(
        "basics",
        vec![
            step(0, x("r", "a", 0), granted("a", 1)),
            step(1, x("r", "b", 0), Want::Held(1)),
            step(2, s("r", "c", 0), Want::Held(1)),
            step(3, rel("r", "a", 1), Want::Exact(Outcome::Released)),
            step(4, s("r", "b", 0), granted("b", 2)),
            step(5, s("r", "c", 0), granted("c", 3)),
            step(6, x("r", "d", 0), Want::Held(2)),
            step(7, rel("r", "b", 2), Want::Exact(Outcome::Released)),
            step(8, rel("r", "c", 3), Want::Exact(Outcome::Released)),
            step(9, x("r", "d", 10), granted("d", 4)),
        ],
    );
}

#[test]
fn release_and_renew_checks_owner_and_token() {
    run(
        "checks",
        vec![
            step(0, x("r", "a", 0), granted("a", 1)),
            step(1, rel("r", "b", 1), Want::Exact(Outcome::OwnerMismatch)),
            step(2, rel("r", "a", 7), Want::Exact(Outcome::TokenMismatch)),
            step(3, rel("nope", "a", 1), Want::Exact(Outcome::NotHeld)),
            step(
                4,
                renew("r", "b", 1, 500),
                Want::Exact(Outcome::OwnerMismatch),
            ),
            step(
                5,
                renew("r", "a", 1, 500),
                Want::Exact(Outcome::Renewed { expires_at_ms: 505 }),
            ),
            step(
                6,
                x("r", "a", 0),
                Want::Exact(Outcome::AlreadyHeld { token: 1 }),
            ),
            step(7, rel("r", "a", 1), Want::Exact(Outcome::Released)),
            step(8, rel("r", "a", 1), Want::Exact(Outcome::NotHeld)),
        ],
    );
}

#[test]
fn fifo_queue_and_no_writer_starvation() {
    // s1 holds shared; w waits exclusive; later shared requests queue behind
    // w instead of joining s1.
    run(
        "starvation",
        vec![
            step(0, s("r", "s1", 0), granted("s1", 1)),
            step(1, x("r", "w", 1_000), Want::Queued),
            step(2, s("r", "s2", 1_000), Want::Queued),
            step(3, s("r", "s3", 0), Want::Held(1)),
            step_s(
                4,
                rel("r", "s1", 1),
                Want::Exact(Outcome::Released),
                vec![(2, granted("w", 2))],
            ),
            step_s(
                5,
                rel("r", "w", 2),
                Want::Exact(Outcome::Released),
                vec![(3, granted("s2", 3))],
            ),
        ],
    );
}

#[test]
fn consecutive_shared_waiters_are_granted_together() {
    run(
        "shared batch",
        vec![
            step(0, x("r", "a", 0), granted("a", 1)),
            step(1, s("r", "b", 1_000), Want::Queued),
            step(2, s("r", "c", 1_000), Want::Queued),
            step(3, x("r", "d", 1_000), Want::Queued),
            step_s(
                4,
                rel("r", "a", 1),
                Want::Exact(Outcome::Released),
                vec![(2, granted("b", 2)), (3, granted("c", 3))],
            ),
        ],
    );
}

#[test]
fn lease_expiry_hands_over_to_the_next_waiter() {
    let t = run(
        "expiry",
        vec![
            step(0, x("r", "a", 0), granted("a", 1)), // expires at 1000
            step(10, x("r", "b", 5_000), Want::Queued),
            step(999, Command::Tick, Want::Exact(Outcome::Ticked)),
            step_s(
                1_000,
                Command::Tick,
                Want::Exact(Outcome::Ticked),
                vec![(2, granted("b", 2))],
            ),
            // a's late release finds nothing.
            step(1_001, rel("r", "a", 1), Want::Exact(Outcome::NotHeld)),
        ],
    );
    assert_eq!(t.counters().expirations, 1);
    assert_eq!(t.view("r").holders[0].expires_at_ms, 2_000);
}

#[test]
fn renew_extends_the_lease() {
    run(
        "renew",
        vec![
            step(0, x("r", "a", 0), granted("a", 1)),
            step(
                900,
                renew("r", "a", 1, 1_000),
                Want::Exact(Outcome::Renewed {
                    expires_at_ms: 1_900,
                }),
            ),
            step(1_500, x("r", "b", 0), Want::Held(1)),
            step(1_900, x("r", "c", 0), granted("c", 2)),
        ],
    );
}

#[test]
fn wait_deadlines_time_out_and_never_block_the_queue() {
    run(
        "wait deadline",
        vec![
            step(0, x("r", "a", 0), granted("a", 1)),
            step(0, x("r", "b", 100), Want::Queued), // deadline 100
            step(0, x("r", "c", 5_000), Want::Queued),
            step_s(
                100,
                Command::Tick,
                Want::Exact(Outcome::Ticked),
                vec![(2, Want::Exact(Outcome::WaitTimeout))],
            ),
            // Even without a tick, an ended wait never takes the grant.
            step(150, x("r2", "z", 0), granted("z", 2)),
            step_s(
                200,
                rel("r", "a", 1),
                Want::Exact(Outcome::Released),
                vec![(3, granted("c", 3))],
            ),
        ],
    );
    // Without the tick: the release itself first drops the ended waiter.
    run(
        "wait deadline without tick",
        vec![
            step(0, x("r", "a", 0), granted("a", 1)),
            step(0, x("r", "b", 100), Want::Queued),
            step(0, x("r", "c", 5_000), Want::Queued),
            step_s(
                200,
                rel("r", "a", 1),
                Want::Exact(Outcome::Released),
                vec![(2, Want::Exact(Outcome::WaitTimeout)), (3, granted("c", 2))],
            ),
        ],
    );
}

#[test]
fn two_owner_cycle_aborts_the_youngest_waiter() {
    let t = run(
        "2-cycle",
        vec![
            step(0, x("r1", "a", 0), granted("a", 1)),
            step(0, x("r2", "b", 0), granted("b", 2)),
            step(1, x("r2", "a", 5_000), Want::Queued),
            // b waits for r1 held by a, a waits for r2 held by b: b's request
            // (index 4, the youngest) is the victim.
            step(2, x("r1", "b", 5_000), Want::Deadlock(&["a", "b"])),
        ],
    );
    assert_eq!(t.counters().deadlocks, 1);
    assert_eq!(t.view("r1").waiters.len(), 0);
    assert_eq!(t.view("r2").waiters.len(), 1);
}

#[test]
fn owners_in_two_contended_resources_without_a_cycle_are_not_aborted() {
    // a chain, not a cycle: c waits for b on r2 while b waits for a on r1, so
    // b is placed in two contended resources (the deadlock pre-check passes it
    // on to the full search, which must find nothing).
    let t = run(
        "chain",
        vec![
            step(0, x("r1", "a", 0), granted("a", 1)),
            step(0, x("r2", "b", 0), granted("b", 2)),
            step(1, x("r1", "b", 5_000), Want::Queued),
            step(2, x("r2", "c", 5_000), Want::Queued),
            step(3, x("r1", "d", 5_000), Want::Queued),
        ],
    );
    assert_eq!(t.counters().deadlocks, 0);
    assert_eq!(t.view("r1").waiters.len(), 2);
    assert_eq!(t.view("r2").waiters.len(), 1);
}

#[test]
fn three_owner_cycle() {
    run(
        "3-cycle",
        vec![
            step(0, x("r1", "a", 0), granted("a", 1)),
            step(0, x("r2", "b", 0), granted("b", 2)),
            step(0, x("r3", "c", 0), granted("c", 3)),
            step(1, x("r2", "a", 5_000), Want::Queued),
            step(2, x("r3", "b", 5_000), Want::Queued),
            step(3, x("r1", "c", 5_000), Want::Deadlock(&["a", "b", "c"])),
        ],
    );
}

#[test]
fn shared_holders_waiting_to_upgrade_elsewhere_form_a_cycle() {
    // a and b share r; each then waits for an exclusive lock the other holds.
    run(
        "shared cycle",
        vec![
            step(0, s("r", "a", 0), granted("a", 1)),
            step(0, x("q", "b", 0), granted("b", 2)),
            step(1, x("r", "b", 5_000), Want::Queued), // b waits for a (shared holder)
            step(2, x("q", "a", 5_000), Want::Deadlock(&["a", "b"])),
        ],
    );
}

/// With holder-only edges this cycle would appear only when a's release
/// re-points c's wait from a to b. Our graph also has FIFO-order edges
/// (c queued behind b really waits for b), so it is caught as soon as the
/// last edge appears, and the grant that follows aborts nothing twice.
#[test]
fn a_cycle_that_a_grant_would_re_point_into_is_caught_when_it_forms() {
    let t = run(
        "grant cycle",
        vec![
            step(0, x("r", "a", 0), granted("a", 1)),
            step(0, x("q", "c", 0), granted("c", 2)),
            step(1, x("r", "b", 5_000), Want::Queued), // 3: b→a
            step(2, x("r", "c", 5_000), Want::Queued), // 4: c→a, c→b
            // 5: b→c closes b→c→b; b's request (5) is the youngest.
            step(3, x("q", "b", 5_000), Want::Deadlock(&["b", "c"])),
            // a releases: b is granted r, c keeps waiting; no new abort.
            step_s(
                4,
                rel("r", "a", 1),
                Want::Exact(Outcome::Released),
                vec![(3, granted("b", 3))],
            ),
        ],
    );
    assert_eq!(t.counters().deadlocks, 1);
    assert_eq!(t.view("r").waiters.len(), 1);
}

/// The same through a lease expiry: the graph is re-checked after the
/// expiry grants, and a cycle closed afterwards is caught at once.
#[test]
fn expiry_that_re_points_waiters_then_a_closing_edge() {
    let t = run(
        "expiry re-points",
        vec![
            step(
                0,
                acq("r", "a", Mode::Exclusive, 100, 0, "a1"),
                granted("a", 1),
            ),
            step(0, x("q", "c", 0), granted("c", 2)),
            step(1, x("r", "b", 5_000), Want::Queued),
            step(2, x("r", "c", 5_000), Want::Queued),
            step_s(
                100,
                Command::Tick,
                Want::Exact(Outcome::Ticked),
                vec![(3, granted("b", 3))],
            ),
            step(101, x("q", "b", 5_000), Want::Deadlock(&["b", "c"])),
        ],
    );
    assert_eq!(t.counters().expirations, 1);
}

#[test]
fn idempotent_replays_return_the_first_answer() {
    let a = || acq("r", "a", Mode::Exclusive, 1_000, 0, "req-1");
    let b = || acq("r", "b", Mode::Exclusive, 1_000, 5_000, "req-2");
    let t = run(
        "replay",
        vec![
            step(0, a(), granted("a", 1)),
            // Same request again: same token, not a second grant.
            step(1, a(), granted("a", 1)),
            step(2, b(), Want::Queued),
            step(3, b(), Want::Queued),
            step_s(
                4,
                rel("r", "a", 1),
                Want::Exact(Outcome::Released),
                vec![(3, granted("b", 2))],
            ),
            // The retried waiter now learns its grant, not "queued".
            step(5, b(), granted("b", 2)),
            // A release with a request id, replayed, stays "released".
            step(
                6,
                Command::Release(Release {
                    resource: "r".into(),
                    owner: "b".into(),
                    token: 2,
                    request_id: Some("rel-1".into()),
                    node_made_id: false,
                }),
                Want::Exact(Outcome::Released),
            ),
            step(
                7,
                Command::Release(Release {
                    resource: "r".into(),
                    owner: "b".into(),
                    token: 2,
                    request_id: Some("rel-1".into()),
                    node_made_id: false,
                }),
                Want::Exact(Outcome::Released),
            ),
        ],
    );
    assert_eq!(t.counters().grants, 2);
    // Forgotten after the memory window: a replay then is a new request.
    let mut t = t;
    let later = REQUEST_MEMORY_MS + 10;
    let again = t.apply(a(), 100, later);
    assert!(matches!(again.outcome, Outcome::Granted(g) if g.token == 3));
}

#[test]
fn a_request_id_reused_for_a_different_request_is_refused_and_changes_nothing() {
    let with_id = |cmd: Command, id: &str| match cmd {
        Command::Release(mut r) => {
            r.request_id = Some(id.into());
            Command::Release(r)
        }
        Command::Renew(mut r) => {
            r.request_id = Some(id.into());
            Command::Renew(r)
        }
        other => other,
    };
    let reused = || Want::Exact(Outcome::RequestIdReused);
    let t = run(
        "reuse",
        vec![
            step(
                0,
                acq("r", "a", Mode::Exclusive, 1_000, 0, "job"),
                granted("a", 1),
            ),
            // The acquire's id on a release, a renew, another resource or
            // another mode: refused, the lock stays held.
            step(1, with_id(rel("r", "a", 1), "job"), reused()),
            step(2, with_id(renew("r", "a", 1, 5_000), "job"), reused()),
            step(3, acq("q", "a", Mode::Exclusive, 1_000, 0, "job"), reused()),
            step(4, acq("r", "a", Mode::Shared, 1_000, 0, "job"), reused()),
            step(5, x("r", "b", 0), Want::Held(1)),
            // A retry of the acquire itself still gets its grant.
            step(
                6,
                acq("r", "a", Mode::Exclusive, 1_000, 0, "job"),
                granted("a", 1),
            ),
            // A release's id on a release of another token: refused too.
            step(
                7,
                with_id(rel("r", "a", 1), "rel"),
                Want::Exact(Outcome::Released),
            ),
            step(
                8,
                acq("r", "a", Mode::Exclusive, 1_000, 0, "job2"),
                granted("a", 2),
            ),
            step(9, with_id(rel("r", "a", 2), "rel"), reused()),
            step(
                10,
                with_id(rel("r", "a", 2), "rel2"),
                Want::Exact(Outcome::Released),
            ),
            // The id is still the acquire's: a reuse did not replace it.
            step(11, with_id(rel("r", "a", 1), "job"), reused()),
        ],
    );
    assert_eq!(t.counters().grants, 2);
    assert_eq!(t.counters().releases, 2);
}

#[test]
fn answers_remembered_before_request_fingerprints_replay_for_any_request() {
    let mut t = LockTable::new();
    t.apply(acq("r", "a", Mode::Exclusive, 1_000, 0, "c1"), 1, 0);
    let mut old = serde_json::to_value(&t).unwrap();
    let answer = &mut old["requests"]["a"]["c1"];
    assert!(answer["request"].is_u64(), "{answer}");
    answer.as_object_mut().unwrap().remove("request");
    let mut restored: LockTable = serde_json::from_value(old).unwrap();
    // No fingerprint to compare: the remembered answer, as before.
    let again = restored.apply(acq("q", "a", Mode::Shared, 1_000, 0, "c1"), 2, 1);
    assert!(matches!(again.outcome, Outcome::Granted(g) if g.token == 1));
}

#[test]
fn node_made_ids_are_remembered_through_the_retry_window_only() {
    const DAY: u64 = 24 * 3600 * 1000;
    const WAIT: u64 = 300_000;
    let node_made = |res: &str, owner: &str, wait: u64, rid: &str| {
        let Command::Acquire(mut a) = acq(res, owner, Mode::Exclusive, DAY, wait, rid) else {
            unreachable!()
        };
        a.node_made_id = true;
        Command::Acquire(a)
    };
    let mut t = run(
        "memory",
        vec![
            step(
                0,
                acq("r", "a", Mode::Exclusive, DAY, 0, "c1"),
                granted("a", 1),
            ),
            step(1, node_made("r2", "b", 0, "n1"), granted("b", 2)),
            step(2, node_made("r", "c", WAIT, "n2"), Want::Queued),
        ],
    );
    let at = |t: &mut LockTable, now: u64, cmd: Command| t.apply(cmd, now, now);
    // Inside its window a node's retry gets the first answer back...
    let last = 1 + NODE_ID_MEMORY_MS - 1;
    let replay = at(&mut t, last, node_made("r2", "b", 0, "n1")).outcome;
    assert!(
        matches!(replay, Outcome::Granted(ref g) if g.token == 2),
        "{replay:?}"
    );
    // ...after it the id is forgotten and the call is a new request.
    let replay = at(&mut t, last + 1, node_made("r2", "b", 0, "n1")).outcome;
    assert_eq!(replay, Outcome::AlreadyHeld { token: 2 });
    let tick = at(&mut t, 2 + WAIT, Command::Tick);
    assert_eq!(tick.settled, vec![(3, Outcome::WaitTimeout)]);
    // A queued request's window starts when its wait ends.
    let last = 2 + WAIT + NODE_ID_MEMORY_MS - 1;
    assert_eq!(
        at(&mut t, last, node_made("r", "c", WAIT, "n2")).outcome,
        Outcome::WaitTimeout
    );
    let replay = at(&mut t, last + 1, node_made("r", "c", WAIT, "n2")).outcome;
    assert!(matches!(replay, Outcome::Queued { .. }), "{replay:?}");
    // A client's id, remembered before the node-made ones, outlives them.
    let replay = at(
        &mut t,
        REQUEST_MEMORY_MS - 1,
        acq("r", "a", Mode::Exclusive, DAY, 0, "c1"),
    )
    .outcome;
    assert!(
        matches!(replay, Outcome::Granted(ref g) if g.token == 1),
        "{replay:?}"
    );
    let replay = at(
        &mut t,
        REQUEST_MEMORY_MS,
        acq("r", "a", Mode::Exclusive, DAY, 0, "c1"),
    )
    .outcome;
    assert_eq!(replay, Outcome::AlreadyHeld { token: 1 });
}

#[test]
fn cancel_withdraws_a_waiter_or_reports_its_fate() {
    run(
        "cancel",
        vec![
            step(0, x("r", "a", 0), granted("a", 1)),
            step(
                0,
                acq("r", "b", Mode::Shared, 1_000, 5_000, "b1"),
                Want::Queued,
            ),
            step(0, s("r", "c", 5_000), Want::Queued),
            step(
                0,
                acq("r", "d", Mode::Exclusive, 1_000, 5_000, "d1"),
                Want::Queued,
            ),
            // The withdrawn wait is settled too, for any other handler
            // of the same request.
            step_s(
                1,
                Command::Cancel(Cancel {
                    owner: "d".into(),
                    request_id: "d1".into(),
                }),
                Want::Exact(Outcome::WaitTimeout),
                vec![(4, Want::Exact(Outcome::WaitTimeout))],
            ),
            step_s(
                2,
                rel("r", "a", 1),
                Want::Exact(Outcome::Released),
                vec![(2, granted("b", 2)), (3, granted("c", 3))],
            ),
            step(
                3,
                Command::Cancel(Cancel {
                    owner: "b".into(),
                    request_id: "b1".into(),
                }),
                granted("b", 2),
            ),
            step(
                4,
                Command::Cancel(Cancel {
                    owner: "zz".into(),
                    request_id: "nope".into(),
                }),
                Want::Exact(Outcome::UnknownRequest),
            ),
        ],
    );
}

#[test]
fn cancelling_a_blocking_exclusive_waiter_lets_shared_ones_behind_it_go() {
    run(
        "cancel unblocks",
        vec![
            step(0, s("r", "a", 0), granted("a", 1)),
            step(
                0,
                acq("r", "w", Mode::Exclusive, 1_000, 5_000, "w1"),
                Want::Queued,
            ),
            step(0, s("r", "b", 5_000), Want::Queued),
            step_s(
                1,
                Command::Cancel(Cancel {
                    owner: "w".into(),
                    request_id: "w1".into(),
                }),
                Want::Exact(Outcome::WaitTimeout),
                vec![(2, Want::Exact(Outcome::WaitTimeout)), (3, granted("b", 2))],
            ),
        ],
    );
}

#[test]
fn tokens_strictly_increase_and_survive_a_snapshot() {
    let mut t = LockTable::new();
    let mut last = 0;
    for i in 0..50u64 {
        let o = t.apply(x("r", "a", 0), 2 * i + 1, i);
        let Outcome::Granted(g) = o.outcome else {
            panic!("not granted: {o:?}");
        };
        assert!(g.token > last);
        last = g.token;
        t.apply(rel("r", "a", g.token), 2 * i + 2, i);
    }
    let bytes = serde_json::to_vec(&t).unwrap();
    let mut restored: LockTable = serde_json::from_slice(&bytes).unwrap();
    let o = restored.apply(x("r", "b", 0), 1_000, 1_000);
    assert!(matches!(o.outcome, Outcome::Granted(g) if g.token == last + 1));
}

#[test]
fn a_snapshot_copy_keeps_its_moment_and_remembered_answers_keep_their_json() {
    let mut t = LockTable::new();
    t.apply(acq("r", "a", Mode::Exclusive, 1_000, 0, "c1"), 1, 0);
    let copy = t.clone();
    let at_copy = serde_json::to_value(&copy).unwrap();
    // Commands after the copy (new answers, and forgetting old ones once
    // their memory ends) leave the copy as it was.
    t.apply(acq("s", "b", Mode::Exclusive, 1_000, 0, "c2"), 2, 5);
    t.apply(Command::Tick, 3, REQUEST_MEMORY_MS + 1);
    assert_eq!(serde_json::to_value(&copy).unwrap(), at_copy);
    assert_ne!(serde_json::to_value(&t).unwrap(), at_copy);
    // The layout of the BTreeMaps these were before: owner → request id →
    // answer, and [forget at, owner, request id] triples in time order.
    assert_eq!(
        at_copy["requests"]["a"]["c1"]["forget_at_ms"],
        REQUEST_MEMORY_MS
    );
    assert_eq!(
        at_copy["forget"],
        serde_json::json!([[REQUEST_MEMORY_MS, "a", "c1"]])
    );
    // And it loads back: a replay of c1 gets the remembered grant.
    let mut restored: LockTable = serde_json::from_value(at_copy).unwrap();
    let again = restored.apply(acq("r", "a", Mode::Exclusive, 1_000, 0, "c1"), 9, 10);
    assert!(matches!(again.outcome, Outcome::Granted(g) if g.token == 1));
    assert_eq!(restored.last_token(), 1);
}

#[test]
fn next_deadline_tracks_leases_and_waits() {
    let mut t = LockTable::new();
    assert_eq!(t.next_deadline(), None);
    t.apply(x("r", "a", 0), 1, 0); // lease to 1000
    assert_eq!(t.next_deadline(), Some(1_000));
    t.apply(x("r", "b", 300), 2, 0); // wait to 300
    assert_eq!(t.next_deadline(), Some(300));
    t.apply(Command::Tick, 3, 300);
    assert_eq!(t.next_deadline(), Some(1_000));
    t.apply(Command::Tick, 4, 1_000);
    assert_eq!(t.next_deadline(), None);
    assert_eq!(t.sizes(), (0, 0, 0));
}

#[test]
fn deadlines_leave_with_their_holds_and_waiters() {
    let mut t = LockTable::new();
    t.apply(x("r", "a", 0), 1, 0); // lease to 1000
    t.apply(rel("r", "a", 1), 2, 10);
    assert_eq!(t.next_deadline(), None, "a released lease is not due");
    t.apply(x("r", "a", 0), 3, 20); // lease to 1020
    t.apply(renew("r", "a", 2, 5_000), 4, 30);
    assert_eq!(t.next_deadline(), Some(5_030), "renewed: only the new end");
    t.apply(acq("r", "b", Mode::Exclusive, 1_000, 300, "b1"), 5, 40); // wait to 340
    assert_eq!(t.next_deadline(), Some(340));
    t.apply(
        Command::Cancel(Cancel {
            owner: "b".into(),
            request_id: "b1".into(),
        }),
        6,
        50,
    );
    assert_eq!(
        t.next_deadline(),
        Some(5_030),
        "a withdrawn wait is not due"
    );
    t.apply(x("r", "c", 400), 7, 60); // wait to 460
    let freed = t.apply(rel("r", "a", 2), 8, 70);
    assert!(matches!(freed.settled[..], [(7, Outcome::Granted(_))]));
    assert_eq!(
        t.next_deadline(),
        Some(1_070),
        "a granted waiter's wait is not due, its lease is"
    );
    // Two shared holds ending together: releasing one keeps the other due.
    t.apply(s("q", "d", 0), 9, 100);
    t.apply(s("q", "e", 0), 10, 100);
    t.apply(rel("q", "d", 4), 11, 110);
    t.apply(rel("r", "c", 3), 12, 120);
    assert_eq!(t.next_deadline(), Some(1_100));
    t.apply(Command::Tick, 13, 1_100);
    assert_eq!(t.next_deadline(), None);
    assert_eq!(t.sizes(), (0, 0, 0));
}
