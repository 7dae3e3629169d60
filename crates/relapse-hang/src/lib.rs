//! Process hangs: freeze a process (or its whole process group) with SIGSTOP, resume it with
//! SIGCONT. This reproduces the FLG incident, where a healthcheck script hung the database server:
//! the process is still there, its sockets still accept connections, but nothing answers.

// No unsafe code; one test forks (a child caught before exec), so tests may allow it where said.
#![cfg_attr(not(test), forbid(unsafe_code))]
#![cfg_attr(test, deny(unsafe_code))]
#![deny(clippy::print_stdout, clippy::print_stderr)]

use std::path::Path;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::{getpgid, getpgrp, Pid};
use relapse_core::fault::{
    BoxFuture, Effective, Fault, FaultError, RevertError, RevertInstructions, RevertRecord,
    Reverted,
};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// The fault kind, as scenarios and the journal spell it.
pub const KIND: &str = "process_freeze";

/// How long to wait for the kernel to show the process stopped (or running again).
const CONFIRM_WITHIN: Duration = Duration::from_secs(2);
/// How often to look at `/proc` while confirming: the state changes within microseconds, and
/// there is no event to wait for for a process that is not our child.
const CONFIRM_POLL: Duration = Duration::from_millis(1);

/// Why a freeze target was refused or could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("refusing to freeze pid {0}: it is init or the kernel's")]
    Init(i32),
    #[error("refusing to freeze pid {0}: it is relapse itself")]
    Harness(i32),
    #[error(
        "refusing to freeze the process group of pid {pid}: it is relapse's own group ({pgid})"
    )]
    HarnessGroup { pid: i32, pgid: i32 },
    #[error("no process with pid {0}")]
    NoSuchProcess(i32),
    #[error("cannot read pidfile {path}: {reason}")]
    Pidfile { path: String, reason: String },
    #[error("no process's command line contains \"{0}\"")]
    NoCommandMatch(String),
    #[error("more than one process's command line contains \"{text}\": {matches}; expected exactly one (make `command` longer)")]
    AmbiguousCommand { text: String, matches: String },
}

mod find;
pub use find::find_by_command;

/// Reads a pidfile: one decimal pid, surrounding white space allowed.
pub fn read_pidfile(path: &Path) -> Result<u32, TargetError> {
    let text = std::fs::read_to_string(path).map_err(|e| TargetError::Pidfile {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    text.trim().parse().map_err(|_| TargetError::Pidfile {
        path: path.display().to_string(),
        reason: format!("expected a pid, found \"{}\"", text.trim()),
    })
}

/// What `/proc/PID/stat` says of a process.
struct Stat {
    /// `R`, `S`, `T`, …
    state: char,
    ppid: i32,
    pgrp: i32,
    /// Clock ticks since boot: with the pid, it names one process even after the pid is reused.
    start_time: u64,
}

fn proc_stat(pid: i32) -> Option<Stat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may itself hold spaces or parentheses: the fields
    // we want come after the last ')'. They are numbered from 3 (state) in proc(5).
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    Some(Stat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

/// Whether the process is stopped by a signal (`T`; `t` is stopped by a tracer, which also
/// counts: it does not run).
pub fn is_stopped(pid: u32) -> Option<bool> {
    proc_stat(pid as i32).map(|s| s.state == 'T' || s.state == 't')
}

/// The members of a process group, from `/proc`.
fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| proc_stat(*pid).is_some_and(|s| s.pgrp == pgid))
        .collect()
}

/// Freezes one process, or its whole process group, until reverted.
pub struct ProcessFreeze {
    pid: Pid,
    /// The group to signal, when the whole group is frozen.
    group: Option<Pid>,
    start_time: Option<u64>,
}

/// The journal's record of a freeze: enough to resume it from another process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FreezeRecord {
    pub pid: i32,
    /// The process group that was frozen, if the whole group was.
    pub group: Option<i32>,
    /// The target's start time, so a recycled pid is never signalled.
    pub start_time: Option<u64>,
}

impl RevertRecord for FreezeRecord {
    const KIND: &'static str = KIND;
}

/// Resumes what a journaled freeze stopped; used by the guardian and `relapse cleanup`.
/// Idempotent. Returns what was done, in words.
pub fn revert_record(record: &FreezeRecord) -> Result<String, RevertError> {
    let same_process = match (proc_stat(record.pid), record.start_time) {
        (None, _) => false,
        (Some(stat), Some(then)) => stat.start_time == then,
        (Some(_), None) => true,
    };
    match record.group {
        Some(pgid) if !group_members(pgid).is_empty() => {
            match killpg(Pid::from_raw(pgid), Signal::SIGCONT) {
                Ok(()) | Err(Errno::ESRCH) => {
                    Ok(format!("process group {pgid} resumed with SIGCONT"))
                }
                Err(e) => Err(RevertError::failed(
                    format!("SIGCONT to process group {pgid}"),
                    e,
                )),
            }
        }
        Some(pgid) => Ok(format!(
            "process group {pgid} has exited; nothing to resume"
        )),
        None if same_process => match kill(Pid::from_raw(record.pid), Signal::SIGCONT) {
            Ok(()) | Err(Errno::ESRCH) => Ok(format!("pid {} resumed with SIGCONT", record.pid)),
            Err(e) => Err(RevertError::failed(
                format!("SIGCONT to pid {}", record.pid),
                e,
            )),
        },
        None => Ok(format!("pid {} has exited; nothing to resume", record.pid)),
    }
}

impl ProcessFreeze {
    /// Checks the target now, so that a bad target is refused before anything is injected.
    pub fn new(pid: u32, process_group: bool) -> Result<ProcessFreeze, TargetError> {
        let raw = pid as i32;
        if raw <= 1 {
            return Err(TargetError::Init(raw));
        }
        if raw == std::process::id() as i32 {
            return Err(TargetError::Harness(raw));
        }
        let target = Pid::from_raw(raw);
        if kill(target, None) == Err(Errno::ESRCH) {
            return Err(TargetError::NoSuchProcess(raw));
        }
        let group = if process_group {
            let pgid = getpgid(Some(target)).map_err(|_| TargetError::NoSuchProcess(raw))?;
            if pgid == getpgrp() {
                return Err(TargetError::HarnessGroup {
                    pid: raw,
                    pgid: pgid.as_raw(),
                });
            }
            Some(pgid)
        } else {
            None
        };
        let start_time = proc_stat(raw).map(|s| s.start_time);
        Ok(ProcessFreeze {
            pid: target,
            group,
            start_time,
        })
    }

    fn signal(&self, signal: Signal) -> Result<(), Errno> {
        match self.group {
            Some(pgid) => killpg(pgid, signal),
            None => kill(self.pid, signal),
        }
    }

    /// The pids whose state confirms the fault: the target, or every member of its group.
    fn watched(&self) -> Vec<i32> {
        match self.group {
            Some(pgid) => group_members(pgid.as_raw()),
            None => vec![self.pid.as_raw()],
        }
    }

    /// Polls `/proc` until every watched process is (or is no longer) stopped.
    async fn confirm(&self, stopped: bool) -> Result<Instant, FaultError> {
        let deadline = Instant::now() + CONFIRM_WITHIN;
        loop {
            let pids = self.watched();
            // A process that has exited is neither frozen nor left frozen.
            let done = pids
                .iter()
                .all(|pid| is_stopped(*pid as u32).is_none_or(|s| s == stopped));
            if done {
                return Ok(Instant::now());
            }
            if Instant::now() >= deadline {
                return Err(FaultError::NotConfirmed(format!(
                    "pid {} did not show state {} within {:?}",
                    self.pid,
                    if stopped { "T (stopped)" } else { "running" },
                    CONFIRM_WITHIN
                )));
            }
            tokio::time::sleep(CONFIRM_POLL).await;
        }
    }

    fn what(&self) -> String {
        match self.group {
            Some(pgid) => format!("process group {pgid} (of pid {})", self.pid),
            None => format!("pid {}", self.pid),
        }
    }
}

impl Fault for ProcessFreeze {
    fn describe(&self) -> String {
        format!("freeze {} with SIGSTOP", self.what())
    }

    fn revert_instructions(&self) -> RevertInstructions {
        let record = FreezeRecord {
            pid: self.pid.as_raw(),
            group: self.group.map(Pid::as_raw),
            start_time: self.start_time,
        };
        RevertInstructions::new(&record)
    }

    fn inject(&mut self) -> BoxFuture<'_, Result<Effective, FaultError>> {
        Box::pin(async move {
            self.signal(Signal::SIGSTOP).map_err(|e| match e {
                Errno::ESRCH => FaultError::Target(format!("{} no longer exists", self.what())),
                other => FaultError::Injector(format!("SIGSTOP to {}: {other}", self.what())),
            })?;
            let at = self.confirm(true).await?;
            Ok(Effective {
                at,
                detail: format!("{} stopped (state T)", self.what()),
            })
        })
    }

    fn revert(&mut self) -> BoxFuture<'_, Result<Reverted, FaultError>> {
        Box::pin(async move {
            match self.signal(Signal::SIGCONT) {
                // Nothing left to resume: the process exited while frozen (e.g. SIGKILLed).
                Err(Errno::ESRCH) => {
                    return Ok(Reverted {
                        at: Instant::now(),
                        detail: format!("{} has exited; nothing to resume", self.what()),
                    })
                }
                Err(other) => {
                    return Err(FaultError::Injector(format!(
                        "SIGCONT to {}: {other}",
                        self.what()
                    )))
                }
                Ok(()) => {}
            }
            let at = self.confirm(false).await?;
            Ok(Reverted {
                at,
                detail: format!("{} resumed with SIGCONT", self.what()),
            })
        })
    }

    fn revert_now(&mut self) {
        if let Err(e) = self.signal(Signal::SIGCONT) {
            if e != Errno::ESRCH {
                tracing::error!(target_process = %self.what(), error = %e, "could not resume a frozen process");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_state_and_group_of_our_own_process() {
        // The test binary's main thread waits for this test thread: running or sleeping.
        let stat = proc_stat(std::process::id() as i32).unwrap();
        assert!(
            stat.state == 'R' || stat.state == 'S',
            "state {}",
            stat.state
        );
        assert_eq!(stat.pgrp, getpgrp().as_raw());
        assert!(stat.start_time > 0);
    }

    #[test]
    fn refuses_init_itself_and_missing_processes() {
        assert_eq!(
            ProcessFreeze::new(1, false).err(),
            Some(TargetError::Init(1))
        );
        let me = std::process::id();
        assert_eq!(
            ProcessFreeze::new(me, false).err(),
            Some(TargetError::Harness(me as i32))
        );
        // Pids above pid_max (at most 2^22 on Linux) never exist.
        assert_eq!(
            ProcessFreeze::new(5_000_000, false).err(),
            Some(TargetError::NoSuchProcess(5_000_000))
        );
    }

    #[test]
    fn reads_pidfiles_and_says_what_is_wrong() {
        let dir = std::env::temp_dir().join(format!("relapse-hang-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.pid");
        std::fs::write(&good, "4242\n").unwrap();
        assert_eq!(read_pidfile(&good), Ok(4242));
        let bad = dir.join("bad.pid");
        std::fs::write(&bad, "four\n").unwrap();
        let err = read_pidfile(&bad).unwrap_err().to_string();
        assert!(err.contains("expected a pid, found \"four\""), "{err}");
        assert!(read_pidfile(&dir.join("missing.pid")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
