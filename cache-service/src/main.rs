//! The `cache-service` binary: parse flags, set up logs, bind, run.

use cache_service::Config;
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let listener = config.server.start().await?;
    cache_service::run(config, listener, common::server::shutdown_signal()).await
}
