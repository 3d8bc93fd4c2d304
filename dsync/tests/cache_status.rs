//! `dsync cache …` and `dsync status` against the whole system as real
//! processes: values round-trip, a miss exits 1, the MESI line is a table
//! and parses as JSON; status shows the leader, exits 0 when healthy, and
//! `--watch` redraws until SIGINT.

mod support;

use std::process::Stdio;
use std::time::Duration;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_and_status_against_a_running_system() {
    let dir = tempfile::tempdir().unwrap();
    let sys = start(dir.path()).await;
    let url = sys.gateway_url();

    // ---- cache
    let o = run(&url, &["cache", "set", "cli-k", "{\"a\":1}"], None);
    expect_code(&o, 0);
    let o = run(&url, &["cache", "get", "cli-k"], None);
    expect_code(&o, 0);
    assert_eq!(stdout(&o).trim(), "{\"a\":1}");
    let o = run(&url, &["--json", "cache", "get", "cli-k"], None);
    expect_code(&o, 0);
    assert_eq!(json(&o)["value"]["a"], 1);
    let o = run(
        &url,
        &["cache", "set", "cli-s", "--string", "hello", "--ttl", "1m"],
        None,
    );
    expect_code(&o, 0);
    let o = run(&url, &["cache", "get", "cli-s"], None);
    assert_eq!(stdout(&o).trim(), "\"hello\"");

    let o = run(&url, &["--json", "cache", "line", "cli-k"], None);
    expect_code(&o, 0);
    let line = json(&o);
    assert_eq!(line["nodes"].as_array().map(Vec::len), Some(3), "{line}");
    let o = run(&url, &["cache", "line", "cli-k"], None);
    expect_code(&o, 0);
    let text = stdout(&o);
    assert!(
        text.contains("NODE") && text.contains("STATE") && text.contains("home"),
        "{text}"
    );

    let o = run(&url, &["cache", "del", "cli-k"], None);
    expect_code(&o, 0);
    let o = run(&url, &["cache", "get", "cli-k"], None);
    expect_code(&o, 1);
    let o = run(&url, &["--json", "cache", "stats"], None);
    expect_code(&o, 0);
    json(&o);

    // ---- status
    let o = run(&url, &["status"], None);
    expect_code(&o, 0);
    let text = stdout(&o);
    assert!(text.contains("leader") && text.contains("term"), "{text}");
    let o = run(&url, &["--json", "status"], None);
    expect_code(&o, 0);
    let s = json(&o);
    assert_eq!(s["health"]["status"], "ok", "{s}");
    assert!(s["cluster"]["lock"]["leader_id"].as_u64().is_some(), "{s}");
    assert_eq!(
        s["cluster"]["queue"]["members"].as_array().map(Vec::len),
        Some(3),
        "{s}"
    );

    // --watch redraws until SIGINT, then exits 0.
    let child = dsync(&url)
        .args(["--json", "status", "--watch", "200ms"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let o = wait_bounded(child, Duration::from_secs(20), "status --watch");
    expect_code(&o, 0);
    let frames: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert!(frames.len() >= 2, "{frames:?}");
}
