//! Helpers of the dsync tests: the whole system as real processes
//! (`chaos::system::System`, from the binaries beside `dsync`), and the
//! built `dsync` binary run as a real process with every wait bounded.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use chaos::system::{Options, System};

/// Longest any one dsync run in these tests may take before the test fails.
pub const RUN_LIMIT: Duration = Duration::from_secs(90);

pub fn dsync_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_dsync"))
}

/// Start the whole system (3 lock, 3 queue, 3 cache nodes and the gateway,
/// embedded stores) under `dir`.
pub async fn start(dir: &Path) -> System {
    let bins = chaos::system::workspace_bins();
    System::start(Options {
        bins,
        dir: dir.to_path_buf(),
        redis: false,
        netns: false,
        disk_shim: false,
        lock_worker_threads: Some(1),
    })
    .await
    .expect("the system starts")
}

/// `dsync` aimed at `url`, with none of the caller's DSYNC_* settings.
pub fn dsync(url: &str) -> Command {
    let mut c = Command::new(dsync_bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("DSYNC_") {
            c.env_remove(k);
        }
    }
    c.env("DSYNC_URL", url);
    c
}

/// Wait for `child` up to `within`; kill it and panic past that. Its
/// piped stdout and stderr are drained meanwhile, so an answer larger than
/// a pipe's buffer (a completion script) cannot block it.
pub fn wait_bounded(mut child: Child, within: Duration, what: &str) -> Output {
    use std::io::Read;
    fn drain<R: Read + Send + 'static>(r: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    }
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let deadline = Instant::now() + within;
    let status = loop {
        match child.try_wait().expect("try_wait") {
            Some(status) => break status,
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                let (out, err) = (
                    out.join().unwrap_or_default(),
                    err.join().unwrap_or_default(),
                );
                panic!(
                    "{what} still ran after {within:?}; stdout: {} stderr: {}",
                    String::from_utf8_lossy(&out),
                    String::from_utf8_lossy(&err)
                );
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// Run `dsync ARGS…` to the end (bounded by [`RUN_LIMIT`]), stdin `input`.
pub fn run(url: &str, args: &[&str], input: Option<&str>) -> Output {
    let mut cmd = dsync(url);
    cmd.args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("dsync runs");
    if let Some(text) = input {
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(text.as_bytes()).expect("write stdin");
    }
    wait_bounded(child, RUN_LIMIT, &format!("dsync {args:?}"))
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn code(status: ExitStatus) -> i32 {
    status.code().unwrap_or(-1)
}

/// Assert the exit code, showing the run's output when it differs.
#[track_caller]
pub fn expect_code(o: &Output, want: i32) {
    assert_eq!(
        code(o.status),
        want,
        "stdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
}

/// stdout as one JSON document.
#[track_caller]
pub fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", stdout(o), stderr(o)))
}
