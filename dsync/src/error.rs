//! dsync's one error type, and the exit codes scripts branch on.
//!
//! | code | meaning |
//! | --- | --- |
//! | 0 | done |
//! | 1 | refused or not granted (`lock_held`, `wait_timeout`, a cache miss, a token that does not match, …) |
//! | 2 | usage: bad flags or arguments, or input the service rejects as invalid (400/413/422) |
//! | 3 | unreachable: no answer (connection refused, timeout), or the gateway could not reach the service (502/503/504) |
//! | 4 | `lock exec`: the lock was lost while the command ran |
//!
//! `lock exec` and `queue work` run commands; `lock exec` passes its
//! command's exit code through (128 + N when a signal N ended it, 127 when it
//! could not be found, 126 when it could not be run).

use std::fmt;

use serde_json::{json, Value};

/// Done.
pub const OK: i32 = 0;
/// Refused or not granted.
pub const REFUSED: i32 = 1;
/// Bad usage or invalid input.
pub const USAGE: i32 = 2;
/// No answer from the gateway or the service behind it.
pub const UNREACHABLE: i32 = 3;
/// `lock exec`: the lock was lost while the command ran.
pub const LOCK_LOST: i32 = 4;
/// The command could not be run (shell convention).
pub const CANNOT_RUN: i32 = 126;
/// The command was not found (shell convention).
pub const NOT_FOUND: i32 = 127;

/// Why a dsync command failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The arguments or the input are wrong; nothing was sent (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The service or the gateway answered with an error (exit code by its status).
    #[error(transparent)]
    Client(#[from] client::Error),
    /// Refused without an API error behind it, e.g. a cache miss (exit 1).
    #[error("{0}")]
    Refused(String),
    /// The service refused (exit 1); said the way a person reads it, with
    /// the API error kept for `--json`.
    #[error("{message}")]
    NotGranted {
        message: String,
        source: client::Error,
    },
    /// Local I/O failed (reading stdin, starting a command).
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A command finished with this exit code after dsync said why on stderr.
    #[error("{message}")]
    Exit { code: i32, message: String },
}

impl Error {
    /// An I/O error with what dsync was doing.
    pub fn io(context: impl fmt::Display, source: std::io::Error) -> Self {
        Error::Io {
            context: context.to_string(),
            source,
        }
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => USAGE,
            Error::Refused(_) | Error::NotGranted { .. } => REFUSED,
            Error::Io { .. } => REFUSED,
            Error::Exit { code, .. } => *code,
            Error::Client(e) => client_exit_code(e),
        }
    }

    /// The error as the JSON object `--json` prints on stdout.
    pub fn to_json(&self) -> Value {
        let (code, status, details) = match self {
            Error::Client(client::Error::Api {
                status,
                code,
                details,
                ..
            })
            | Error::NotGranted {
                source:
                    client::Error::Api {
                        status,
                        code,
                        details,
                        ..
                    },
                ..
            } => (code.clone(), Some(*status), Value::Object(details.clone())),
            Error::NotGranted { .. } => ("refused".into(), None, json!({})),
            Error::Client(client::Error::Transport(_)) => ("unreachable".into(), None, json!({})),
            Error::Client(client::Error::Decode { status, .. }) => {
                ("bad_answer".into(), Some(*status), json!({}))
            }
            Error::Client(client::Error::InvalidArgument(_)) | Error::Usage(_) => {
                ("usage".into(), None, json!({}))
            }
            Error::Refused(_) => ("refused".into(), None, json!({})),
            Error::Io { .. } => ("io".into(), None, json!({})),
            Error::Exit { .. } => ("exit".into(), None, json!({})),
        };
        let mut error = json!({
            "code": code,
            "message": self.to_string(),
            "exit_code": self.exit_code(),
        });
        if let Some(s) = status {
            error["status"] = json!(s);
        }
        if let Value::Object(d) = details {
            if !d.is_empty() {
                error["details"] = Value::Object(d);
            }
        }
        json!({ "error": error })
    }
}

/// Exit code of a client error: by HTTP status, or 3 when no answer came.
pub fn client_exit_code(e: &client::Error) -> i32 {
    match e {
        client::Error::Transport(_) => UNREACHABLE,
        client::Error::InvalidArgument(_) => USAGE,
        client::Error::Api { status, .. } | client::Error::Decode { status, .. } => match status {
            400 | 413 | 422 => USAGE,
            502..=504 => UNREACHABLE,
            _ => REFUSED,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, code: &str) -> Error {
        Error::Client(client::Error::Api {
            status,
            code: code.into(),
            message: "m".into(),
            details: Default::default(),
        })
    }

    #[test]
    fn exit_codes_follow_the_status() {
        assert_eq!(api(409, "lock_held").exit_code(), REFUSED);
        assert_eq!(api(404, "not_found").exit_code(), REFUSED);
        assert_eq!(api(401, "unauthorized").exit_code(), REFUSED);
        assert_eq!(api(400, "invalid_input").exit_code(), USAGE);
        assert_eq!(api(422, "invalid_input").exit_code(), USAGE);
        assert_eq!(api(503, "no_leader").exit_code(), UNREACHABLE);
        assert_eq!(Error::Usage("x".into()).exit_code(), USAGE);
        assert_eq!(Error::Refused("x".into()).exit_code(), REFUSED);
    }

    #[test]
    fn json_error_carries_code_status_and_details() {
        let mut details = serde_json::Map::new();
        details.insert("holders".into(), json!(["a"]));
        let e = Error::Client(client::Error::Api {
            status: 409,
            code: "lock_held".into(),
            message: "held".into(),
            details,
        });
        let v = e.to_json();
        assert_eq!(v["error"]["code"], "lock_held");
        assert_eq!(v["error"]["status"], 409);
        assert_eq!(v["error"]["exit_code"], 1);
        assert_eq!(v["error"]["details"]["holders"], json!(["a"]));
    }
}
