//! Running a user's command: in a process group of its own, so that a
//! signal reaches everything it started (`sh -c 'a; b'` included), and
//! stopped with SIGTERM, then SIGKILL after a grace period.
//!
//! - The command inherits stdout and stderr; stdin is inherited or a pipe.
//! - Signals go to the process group (`kill(-pgid, sig)`), never by name.
//! - Because the group is not the terminal's foreground group, a command
//!   that reads the terminal is stopped by SIGTTIN: `lock exec` and
//!   `queue work` are for non-interactive commands.

use std::io::ErrorKind;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use rustix::process::{Pid, Signal};
use tokio::process::{Child, Command};

use crate::error::{self, Error};

/// A running command and its process group.
#[derive(Debug)]
pub struct Running {
    child: Child,
    group: Option<Pid>,
}

/// The process group of a running command, to signal it while another
/// task waits on it.
#[derive(Debug, Clone, Copy)]
pub struct Group(Option<Pid>);

impl Group {
    /// Send `sig` to every process of the group (nothing once it is gone).
    pub fn signal(&self, sig: Signal) {
        if let Some(pid) = self.0 {
            // ESRCH: the group is gone already.
            let _ = rustix::process::kill_process_group(pid, sig);
        }
    }
}

/// Start `argv` with `env` added, stdin `stdin`, in a new process group.
/// A command that cannot be found or run is [`Error::Exit`] with 127 / 126.
pub fn spawn(argv: &[String], env: &[(&str, String)], stdin: Stdio) -> Result<Running, Error> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| Error::Usage("no command given after --".into()))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(stdin)
        .process_group(0)
        .kill_on_drop(false);
    let child = cmd.spawn().map_err(|e| {
        let code = match e.kind() {
            ErrorKind::NotFound => error::NOT_FOUND,
            _ => error::CANNOT_RUN,
        };
        Error::Exit {
            code,
            message: format!("cannot run {program:?}: {e}"),
        }
    })?;
    let group = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(Pid::from_raw);
    Ok(Running { child, group })
}

impl Running {
    pub fn group(&self) -> Group {
        Group(self.group)
    }

    /// The child's stdin, when it was a pipe.
    pub fn take_stdin(&mut self) -> Option<tokio::process::ChildStdin> {
        self.child.stdin.take()
    }

    /// Wait for the command to exit.
    pub async fn wait(&mut self) -> Result<ExitStatus, Error> {
        self.child
            .wait()
            .await
            .map_err(|e| Error::io("waiting for the command", e))
    }

    /// SIGTERM to the group; SIGKILL to the group `grace` later if the
    /// command still runs. Returns how it ended.
    pub async fn terminate(&mut self, grace: Duration) -> Result<ExitStatus, Error> {
        let group = self.group();
        group.signal(Signal::TERM);
        match tokio::time::timeout(grace, self.wait()).await {
            Ok(status) => {
                // The leader is gone; whatever it left in its group goes too.
                group.signal(Signal::KILL);
                status
            }
            Err(_) => {
                group.signal(Signal::KILL);
                self.wait().await
            }
        }
    }
}

/// The shell's exit code for `status`: its code, or 128 + the signal.
pub fn exit_code(status: ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(sig)) => 128 + sig,
        (None, None) => 1,
    }
}

/// How `status` reads for a person.
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit {c}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "ended".into(),
    }
}
