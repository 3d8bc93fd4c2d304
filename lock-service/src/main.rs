//! The `lock-service` binary: parse flags, set up logs, bind, run.

use clap::Parser;
use lock_service::Config;

fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    config.runtime()?.block_on(async {
        let listener = config.server.start().await?;
        lock_service::run(config, listener, common::server::shutdown_signal()).await?;
        Ok(())
    })
}
