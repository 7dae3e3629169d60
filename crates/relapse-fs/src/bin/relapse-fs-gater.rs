//! For the fail-open test: `relapse-fs-gater HOLDER SOURCE MOUNTPOINT` starts a gate (HOLDER
//! being `relapse-fs-holder`), prints `record JSON`, stalls its writes with `FsGateFault`,
//! prints `stalled`, then answers `wait-parked PID` lines on stdin with `parked …` until it is
//! killed — which is the point: its daemon must then fail open.

use relapse_core::fault::Fault;

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [holder, source, mountpoint] = args.as_slice() else {
        eprintln!("usage: relapse-fs-gater HOLDER SOURCE MOUNTPOINT");
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
    let result: Result<(), Box<dyn std::error::Error>> = runtime.block_on(async {
        let gate = relapse_fs::Gate::start(
            source.as_ref(),
            mountpoint.as_ref(),
            launcher,
            &mut |record| {
                println!("record {}", serde_json::to_string(record)?);
                Ok(())
            },
        )
        .await?;
        let mut fault = relapse_fs::FsGateFault::new(
            gate.handle(),
            relapse_fs::GateMode::Stall(relapse_fs::Scope::Writes),
        )?;
        fault.inject().await.map_err(|e| e.to_string())?;
        println!("stalled");
        let mut lines =
            tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(tokio::io::stdin()));
        while let Some(line) = lines.next_line().await? {
            if let Some(pid) = line.strip_prefix("wait-parked ") {
                let said = gate
                    .handle()
                    .wait_parked(Some(pid.trim().parse()?), std::time::Duration::from_secs(5))
                    .await?;
                println!("parked {said}");
            }
        }
        // Holds the gate (and its control pipe) until killed.
        loop {
            std::thread::park();
        }
    });
    if let Err(e) = result {
        eprintln!("relapse-fs-gater: {e}");
        return std::process::ExitCode::from(3);
    }
    std::process::ExitCode::SUCCESS
}
