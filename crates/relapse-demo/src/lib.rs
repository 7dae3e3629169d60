//! The embedded demo target: a tiny hosted-mail stack that the harness starts,
//! injects faults into and measures.
//!
//! The stack reproduces the FLG incident, where a hung healthcheck script
//! froze the database server:
//!
//! * the **backend** (the "database") is its own OS process, so the harness
//!   can freeze it by pid with `SIGSTOP`;
//! * the **frontend** (the webmail server) is another process that calls the
//!   backend on every request, with a timeout, and so starts failing;
//! * the **monitor** is a task in the calling process playing the customer's
//!   external monitoring: it polls the frontend and pages a webhook sink.
//!
//! For the Kolab incident the frontend can also keep mail in a real database,
//! PostgreSQL or MariaDB / MySQL ([`DemoDatabase`]), in two tables whose names
//! the caller chooses beforehand ([`DemoTables`]) and the frontend creates,
//! and answers a locked database with 503 or misleading 401 pages. The
//! frontend drops its tables at shutdown; should it never get there (the
//! harness was SIGKILLed), [`drop_tables`] drops them from any process given
//! the [`DemoTablesRecord`] journaled before they were created.
//!
//! For the OpenSRS incident the frontend can also offer `POST /login` ([`DemoAuth`]): it checks
//! the password with argon2 on as many hashing slots as there are cores, so a login flood from many
//! addresses queues up, the right user's login waits and then gets 503. A fail2ban-style limiter
//! (failed logins per source address, then a ban answered 429 `blocked` on every route without
//! hashing) is the mitigation; the `no_mitigation` profile turns it off. `GET /metrics` reports
//! the login outcomes, the hashes computed and the banned sources.
//!
//! For the OpenSRS Cluster B incident (a kernel bug locked up the file system under the mail
//! service) the backend can keep its mail in a real maildir, [`DemoOptions::mailstore`], on a
//! file system the harness can freeze: `/mailbox` lists it and rewrites a seen index, so a frozen
//! file system hangs it (and the frontend's inbox answers 504), while `/health` stays shallow and
//! green and `/health/deep`, which writes a probe file, answers 503. `POST /deliver` on the
//! backend delivers a message the maildir way.
//!
//! [`Demo::start`] launches the children through a [`Launcher`], which runs
//! [`run_child`] in the child (the `relapse` CLI exposes it as a hidden
//! subcommand; this crate's tests use the `relapse-demo-child` binary).

#![deny(clippy::print_stdout, clippy::print_stderr)]

mod auth;
mod backend;
mod child;
mod database;
// Wired into the frontend by the next commit.
#[allow(dead_code)]
mod failover;
mod frontend;
mod http;
#[allow(dead_code)]
mod jobs;
mod maildir;
mod monitor;
mod options;
mod tables;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use options::{
    DatabaseDsn, DemoAuth, DemoDatabase, DemoHost, DemoOptions, ErrorProfile, FailoverOptions,
    JobOptions, Launcher, MonitorOptions,
};
pub use tables::{
    drop_tables, drop_tables_blocking, validate_table_name, DatabaseServer, DemoTables,
    DemoTablesRecord, DropTablesError, InvalidTableName, DROP_CONNECT_TIMEOUT,
    DROP_STATEMENT_TIMEOUT, MAX_TABLE_NAME, MAX_TAG, TABLE_PREFIX,
};

/// How long [`Demo::start`] waits for each child's readiness line.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long [`Demo::shutdown`] lets a child exit after SIGTERM before SIGKILL.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Which demo child process an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildRole {
    /// The backend ("database") server.
    Backend,
    /// The frontend (webmail) server.
    Frontend,
}

impl fmt::Display for ChildRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Backend => "backend",
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
}

/// Whole milliseconds for a command line, never rounded down to zero: a zero upstream timeout
/// would fail every call, and the frontend rejects a zero window or ban.
pub(crate) fn command_line_millis(duration: Duration) -> u128 {
    duration.as_millis().max(1)
}

/// [`command_line_millis`] as the argument itself.
fn whole_millis(duration: Duration) -> String {
    command_line_millis(duration).to_string()
}

fn describe_exit(status: &Option<ExitStatus>) -> String {
    match status {
        Some(status) => status.to_string(),
        None => "exit status unknown".to_owned(),
    }
}

/// A running demo child process.
struct DemoChild {
    /// Spawned with `kill_on_drop`, so dropping it kills the process.
    process: Child,
    pid: u32,
    url: String,
}

/// A running demo stack: backend and frontend processes plus the optional
/// monitor task. Dropping it SIGKILLs both children and stops the monitor;
/// [`Demo::shutdown`] does the same but also waits for the children to be
/// reaped.
pub struct Demo {
    backend: DemoChild,
    frontend: DemoChild,
    cancel: CancellationToken,
    monitor: Option<JoinHandle<()>>,
    /// The frontend's tables, when it was given a database.
    database: Option<DemoTablesRecord>,
    /// The backend's maildir, when it was given one.
    mailstore: Option<PathBuf>,
}

impl fmt::Debug for Demo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Demo")
            .field("backend_url", &self.backend.url)
            .field("backend_pid", &self.backend.pid)
            .field("frontend_url", &self.frontend.url)
            .field("frontend_pid", &self.frontend.pid)
            .finish_non_exhaustive()
    }
}

impl Demo {
    /// Starts the backend, then the frontend (pointed at the backend), then
    /// the monitor task, waiting up to 10 s for each child's readiness line.
    ///
    /// Children are started with a parent-death signal, which Linux ties to
    /// the *thread* that spawned them: call this from a thread that lives as
    /// long as the demo should (a runtime worker or the `block_on` thread,
    /// not a `spawn_blocking` task).
    pub async fn start(options: DemoOptions) -> Result<Demo, DemoError> {
        // Validate before spawning anything, so a typo costs no processes.
        let sink = match &options.monitor {
            Some(MonitorOptions {
                sink_url: Some(url),
                ..
            }) => Some(
                url.parse::<hyper::Uri>()
                    .map_err(|error| DemoError::InvalidSinkUrl {
                        url: url.clone(),
                        reason: error.to_string(),
                    })?,
            ),
            _ => None,
        };
        if let Some(auth) = &options.auth {
            auth.check().map_err(DemoError::InvalidAuth)?;
        }
        if let Some(database) = &options.database {
            database
                .tables
                .validate()
                .map_err(DemoError::InvalidTables)?;
        }
        let mailstore = match &options.mailstore {
            Some(dir) => Some(
                dir.to_str()
                    .filter(|dir| !dir.is_empty())
                    .ok_or_else(|| {
                        DemoError::InvalidMailstore(format!(
                            "{} is empty or not UTF-8",
                            dir.display()
                        ))
                    })?
                    .to_owned(),
            ),
            None => None,
        };

        let loopback = std::net::IpAddr::from([127, 0, 0, 1]);
        let (backend_address, frontend_address, frontend_launcher) = match &options.host {
            Some(host) => (
                host.backend_address,
                host.frontend_address,
                &host.frontend_launcher,
            ),
            None => (loopback, loopback, &options.launcher),
        };
        let timeout_ms = whole_millis(options.upstream_timeout);
        let mut backend_args = vec![
            "backend".to_owned(),
            "--listen".to_owned(),
            SocketAddr::new(backend_address, 0).to_string(),
        ];
        if let Some(dir) = mailstore {
            backend_args.extend([
                "--mailstore".to_owned(),
                dir,
                "--deep-check-timeout-ms".to_owned(),
                timeout_ms.clone(),
            ]);
        }
        let backend = spawn_child(&options.launcher, ChildRole::Backend, &backend_args).await?;
        let mut frontend_args = vec![
            "frontend".to_owned(),
            "--listen".to_owned(),
            SocketAddr::new(frontend_address, 0).to_string(),
            "--backend".to_owned(),
            backend.url.clone(),
            "--upstream-timeout-ms".to_owned(),
            timeout_ms,
        ];
        if options.host.is_some() {
            frontend_args.push("--fresh-upstream".to_owned());
        }
        if options.mailstore.is_some() {
            frontend_args.push("--deep-health".to_owned());
        }
        if let Some(database) = &options.database {
            let (flag, dsn) = match &database.dsn {
                DatabaseDsn::Postgres(dsn) => ("--postgres-dsn", dsn),
                DatabaseDsn::Mysql(url) => ("--mysql-url", url),
            };
            frontend_args.push(flag.to_owned());
            frontend_args.push(dsn.clone());
            frontend_args.push("--mail-table".to_owned());
            frontend_args.push(database.tables.mail.clone());
            frontend_args.push("--queue-table".to_owned());
            frontend_args.push(database.tables.queue.clone());
            if database.profile == ErrorProfile::MisleadingErrors {
                frontend_args.push("--misleading-errors".to_owned());
            }
        }
        if let Some(auth) = &options.auth {
            frontend_args.push("--auth".to_owned());
            if auth.mitigation {
                for (flag, value) in [
                    ("--auth-max-failures", auth.max_failures.to_string()),
                    ("--auth-window-ms", whole_millis(auth.window)),
                    ("--auth-ban-ms", whole_millis(auth.ban)),
                ] {
                    frontend_args.push(flag.to_owned());
                    frontend_args.push(value);
                }
            } else {
                frontend_args.push("--no-mitigation".to_owned());
            }
        }
        let frontend = spawn_child(frontend_launcher, ChildRole::Frontend, &frontend_args).await?;

        let cancel = CancellationToken::new();
        let monitor = options.monitor.map(|monitor_options| {
            tokio::spawn(monitor::run(
                monitor_options,
                frontend.url.clone(),
                sink,
                cancel.clone(),
            ))
        });

        Ok(Demo {
            backend,
            frontend,
            cancel,
            monitor,
            database: options.database.as_ref().map(DemoDatabase::record),
            mailstore: options.mailstore,
        })
    }

    /// The frontend's base URL, `http://127.0.0.1:PORT` (no trailing slash).
    pub fn frontend_url(&self) -> &str {
        &self.frontend.url
    }

    /// The backend's base URL, `http://127.0.0.1:PORT` (no trailing slash).
    pub fn backend_url(&self) -> &str {
        &self.backend.url
    }

    /// The frontend process id.
    pub fn frontend_pid(&self) -> u32 {
        self.frontend.pid
    }

    /// The backend process id (the one the FLG scenario freezes).
    pub fn backend_pid(&self) -> u32 {
        self.backend.pid
    }

    /// The tables the frontend owns when it has a database: [`DemoDatabase::tables`], which
    /// exist once [`Demo::start`] has returned.
    pub fn database_tables(&self) -> Option<DemoTables> {
        self.database.as_ref().map(DemoTablesRecord::tables)
    }

    /// The backend's maildir, [`DemoOptions::mailstore`], if it has one; its `tmp/`, `new/` and
    /// `cur/` exist once [`Demo::start`] has returned.
    pub fn mailstore(&self) -> Option<&Path> {
        self.mailstore.as_deref()
    }

    /// [`DemoDatabase::record`] of the frontend's database, if it has one.
    pub fn tables_record(&self) -> Option<DemoTablesRecord> {
        self.database.clone()
    }

    /// Stops the monitor, then stops each child (frontend first): SIGTERM, so
    /// that it can clean up (the frontend drops its database tables), and
    /// SIGKILL if it has not exited within [`SHUTDOWN_GRACE`] (a SIGSTOPped
    /// child never does). Waits until both are reaped, so their pids are gone
    /// when this returns.
    ///
    /// If the frontend had a database and did not exit successfully by itself
    /// (it was SIGKILLed, or could not drop its tables), drops them from this
    /// process with [`drop_tables`], bounded by [`DROP_CONNECT_TIMEOUT`] and
    /// [`DROP_STATEMENT_TIMEOUT`]; a failure is logged.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(monitor) = self.monitor.take() {
            // The task only ends by cancellation; a join error would mean it
            // panicked, which is worth a log line but not a failed shutdown.
            if let Err(error) = monitor.await {
                tracing::warn!(%error, "demo monitor task failed");
            }
        }
        // Frontend first, so it does not spend its last moments reporting a
        // dead backend.
        let mut frontend_cleaned_up = false;
        for (role, child) in [
            (ChildRole::Frontend, &mut self.frontend),
            (ChildRole::Backend, &mut self.backend),
        ] {
            if let Some(pid) = child.process.id() {
                // Still ours (not reaped), so the pid cannot have been reused.
                if let Err(error) = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGTERM,
                ) {
                    tracing::warn!(%error, %role, pid, "failed to send SIGTERM to demo child");
                }
                if let Ok(Ok(status)) =
                    tokio::time::timeout(SHUTDOWN_GRACE, child.process.wait()).await
                {
                    if role == ChildRole::Frontend {
                        frontend_cleaned_up = status.success();
                    }
                    continue;
                }
            }
            // SIGKILL (works on a SIGSTOPped process too) to this child's own
            // pid, then wait for it.
            if let Err(error) = child.process.kill().await {
                tracing::warn!(%error, %role, pid = child.pid, "failed to kill demo child");
            }
        }
        if let (Some(record), false) = (&self.database, frontend_cleaned_up) {
            // The frontend is reaped, so no session of its own holds a lock any more.
            match drop_tables(record).await {
                Ok(done) => tracing::info!("demo frontend did not clean up; {done}"),
                Err(error) => tracing::warn!(
                    %error,
                    mail = %record.mail,
                    queue = %record.queue,
                    "failed to drop the demo tables the frontend left"
                ),
            }
        }
        // Drop now finds reaped children and a cancelled token: nothing left.
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        // The children are killed by their `kill_on_drop`; the monitor must
        // not outlive the demo either.
        self.cancel.cancel();
        if let Some(monitor) = self.monitor.take() {
            monitor.abort();
        }
    }
}

/// Spawns one child and waits for its readiness line.
async fn spawn_child(
    launcher: &Launcher,
    role: ChildRole,
    role_args: &[String],
) -> Result<DemoChild, DemoError> {
    let mut process = Command::new(&launcher.program)
        .args(&launcher.args)
        .args(role_args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        // Inherited so a failing child's own error message reaches the user.
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| DemoError::Spawn { role, source })?;
    let pid = process
        .id()
        .ok_or(DemoError::ExitedEarly { role, status: None })?;
    let stdout = process
        .stdout
        .take()
        .ok_or(DemoError::ExitedEarly { role, status: None })?;
    let mut stdout = BufReader::new(stdout);

    let mut line = String::new();
    // On any error below, `process` is dropped and therefore killed.
    let read = tokio::time::timeout(READY_TIMEOUT, stdout.read_line(&mut line))
        .await
        .map_err(|_| DemoError::NotReady {
            role,
            waited: READY_TIMEOUT,
        })?
        .map_err(|source| DemoError::ReadStdout { role, source })?;
    if read == 0 {
        // EOF: the child is exiting (or closed stdout); collect its status
        // if it comes promptly, to say why.
        let status = tokio::time::timeout(Duration::from_secs(1), process.wait())
            .await
            .ok()
            .and_then(Result::ok);
        return Err(DemoError::ExitedEarly { role, status });
    }
    let line = line.trim_end();
    let addr = child::parse_ready_line(line).ok_or_else(|| DemoError::BadReadyLine {
        role,
        line: line.to_owned(),
    })?;

    // Keep draining stdout so that anything the child prints later can never
    // fill the pipe and block it; ends at EOF when the child dies.
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut stdout, &mut tokio::io::sink()).await;
    });

    Ok(DemoChild {
        process,
        pid,
        url: format!("http://{addr}"),
    })
}

/// The entry point of a demo child process; the CLI calls this from a hidden
/// subcommand with the arguments the [`Launcher`] appended:
///
/// * `backend --listen ADDR [--mailstore DIR [--deep-check-timeout-ms MILLIS]]`; the deep
///   check's timeout defaults to 250 ms
/// * `frontend --listen ADDR --backend URL --upstream-timeout-ms MILLIS
///   [--fresh-upstream] [--deep-health] [(--postgres-dsn DSN | --mysql-url URL) [--misleading-errors]]
///   [--auth [--no-mitigation | [--auth-max-failures N] [--auth-window-ms MILLIS]
///   [--auth-ban-ms MILLIS]]]`; the limiter's defaults are those of [`DemoAuth::default`]
///
/// The child asks to be SIGKILLed when its parent dies, binds `ADDR`, prints
/// `relapse-demo listening on HOST:PORT` to stdout, and serves until SIGTERM.
pub async fn run_child(args: &[String]) -> Result<(), DemoError> {
    child::run(args).await
}
