//! A gate's journal record, and taking a gate down from it alone: unmount, end its daemon
//! (by the start time it was journaled with, never a reused pid), abort a FUSE connection that
//! will not unmount.

use std::path::PathBuf;
use std::time::Duration;

use nix::errno::Errno;
use nix::mount::{umount2, MntFlags};
use relapse_core::fault::{RevertError, RevertRecord};
use serde::{Deserialize, Serialize};

use super::{fsname, proc_start_time, DAEMON_EXITS_WITHIN, GATE_KIND, POLL};
use crate::mounts::{mount_at, mounts};
use crate::FsError;

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

pub(super) fn is_ours(m: &crate::mounts::Mount, record: &GateRecord) -> bool {
    m.fstype.starts_with("fuse") && m.source == record.fsname()
}

pub(super) fn teardown(record: &GateRecord) -> Result<String, FsError> {
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
