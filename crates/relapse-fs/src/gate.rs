//! `fs_gate`: a FUSE pass-through between a service and its directory that relapse can switch,
//! at run time, to park, delay or fail the service's file operations — the way a hung NFS
//! server, a slow disk or a full or failing volume looks from above the VFS, on any directory
//! and without touching the volume itself.
//!
//! The gate is mounted for the whole run ([`Gate::start`] … [`Gate::stop`]): the service is
//! configured to use the mountpoint. The fault ([`FsGateFault`]) only switches its mode. The
//! daemon is a separate process (the launcher's `gate SOURCE MOUNTPOINT`) in its own session,
//! controlled over its stdin, whose write end only relapse holds: when relapse dies, even by
//! SIGKILL, the daemon reads EOF and fails open — every parked request answered, `pass` for
//! good — and keeps serving until the guardian unmounts it ([`revert_record`]).
//!
//! Here: starting and stopping a gate, and the handle that switches it. Its journal record and
//! teardown are in `record`, the fault and its canary in `fault`.

pub(crate) mod daemon;
mod fault;
pub mod mode;
mod passthrough;
mod record;
mod switch;

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::Path;
use std::process::{ChildStdin, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use relapse_core::fault::BoxError;
use tokio::sync::{oneshot, watch};

pub(crate) use fault::canary_main;
pub use fault::FsGateFault;
pub use mode::{GateErrno, GateMode, Scope};
use record::{is_ours, teardown};
pub use record::{revert_record, GateRecord};

use crate::freeze::HolderLauncher;
use crate::mounts::mount_at;
use crate::FsError;

/// The fault kind, as scenarios and the journal spell it.
pub const GATE_KIND: &str = "fs_gate";

/// How a gate's mount source (its fsname) starts: `relapse-gate:PID:START_TIME`, under file
/// system type `fuse`.
pub const FSNAME_PREFIX: &str = "relapse-gate";

/// How long the daemon may take to start, and to mount once asked.
const DAEMON_READY_WITHIN: Duration = Duration::from_secs(5);
/// How long a control request may wait for its answer (the daemon answers at once).
const REPLY_WITHIN: Duration = Duration::from_secs(5);
/// How long the canary may take to start and to get a request parked.
const CANARY_PARKS_WITHIN: Duration = Duration::from_secs(5);
/// How long after `pass` the canary must complete.
const CANARY_COMPLETES_WITHIN: Duration = Duration::from_secs(5);
/// How long a daemon may take to exit once its file system is unmounted, before it is killed.
const DAEMON_EXITS_WITHIN: Duration = Duration::from_secs(2);
/// How often `/proc` is read while waiting for a process that is not our child to end.
const POLL: Duration = Duration::from_millis(1);

/// The `fsname` a daemon mounts with: its pid and start time, so a mount is provably that
/// daemon's (and a pid reused since is not).
pub(crate) fn fsname(pid: u32, start_time: u64) -> String {
    format!("{FSNAME_PREFIX}:{pid}:{start_time}")
}

/// A process's start time (clock ticks since boot, field 22 of `/proc/PID/stat`); `None` if
/// there is no such process or it is a zombie.
pub fn proc_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold anything: fields resume after the last
    // ')', with the state (field 3) first.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// The request/answer channel to one daemon.
struct Control {
    stdin: Mutex<Option<ChildStdin>>,
    pending: Mutex<HashMap<u64, oneshot::Sender<String>>>,
    next: AtomicU64,
    /// True once the daemon's stdout closed: it has exited.
    exited: watch::Receiver<bool>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Control {
    /// Sends a request; the receiver gets its answer (`ok …` or `err …`).
    fn send(&self, line: &str) -> Result<oneshot::Receiver<String>, FsError> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id, tx);
        let mut stdin = lock(&self.stdin);
        let Some(pipe) = stdin.as_mut() else {
            return Err(FsError::Gate("its control channel is closed".into()));
        };
        // A short line into a pipe the daemon keeps reading: never blocks for long.
        pipe.write_all(format!("{id} {line}\n").as_bytes())
            .and_then(|()| pipe.flush())
            .map_err(|e| FsError::Gate(format!("writing to the daemon: {e}")))?;
        Ok(rx)
    }

    async fn request(&self, line: &str, within: Duration) -> Result<String, FsError> {
        let rx = self.send(line)?;
        let answer = tokio::time::timeout(within, rx)
            .await
            .map_err(|_| FsError::Gate(format!("no answer to {line:?} within {within:?}")))?
            .map_err(|_| FsError::Gate(format!("the daemon ended before answering {line:?}")))?;
        match answer.split_once(' ') {
            Some(("ok", rest)) => Ok(rest.to_string()),
            _ if answer == "ok" => Ok(String::new()),
            Some(("err", rest)) => Err(FsError::Gate(rest.to_string())),
            _ => Err(FsError::Gate(format!("unexpected answer {answer:?}"))),
        }
    }

    fn close(&self) {
        lock(&self.stdin).take();
    }
}

/// What [`GateHandle::status`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateStatus {
    /// The mode line (`stall writes`).
    pub mode: String,
    pub parked: u64,
    pub delayed: u64,
    pub parked_total: u64,
}

/// A gate's controls, shared by the faults on it.
#[derive(Clone)]
pub struct GateHandle {
    control: Arc<Control>,
    record: GateRecord,
    launcher: HolderLauncher,
}

impl std::fmt::Debug for GateHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GateHandle")
            .field("record", &self.record)
            .finish()
    }
}

impl GateHandle {
    pub fn record(&self) -> &GateRecord {
        &self.record
    }

    pub fn mountpoint(&self) -> &Path {
        &self.record.mountpoint
    }

    /// Switches the mode; returns the daemon's answer (`stall writes released=0`).
    pub async fn set_mode(&self, mode: GateMode) -> Result<String, FsError> {
        self.control.request(&mode.to_line(), REPLY_WITHIN).await
    }

    /// Waits until a request (of `pid`, if given) is parked; the daemon's answer
    /// (`parked=N pid=P OP`).
    pub async fn wait_parked(&self, pid: Option<u32>, within: Duration) -> Result<String, FsError> {
        let line = match pid {
            Some(pid) => format!("wait-parked {} {pid}", within.as_millis()),
            None => format!("wait-parked {}", within.as_millis()),
        };
        self.control.request(&line, within + REPLY_WITHIN).await
    }

    pub async fn status(&self) -> Result<GateStatus, FsError> {
        let answer = self.control.request("status", REPLY_WITHIN).await?;
        let mut mode = Vec::new();
        let mut fields = HashMap::new();
        for word in answer.split_whitespace() {
            match word.split_once('=') {
                Some((k, v)) => {
                    fields.insert(k, v);
                }
                None => mode.push(word),
            }
        }
        let num = |k: &str| -> Result<u64, FsError> {
            fields
                .get(k)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| FsError::Gate(format!("no {k} in the status {answer:?}")))
        };
        Ok(GateStatus {
            mode: mode.join(" "),
            parked: num("parked")?,
            delayed: num("delayed")?,
            parked_total: num("parked_total")?,
        })
    }

    /// Asks for `pass` without waiting for the answer, for drop paths.
    fn pass_now(&self) {
        if let Ok(rx) = self.control.send("pass") {
            drop(rx);
        }
    }
}

/// A mounted gate; stopped by [`Gate::stop`], or on drop.
pub struct Gate {
    handle: GateHandle,
    child: Option<std::process::Child>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("record", &self.handle.record)
            .finish()
    }
}

impl Gate {
    /// Starts the daemon (`launcher`'s `gate SOURCE MOUNTPOINT`, in its own session), hands
    /// `on_record` the record to journal, then has the daemon mount `source` at `mountpoint`
    /// (an existing empty directory, not a mount yet) and checks the mount is its. An error
    /// from `on_record` stops it before the mount. Blocking for a few ms (spawn, mountinfo).
    pub async fn start(
        source: &Path,
        mountpoint: &Path,
        launcher: HolderLauncher,
        on_record: &mut dyn FnMut(&GateRecord) -> Result<(), BoxError>,
    ) -> Result<Gate, FsError> {
        let source =
            std::fs::canonicalize(source).map_err(FsError::io(source.display().to_string()))?;
        let mountpoint = std::fs::canonicalize(mountpoint)
            .map_err(FsError::io(mountpoint.display().to_string()))?;
        if mountpoint.starts_with(&source) || source.starts_with(&mountpoint) {
            return Err(FsError::Gate(format!(
                "{} and {} must not contain each other",
                source.display(),
                mountpoint.display()
            )));
        }
        if mount_at(&mountpoint)
            .map_err(FsError::io("reading /proc/self/mountinfo"))?
            .is_some()
        {
            return Err(FsError::Gate(format!(
                "{} is a mount already",
                mountpoint.display()
            )));
        }
        let mut child = std::process::Command::new(&launcher.program)
            .args(&launcher.args)
            .arg("gate")
            .arg(&source)
            .arg(&mountpoint)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| {
                FsError::Gate(format!("cannot start {}: {e}", launcher.program.display()))
            })?;
        let pid = child.id();
        let stdout = child.stdout.take().expect("piped");
        let (exited_tx, exited) = watch::channel(false);
        let control = Arc::new(Control {
            stdin: Mutex::new(child.stdin.take()),
            pending: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            exited,
        });
        let (hello_tx, hello) = oneshot::channel();
        lock(&control.pending).insert(0, hello_tx);
        let reader = control.clone();
        // A thread, not a task: it must outlive any one runtime's idle blocking threads and
        // needs none of its own.
        std::thread::Builder::new()
            .name(format!("gate-{pid}-reader"))
            .spawn(move || {
                for line in std::io::BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let Some((id, rest)) = line.split_once(' ') else {
                        continue;
                    };
                    let Ok(id) = id.parse::<u64>() else { continue };
                    if let Some(tx) = lock(&reader.pending).remove(&id) {
                        let _ = tx.send(rest.to_string());
                    }
                }
                lock(&reader.pending).clear();
                let _ = exited_tx.send(true);
            })
            .map_err(FsError::io("starting the gate's reader thread"))?;
        let gate_failed = |child: &mut std::process::Child, control: &Control, e: FsError| {
            // Before the mount, EOF on stdin ends the daemon with nothing to undo.
            control.close();
            let _ = child.wait();
            e
        };
        let started = match tokio::time::timeout(DAEMON_READY_WITHIN, hello).await {
            Ok(Ok(line)) if line.starts_with("ok started ") => line,
            Ok(Ok(line)) => {
                return Err(gate_failed(
                    &mut child,
                    &control,
                    FsError::Gate(format!("the daemon failed to start (said {line:?})")),
                ))
            }
            Ok(Err(_)) => {
                return Err(gate_failed(
                    &mut child,
                    &control,
                    FsError::Gate("the daemon ended before it started".into()),
                ))
            }
            Err(_) => {
                let _ = child.kill();
                return Err(gate_failed(
                    &mut child,
                    &control,
                    FsError::Gate(format!(
                        "the daemon did not start within {DAEMON_READY_WITHIN:?}"
                    )),
                ));
            }
        };
        let Some(start_time) = proc_start_time(pid) else {
            return Err(gate_failed(
                &mut child,
                &control,
                FsError::Gate(format!("cannot read /proc/{pid}/stat")),
            ));
        };
        let record = GateRecord {
            source,
            mountpoint,
            daemon_pid: pid,
            daemon_start_time: start_time,
        };
        if started != format!("ok started {}", record.fsname()) {
            return Err(gate_failed(
                &mut child,
                &control,
                FsError::Gate(format!(
                    "the daemon said {started:?}, expected its fsname {}",
                    record.fsname()
                )),
            ));
        }
        if let Err(source) = on_record(&record) {
            return Err(gate_failed(
                &mut child,
                &control,
                FsError::Journal {
                    step: "mount",
                    source,
                },
            ));
        }
        let gate = Gate {
            handle: GateHandle {
                control,
                record,
                launcher,
            },
            child: Some(child),
        };
        // From here on, dropping `gate` unmounts and ends the daemon.
        gate.handle
            .control
            .request("mount", DAEMON_READY_WITHIN)
            .await?;
        let mounted = mount_at(&gate.handle.record.mountpoint)
            .map_err(FsError::io("reading /proc/self/mountinfo"))?;
        if !mounted.is_some_and(|m| is_ours(&m, &gate.handle.record)) {
            return Err(FsError::NotConfirmed(format!(
                "the daemon said mounted but {} shows no mount of {}",
                gate.handle.record.mountpoint.display(),
                gate.handle.record.fsname()
            )));
        }
        Ok(gate)
    }

    pub fn handle(&self) -> GateHandle {
        self.handle.clone()
    }

    pub fn record(&self) -> &GateRecord {
        &self.handle.record
    }

    pub fn mountpoint(&self) -> &Path {
        &self.handle.record.mountpoint
    }

    pub fn daemon_pid(&self) -> u32 {
        self.handle.record.daemon_pid
    }

    /// Passes everything, unmounts (lazily if busy), and waits for the daemon to exit (killing
    /// it if a lazily unmounted file system keeps it serving); returns what was done.
    pub async fn stop(mut self) -> Result<String, FsError> {
        let passed = self.handle.set_mode(GateMode::Pass).await;
        let record = self.handle.record.clone();
        let said = tokio::task::spawn_blocking(move || teardown(&record))
            .await
            .map_err(|e| FsError::Gate(e.to_string()))??;
        self.reap().await;
        Ok(match passed {
            Ok(_) => said,
            Err(e) => format!("{said} (pass before the unmount failed: {e})"),
        })
    }

    /// Waits for the daemon's exit (its stdout closing is the event), then reaps it.
    async fn reap(&mut self) {
        self.handle.control.close();
        let mut exited = self.handle.control.exited.clone();
        let _ = tokio::time::timeout(DAEMON_EXITS_WITHIN, exited.wait_for(|e| *e)).await;
        if let Some(mut child) = self.child.take() {
            if matches!(child.try_wait(), Ok(None)) {
                // Gone from /proc (teardown saw it) but not yet reaped: wait() returns at once.
                let _ = child.wait();
            }
        }
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Fail open first, then unmount and end the daemon from the record.
            self.handle.control.close();
            if let Err(e) = teardown(&self.handle.record) {
                tracing::error!(mountpoint = %self.handle.record.mountpoint.display(), error = %e, "could not remove a gate");
            }
            if proc_start_time(child.id()).is_none() {
                let _ = child.wait();
            }
        }
    }
}
