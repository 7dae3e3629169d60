//! File-descriptor exhaustion: lower a process's `RLIMIT_NOFILE` soft limit to about the number
//! of descriptors it already holds, so that its next `open`, `socket` or `accept` fails with
//! `EMFILE` ("too many open files").
//!
//! This reproduces the iPaper incident, where a service leaked sockets until it could open no new
//! one: the process is alive, its established connections keep working, its healthcheck may even
//! pass, but every new connection in or out fails. Rather than leak descriptors inside the target,
//! the fault moves the ceiling down to where the target already is, which has the same effect on
//! the target and is undone by moving the ceiling back.
//!
//! Only the *soft* limit is lowered; the hard limit is never touched. The kernel lets anyone who
//! may change a process's limits at all (the same user, or `CAP_SYS_RESOURCE`) lower either limit,
//! and raise the soft limit up to the hard one, but raising a *hard* limit needs
//! `CAP_SYS_RESOURCE`. Lowering the hard limit would therefore make the fault impossible to revert
//! for an unprivileged harness, and for the guardian or `relapse cleanup` run by the same user.
//! The price: a target that raises its own soft limit (some runtimes do, at start-up) escapes the
//! fault, as it could escape a real leak by doing so.
//!
//! The kernel hands out the lowest free descriptor number and refuses one at or above the soft
//! limit, so what matters is not how many descriptors are open but which numbers are free. With
//! holes in the descriptor table (a closed descriptor below the highest open one),
//! `open + headroom` would leave more room than asked: the limit is set to the lowest value under
//! which exactly `headroom` numbers are free, which is `open + headroom` when the table has no
//! holes.
//!
//! The target is named by its pid and its start time (field 22 of `/proc/PID/stat`), so that a
//! pid recycled by another process is never touched. `prlimit(2)` takes a pid, not a pidfd, so a
//! pid recycled between the check and the call (microseconds) cannot be ruled out entirely.

use std::io;

use relapse_core::fault::{
    BoxFuture, Effective, Fault, FaultError, RevertError, RevertInstructions, RevertRecord,
    Reverted,
};
use rlimit::Resource;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// The fault kind in the journal.
pub const KIND: &str = "fd_exhaustion";

/// What is needed to read or change another process's limits.
const LIMITS_NEED: &str = "needs CAP_SYS_RESOURCE or the same user as the target";
/// What is needed to list another process's descriptors in `/proc/PID/fd`.
const FDS_NEED: &str = "needs CAP_SYS_PTRACE or the same user as the target";

/// Why a descriptor-exhaustion target was refused or could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FdError {
    #[error(
        "refusing pid {0}: expected a process other than init or the kernel's (a pid above 1)"
    )]
    Init(u32),
    #[error("refusing pid {0}: it is relapse itself; expected another process")]
    Harness(u32),
    #[error("no process with pid {0}: expected a running process")]
    NoSuchProcess(u32),
    #[error("cannot read the start time of pid {pid} from /proc/{pid}/stat: {reason}")]
    Stat { pid: u32, reason: String },
    #[error("cannot read the RLIMIT_NOFILE limits of pid {pid}: {reason}; {LIMITS_NEED}")]
    Limits { pid: u32, reason: String },
}

/// The journal's record of a descriptor exhaustion: enough to restore the limits from another
/// process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdRecord {
    pub pid: u32,
    /// The target's start time in clock ticks since boot (field 22 of `/proc/PID/stat`), so that
    /// a recycled pid is never touched.
    pub start_time: u64,
    /// The soft `RLIMIT_NOFILE` limit to restore; `u64::MAX` is unlimited.
    pub soft: u64,
    /// The hard `RLIMIT_NOFILE` limit to restore (the fault never changes it).
    pub hard: u64,
}

impl RevertRecord for FdRecord {
    const KIND: &'static str = KIND;
}

/// Restores the limits a journaled descriptor exhaustion lowered; used by the guardian and
/// `relapse cleanup`. Idempotent; leaves alone a process that has exited or whose pid now names
/// another process. Returns what was done, in words.
pub fn revert_record(record: &FdRecord) -> Result<String, RevertError> {
    restore(
        record.pid,
        record.start_time,
        Limits {
            soft: record.soft,
            hard: record.hard,
        },
    )
}

/// Lowers a process's `RLIMIT_NOFILE` soft limit to its open descriptors plus a headroom, until
/// reverted.
pub struct FdExhaustion {
    pid: u32,
    start_time: u64,
    headroom: u32,
    /// The limits read when the target was checked: what `revert_instructions` journals if the
    /// limits cannot be read again when it is called.
    checked_limits: Limits,
    /// The limits before injection, while the fault may be applied.
    saved: Option<Limits>,
}

impl FdExhaustion {
    /// Checks the target now, so that a bad target is refused before anything is injected.
    ///
    /// `headroom` is how many more descriptors the target may open once the fault is effective:
    /// 0 makes its next `open` or `socket` fail.
    pub fn new(pid: u32, headroom: u32) -> Result<FdExhaustion, FdError> {
        if pid <= 1 {
            return Err(FdError::Init(pid));
        }
        if pid == std::process::id() {
            return Err(FdError::Harness(pid));
        }
        // Pids are at most 2^22 on Linux: a larger one never names a process.
        let raw = i32::try_from(pid).map_err(|_| FdError::NoSuchProcess(pid))?;
        let stat = match read_stat(pid) {
            Ok(stat) if stat.is_exited() => return Err(FdError::NoSuchProcess(pid)),
            Ok(stat) => stat,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(FdError::NoSuchProcess(pid))
            }
            Err(e) => {
                return Err(FdError::Stat {
                    pid,
                    reason: e.to_string(),
                })
            }
        };
        let checked_limits = get_limits(raw).map_err(|e| {
            if is_gone(&e) {
                FdError::NoSuchProcess(pid)
            } else {
                FdError::Limits {
                    pid,
                    reason: e.to_string(),
                }
            }
        })?;
        Ok(FdExhaustion {
            pid,
            start_time: stat.start_time,
            headroom,
            checked_limits,
            saved: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The target's start time, in clock ticks since boot.
    pub fn start_time(&self) -> u64 {
        self.start_time
    }

    pub fn headroom(&self) -> u32 {
        self.headroom
    }

    fn raw(&self) -> i32 {
        // `new` checked that the pid fits.
        self.pid as i32
    }

    /// Lowers the soft limit and reads it back; returns the detail for the timeline.
    fn apply(&mut self) -> Result<String, FaultError> {
        let pid = self.pid;
        match identify(pid, self.start_time) {
            Identity::Same => {}
            Identity::Exited => {
                return Err(FaultError::Target(format!("pid {pid} has exited")));
            }
            Identity::Recycled(now) => {
                return Err(FaultError::Target(format!(
                    "pid {pid} now names another process (start time {now}, expected {})",
                    self.start_time
                )));
            }
            Identity::Unknown(reason) => {
                return Err(FaultError::Injector(format!(
                    "cannot tell whether pid {pid} is still the target: {reason}"
                )));
            }
        }
        let current = get_limits(self.raw())
            .map_err(|e| self.io_error(&e, "cannot read RLIMIT_NOFILE", LIMITS_NEED))?;
        let open = open_fds(pid)
            .map_err(|e| self.io_error(&e, &format!("cannot list /proc/{pid}/fd"), FDS_NEED))?;
        // Injected twice: the limits to restore are still the ones before the first time.
        let old = self.saved.unwrap_or(current);
        let soft = limit_for(&open, self.headroom).min(old.soft);
        let lowered = Limits {
            soft,
            hard: current.hard,
        };
        // Counted as applied from before the call: if it fails half-way, reverting restores the
        // limits it found, which is harmless.
        self.saved = Some(old);
        set_limits(self.raw(), lowered).map_err(|e| {
            self.io_error(
                &e,
                &format!("cannot set the RLIMIT_NOFILE soft limit to {soft}"),
                LIMITS_NEED,
            )
        })?;
        let now = get_limits(self.raw())
            .map_err(|e| self.io_error(&e, "cannot read RLIMIT_NOFILE back", LIMITS_NEED))?;
        if now.soft != soft {
            return Err(FaultError::NotConfirmed(format!(
                "pid {pid}: RLIMIT_NOFILE soft limit reads back {} after setting it to {soft}",
                show(now.soft)
            )));
        }
        Ok(format!(
            "pid {pid}: RLIMIT_NOFILE soft {} -> {soft} ({} fds open)",
            show(old.soft),
            open.len()
        ))
    }

    /// Maps a failed read or write of the target to the fault error that says what happened.
    fn io_error(&self, e: &io::Error, what: &str, need: &str) -> FaultError {
        if is_gone(e) {
            FaultError::Target(format!("pid {} has exited", self.pid))
        } else if is_denied(e) {
            FaultError::Injector(format!("{what} of pid {}: {e}; {need}", self.pid))
        } else {
            FaultError::Injector(format!("{what} of pid {}: {e}", self.pid))
        }
    }

    /// Restores the saved limits if the fault may be applied; `Ok` with what was done.
    fn unapply(&mut self) -> Result<String, RevertError> {
        let Some(old) = self.saved else {
            return Ok(format!(
                "pid {}: RLIMIT_NOFILE was not lowered; nothing to restore",
                self.pid
            ));
        };
        let detail = restore(self.pid, self.start_time, old)?;
        self.saved = None;
        Ok(detail)
    }
}

impl Fault for FdExhaustion {
    fn describe(&self) -> String {
        format!(
            "exhaust the file descriptors of pid {}: RLIMIT_NOFILE soft limit to its open fds + {}",
            self.pid, self.headroom
        )
    }

    fn revert_instructions(&self) -> RevertInstructions {
        // The limits to restore are only known for certain at injection, but the journal entry is
        // written before it: the engine calls this just before `inject`, so it reads the target's
        // *current* limits, which are the ones `inject` is about to replace. Once the fault is
        // applied, the limits saved by `inject` are the ones to restore, not the lowered ones.
        // If the limits cannot be read now, those read by `new` stand in (and `inject`, which
        // needs the same permission, will most likely fail).
        let limits = match self.saved {
            Some(saved) => saved,
            None => get_limits(self.raw()).unwrap_or(self.checked_limits),
        };
        let record = FdRecord {
            pid: self.pid,
            start_time: self.start_time,
            soft: limits.soft,
            hard: limits.hard,
        };
        RevertInstructions::new(&record)
    }

    fn inject(&mut self) -> BoxFuture<'_, Result<Effective, FaultError>> {
        Box::pin(async move {
            let detail = self.apply()?;
            Ok(Effective {
                at: Instant::now(),
                detail,
            })
        })
    }

    fn revert(&mut self) -> BoxFuture<'_, Result<Reverted, FaultError>> {
        Box::pin(async move {
            let detail = self
                .unapply()
                .map_err(|e| FaultError::Injector(e.to_string()))?;
            Ok(Reverted {
                at: Instant::now(),
                detail,
            })
        })
    }

    fn revert_now(&mut self) {
        if let Err(e) = self.unapply() {
            tracing::error!(pid = self.pid, error = %e, "could not restore a lowered RLIMIT_NOFILE");
        }
    }
}

/// Soft and hard `RLIMIT_NOFILE` limits; `u64::MAX` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Limits {
    soft: u64,
    hard: u64,
}

fn get_limits(pid: i32) -> io::Result<Limits> {
    let (mut soft, mut hard) = (0, 0);
    rlimit::prlimit(pid, Resource::NOFILE, None, Some((&mut soft, &mut hard)))?;
    Ok(Limits { soft, hard })
}

fn set_limits(pid: i32, limits: Limits) -> io::Result<()> {
    rlimit::prlimit(
        pid,
        Resource::NOFILE,
        Some((limits.soft, limits.hard)),
        None,
    )
}

/// A limit for people: `u64::MAX` is `RLIM_INFINITY`.
fn show(limit: u64) -> String {
    if limit == rlimit::INFINITY {
        "unlimited".to_string()
    } else {
        limit.to_string()
    }
}

/// The process is gone: no such process, or its `/proc` entry vanished.
fn is_gone(e: &io::Error) -> bool {
    e.raw_os_error() == Some(nix::libc::ESRCH) || e.kind() == io::ErrorKind::NotFound
}

fn is_denied(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(nix::libc::EPERM) | Some(nix::libc::EACCES)
    )
}

/// Restores `old` on the process `pid` started at `start_time`, if it still runs; reads them back.
fn restore(pid: u32, start_time: u64, old: Limits) -> Result<String, RevertError> {
    let exited = || format!("pid {pid} has exited; nothing to restore");
    match identify(pid, start_time) {
        Identity::Same => {}
        Identity::Exited => return Ok(exited()),
        Identity::Recycled(now) => {
            return Ok(format!(
                "pid {pid} now names another process (start time {now}, expected {start_time}); \
                 left alone"
            ))
        }
        Identity::Unknown(reason) => {
            return Err(RevertError::NotConfirmed(format!(
                "cannot tell whether pid {pid} is still the target: {reason}"
            )))
        }
    }
    // `identify` read the pid from `/proc`, so it fits.
    let raw = pid as i32;
    match set_limits(raw, old) {
        Ok(()) => {}
        Err(e) if is_gone(&e) => return Ok(exited()),
        Err(e) => {
            return Err(RevertError::failed(
                format!(
                    "cannot restore RLIMIT_NOFILE soft {} hard {} of pid {pid} ({LIMITS_NEED})",
                    show(old.soft),
                    show(old.hard)
                ),
                e,
            ))
        }
    }
    let now = match get_limits(raw) {
        Ok(now) => now,
        Err(e) if is_gone(&e) => return Ok(exited()),
        Err(e) => {
            return Err(RevertError::failed(
                format!("cannot read RLIMIT_NOFILE of pid {pid} back"),
                e,
            ))
        }
    };
    if now != old {
        return Err(RevertError::NotConfirmed(format!(
            "pid {pid}: RLIMIT_NOFILE reads back soft {} hard {} after restoring soft {} hard {}",
            show(now.soft),
            show(now.hard),
            show(old.soft),
            show(old.hard)
        )));
    }
    Ok(format!(
        "pid {pid}: RLIMIT_NOFILE soft restored to {} (hard {})",
        show(old.soft),
        show(old.hard)
    ))
}

/// What `/proc/PID/stat` says of a process.
#[derive(Debug, PartialEq, Eq)]
struct Stat {
    /// `R`, `S`, `T`, `Z`, …
    state: char,
    /// Clock ticks since boot: with the pid, it names one process even after the pid is reused.
    start_time: u64,
}

impl Stat {
    /// A zombie (or a dying process) holds no descriptors and opens none.
    fn is_exited(&self) -> bool {
        self.state == 'Z' || self.state == 'X'
    }
}

fn parse_stat(stat: &str) -> Option<Stat> {
    // The command name (field 2) is in parentheses and may itself hold spaces or parentheses: the
    // fields we want come after the last ')'. They are numbered from 3 (state) in proc(5), so
    // the start time, field 22, is the 20th.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    Some(Stat {
        state: fields.first()?.chars().next()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

fn read_stat(pid: u32) -> io::Result<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "expected a state and a start time, found \"{}\"",
                text.trim()
            ),
        )
    })
}

/// Whether a pid still names the process that started at `start_time`.
enum Identity {
    Same,
    Exited,
    /// The pid names another process, started at this time.
    Recycled(u64),
    Unknown(String),
}

fn identify(pid: u32, start_time: u64) -> Identity {
    match read_stat(pid) {
        Ok(stat) if stat.is_exited() => Identity::Exited,
        Ok(stat) if stat.start_time == start_time => Identity::Same,
        Ok(stat) => Identity::Recycled(stat.start_time),
        Err(e) if is_gone(&e) => Identity::Exited,
        Err(e) => Identity::Unknown(format!("/proc/{pid}/stat: {e}")),
    }
}

/// The descriptor numbers a process holds, ascending, from `/proc/PID/fd`.
fn open_fds(pid: u32) -> io::Result<Vec<u64>> {
    let mut fds = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let name = entry?.file_name();
        if let Some(fd) = name.to_str().and_then(|n| n.parse().ok()) {
            fds.push(fd);
        }
    }
    fds.sort_unstable();
    Ok(fds)
}

/// The lowest soft limit under which exactly `headroom` descriptor numbers are free, given the
/// open ones in ascending order: the next `headroom` opens succeed, the one after fails.
fn limit_for(open: &[u64], headroom: u32) -> u64 {
    // Each open number at or below the candidate pushes it up by one.
    let mut limit = u64::from(headroom);
    for &fd in open {
        if fd > limit {
            break;
        }
        limit += 1;
    }
    limit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_after_the_last_parenthesis() {
        let mut fields: Vec<String> = (3..=52).map(|n| n.to_string()).collect();
        fields[0] = "S".into();
        fields[19] = "987654".into();
        let line = format!("4242 (a (b) c) d)) {}\n", fields.join(" "));
        assert_eq!(
            parse_stat(&line),
            Some(Stat {
                state: 'S',
                start_time: 987654
            })
        );
        assert_eq!(parse_stat("4242 no parenthesis"), None);
        assert_eq!(parse_stat("4242 (short) S 1 2"), None);
    }

    #[test]
    fn reads_our_own_start_time() {
        let stat = read_stat(std::process::id()).unwrap();
        assert!(stat.start_time > 0);
        assert!(!stat.is_exited());
    }

    #[test]
    fn limit_leaves_exactly_the_headroom_free() {
        assert_eq!(limit_for(&[0, 1, 2], 0), 3);
        assert_eq!(limit_for(&[0, 1, 2], 5), 8);
        // A hole at 3: the next open gets 3, so the limit must be 3 for it to fail.
        assert_eq!(limit_for(&[0, 1, 2, 4, 5], 0), 3);
        // One free below: 3, then 6 is refused.
        assert_eq!(limit_for(&[0, 1, 2, 4, 5], 1), 6);
        assert_eq!(limit_for(&[0, 1, 2, 4, 5], 2), 7);
        assert_eq!(limit_for(&[], 0), 0);
        assert_eq!(limit_for(&[1], 0), 0);
    }

    #[test]
    fn shows_unlimited() {
        assert_eq!(show(rlimit::INFINITY), "unlimited");
        assert_eq!(show(1024), "1024");
    }
}
