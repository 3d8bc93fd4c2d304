//! The flags every service binary shares, flattened into each service's
//! own `Config` with `#[command(flatten)]`, so that a flag means the same
//! and reads its environment fallback the same way in every binary.
//!
//! - [`ServerArgs`]: where to listen and how to log (every binary);
//! - [`ClusterArgs`]: the shared secret between the nodes of one service
//!   (lock, queue, cache; the gateway calls no `/internal/` route);
//! - [`MemberArgs`]: this node's name and its fellow members on a
//!   consistent-hash ring (queue, cache; lock members carry Raft ids and
//!   keep their own `--peers`).
//!
//! Each service sets its own default listen address with
//! `#[command(mut_arg("listen", |a| common::config::listen_default(a, "…")))]`.

use clap::{Args, ValueEnum};

use crate::server::ClusterToken;

/// Where a service listens and how it logs.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Address to listen on (host:port).
    #[arg(long, env = "LISTEN_ADDR")]
    pub listen: String,

    /// Log filter: a level (`info`, `debug`) or tracing directives
    /// (`info,lock_service=debug`). An unparsable filter logs at `info`.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_filter: String,

    /// Log format: `text` for people, `json` for one JSON object per line.
    #[arg(long, env = "LOG_FORMAT", value_enum, ignore_case = true, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl ServerArgs {
    /// Listen on `listen`, with the default log settings (tests, embedding).
    pub fn listen_on(listen: impl Into<String>) -> Self {
        Self {
            listen: listen.into(),
            log_filter: "info".into(),
            log_format: LogFormat::Text,
        }
    }

    /// Install the tracing subscriber these flags ask for (see
    /// [`crate::server::init_tracing`]).
    pub fn init_tracing(&self) {
        crate::server::init_tracing(&self.log_filter, self.log_format);
    }

    /// What every binary does between parsing its flags and calling its
    /// crate's `run`: set up logging, then bind `--listen`.
    pub async fn start(&self) -> std::io::Result<tokio::net::TcpListener> {
        self.init_tracing();
        tokio::net::TcpListener::bind(&self.listen).await
    }
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Give the `--listen` flag of [`ServerArgs`] a service's own default
/// address (`#[command(mut_arg("listen", |a| listen_default(a, "…")))]`).
pub fn listen_default(arg: clap::Arg, addr: &'static str) -> clap::Arg {
    arg.required(false).default_value(addr)
}

/// The secret the nodes of one service share.
#[derive(Debug, Clone, Default, Args)]
pub struct ClusterArgs {
    /// Shared secret between this service's nodes: sent on every call one
    /// node makes to another, and required on the `/internal/` routes and
    /// on forwarded requests (unset or empty: open).
    #[arg(long, env = "CLUSTER_TOKEN", hide_env_values = true)]
    pub cluster_token: Option<String>,
}

impl ClusterArgs {
    /// The token as the guards and clients use it (an empty string is none).
    pub fn token(&self) -> ClusterToken {
        ClusterToken(self.cluster_token.clone().filter(|t| !t.is_empty()))
    }
}

/// This node's place among the members of a consistent-hash ring.
#[derive(Debug, Clone, Default, Args)]
pub struct MemberArgs {
    /// This node's name in the ring; it must equal this node's entry in the
    /// other nodes' PEERS (default: derived from the listen address, see the
    /// service's README).
    #[arg(long, env = "ADVERTISE_ADDR")]
    pub advertise: Option<String>,

    /// Every node of this service, this one included, comma-separated
    /// host:port. Names are re-resolved periodically (a scaled compose
    /// service name yields one member per replica). Empty: this node alone.
    #[arg(long, env = "PEERS", default_value = "")]
    pub peers: String,
}

impl MemberArgs {
    /// `--advertise` when given and not empty.
    pub fn advertise(&self) -> Option<&str> {
        self.advertise.as_deref().filter(|a| !a.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches, Parser};

    #[derive(Debug, Parser)]
    #[command(mut_arg("listen", |a| listen_default(a, "127.0.0.1:9")))]
    struct Flags {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        cluster: ClusterArgs,
        #[command(flatten)]
        members: MemberArgs,
    }

    /// Parse as the binaries do, minus the environment fallbacks (the
    /// machine running the tests may set `RUST_LOG` or `PEERS`).
    fn parse(args: &[&str]) -> Result<Flags, clap::Error> {
        let cmd = Flags::command().mut_args(|a| a.env(None::<&str>));
        Flags::from_arg_matches(&cmd.try_get_matches_from(args)?)
    }

    #[test]
    fn defaults_flags_and_empty_values() {
        let d = parse(&["svc"]).unwrap();
        assert_eq!(d.server.listen, "127.0.0.1:9");
        assert_eq!(d.server.log_filter, "info");
        assert_eq!(d.server.log_format, LogFormat::Text);
        assert_eq!(d.cluster.token().0, None);
        assert_eq!(d.members.advertise(), None);
        assert_eq!(d.members.peers, "");

        let f = parse(&[
            "svc",
            "--listen",
            "0.0.0.0:1",
            "--log-format",
            "json",
            "--log-filter",
            "debug",
            "--cluster-token",
            "s",
            "--advertise",
            "10.0.0.2:1",
            "--peers",
            "a:1,b:1",
        ])
        .unwrap();
        assert_eq!(f.server.listen, "0.0.0.0:1");
        assert_eq!(f.server.log_format, LogFormat::Json);
        assert_eq!(f.server.log_filter, "debug");
        assert_eq!(f.cluster.token().0.as_deref(), Some("s"));
        assert_eq!(f.members.advertise(), Some("10.0.0.2:1"));
        assert_eq!(f.members.peers, "a:1,b:1");

        let empty = parse(&["svc", "--cluster-token", "", "--advertise", ""]).unwrap();
        assert_eq!(empty.cluster.token().0, None);
        assert_eq!(empty.members.advertise(), None);

        assert!(parse(&["svc", "--log-format", "xml"]).is_err());
    }

    /// compose.yaml, the scripts and the fault suite set these names.
    #[test]
    fn environment_names() {
        let cmd = Flags::command();
        for (flag, env) in [
            ("listen", "LISTEN_ADDR"),
            ("log_filter", "RUST_LOG"),
            ("log_format", "LOG_FORMAT"),
            ("cluster_token", "CLUSTER_TOKEN"),
            ("advertise", "ADVERTISE_ADDR"),
            ("peers", "PEERS"),
        ] {
            let arg = cmd
                .get_arguments()
                .find(|a| a.get_id() == flag)
                .unwrap_or_else(|| panic!("no flag {flag}"));
            assert_eq!(arg.get_env().and_then(|e| e.to_str()), Some(env), "{flag}");
        }
    }
}
