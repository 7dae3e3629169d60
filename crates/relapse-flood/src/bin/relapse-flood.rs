//! The standalone flood for benchmarks, the same flags, behaviour and exit codes as
//! `relapse flood` (see `relapse_flood::cli`), without the rest of relapse.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use relapse_flood::cli::{run_standalone, FloodArgs};

#[derive(clap::Parser)]
#[command(about = "Send HTTP/1.1 load at a loopback target and report rps and latency")]
struct Cli {
    #[command(flatten)]
    args: FloodArgs,
}

fn main() -> ExitCode {
    let cli = <Cli as clap::Parser>::parse();
    let outcome = run_standalone(&cli.args);
    if let Some(report) = outcome.report() {
        print!("{report}");
    }
    if let Some(error) = outcome.error() {
        eprintln!("relapse-flood: {error}");
    }
    ExitCode::from(outcome.exit_code())
}
