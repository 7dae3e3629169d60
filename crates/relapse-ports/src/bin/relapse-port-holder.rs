//! A port holder for this crate's own tests; the `relapse` binary runs the same code from its
//! hidden `__helper port_exhaustion` subcommand.

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match relapse_ports::ports::holder_main(&args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relapse-port-holder: {e}");
            std::process::ExitCode::from(3)
        }
    }
}
