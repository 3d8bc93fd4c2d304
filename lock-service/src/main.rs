//! The `lock-service` binary: parse flags, set up logs, bind, run.

use clap::Parser;
use lock_service::Config;

fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    config.server.init_tracing();
    config.runtime()?.block_on(async {
        let listener = tokio::net::TcpListener::bind(&config.server.listen).await?;
        lock_service::run(config, listener, common::server::shutdown_signal()).await?;
        Ok(())
    })
}
