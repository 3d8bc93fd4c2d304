//! The `queue-service` binary: parse flags, set up logs, bind, run.

use clap::Parser;
use queue_service::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    config.server.init_tracing();
    let listener = tokio::net::TcpListener::bind(&config.server.listen).await?;
    queue_service::run(config, listener, common::server::shutdown_signal()).await
}
