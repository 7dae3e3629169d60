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

pub(crate) mod daemon;
pub mod mode;
mod passthrough;
mod switch;

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nix::errno::Errno;
use nix::mount::{umount2, MntFlags};
use relapse_core::fault::{
    BoxError, BoxFuture, Effective, Fault, FaultError, RevertError, RevertInstructions,
    RevertRecord, Reverted,
};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

pub use mode::{GateErrno, GateMode, Scope};

use crate::freeze::HolderLauncher;
use crate::mounts::{mount_at, mounts};
use crate::{FsError, CANARY_PREFIX};

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

/// The journal's record of a gate: enough to unmount it and end its daemon from another
/// process. Given to the caller before the mount exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateRecord {
    /// The mirrored directory (canonical).
    pub source: PathBuf,
    /// Where it is mounted (canonical).
    pub mountpoint: PathBuf,
    pub daemon_pid: u32,
    /// The daemon's start time (`/proc/PID/stat` field 22): it is killed only if it matches.
    pub daemon_start_time: u64,
}

impl GateRecord {
    /// The mount source its daemon mounts with, which tells its mount from any other.
    pub fn fsname(&self) -> String {
        fsname(self.daemon_pid, self.daemon_start_time)
    }
}

impl RevertRecord for GateRecord {
    const KIND: &'static str = GATE_KIND;
}

/// Unmounts a journaled gate and ends its daemon; used by the guardian and `relapse cleanup`
/// (and by [`Gate::stop`] and drop). Idempotent. Unmounts only a FUSE mount at the record's
/// mountpoint whose source is the record's daemon's fsname (lazily if busy), kills the daemon
/// only if its start time is the record's and it has not exited by itself within 2 s of the
/// unmount; as a last resort aborts the FUSE connection (fusectl), which ends a daemon stuck in
/// the kernel.
pub fn revert_record(record: &GateRecord) -> Result<String, RevertError> {
    teardown(record).map_err(|e| {
        RevertError::failed(
            format!("removing the gate at {}", record.mountpoint.display()),
            e,
        )
    })
}

fn is_ours(m: &crate::mounts::Mount, record: &GateRecord) -> bool {
    m.fstype.starts_with("fuse") && m.source == record.fsname()
}

fn teardown(record: &GateRecord) -> Result<String, FsError> {
    let mut said = Vec::new();
    let mut devs = Vec::new();
    let mountpoint = record.mountpoint.as_path();
    // A loop: stacked mounts of the same daemon (a mount retried) each need one.
    for _ in 0..8 {
        let Some(m) = mount_at(mountpoint).map_err(FsError::io("reading mountinfo"))? else {
            break;
        };
        if !is_ours(&m, record) {
            said.push(format!(
                "left the mount at {} alone: it is {} from {:?}, not this gate's",
                mountpoint.display(),
                m.fstype,
                m.source
            ));
            break;
        }
        devs.push(m.dev);
        match umount2(mountpoint, MntFlags::empty()) {
            Ok(()) => said.push(format!("unmounted {}", mountpoint.display())),
            Err(Errno::EINVAL) => break,
            Err(Errno::EBUSY) => {
                umount2(mountpoint, MntFlags::MNT_DETACH)
                    .map_err(FsError::sys(format!("unmounting {}", mountpoint.display())))?;
                said.push(format!("unmounted {} lazily (busy)", mountpoint.display()));
            }
            Err(e) => {
                // The last resort: a connection that cannot be unmounted is aborted, which
                // answers everything with ECONNABORTED, and then detached.
                said.push(abort_connection(m.dev));
                umount2(mountpoint, MntFlags::MNT_DETACH).map_err(|e2| {
                    FsError::sys(format!("unmounting {} (after {e})", mountpoint.display()))(e2)
                })?;
                said.push(format!("unmounted {} lazily", mountpoint.display()));
            }
        }
    }

    let pid = record.daemon_pid;
    let ours = || proc_start_time(pid) == Some(record.daemon_start_time);
    if ours() {
        // Unmounted, it exits by itself (its /dev/fuse reads ENODEV); lazily unmounted and
        // still in use, it would serve on, and is killed.
        if !gone_within(&ours, DAEMON_EXITS_WITHIN) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            said.push(format!("killed daemon pid {pid}"));
            if !gone_within(&ours, DAEMON_EXITS_WITHIN) {
                // Stuck in the kernel (a request on its own mount): aborting its connection
                // releases it.
                for dev in &devs {
                    said.push(abort_connection(*dev));
                }
                if !gone_within(&ours, DAEMON_EXITS_WITHIN) {
                    return Err(FsError::NotConfirmed(format!(
                        "gate daemon pid {pid} is still there after SIGKILL and abort"
                    )));
                }
            }
        } else {
            said.push(format!("daemon pid {pid} exited"));
        }
    }
    if said.is_empty() {
        return Ok(format!(
            "nothing was left of the gate at {}",
            mountpoint.display()
        ));
    }
    Ok(said.join("; "))
}

/// Polls (a process that is not our child sends no event) until `alive` is false.
fn gone_within(alive: &dyn Fn() -> bool, within: Duration) -> bool {
    let deadline = std::time::Instant::now() + within;
    loop {
        if !alive() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

const FUSECTL: &str = "/sys/fs/fuse/connections";

/// Aborts the FUSE connection of mount device `dev` through fusectl (mounting fusectl first if
/// needed); says what happened.
fn abort_connection(dev: u64) -> String {
    let fusectl_mounted = mounts()
        .map(|all| all.iter().any(|m| m.fstype == "fusectl"))
        .unwrap_or(false);
    if !fusectl_mounted {
        let _ = nix::mount::mount(
            Some("fusectl"),
            FUSECTL,
            Some("fusectl"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        );
    }
    // The connection's directory is the kernel's dev_t (MKDEV: major << 20 | minor).
    let id = (nix::sys::stat::major(dev) << 20) | nix::sys::stat::minor(dev);
    match std::fs::write(format!("{FUSECTL}/{id}/abort"), "1") {
        Ok(()) => format!("aborted FUSE connection {id}"),
        Err(e) => format!("could not abort FUSE connection {id}: {e}"),
    }
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
