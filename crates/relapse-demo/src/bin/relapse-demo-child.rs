//! Runs one demo child process (`backend` or `frontend`); used by the crate's
//! tests as the [`relapse_demo::Launcher`] program. The `relapse` CLI offers
//! the same entry point through a hidden subcommand.

use std::process::ExitCode;

fn main() -> ExitCode {
    // One thread is plenty for a demo server, and many demo instances may run
    // at once.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("relapse-demo-child: failed to start the tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(relapse_demo::run_child(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("relapse-demo-child: {error}");
            ExitCode::FAILURE
        }
    }
}
