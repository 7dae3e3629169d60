//! For the crash test: `relapse-fs-freezer HOLDER MOUNTPOINT` freezes MOUNTPOINT with
//! `FsFreeze` (HOLDER being `relapse-fs-holder`), prints `frozen HOLDER_PID CANARY_PID`, and
//! waits to be killed — which is the point: its thaw holder must then thaw the file system.

use relapse_core::fault::Fault;

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [holder, mountpoint] = args.as_slice() else {
        eprintln!("usage: relapse-fs-freezer HOLDER MOUNTPOINT");
        return std::process::ExitCode::from(2);
    };
    let launcher = relapse_fs::HolderLauncher {
        program: holder.into(),
        args: Vec::new(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let result: Result<std::convert::Infallible, Box<dyn std::error::Error>> =
        runtime.block_on(async {
            let mut fault = relapse_fs::FsFreeze::new(mountpoint.as_ref(), launcher, &[])?;
            fault.inject().await.map_err(|e| e.to_string())?;
            println!(
                "frozen {} {}",
                fault.holder_pid().unwrap_or(0),
                fault.canary_pid().unwrap_or(0)
            );
            // Never returns while frozen: the fault (and its pipe to the holder) stays alive.
            loop {
                std::thread::park();
            }
        });
    match result {
        Err(e) => {
            eprintln!("relapse-fs-freezer: {e}");
            std::process::ExitCode::from(3)
        }
        Ok(never) => match never {},
    }
}
