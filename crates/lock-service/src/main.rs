//! The `lock-service` binary: parse flags, set up logs, bind, serve.

use clap::Parser;
use lock_service::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::server::init_tracing();
    let config = Config::parse();
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    lock_service::run(config, listener, common::server::shutdown_signal()).await?;
    Ok(())
}
