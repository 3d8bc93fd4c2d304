//! `dsync`: parses its flags, runs the command on a single-threaded tokio
//! runtime, prints an error (text on stderr; also JSON on stdout with
//! `--json`) and exits with the code the command chose (see
//! `dsync::error`).

use clap::Parser;

fn main() {
    let cli = match dsync::cli::Cli::try_parse() {
        Ok(cli) => cli,
        // Help and version exit 0; usage errors exit 2.
        Err(e) => e.exit(),
    };
    let json = cli.json;
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dsync: starting the runtime: {e}");
            std::process::exit(dsync::error::REFUSED);
        }
    };
    let code = match rt.block_on(dsync::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            if json {
                println!("{}", e.to_json());
            }
            eprintln!("dsync: {e}");
            e.exit_code()
        }
    };
    // Do not wait for background work (a dropped guard's release is
    // best-effort by design).
    drop(rt);
    std::process::exit(code);
}
