//! The `lock-service` binary: parse flags, set up logs, build the runtime,
//! bind, serve.

use clap::Parser;
use lock_service::Config;

fn main() -> anyhow::Result<()> {
    common::server::init_tracing();
    let config = Config::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if config.worker_threads > 0 {
        runtime.worker_threads(config.worker_threads);
    }
    runtime.enable_all().build()?.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        lock_service::run(config, listener, common::server::shutdown_signal()).await?;
        Ok(())
    })
}
