//! `gateway` binary: parse flags, set up logs, bind, serve until SIGINT/SIGTERM.

use clap::Parser;
use gateway::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let listener = config.server.start().await?;
    gateway::run(config, listener, common::server::shutdown_signal()).await
}
