//! The `cache-service` binary: parse flags, set up logs, bind, run.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = cache_service::Config::parse();
    common::server::init_tracing();
    let listener = tokio::net::TcpListener::bind(&config.listen).await?;
    cache_service::run(config, listener, common::server::shutdown_signal()).await
}
