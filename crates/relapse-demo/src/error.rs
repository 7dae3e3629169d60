//! What can go wrong starting the demo stack or running a demo child, and which child it is
//! about. Re-exported from the crate root.

use std::fmt;
use std::net::SocketAddr;
use std::process::ExitStatus;
use std::time::Duration;

use crate::InvalidTableName;
// Only for the documentation's links.
#[cfg(doc)]
use crate::{run_child, DemoDatabase, DemoOptions};

/// Which demo child process an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildRole {
    /// The backend ("database") server; with a standby, the primary one. Displayed as
    /// `backend`.
    Backend,
    /// The standby backend, started with [`DemoOptions::failover`].
    Standby,
    /// The frontend (webmail) server.
    Frontend,
}

impl fmt::Display for ChildRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Backend => "backend",
            Self::Standby => "standby",
            Self::Frontend => "frontend",
        })
    }
}

/// Why the demo stack could not start, or a demo child could not run.
#[derive(thiserror::Error, Debug)]
pub enum DemoError {
    /// The child process could not be spawned at all.
    #[error("failed to spawn the {role} child: {source}")]
    Spawn {
        /// Which child.
        role: ChildRole,
        /// The spawn error.
        source: std::io::Error,
    },
    /// The child exited (or closed its stdout) before printing its readiness line.
    #[error("the {role} child exited before it was ready ({})", describe_exit(.status))]
    ExitedEarly {
        /// Which child.
        role: ChildRole,
        /// Its exit status, if it could be collected.
        status: Option<ExitStatus>,
    },
    /// The child printed nothing within the readiness bound; it has been killed.
    #[error("the {role} child printed no readiness line within {}", humantime::format_duration(*.waited))]
    NotReady {
        /// Which child.
        role: ChildRole,
        /// How long we waited.
        waited: Duration,
    },
    /// The child printed something other than the readiness line.
    #[error("the {role} child printed an unexpected readiness line {line:?}")]
    BadReadyLine {
        /// Which child.
        role: ChildRole,
        /// The line, without its newline.
        line: String,
    },
    /// Reading the child's stdout failed.
    #[error("failed to read the {role} child's stdout: {source}")]
    ReadStdout {
        /// Which child.
        role: ChildRole,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The monitor's sink URL does not parse.
    #[error("invalid monitor sink url {url:?}: {reason}")]
    InvalidSinkUrl {
        /// The offending URL.
        url: String,
        /// Why it was rejected.
        reason: String,
    },
    /// [`run_child`] got arguments it does not understand.
    #[error("invalid demo child arguments: {0}")]
    Usage(String),
    /// The child could not ask to be killed when its parent dies.
    #[error("failed to set the parent-death signal: {0}")]
    ParentDeathSignal(nix::Error),
    /// The child's parent was already gone when it started.
    #[error("the parent process exited before the demo child started")]
    Orphaned,
    /// The child could not install its SIGTERM handler.
    #[error("failed to install the sigterm handler: {0}")]
    SignalHandler(std::io::Error),
    /// The child could not bind its listening socket.
    #[error("failed to listen on {addr}: {source}")]
    Bind {
        /// The requested address.
        addr: SocketAddr,
        /// The bind error.
        source: std::io::Error,
    },
    /// The child could not print its readiness line.
    #[error("failed to print the readiness line: {0}")]
    Announce(std::io::Error),
    /// The frontend could not connect to its database or create its tables.
    #[error("failed to set up the frontend's database: {0}")]
    Database(String),
    /// [`DemoDatabase::tables`] are not safe demo table names; nothing was started.
    #[error("invalid demo database tables: {0}")]
    InvalidTables(#[source] InvalidTableName),
    /// The frontend could not drop its tables at shutdown.
    #[error("failed to drop the frontend's tables: {0}")]
    DropTables(String),
    /// [`DemoOptions::auth`] has settings the limiter cannot use.
    #[error("invalid demo login settings: {0}")]
    InvalidAuth(String),
    /// [`DemoOptions::mailstore`] cannot be passed to the backend; nothing was started.
    #[error("invalid demo mail store: {0}")]
    InvalidMailstore(String),
    /// The backend could not set up its mail store.
    #[error("failed to set up the backend's mail store: {0}")]
    Mailstore(String),
    /// [`DemoOptions::failover`] has settings the health checks cannot use; nothing was started.
    #[error("invalid demo failover settings: {0}")]
    InvalidFailover(String),
    /// [`DemoOptions::jobs`] has settings the job queue cannot use; nothing was started.
    #[error("invalid demo job settings: {0}")]
    InvalidJobs(String),
    /// [`DemoOptions::event_log`] cannot be passed to the frontend; nothing was started.
    #[error("invalid demo event log: {0}")]
    InvalidEventLog(String),
    /// The frontend could not open its event log.
    #[error("failed to open the frontend's event log: {0}")]
    EventLog(std::io::Error),
}

fn describe_exit(status: &Option<ExitStatus>) -> String {
    match status {
        Some(status) => status.to_string(),
        None => "exit status unknown".to_owned(),
    }
}
