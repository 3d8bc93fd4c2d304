//! Exit codes that need no running system: usage (2) and unreachable (3),
//! with `--json` errors that parse; completions.

mod support;

use support::*;

/// A 127.0.0.1 port nothing listens on.
fn closed_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}

#[test]
fn usage_errors_exit_2() {
    let url = closed_url();
    for args in [
        vec!["lock"],
        vec!["lock", "exec", "r"],
        vec!["lock", "exec", "r", "--ttl", "30", "--", "true"],
        vec!["lock", "release", "r", "--token", "1"],
        vec!["queue", "put", "q", "not json"],
        vec!["cache", "set", "k", "{"],
        vec!["nonsense"],
    ] {
        let o = run(&url, &args, None);
        expect_code(&o, 2);
        assert!(!stderr(&o).is_empty(), "{args:?} said nothing");
    }
    let o = run(
        &url,
        &["queue", "put", "q", "-"],
        Some("{\"a\":1}\nnot json\n"),
    );
    expect_code(&o, 2);
    assert!(stderr(&o).contains("line 2"), "{}", stderr(&o));
}

#[test]
fn unreachable_exits_3_with_a_json_error() {
    let url = closed_url();
    for args in [
        vec!["lock", "show", "r"],
        vec!["status"],
        vec!["queue", "stats", "q"],
        vec!["cache", "get", "k"],
        vec!["lock", "exec", "r", "--", "true"],
    ] {
        let o = run(&url, &args, None);
        expect_code(&o, 3);
    }
    let o = run(&url, &["--json", "lock", "show", "r"], None);
    expect_code(&o, 3);
    let v = json(&o);
    assert_eq!(v["error"]["code"], "unreachable", "{v}");
    assert_eq!(v["error"]["exit_code"], 3, "{v}");
}

#[test]
fn help_version_and_completions() {
    let url = closed_url();
    let o = run(&url, &["--help"], None);
    expect_code(&o, 0);
    assert!(stdout(&o).contains("lock"), "{}", stdout(&o));
    for shell in ["bash", "zsh", "fish"] {
        let o = run(&url, &["completions", shell], None);
        expect_code(&o, 0);
        assert!(stdout(&o).contains("dsync"), "{shell}: {}", stdout(&o));
    }
}
