//! `fs_freeze`: FIFREEZE a mounted file system, FITHAW it on revert. While frozen, every write
//! and metadata change on it blocks in state D (the kernel's `sb_start_write`), while reads,
//! `stat` and `sync` still answer: the services on it hang on their first write, not at once.
//!
//! A freeze outlives the process that made it, and SIGKILL cannot be caught, so each freeze has a
//! thaw holder: a child process that opened the file system's root before the freeze and reads
//! its stdin — a pipe whose write end only relapse holds. When relapse dies the kernel closes
//! that end, the holder reads EOF and thaws through its descriptor. (Not PR_SET_PDEATHSIG: it
//! fires when the *thread* that spawned the child exits, and tokio retires idle blocking threads,
//! which would thaw in the middle of a fault.)

use std::fs::File;
use std::io::{BufRead, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::errno::Errno;
use relapse_core::fault::{
    BoxFuture, Effective, Fault, FaultError, RevertError, RevertInstructions, RevertRecord,
    Reverted,
};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt;
use tokio::time::Instant;

use crate::mounts::{dev_of, mount_at, mounts, nearest_existing};
use crate::FsError;

/// The fault kind, as scenarios and the journal spell it.
pub const KIND: &str = "fs_freeze";

/// The canary's file names start with this, in the frozen file system's root directory.
pub const CANARY_PREFIX: &str = ".relapse-fs-canary-";

/// How long a holder may take to start and open the file system.
const HOLDER_READY_WITHIN: Duration = Duration::from_secs(5);
/// How long the canary may take to start and reach its write.
const CANARY_STARTS_WITHIN: Duration = Duration::from_secs(5);
/// How long after its write began the canary must show state D. Blocking is immediate; the
/// bound covers a loaded machine's scheduling.
const CANARY_BLOCKS_WITHIN: Duration = Duration::from_secs(2);
/// How long after the thaw the canary's write and fsync must complete.
const CANARY_COMPLETES_WITHIN: Duration = Duration::from_secs(5);
/// How often `/proc` is read while waiting for state D: there is no event for it.
const POLL: Duration = Duration::from_millis(1);

/// How to start a thaw holder (and the canary writer): `program args… hold MOUNTPOINT ST_DEV`
/// and `program args… canary FILE` must run [`holder_main`] (the `relapse` binary's hidden
/// subcommand, or this crate's `relapse-fs-holder`).
#[derive(Debug, Clone)]
pub struct HolderLauncher {
    pub program: PathBuf,
    pub args: Vec<String>,
}

/// The journal's record of a freeze: enough to thaw it from another process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FreezeRecord {
    /// The frozen mount's root (canonical).
    pub mountpoint: PathBuf,
    /// Its device number: a path is thawed only if it still shows this one.
    pub st_dev: u64,
}

impl RevertRecord for FreezeRecord {
    const KIND: &'static str = KIND;
}

fn dev_name(dev: u64) -> String {
    format!(
        "{}:{}",
        nix::sys::stat::major(dev),
        nix::sys::stat::minor(dev)
    )
}

/// Thaws what a journaled freeze froze; used by the guardian and `relapse cleanup`. Idempotent.
/// Thaws through the record's mountpoint if it still shows the record's device, else through
/// any other mount of that device (a bind mount, a moved mount). Opens directories only: writes
/// nothing to the file system, which would block while it is frozen.
pub fn revert_record(record: &FreezeRecord) -> Result<String, RevertError> {
    let all = mounts().map_err(|e| RevertError::failed("reading /proc/self/mountinfo", e))?;
    let mut candidates = vec![record.mountpoint.clone()];
    candidates.extend(
        all.iter()
            .filter(|m| m.dev == record.st_dev && m.mountpoint != record.mountpoint)
            .map(|m| m.mountpoint.clone()),
    );
    for path in candidates {
        // The mount root's own descriptor, checked to be of the record's device: a path now
        // showing another file system is not touched.
        let Ok(root) = File::open(&path) else {
            continue;
        };
        if root.metadata().map(|m| m.dev()).ok() != Some(record.st_dev) {
            continue;
        }
        return match crate::ioctl::thaw(&root) {
            Ok(()) => Ok(format!("thawed {} (FITHAW)", path.display())),
            Err(Errno::EINVAL) => Ok(format!("{} was not frozen", path.display())),
            Err(e) => Err(RevertError::failed(
                format!("FITHAW on {}", path.display()),
                e,
            )),
        };
    }
    Ok(format!(
        "no mount of device {} is left (was {}): nothing to thaw",
        dev_name(record.st_dev),
        record.mountpoint.display()
    ))
}

/// Entry point of the helper process, with the arguments after the launcher's own:
///
/// - `hold MOUNTPOINT ST_DEV`: opens MOUNTPOINT, checks it shows device ST_DEV, prints `ready`,
///   then reads stdin. A line `release` ends it with nothing done; EOF (relapse died, or dropped
///   it) thaws the file system through the descriptor opened before the freeze, prints `thawed`
///   or `not frozen`, and ends it.
/// - `canary FILE`: prints `writing`, then creates FILE, writes a line, fsyncs it and deletes it.
///   On a frozen file system it blocks in state D until the thaw; through a stalled gate it
///   waits for the gate's release.
/// - `gate-canary FILE`: creates FILE, prints `ready`, waits for a line on stdin, then writes,
///   fsyncs, closes and deletes it (fs_gate's canary; see [`crate::gate`]).
/// - `gate SOURCE MOUNTPOINT`: the fs_gate daemon (see [`crate::gate`]): mirrors SOURCE at
///   MOUNTPOINT over FUSE, controlled over stdin/stdout; returns once unmounted.
pub fn holder_main(args: &[String]) -> Result<(), FsError> {
    match args {
        [mode, mountpoint, st_dev] if mode == "hold" => {
            let st_dev = st_dev.parse().map_err(|_| {
                FsError::Holder(format!("expected a device number, found {st_dev:?}"))
            })?;
            hold(Path::new(mountpoint), st_dev)
        }
        [mode, file] if mode == "canary" => canary(Path::new(file)),
        [mode, file] if mode == "gate-canary" => crate::gate::canary_main(Path::new(file)),
        [mode, source, mountpoint] if mode == "gate" => {
            crate::gate::daemon::daemon_main(Path::new(source), Path::new(mountpoint))
        }
        _ => Err(FsError::Holder(
            "usage: hold MOUNTPOINT ST_DEV | canary FILE | gate SOURCE MOUNTPOINT | gate-canary FILE".into(),
        )),
    }
}

/// Stdout is the protocol with relapse, not output for a person: that is why a library writes
/// to it. After relapse died nobody reads it (EPIPE; Rust ignores SIGPIPE), which is fine.
fn say(line: &str) {
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

fn hold(mountpoint: &Path, st_dev: u64) -> Result<(), FsError> {
    let root =
        File::open(mountpoint).map_err(FsError::io(format!("opening {}", mountpoint.display())))?;
    let dev = root
        .metadata()
        .map_err(FsError::io(format!("stat {}", mountpoint.display())))?
        .dev();
    if dev != st_dev {
        return Err(FsError::Holder(format!(
            "{} is device {}, not {}",
            mountpoint.display(),
            dev_name(dev),
            dev_name(st_dev)
        )));
    }
    say("ready");
    for line in std::io::stdin().lock().lines() {
        match line {
            Ok(line) if line.trim() == "release" => return Ok(()),
            Ok(_) => {}
            // A broken pipe is relapse gone too.
            Err(_) => break,
        }
    }
    match crate::ioctl::thaw(&root) {
        Ok(()) => say("thawed"),
        Err(Errno::EINVAL) => say("not frozen"),
        Err(e) => {
            return Err(FsError::sys(format!("FITHAW on {}", mountpoint.display()))(
                e,
            ))
        }
    }
    Ok(())
}

fn canary(file: &Path) -> Result<(), FsError> {
    say("writing");
    let context = || format!("canary {}", file.display());
    let mut f = File::create(file).map_err(FsError::io(context()))?;
    f.write_all(b"relapse fs_freeze canary\n")
        .and_then(|()| f.sync_all())
        .map_err(FsError::io(context()))?;
    drop(f);
    std::fs::remove_file(file).map_err(FsError::io(context()))
}

/// A thaw holder; dropping it closes its stdin without `release`, so it thaws.
struct Holder {
    child: std::process::Child,
}

impl Holder {
    /// Ends the holder without a thaw: the file system is thawed already, or was frozen by
    /// someone else.
    fn release(mut self) {
        if let Some(mut stdin) = self.child.stdin.take() {
            let _ = stdin.write_all(b"release\n");
        }
        // Drop closes (nothing left) and reaps.
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        // It exits as soon as it has read EOF and thawed: a single ioctl.
        let _ = self.child.wait();
    }
}

/// Starts a holder and waits for its `ready`.
async fn start_holder(
    launcher: &HolderLauncher,
    mountpoint: &Path,
    st_dev: u64,
) -> Result<Holder, FsError> {
    let mut child = std::process::Command::new(&launcher.program)
        .args(&launcher.args)
        .arg("hold")
        .arg(mountpoint)
        .arg(st_dev.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        // Its own process group: a Ctrl-C or a kill of relapse's group must not end the process
        // whose job is to outlive relapse.
        .process_group(0)
        .spawn()
        .map_err(|e| {
            FsError::Holder(format!("cannot start {}: {e}", launcher.program.display()))
        })?;
    let stdout = child.stdout.take().expect("piped");
    let read = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .map(|_| line)
    });
    let holder = Holder { child };
    match tokio::time::timeout(HOLDER_READY_WITHIN, read).await {
        Ok(Ok(Ok(line))) if line.trim() == "ready" => Ok(holder),
        Ok(Ok(Ok(line))) => Err(FsError::Holder(format!(
            "it failed to start (said {:?})",
            line.trim()
        ))),
        Ok(Ok(Err(e))) => Err(FsError::Holder(format!("reading its stdout: {e}"))),
        Ok(Err(e)) => Err(FsError::Holder(e.to_string())),
        Err(_) => {
            let mut holder = holder;
            // Unblocks the reading thread, which then ends with EOF.
            let _ = holder.child.kill();
            Err(FsError::Holder(format!(
                "not ready within {HOLDER_READY_WITHIN:?}"
            )))
        }
    }
}

/// The state letter of a process (`R`, `S`, `D`, …) from `/proc/PID/stat`.
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold anything: the state follows the last ')'.
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

/// What the kernel says a blocked process waits in (`percpu_rwsem_wait` for a freeze).
fn wchan(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/wchan"))
        .ok()
        .filter(|w| !w.is_empty() && w != "0")
}

/// The canary writer of one freeze.
struct Canary {
    child: tokio::process::Child,
    pid: u32,
}

/// Freezes the file system mounted at a path until reverted.
pub struct FsFreeze {
    mountpoint: PathBuf,
    st_dev: u64,
    launcher: HolderLauncher,
    /// The mount root, opened at inject: the freeze and the thaw go through it.
    root: Option<File>,
    holder: Option<Holder>,
    canary: Option<Canary>,
    /// Whether this fault froze it (an EBUSY means someone else did, and it is theirs to thaw).
    frozen: bool,
    canaries: u32,
    freeze_took: Option<Duration>,
    thaw_took: Option<Duration>,
}

impl FsFreeze {
    /// Checks the target now: `mountpoint` must be the root of a mount, not of the root file
    /// system, and of no file system that one of `protected` (relapse's state directory, its
    /// binary, its working directory…) is on. A protected path that does not exist yet counts
    /// where it would be created: its nearest existing ancestor.
    pub fn new(
        mountpoint: &Path,
        launcher: HolderLauncher,
        protected: &[PathBuf],
    ) -> Result<FsFreeze, FsError> {
        let canonical = std::fs::canonicalize(mountpoint)
            .map_err(FsError::io(mountpoint.display().to_string()))?;
        if canonical == Path::new("/") {
            return Err(FsError::Root(canonical));
        }
        if mount_at(&canonical)
            .map_err(FsError::io("reading /proc/self/mountinfo"))?
            .is_none()
        {
            return Err(FsError::NotMountRoot(canonical));
        }
        let st_dev =
            dev_of(&canonical).map_err(FsError::io(format!("stat {}", canonical.display())))?;
        // The root file system elsewhere (a bind mount of it) is still the root file system.
        if dev_of(Path::new("/")).map_err(FsError::io("stat /"))? == st_dev {
            return Err(FsError::Root(canonical));
        }
        let cwd = std::env::current_dir().map_err(FsError::io("the working directory"))?;
        for path in protected {
            let absolute = cwd.join(path);
            let at = nearest_existing(&absolute);
            let dev = dev_of(at).map_err(FsError::io(format!("stat {}", at.display())))?;
            if dev == st_dev {
                return Err(FsError::Protected {
                    mountpoint: canonical,
                    protected: path.clone(),
                });
            }
        }
        Ok(FsFreeze {
            mountpoint: canonical,
            st_dev,
            launcher,
            root: None,
            holder: None,
            canary: None,
            frozen: false,
            canaries: 0,
            freeze_took: None,
            thaw_took: None,
        })
    }

    pub fn record(&self) -> FreezeRecord {
        FreezeRecord {
            mountpoint: self.mountpoint.clone(),
            st_dev: self.st_dev,
        }
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// How long the last FIFREEZE took (it waits for dirty data to be written back).
    pub fn freeze_took(&self) -> Option<Duration> {
        self.freeze_took
    }

    /// How long the last FITHAW took.
    pub fn thaw_took(&self) -> Option<Duration> {
        self.thaw_took
    }

    /// The thaw holder's pid while frozen.
    pub fn holder_pid(&self) -> Option<u32> {
        self.holder.as_ref().map(|h| h.child.id())
    }

    /// The canary writer's pid, until the revert has seen it complete.
    pub fn canary_pid(&self) -> Option<u32> {
        self.canary.as_ref().map(|c| c.pid)
    }

    async fn inject_now(&mut self) -> Result<Effective, FaultError> {
        let where_ = self.mountpoint.display().to_string();
        if self.frozen {
            return Ok(Effective {
                at: Instant::now(),
                detail: format!("{where_} is already frozen by this fault"),
            });
        }
        let root = File::open(&self.mountpoint)
            .map_err(|e| FaultError::Target(format!("opening {where_}: {e}")))?;
        let dev = root
            .metadata()
            .map_err(|e| FaultError::Target(format!("stat {where_}: {e}")))?
            .dev();
        if dev != self.st_dev {
            return Err(FaultError::Target(format!(
                "{where_} is now device {}, not {}: another file system was mounted there",
                dev_name(dev),
                dev_name(self.st_dev)
            )));
        }
        // The holder's descriptor is opened before the freeze: from then on, a thaw never needs
        // the path (which a lazy unmount could take away).
        let holder = start_holder(&self.launcher, &self.mountpoint, self.st_dev)
            .await
            .map_err(|e| FaultError::Injector(e.to_string()))?;
        // t_inject is the instant the ioctl is issued, not the instant it returns: the kernel's
        // freeze blocks new writers first and only then syncs what is dirty (tens of
        // milliseconds on a busy disk), so a write that comes during that sync already hangs.
        // The canary below confirms the freeze took hold.
        let frozen_at = Instant::now();
        let started = std::time::Instant::now();
        match crate::ioctl::freeze(&root) {
            Ok(()) => {}
            Err(e) => {
                // Not ours: the holder must not thaw it.
                holder.release();
                return Err(match e {
                    Errno::EBUSY => {
                        FaultError::Target(format!("{where_} is already frozen, not by this fault"))
                    }
                    Errno::EOPNOTSUPP => FaultError::Target(format!(
                        "the file system at {where_} cannot be frozen (EOPNOTSUPP)"
                    )),
                    other => FaultError::Injector(format!("FIFREEZE on {where_}: {other}")),
                });
            }
        }
        let took = started.elapsed();
        // Starting the canary (a new process, under load a slow one) must not move t_inject
        // either: a deep check that blocks meanwhile was blocked by this freeze.
        self.frozen = true;
        self.freeze_took = Some(took);
        self.root = Some(root);
        self.holder = Some(holder);

        // The canary: a separate process, not a thread of ours. A thread blocked in state D
        // would keep this process (and so the holder's pipe) alive after a SIGKILL until the
        // thaw, which would then never come.
        self.canaries += 1;
        let file = self.mountpoint.join(format!(
            "{CANARY_PREFIX}{}-{}",
            std::process::id(),
            self.canaries
        ));
        let mut child = tokio::process::Command::new(&self.launcher.program)
            .args(&self.launcher.args)
            .arg("canary")
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| {
                FaultError::Injector(format!(
                    "cannot start the canary ({}): {e}",
                    self.launcher.program.display()
                ))
            })?;
        let pid = child.id().expect("a child not yet waited for has its pid");
        let stdout = child.stdout.take().expect("piped");
        self.canary = Some(Canary { child, pid });
        // "writing" comes just before the open: a state D seen after it is the write blocking,
        // not the canary's own start-up reading its executable.
        let mut line = String::new();
        let mut reader = tokio::io::BufReader::new(stdout);
        match tokio::time::timeout(CANARY_STARTS_WITHIN, reader.read_line(&mut line)).await {
            Ok(Ok(_)) if line.trim() == "writing" => {}
            Ok(_) => {
                return Err(FaultError::NotConfirmed(format!(
                    "the canary failed to start (said {:?})",
                    line.trim()
                )))
            }
            Err(_) => {
                return Err(FaultError::NotConfirmed(format!(
                    "the canary did not start within {CANARY_STARTS_WITHIN:?}"
                )))
            }
        }
        let deadline = Instant::now() + CANARY_BLOCKS_WITHIN;
        loop {
            if proc_state(pid) == Some('D') {
                break;
            }
            let canary = self.canary.as_mut().expect("set above");
            if let Ok(Some(status)) = canary.child.try_wait() {
                return Err(FaultError::NotConfirmed(format!(
                    "the canary's write on {where_} completed ({status}) after FIFREEZE returned: the file system is not frozen"
                )));
            }
            if Instant::now() >= deadline {
                return Err(FaultError::NotConfirmed(format!(
                    "the canary writing on {where_} (pid {pid}) was not seen blocked (state D) within {CANARY_BLOCKS_WITHIN:?}"
                )));
            }
            tokio::time::sleep(POLL).await;
        }
        let confirmed = frozen_at.elapsed();
        Ok(Effective {
            at: frozen_at,
            detail: format!(
                "froze {where_} (device {}): writers blocked from the start of FIFREEZE, which synced and returned in {took:.1?}; canary writer pid {pid} seen blocked in state D{} {confirmed:.1?} after the start",
                dev_name(self.st_dev),
                wchan(pid).map(|w| format!(" ({w})")).unwrap_or_default()
            ),
        })
    }

    /// FITHAW if this fault froze it; EINVAL means someone (a journaled revert) thawed it
    /// already, which is success.
    fn thaw_now(&mut self) -> Result<Option<&'static str>, FaultError> {
        if !self.frozen {
            return Ok(None);
        }
        let root = self
            .root
            .as_ref()
            .expect("a frozen fault holds the mount root");
        let started = std::time::Instant::now();
        let said = match crate::ioctl::thaw(root) {
            Ok(()) => "thawed",
            Err(Errno::EINVAL) => "found thawed already",
            Err(e) => {
                return Err(FaultError::Injector(format!(
                    "FITHAW on {}: {e}",
                    self.mountpoint.display()
                )))
            }
        };
        self.thaw_took = Some(started.elapsed());
        self.frozen = false;
        Ok(Some(said))
    }

    async fn revert_async(&mut self) -> Result<Reverted, FaultError> {
        let where_ = self.mountpoint.display().to_string();
        let thawed = self.thaw_now()?;
        // Removed means: a write that blocked on the freeze has completed, fsync and all.
        if let Some(canary) = self.canary.as_mut() {
            let status = tokio::time::timeout(CANARY_COMPLETES_WITHIN, canary.child.wait())
                .await
                .map_err(|_| {
                    FaultError::NotConfirmed(format!(
                        "the canary's write on {where_} did not complete within {CANARY_COMPLETES_WITHIN:?} of the thaw"
                    ))
                })?
                .map_err(|e| FaultError::Injector(format!("waiting for the canary: {e}")))?;
            if !status.success() {
                return Err(FaultError::NotConfirmed(format!(
                    "the canary's write on {where_} failed after the thaw ({status})"
                )));
            }
            self.canary = None;
        }
        let at = Instant::now();
        if let Some(holder) = self.holder.take() {
            holder.release();
        }
        self.root = None;
        Ok(Reverted {
            at,
            detail: match thawed {
                Some(said) => format!(
                    "{where_} {said}{}; a blocked write and fsync completed",
                    self.thaw_took
                        .filter(|_| said == "thawed")
                        .map(|t| format!(" in {t:.1?}"))
                        .unwrap_or_default()
                ),
                None => format!("{where_} was not frozen by this fault; nothing to thaw"),
            },
        })
    }
}

impl Fault for FsFreeze {
    fn describe(&self) -> String {
        format!(
            "freeze the file system at {} (FIFREEZE)",
            self.mountpoint.display()
        )
    }

    fn revert_instructions(&self) -> RevertInstructions {
        RevertInstructions::new(&self.record())
    }

    fn inject(&mut self) -> BoxFuture<'_, Result<Effective, FaultError>> {
        Box::pin(self.inject_now())
    }

    fn revert(&mut self) -> BoxFuture<'_, Result<Reverted, FaultError>> {
        Box::pin(self.revert_async())
    }

    fn revert_now(&mut self) {
        match self.thaw_now() {
            Ok(_) => {
                if let Some(holder) = self.holder.take() {
                    holder.release();
                }
            }
            Err(e) => {
                tracing::error!(mountpoint = %self.mountpoint.display(), error = %e, "could not thaw a frozen file system; its holder thaws it as it ends");
                // Dropping the holder without `release` makes it thaw.
                self.holder = None;
            }
        }
        // The canary completes by itself once thawed; tokio reaps it.
        self.canary = None;
        self.root = None;
    }
}

impl Drop for FsFreeze {
    fn drop(&mut self) {
        if self.frozen || self.holder.is_some() {
            self.revert_now();
        }
    }
}
