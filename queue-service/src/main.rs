//! The `queue-service` binary: parse flags, set up logs, bind, run.

use clap::Parser;
use queue_service::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let listener = config.server.start().await?;
    queue_service::run(config, listener, common::server::shutdown_signal()).await
}
