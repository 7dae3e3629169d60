//! The gate's modes and how the control protocol spells them: one line each, the same words in
//! both directions (`stall writes`, `latency fsync 50000 10000`, `error all EIO`, `pass`).

use std::fmt;
use std::time::Duration;

/// Which operations a mode applies to; the others pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every operation but the ones the kernel sends when a file is let go (release, forget),
    /// which no caller waits for.
    All,
    /// What changes the file system: write, create, mkdir, mknod, symlink, link, unlink, rmdir,
    /// rename, setattr (truncate, chmod, chown, utimes), and fsync.
    Writes,
    /// fsync and fsyncdir only.
    Fsync,
}

/// What kind of operation a request is, for [`Scope::covers`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    Read,
    Write,
    Fsync,
}

impl Scope {
    pub fn name(self) -> &'static str {
        match self {
            Scope::All => "all",
            Scope::Writes => "writes",
            Scope::Fsync => "fsync",
        }
    }

    fn parse(word: &str) -> Result<Scope, String> {
        match word {
            "all" => Ok(Scope::All),
            "writes" => Ok(Scope::Writes),
            "fsync" => Ok(Scope::Fsync),
            other => Err(format!(
                "unknown scope {other:?}: expected all, writes or fsync"
            )),
        }
    }

    pub(crate) fn covers(self, class: Class) -> bool {
        match self {
            Scope::All => true,
            Scope::Writes => matches!(class, Class::Write | Class::Fsync),
            Scope::Fsync => class == Class::Fsync,
        }
    }
}

/// The errors an `error` mode can answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateErrno {
    /// An I/O error: a disk or a network volume failing.
    Eio,
    /// No space left on the device.
    Enospc,
    /// A read-only file system: what ext4 turns into after `errors=remount-ro`.
    Erofs,
}

impl GateErrno {
    pub fn name(self) -> &'static str {
        match self {
            GateErrno::Eio => "EIO",
            GateErrno::Enospc => "ENOSPC",
            GateErrno::Erofs => "EROFS",
        }
    }

    pub fn raw(self) -> i32 {
        match self {
            GateErrno::Eio => nix::libc::EIO,
            GateErrno::Enospc => nix::libc::ENOSPC,
            GateErrno::Erofs => nix::libc::EROFS,
        }
    }

    fn parse(word: &str) -> Result<GateErrno, String> {
        match word {
            "EIO" => Ok(GateErrno::Eio),
            "ENOSPC" => Ok(GateErrno::Enospc),
            "EROFS" => Ok(GateErrno::Erofs),
            other => Err(format!(
                "unknown error {other:?}: expected EIO, ENOSPC or EROFS"
            )),
        }
    }
}

/// What the gate does with the operations of its scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateMode {
    /// Everything passes through.
    Pass,
    /// Operations are parked, unanswered, until the mode changes.
    Stall(Scope),
    /// Each operation is answered after `delay` plus a uniform random part of `jitter`.
    Latency {
        scope: Scope,
        delay: Duration,
        jitter: Duration,
    },
    /// Each operation fails with `errno`, without reaching the source directory.
    Error { scope: Scope, errno: GateErrno },
}

impl GateMode {
    /// The mode's control line (without the request id).
    pub fn to_line(&self) -> String {
        self.to_string()
    }

    /// Reads a mode from the words of a control line.
    pub fn parse(words: &[&str]) -> Result<GateMode, String> {
        let micros = |word: &str| {
            word.parse::<u64>()
                .map(Duration::from_micros)
                .map_err(|_| format!("expected microseconds, found {word:?}"))
        };
        match words {
            ["pass"] => Ok(GateMode::Pass),
            ["stall", scope] => Ok(GateMode::Stall(Scope::parse(scope)?)),
            ["latency", scope, delay] => Ok(GateMode::Latency {
                scope: Scope::parse(scope)?,
                delay: micros(delay)?,
                jitter: Duration::ZERO,
            }),
            ["latency", scope, delay, jitter] => Ok(GateMode::Latency {
                scope: Scope::parse(scope)?,
                delay: micros(delay)?,
                jitter: micros(jitter)?,
            }),
            ["error", scope, errno] => Ok(GateMode::Error {
                scope: Scope::parse(scope)?,
                errno: GateErrno::parse(errno)?,
            }),
            _ => Err(format!(
                "unknown mode {:?}: expected pass, stall SCOPE, latency SCOPE DELAY_US [JITTER_US] or error SCOPE ERRNO",
                words.join(" ")
            )),
        }
    }
}

impl fmt::Display for GateMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GateMode::Pass => write!(f, "pass"),
            GateMode::Stall(scope) => write!(f, "stall {}", scope.name()),
            GateMode::Latency {
                scope,
                delay,
                jitter,
            } => write!(
                f,
                "latency {} {} {}",
                scope.name(),
                delay.as_micros(),
                jitter.as_micros()
            ),
            GateMode::Error { scope, errno } => {
                write!(f, "error {} {}", scope.name(), errno.name())
            }
        }
    }
}

/// A scenario's `fs_gate` mode, as the gate runs it.
impl From<relapse_core::scenario::FsGateMode> for GateMode {
    fn from(mode: relapse_core::scenario::FsGateMode) -> GateMode {
        use relapse_core::scenario::{FsErrno, FsGateMode, FsScope};
        let scope = |s: FsScope| match s {
            FsScope::All => Scope::All,
            FsScope::Writes => Scope::Writes,
            FsScope::Fsync => Scope::Fsync,
        };
        match mode {
            FsGateMode::Stall { scope: s } => GateMode::Stall(scope(s)),
            FsGateMode::Latency {
                scope: s,
                latency,
                jitter,
            } => GateMode::Latency {
                scope: scope(s),
                delay: latency,
                jitter,
            },
            FsGateMode::Error { scope: s, errno } => GateMode::Error {
                scope: scope(s),
                errno: match errno {
                    FsErrno::Eio => GateErrno::Eio,
                    FsErrno::Enospc => GateErrno::Enospc,
                    FsErrno::Erofs => GateErrno::Erofs,
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mode_reads_back_from_its_line() {
        let modes = [
            GateMode::Pass,
            GateMode::Stall(Scope::Writes),
            GateMode::Latency {
                scope: Scope::Fsync,
                delay: Duration::from_millis(50),
                jitter: Duration::from_micros(7),
            },
            GateMode::Error {
                scope: Scope::All,
                errno: GateErrno::Enospc,
            },
        ];
        for mode in modes {
            let line = mode.to_line();
            let words: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(GateMode::parse(&words), Ok(mode), "{line}");
        }
        assert_eq!(
            GateMode::parse(&["latency", "all", "10"]),
            Ok(GateMode::Latency {
                scope: Scope::All,
                delay: Duration::from_micros(10),
                jitter: Duration::ZERO
            })
        );
        assert_eq!(
            GateMode::parse(&["stall", "reads"]).unwrap_err(),
            "unknown scope \"reads\": expected all, writes or fsync"
        );
        assert!(GateMode::parse(&["error", "all", "EPERM"]).is_err());
        assert!(GateMode::parse(&["latency", "all", "-1"]).is_err());
    }

    #[test]
    fn scopes_cover_what_they_say() {
        assert!(Scope::All.covers(Class::Read));
        assert!(!Scope::Writes.covers(Class::Read));
        assert!(Scope::Writes.covers(Class::Write) && Scope::Writes.covers(Class::Fsync));
        assert!(!Scope::Fsync.covers(Class::Write));
        assert!(Scope::Fsync.covers(Class::Fsync));
    }
}
