//! The standalone flood for benchmarks, the same flags as `relapse flood` (see
//! `relapse_flood::cli`), without the rest of relapse.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use relapse_flood::cli::FloodArgs;
use tokio_util::sync::CancellationToken;

#[derive(clap::Parser)]
#[command(about = "Send HTTP/1.1 load at a loopback target and report rps and latency")]
struct Cli {
    #[command(flatten)]
    args: FloodArgs,
}

fn main() -> ExitCode {
    let cli = <Cli as clap::Parser>::parse();
    let spec = match cli.args.spec() {
        Ok(spec) => spec,
        Err(e) => {
            eprintln!("relapse-flood: {e}");
            return ExitCode::from(2);
        }
    };
    let cancel = CancellationToken::new();
    let on_signal = cancel.clone();
    // A small runtime of its own waits for ^C; the load runs on its own threads.
    std::thread::spawn(move || {
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            rt.block_on(async {
                if tokio::signal::ctrl_c().await.is_ok() {
                    on_signal.cancel();
                }
            });
        }
    });
    match cli.args.run(spec, cancel) {
        Ok(report) => {
            print!("{}", cli.args.render(&report));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("relapse-flood: {e}");
            ExitCode::from(2)
        }
    }
}
