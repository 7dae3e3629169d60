//! The fault over a running gate: switch its mode, confirm the switch with a canary process
//! whose write parks (or completes) in the gate, and switch back to `pass` on revert.

use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use relapse_core::fault::{BoxFuture, Effective, Fault, FaultError, RevertInstructions, Reverted};
use tokio::io::AsyncBufReadExt;
use tokio::time::Instant;

use super::{GateHandle, GateMode, CANARY_COMPLETES_WITHIN, CANARY_PARKS_WITHIN};
use crate::{FsError, CANARY_PREFIX};

/// The canary of a fault: a process that creates a file in the gate's root while it passes,
/// then — once told — writes, fsyncs and deletes it (the launcher's `gate-canary FILE`).
///
/// Why not the freeze's create-write-fsync canary: a create parked in the gate holds its
/// directory's lock in the kernel, and would block every lookup and listing of the gate's root
/// in the VFS — reads a `writes` stall must let through. A write or fsync parked on a file of
/// its own holds only that file's lock.
struct Canary {
    child: tokio::process::Child,
    stdin: Option<tokio::process::ChildStdin>,
    pid: u32,
}

/// Entry point of the canary process (`gate-canary FILE`).
pub(crate) fn canary_main(file: &Path) -> Result<(), FsError> {
    let context = || format!("gate canary {}", file.display());
    let mut f = std::fs::File::create_new(file).map_err(FsError::io(context()))?;
    let mut out = std::io::stdout();
    let _ = writeln!(out, "ready").and_then(|()| out.flush());
    let mut line = String::new();
    // EOF (relapse gone) is as good as a go: the canary must not outlive the fault.
    let _ = std::io::stdin().read_line(&mut line);
    let written = f
        .write_all(b"relapse fs_gate canary\n")
        .and_then(|()| f.sync_all());
    drop(f);
    let removed = std::fs::remove_file(file);
    written.and(removed).map_err(FsError::io(context()))
}

impl Canary {
    /// Starts the canary and waits until its file exists (created while the gate passes).
    async fn start(handle: &GateHandle, n: u32) -> Result<Canary, FaultError> {
        let file = handle
            .mountpoint()
            .join(format!("{CANARY_PREFIX}gate-{}-{n}", std::process::id()));
        let mut child = tokio::process::Command::new(&handle.launcher.program)
            .args(&handle.launcher.args)
            .arg("gate-canary")
            .arg(&file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| {
                FaultError::Injector(format!(
                    "cannot start the canary ({}): {e}",
                    handle.launcher.program.display()
                ))
            })?;
        let pid = child.id().expect("a child not yet waited for has its pid");
        let stdout = child.stdout.take().expect("piped");
        let stdin = child.stdin.take();
        let mut line = String::new();
        let mut reader = tokio::io::BufReader::new(stdout);
        match tokio::time::timeout(CANARY_PARKS_WITHIN, reader.read_line(&mut line)).await {
            Ok(Ok(_)) if line.trim() == "ready" => Ok(Canary { child, stdin, pid }),
            _ => Err(FaultError::NotConfirmed(format!(
                "the canary failed to create {} (said {:?})",
                file.display(),
                line.trim()
            ))),
        }
    }

    /// Tells it to write, fsync and delete.
    async fn go(&mut self) -> Result<(), FaultError> {
        use tokio::io::AsyncWriteExt;
        if let Some(mut stdin) = self.stdin.take() {
            stdin
                .write_all(b"go\n")
                .await
                .map_err(|e| FaultError::Injector(format!("telling the canary to go: {e}")))?;
        }
        Ok(())
    }
}

/// Switches a gate to a mode until reverted (back to `pass`).
pub struct FsGateFault {
    handle: GateHandle,
    mode: GateMode,
    canary: Option<Canary>,
    canaries: u32,
    applied: bool,
}

impl FsGateFault {
    /// A fault that puts the gate in `mode`; `pass` is no fault and is refused.
    pub fn new(handle: GateHandle, mode: GateMode) -> Result<FsGateFault, FsError> {
        if mode == GateMode::Pass {
            return Err(FsError::Gate("pass is no fault".into()));
        }
        Ok(FsGateFault {
            handle,
            mode,
            canary: None,
            canaries: 0,
            applied: false,
        })
    }

    async fn set_mode(&self) -> Result<String, FaultError> {
        self.handle
            .set_mode(self.mode)
            .await
            .map_err(|e| FaultError::Injector(e.to_string()))
    }

    pub fn canary_pid(&self) -> Option<u32> {
        self.canary.as_ref().map(|c| c.pid)
    }

    async fn inject_now(&mut self) -> Result<Effective, FaultError> {
        let where_ = self.handle.mountpoint().display().to_string();
        self.applied = true;
        if !matches!(self.mode, GateMode::Stall(_)) {
            let acked = self.set_mode().await?;
            return Ok(Effective {
                at: Instant::now(),
                detail: format!("gate at {where_}: daemon acked {acked}"),
            });
        }
        // Effective means: a request is parked. The service's own may come first; the canary
        // (a separate process: a thread of ours parked in FUSE would tie relapse to the gate)
        // makes sure one comes at all — its write (scopes all, writes) or its fsync. Its file
        // is created before the switch, so the create itself is never what parks.
        let mut canary = match self.canary.take() {
            Some(canary) => canary,
            None => {
                self.canaries += 1;
                Canary::start(&self.handle, self.canaries).await?
            }
        };
        let acked = self.set_mode().await;
        let went = canary.go().await;
        self.canary = Some(canary);
        let acked = acked?;
        went?;
        let parked = self
            .handle
            .wait_parked(None, CANARY_PARKS_WITHIN)
            .await
            .map_err(|e| FaultError::NotConfirmed(e.to_string()))?;
        Ok(Effective {
            at: Instant::now(),
            detail: format!(
                "gate at {where_}: {acked}; {parked}{}",
                self.canary_pid()
                    .map(|p| format!(" (canary pid {p})"))
                    .unwrap_or_default()
            ),
        })
    }

    async fn revert_async(&mut self) -> Result<Reverted, FaultError> {
        let where_ = self.handle.mountpoint().display().to_string();
        if !self.applied {
            return Ok(Reverted {
                at: Instant::now(),
                detail: format!("gate at {where_} was not switched by this fault"),
            });
        }
        let acked = self
            .handle
            .set_mode(GateMode::Pass)
            .await
            .map_err(|e| FaultError::Injector(e.to_string()))?;
        // Reverted means: nothing parked, and a canary's create, write, fsync and unlink
        // passed — the one parked at inject, or a fresh one.
        let mut canary = match self.canary.take() {
            Some(canary) => canary,
            None => {
                self.canaries += 1;
                let mut canary = Canary::start(&self.handle, self.canaries).await?;
                canary.go().await?;
                canary
            }
        };
        let status = tokio::time::timeout(CANARY_COMPLETES_WITHIN, canary.child.wait())
            .await
            .map_err(|_| {
                FaultError::NotConfirmed(format!(
                    "the canary on {where_} did not complete within {CANARY_COMPLETES_WITHIN:?} of pass"
                ))
            })?
            .map_err(|e| FaultError::Injector(format!("waiting for the canary: {e}")))?;
        if !status.success() {
            return Err(FaultError::NotConfirmed(format!(
                "the canary on {where_} failed after pass ({status})"
            )));
        }
        let now = self
            .handle
            .status()
            .await
            .map_err(|e| FaultError::Injector(e.to_string()))?;
        if now.parked != 0 || now.mode != "pass" {
            return Err(FaultError::NotConfirmed(format!(
                "the gate at {where_} is in {} with {} parked after pass",
                now.mode, now.parked
            )));
        }
        self.applied = false;
        Ok(Reverted {
            at: Instant::now(),
            detail: format!(
                "gate at {where_}: {acked}; nothing parked, a canary create/write/fsync/unlink passed"
            ),
        })
    }
}

impl Fault for FsGateFault {
    fn describe(&self) -> String {
        format!(
            "{} on the gate at {}",
            self.mode,
            self.handle.mountpoint().display()
        )
    }

    fn revert_instructions(&self) -> RevertInstructions {
        // After a crash the daemon has failed open by itself; the guardian removes the gate.
        RevertInstructions::new(&self.handle.record)
    }

    fn inject(&mut self) -> BoxFuture<'_, Result<Effective, FaultError>> {
        Box::pin(self.inject_now())
    }

    fn revert(&mut self) -> BoxFuture<'_, Result<Reverted, FaultError>> {
        Box::pin(self.revert_async())
    }

    fn revert_now(&mut self) {
        if self.applied {
            self.handle.pass_now();
            self.applied = false;
        }
        // A parked canary completes by itself once released; tokio reaps it.
        self.canary = None;
    }
}

impl Drop for FsGateFault {
    fn drop(&mut self) {
        if self.applied {
            self.revert_now();
        }
    }
}
