//! File-system faults: a scratch ext4 file system relapse makes itself on a loop device
//! ([`scratch::ScratchFs`]), and `fs_freeze` ([`freeze::FsFreeze`]), which freezes a mounted file
//! system with FIFREEZE — every write and metadata change blocks in state D while reads, `stat`
//! and `sync` still work, the way a stalled volume (a snapshot that never finishes, a SAN path
//! lost) looks to the services on it.
//!
//! A freeze outlives the process that made it, so every freeze has a thaw holder: a child process
//! holding a descriptor on the frozen file system, which thaws it when relapse dies.
//!
//! `fs_gate` ([`gate::FsGateFault`]) works above the VFS instead: a FUSE pass-through
//! ([`gate::Gate`]) mirrors a directory at a mountpoint the service uses, and parks, delays or
//! fails its operations on demand; its daemon fails open when relapse dies.

#![deny(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;

use nix::errno::Errno;
use relapse_core::fault::BoxError;

pub mod freeze;
pub mod gate;
mod ioctl;
mod mounts;
pub mod scratch;

pub use freeze::{
    holder_main, revert_record, FreezeRecord, FsFreeze, HolderLauncher, CANARY_PREFIX, KIND,
};
pub use gate::{
    FsGateFault, Gate, GateErrno, GateHandle, GateMode, GateRecord, GateStatus, Scope, GATE_KIND,
};
pub use scratch::{remove_record, ScratchFs, ScratchFsRecord, ScratchStep, SCRATCH_KIND};

/// Why a file-system fault or a scratch file system was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("refusing to freeze {}: it is the root file system", .0.display())]
    Root(PathBuf),
    #[error("refusing to freeze {}: it is not the root of a mount", .0.display())]
    NotMountRoot(PathBuf),
    #[error(
        "refusing to freeze {}: {} is on that file system and must stay writable",
        mountpoint.display(),
        protected.display()
    )]
    Protected {
        mountpoint: PathBuf,
        protected: PathBuf,
    },
    #[error("invalid scratch file system name {0:?}: expected a plain file name")]
    Name(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{context}: {source}")]
    Sys {
        context: String,
        #[source]
        source: Errno,
    },
    #[error("{command}: {detail}")]
    Command { command: String, detail: String },
    #[error("journaling the {step} step: {source}")]
    Journal {
        step: &'static str,
        #[source]
        source: BoxError,
    },
    #[error("thaw holder: {0}")]
    Holder(String),
    #[error("gate: {0}")]
    Gate(String),
    #[error("{0}")]
    NotConfirmed(String),
}

impl FsError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> FsError {
        let context = context.into();
        move |source| FsError::Io { context, source }
    }

    pub(crate) fn sys(context: impl Into<String>) -> impl FnOnce(Errno) -> FsError {
        let context = context.into();
        move |source| FsError::Sys { context, source }
    }
}
