//! The `lock-service` binary: parse flags, set up logs, build the runtime,
//! bind, serve.

use clap::Parser;
use lock_service::Config;

fn main() -> anyhow::Result<()> {
    common::server::init_tracing();
    let config = Config::parse();
    // One thread means tokio's current-thread runtime, not a multi-thread
    // one with a single worker, which would still run `block_on` on a second
    // thread and pay the work-stealing scheduler's bookkeeping on every
    // wake-up. On this 2-core host, three nodes on current-thread runtimes
    // did 1.03-1.08x the hand-offs and 1.02-1.16x the 16-client pairs of
    // the same nodes on one-worker runtimes, at 0.92-1.01x the CPU (three
    // invocations, medians of 5, alternating in each).
    let mut runtime = if config.worker_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        if config.worker_threads > 0 {
            b.worker_threads(config.worker_threads);
        }
        b
    };
    runtime.enable_all().build()?.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        lock_service::run(config, listener, common::server::shutdown_signal()).await?;
        Ok(())
    })
}
