//! `gateway` binary: parse flags, set up logs, bind, serve until SIGINT/SIGTERM.

use clap::Parser;
use gateway::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    common::server::init_tracing();
    let listener = tokio::net::TcpListener::bind(&config.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, "gateway listening");
    gateway::run(config, listener, common::server::shutdown_signal()).await
}
