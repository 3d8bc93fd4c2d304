//! `dsync lock …` against the whole system as real processes, dsync run as
//! the built binary: exec hands its command the fencing token, passes the
//! exit code through, never lets two commands overlap on one resource, and
//! stops its command when the lock is lost; acquire/renew/release/show
//! with their refusals (exit 1) and `--json`.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_commands_against_a_running_system() {
    let dir = tempfile::tempdir().unwrap();
    let mut sys = start(dir.path()).await;
    let url = sys.gateway_url();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();

    exec_hands_the_command_its_token(&url);
    exec_passes_the_exit_code_through(&url);
    two_execs_never_overlap(&url, &work);
    acquire_renew_release_show(&url, &work);
    exec_passes_sigterm_on(&url, &work);
    exec_stops_the_command_when_the_lock_is_lost(&mut sys, &url, &work).await;
}

fn exec_hands_the_command_its_token(url: &str) {
    let o = run(
        url,
        &[
            "lock",
            "exec",
            "cli/token",
            "--",
            "sh",
            "-c",
            "echo \"token=$DSYNC_FENCING_TOKEN resource=$DSYNC_LOCK_RESOURCE\"",
        ],
        None,
    );
    expect_code(&o, 0);
    let line = stdout(&o);
    let token: u64 = line
        .trim()
        .strip_prefix("token=")
        .and_then(|rest| rest.strip_suffix(" resource=cli/token"))
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no token in {line:?}"));
    assert!(token > 0);
    // Released when the command ended.
    let o = run(url, &["--json", "lock", "show", "cli/token"], None);
    expect_code(&o, 0);
    let v = json(&o);
    assert_eq!(v["held"], false, "{v}");
}

fn exec_passes_the_exit_code_through(url: &str) {
    let o = run(
        url,
        &["lock", "exec", "cli/code", "--", "sh", "-c", "exit 7"],
        None,
    );
    expect_code(&o, 7);
    let o = run(
        url,
        &["lock", "exec", "cli/code", "--", "/nonexistent/command"],
        None,
    );
    expect_code(&o, 127);
    // The lock was released in both cases: a new exec gets it at once.
    let o = run(url, &["lock", "exec", "cli/code", "--", "true"], None);
    expect_code(&o, 0);
}

/// Two processes each run three `lock exec --wait` in a row on one
/// resource; each critical section appends `start`/`end` lines with its
/// token and a pause between. In the file every `start` is followed by its
/// own `end`, and the tokens grow.
fn two_execs_never_overlap(url: &str, work: &std::path::Path) {
    let log = work.join("overlap.log");
    let script = format!(
        "echo \"start $DSYNC_FENCING_TOKEN\" >> {log}; sleep 0.3; echo \"end $DSYNC_FENCING_TOKEN\" >> {log}",
        log = log.display()
    );
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let url = url.to_string();
            let script = script.clone();
            std::thread::spawn(move || {
                for _ in 0..3 {
                    let o = run(
                        &url,
                        &[
                            "lock",
                            "exec",
                            "cli/overlap",
                            "--wait",
                            "60s",
                            "--ttl",
                            "5s",
                            "--",
                            "sh",
                            "-c",
                            &script,
                        ],
                        None,
                    );
                    expect_code(&o, 0);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("a worker thread");
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 12, "{text}");
    let mut last = 0u64;
    for pair in lines.chunks(2) {
        let start = pair[0].strip_prefix("start ").expect(&text);
        let end = pair[1].strip_prefix("end ").expect(&text);
        assert_eq!(start, end, "interleaved sections:\n{text}");
        let token: u64 = start.parse().unwrap();
        assert!(token > last, "tokens do not grow:\n{text}");
        last = token;
    }
}

fn acquire_renew_release_show(url: &str, work: &std::path::Path) {
    let r = "cli/manual";
    let o = run(
        url,
        &[
            "--json", "lock", "acquire", r, "--owner", "alice", "--ttl", "30s",
        ],
        None,
    );
    expect_code(&o, 0);
    let grant = json(&o);
    assert_eq!(grant["granted"], true, "{grant}");
    assert_eq!(grant["owner"], "alice", "{grant}");
    let token = grant["token"].as_u64().expect("a token");
    let t = token.to_string();

    // Text mode prints the token alone.
    let o = run(
        url,
        &["lock", "acquire", "cli/text", "--owner", "carol"],
        None,
    );
    expect_code(&o, 0);
    assert!(stdout(&o).trim().parse::<u64>().is_ok(), "{}", stdout(&o));

    // Refused while alice holds it: exit 1, with and without --json.
    let o = run(url, &["lock", "acquire", r, "--owner", "bob"], None);
    expect_code(&o, 1);
    let o = run(
        url,
        &["--json", "lock", "acquire", r, "--owner", "bob"],
        None,
    );
    expect_code(&o, 1);
    assert_eq!(json(&o)["error"]["code"], "lock_held");
    // A short wait that ends without the lock: exit 1.
    let o = run(
        url,
        &["lock", "acquire", r, "--owner", "bob", "--wait", "300ms"],
        None,
    );
    expect_code(&o, 1);
    // exec refused: the command never runs.
    let marker = work.join("ran");
    let touch = format!("touch {}", marker.display());
    let o = run(
        url,
        &[
            "lock", "exec", r, "--owner", "bob", "--", "sh", "-c", &touch,
        ],
        None,
    );
    expect_code(&o, 1);
    assert!(!marker.exists(), "the command ran without the lock");
    assert!(stderr(&o).contains("not granted"), "{}", stderr(&o));

    let o = run(url, &["--json", "lock", "show", r], None);
    expect_code(&o, 0);
    let state = json(&o);
    assert_eq!(state["held"], true, "{state}");
    assert_eq!(state["holders"][0]["owner"], "alice", "{state}");
    assert_eq!(state["holders"][0]["token"], token, "{state}");
    let o = run(url, &["lock", "show", r], None);
    expect_code(&o, 0);
    assert!(stdout(&o).contains("alice"), "{}", stdout(&o));

    let o = run(
        url,
        &[
            "--json", "lock", "renew", r, "--owner", "alice", "--token", &t, "--ttl", "20s",
        ],
        None,
    );
    expect_code(&o, 0);
    assert!(json(&o)["expires_at_ms"].as_u64().is_some());
    // Nobody releases another's lock.
    let o = run(
        url,
        &["lock", "release", r, "--owner", "bob", "--token", &t],
        None,
    );
    expect_code(&o, 1);
    let o = run(
        url,
        &["lock", "release", r, "--owner", "alice", "--token", &t],
        None,
    );
    expect_code(&o, 0);
    // Not held any more: refused.
    let o = run(
        url,
        &["lock", "release", r, "--owner", "alice", "--token", &t],
        None,
    );
    expect_code(&o, 1);
}

/// SIGTERM to dsync reaches the command (its trap runs), dsync passes its
/// exit code through and releases the lock.
fn exec_passes_sigterm_on(url: &str, work: &std::path::Path) {
    let started = work.join("trap.started");
    let trapped = work.join("trap.log");
    let script = format!(
        "trap 'echo got-term >> {t}; exit 5' TERM; touch {s}; while true; do sleep 0.1; done",
        t = trapped.display(),
        s = started.display()
    );
    let child = dsync(url)
        .args(["lock", "exec", "cli/signal", "--", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !started.exists() {
        assert!(Instant::now() < deadline, "the command never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let o = wait_bounded(child, Duration::from_secs(30), "lock exec after SIGTERM");
    expect_code(&o, 5);
    assert_eq!(
        std::fs::read_to_string(&trapped).unwrap_or_default().trim(),
        "got-term"
    );
    let o = run(url, &["--json", "lock", "show", "cli/signal"], None);
    assert_eq!(json(&o)["held"], false);
}

/// Every lock node paused: renewals stop, the guard gives the lock up
/// after its TTL, and dsync stops the command (SIGTERM to its group) and
/// exits 4 saying so.
async fn exec_stops_the_command_when_the_lock_is_lost(
    sys: &mut chaos::system::System,
    url: &str,
    work: &std::path::Path,
) {
    let pidfile = work.join("lost.pid");
    let script = format!("echo $$ > {}; exec sleep 60", pidfile.display());
    let child = dsync(url)
        .args([
            "lock",
            "exec",
            "cli/lost",
            "--ttl",
            "1s",
            "--kill-after",
            "2s",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let pid = loop {
        if let Ok(p) = std::fs::read_to_string(&pidfile) {
            if let Ok(p) = p.trim().parse::<u32>() {
                break p;
            }
        }
        assert!(Instant::now() < deadline, "the command never started");
        std::thread::sleep(Duration::from_millis(20));
    };
    let locks = sys.names(chaos::system::Kind::Lock);
    for n in &locks {
        sys.pause(n).unwrap();
    }
    let o = wait_bounded(child, Duration::from_secs(30), "lock exec with a lost lock");
    for n in &locks {
        sys.resume(n).unwrap();
    }
    expect_code(&o, 4);
    assert!(stderr(&o).contains("LOCK LOST"), "{}", stderr(&o));
    // The command is gone (dsync reaped it, so not even a zombie is left).
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the command still runs"
    );
    sys.wait_healthy(Duration::from_secs(60)).await.unwrap();
}
