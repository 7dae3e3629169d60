//! The thaw holder and canary writer for this crate's own tests; the `relapse` binary runs the
//! same code from a hidden subcommand.

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match relapse_fs::holder_main(&args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relapse-fs-holder: {e}");
            std::process::ExitCode::from(3)
        }
    }
}
