//! `dsync queue …` against the whole system as real processes: `put`
//! (argument and stdin lines), `work` processes every message exactly once
//! with a command that always succeeds, dead-letters with one that always
//! fails, extends a long run's visibility, stops a run past --timeout;
//! stats, dead, redrive, config.

mod support;

use std::collections::BTreeSet;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_commands_against_a_running_system() {
    let dir = tempfile::tempdir().unwrap();
    let sys = start(dir.path()).await;
    let url = sys.gateway_url();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();

    work_processes_every_message_once(&url, &work);
    work_dead_letters_what_always_fails(&url);
    work_extends_a_long_run(&url);
    work_stops_a_run_past_its_timeout(&url);
}

fn stats(url: &str, queue: &str) -> serde_json::Value {
    let o = run(url, &["--json", "queue", "stats", queue], None);
    expect_code(&o, 0);
    json(&o)
}

fn work_processes_every_message_once(url: &str, work: &std::path::Path) {
    let q = "cli-once";
    let lines: String = (0..40).map(|i| format!("{{\"n\":{i}}}\n")).collect();
    let o = run(url, &["queue", "put", q, "-"], Some(&lines));
    expect_code(&o, 0);
    assert_eq!(stdout(&o).lines().count(), 40, "{}", stdout(&o));
    let o = run(url, &["--json", "queue", "put", q, "{\"n\":40}"], None);
    expect_code(&o, 0);
    assert_eq!(json(&o)["ids"].as_array().map(Vec::len), Some(1));
    // A string payload with --raw.
    let o = run(url, &["queue", "put", q, "--raw", "forty-one"], None);
    expect_code(&o, 0);

    let out = work.join("once.out");
    let cmd = format!("cat >> {}", out.display());
    let o = run(
        url,
        &[
            "--json",
            "queue",
            "work",
            q,
            "--concurrency",
            "3",
            "--idle-exit",
            "2s",
            "--",
            "sh",
            "-c",
            &cmd,
        ],
        None,
    );
    expect_code(&o, 0);
    let summary = json(&o);
    assert_eq!(summary["counts"]["acked"], 42, "{summary}");
    assert_eq!(summary["counts"]["nacked"], 0, "{summary}");
    let text = std::fs::read_to_string(&out).unwrap();
    let got: Vec<&str> = text.lines().collect();
    assert_eq!(got.len(), 42, "{text}");
    let distinct: BTreeSet<&str> = got.iter().copied().collect();
    assert_eq!(distinct.len(), 42, "a message ran twice:\n{text}");
    for i in 0..=40 {
        assert!(
            distinct.contains(format!("{{\"n\":{i}}}").as_str()),
            "{i} missing:\n{text}"
        );
    }
    assert!(distinct.contains("\"forty-one\""), "{text}");
    let s = stats(url, q);
    assert_eq!(
        (
            s["ready"].as_u64(),
            s["in_flight"].as_u64(),
            s["dead_lettered"].as_u64()
        ),
        (Some(0), Some(0), Some(0)),
        "{s}"
    );
}

fn work_dead_letters_what_always_fails(url: &str) {
    let q = "cli-dead";
    let o = run(url, &["queue", "config", q, "--max-attempts", "2"], None);
    expect_code(&o, 0);
    for i in 0..3 {
        let o = run(url, &["queue", "put", q, &format!("{{\"n\":{i}}}")], None);
        expect_code(&o, 0);
    }
    let o = run(
        url,
        &[
            "--json",
            "queue",
            "work",
            q,
            "--idle-exit",
            "3s",
            "--backoff",
            "50ms",
            "--",
            "sh",
            "-c",
            "cat > /dev/null; exit 1",
        ],
        None,
    );
    expect_code(&o, 0);
    let summary = json(&o);
    assert_eq!(summary["counts"]["taken"], 6, "{summary}");
    assert_eq!(summary["counts"]["dead_lettered"], 3, "{summary}");
    assert_eq!(summary["counts"]["acked"], 0, "{summary}");
    assert_eq!(stats(url, q)["dead_lettered"], 3);

    let o = run(url, &["--json", "queue", "dead", q], None);
    expect_code(&o, 0);
    let dead = json(&o);
    let msgs = dead["messages"].as_array().expect("messages");
    assert_eq!(msgs.len(), 3, "{dead}");
    assert!(msgs.iter().all(|m| m["attempts"] == 2), "{dead}");
    let o = run(url, &["queue", "dead", q], None);
    expect_code(&o, 0);
    assert!(stdout(&o).contains("ATTEMPTS"), "{}", stdout(&o));

    let o = run(url, &["--json", "queue", "redrive", q], None);
    expect_code(&o, 0);
    assert_eq!(json(&o)["redriven"].as_array().map(Vec::len), Some(3));
    let s = stats(url, q);
    assert_eq!(
        (s["ready"].as_u64(), s["dead_lettered"].as_u64()),
        (Some(3), Some(0)),
        "{s}"
    );
}

/// A run three times the visibility timeout keeps its message: a second
/// worker never gets it, and the ack takes effect.
fn work_extends_a_long_run(url: &str) {
    let q = "cli-extend";
    let o = run(url, &["queue", "put", q, "1"], None);
    expect_code(&o, 0);
    let o = run(
        url,
        &[
            "--json",
            "queue",
            "work",
            q,
            "--concurrency",
            "2",
            "--visibility",
            "500ms",
            "--idle-exit",
            "2500ms",
            "--",
            "sh",
            "-c",
            "cat > /dev/null; sleep 1.5",
        ],
        None,
    );
    expect_code(&o, 0);
    let summary = json(&o);
    assert_eq!(summary["counts"]["taken"], 1, "{summary}");
    assert_eq!(summary["counts"]["acked"], 1, "{summary}");
    assert_eq!(summary["counts"]["lost_receipts"], 0, "{summary}");
}

fn work_stops_a_run_past_its_timeout(url: &str) {
    let q = "cli-timeout";
    let o = run(url, &["queue", "put", q, "1"], None);
    expect_code(&o, 0);
    let o = run(
        url,
        &[
            "--json",
            "queue",
            "work",
            q,
            "--max-messages",
            "1",
            "--timeout",
            "300ms",
            "--kill-after",
            "1s",
            "--backoff",
            "10s",
            "--",
            "sleep",
            "30",
        ],
        None,
    );
    expect_code(&o, 0);
    let summary = json(&o);
    assert_eq!(summary["counts"]["timed_out"], 1, "{summary}");
    assert_eq!(summary["counts"]["nacked"], 1, "{summary}");
    // Nacked with its backoff: delayed, not ready.
    let s = stats(url, q);
    assert_eq!(
        (s["delayed"].as_u64(), s["in_flight"].as_u64()),
        (Some(1), Some(0)),
        "{s}"
    );
}
