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
//! For the FLG incident itself, the frontend can also fail over ([`DemoOptions::failover`]): a
//! standby backend runs next to the primary, and the frontend health-checks both in rounds every
//! `inter` (each check a `GET /health` on a new connection, bounded by `timeout`), marks one
//! DOWN after `fall` failed checks in a row and UP after `rise` passed ones, and sends every
//! request to the backend that is active when it sends it: the standby once the primary is
//! DOWN, the primary again only with `failback`, and neither when both are DOWN (FLG's evening:
//! nothing to fail over to). Its events go to [`DemoOptions::event_log`], one line each, an RFC
//! 3339 UTC timestamp with milliseconds and then one of
//!
//! ```text
//! backend primary is DOWN after 2 failed checks (backend did not answer within 250ms)
//! switched from primary to standby (failover)
//! backend primary is UP after 2 passed checks
//! switched from standby to primary (failback)
//! no backend is UP: staying on standby
//! ```
//!
//! (the words `is DOWN`, `is UP` and `switched from` are stable: scenarios match them), and
//! `GET /metrics` shows `relapse_demo_backend_up{backend="primary"|"standby"}`,
//! `relapse_demo_active_backend{backend=…}` and `relapse_demo_backend_switches_total`.
//! Background jobs ([`DemoOptions::jobs`], FLG's workflows) queue up on the frontend while the
//! backend is frozen and drain one at a time afterwards: `relapse_demo_jobs_queued`,
//! `relapse_demo_jobs_done_total` and `relapse_demo_jobs_dropped_total` in `/metrics`.
//!
//! [`Demo::start`] launches the children through a [`Launcher`], which runs
//! [`run_child`] in the child (the `relapse` CLI exposes it as a hidden
//! subcommand; this crate's tests use the `relapse-demo-child` binary).

#![deny(clippy::print_stdout, clippy::print_stderr)]

mod auth;
mod backend;
mod child;
mod database;
mod error;
mod failover;
mod frontend;
mod http;
mod jobs;
mod maildir;
mod monitor;
mod options;
mod tables;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use error::{ChildRole, DemoError};
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

/// Whole milliseconds for a command line, never rounded down to zero: a zero upstream timeout
/// would fail every call, and the frontend rejects a zero window or ban.
pub(crate) fn command_line_millis(duration: Duration) -> u128 {
    duration.as_millis().max(1)
}

/// [`command_line_millis`] as the argument itself.
fn whole_millis(duration: Duration) -> String {
    command_line_millis(duration).to_string()
}

/// A running demo child process.
struct DemoChild {
    /// Spawned with `kill_on_drop`, so dropping it kills the process.
    process: Child,
    pid: u32,
    url: String,
}

/// A running demo stack: backend (or primary and standby) and frontend processes plus the
/// optional monitor task. Dropping it SIGKILLs the children and stops the monitor;
/// [`Demo::shutdown`] does the same but also waits for the children to be reaped.
pub struct Demo {
    /// The primary backend (the only one without a standby).
    backend: DemoChild,
    standby: Option<DemoChild>,
    frontend: DemoChild,
    cancel: CancellationToken,
    monitor: Option<JoinHandle<()>>,
    /// The frontend's tables, when it was given a database.
    database: Option<DemoTablesRecord>,
    /// The backend's maildir, when it was given one.
    mailstore: Option<PathBuf>,
    /// The frontend's event log, when it was given one.
    event_log: Option<PathBuf>,
}

impl fmt::Debug for Demo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Demo")
            .field("backend_url", &self.backend.url)
            .field("backend_pid", &self.backend.pid)
            .field(
                "standby_url",
                &self.standby.as_ref().map(|standby| &standby.url),
            )
            .field(
                "standby_pid",
                &self.standby.as_ref().map(|standby| standby.pid),
            )
            .field("frontend_url", &self.frontend.url)
            .field("frontend_pid", &self.frontend.pid)
            .finish_non_exhaustive()
    }
}

impl Demo {
    /// Starts the backend (with [`DemoOptions::failover`], the primary and then the standby),
    /// then the frontend (pointed at them), then the monitor task, waiting up to 10 s for each
    /// child's readiness line. Every setting is checked before anything is started.
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
        let mailstore =
            command_line_path(options.mailstore.as_deref()).map_err(DemoError::InvalidMailstore)?;
        if let Some(failover) = &options.failover {
            failover.check().map_err(DemoError::InvalidFailover)?;
        }
        if let Some(jobs) = &options.jobs {
            jobs.check(options.upstream_timeout)
                .map_err(DemoError::InvalidJobs)?;
        }
        let event_log =
            command_line_path(options.event_log.as_deref()).map_err(DemoError::InvalidEventLog)?;

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
        // The same program with the same arguments: a standby is an identical server that
        // happens not to get the traffic. (Should this fail, `backend` is dropped and killed.)
        let standby = match &options.failover {
            Some(_) => {
                Some(spawn_child(&options.launcher, ChildRole::Standby, &backend_args).await?)
            }
            None => None,
        };
        let mut frontend_args = vec![
            "frontend".to_owned(),
            "--listen".to_owned(),
            SocketAddr::new(frontend_address, 0).to_string(),
            "--backend".to_owned(),
            backend.url.clone(),
            "--upstream-timeout-ms".to_owned(),
            timeout_ms,
        ];
        if let (Some(failover), Some(standby)) = (&options.failover, &standby) {
            frontend_args.extend([
                "--standby".to_owned(),
                standby.url.clone(),
                "--failover-inter-ms".to_owned(),
                whole_millis(failover.inter),
                "--failover-timeout-ms".to_owned(),
                whole_millis(failover.timeout),
                "--failover-fall".to_owned(),
                failover.fall.to_string(),
                "--failover-rise".to_owned(),
                failover.rise.to_string(),
            ]);
            if failover.failback {
                frontend_args.push("--failback".to_owned());
            }
        }
        if let Some(jobs) = &options.jobs {
            frontend_args.extend([
                "--jobs-per-request".to_owned(),
                jobs.per_request.to_string(),
                "--job-work-ms".to_owned(),
                whole_millis(jobs.work),
                "--job-max-queue".to_owned(),
                jobs.max_queue.to_string(),
            ]);
        }
        if let Some(path) = event_log {
            frontend_args.extend(["--event-log".to_owned(), path]);
        }
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
            standby,
            frontend,
            cancel,
            monitor,
            database: options.database.as_ref().map(DemoDatabase::record),
            mailstore: options.mailstore,
            event_log: options.event_log,
        })
    }

    /// The frontend's base URL, `http://127.0.0.1:PORT` (no trailing slash).
    pub fn frontend_url(&self) -> &str {
        &self.frontend.url
    }

    /// The backend's base URL, `http://127.0.0.1:PORT` (no trailing slash); with a standby,
    /// the primary's.
    pub fn backend_url(&self) -> &str {
        &self.backend.url
    }

    /// The primary backend's base URL: [`Demo::backend_url`] under the name that says which
    /// of two backends it is.
    pub fn primary_url(&self) -> &str {
        self.backend_url()
    }

    /// The standby backend's base URL, with [`DemoOptions::failover`].
    pub fn standby_url(&self) -> Option<&str> {
        self.standby.as_ref().map(|standby| standby.url.as_str())
    }

    /// The frontend process id.
    pub fn frontend_pid(&self) -> u32 {
        self.frontend.pid
    }

    /// The backend process id (the one the FLG scenario freezes); with a standby, the
    /// primary's.
    pub fn backend_pid(&self) -> u32 {
        self.backend.pid
    }

    /// The primary backend's process id: [`Demo::backend_pid`] under the name that says which
    /// of two backends it is.
    pub fn primary_pid(&self) -> u32 {
        self.backend_pid()
    }

    /// The standby backend's process id, with [`DemoOptions::failover`].
    pub fn standby_pid(&self) -> Option<u32> {
        self.standby.as_ref().map(|standby| standby.pid)
    }

    /// The frontend's event log, [`DemoOptions::event_log`], if it has one; it exists once
    /// [`Demo::start`] has returned.
    pub fn event_log(&self) -> Option<&Path> {
        self.event_log.as_deref()
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

    /// Stops the monitor, then stops each child (the frontend first, then the backend, or the
    /// primary and the standby at once): SIGTERM, so that it can clean up (the frontend drops
    /// its database tables), and SIGKILL if it has not exited within [`SHUTDOWN_GRACE`] (a
    /// SIGSTOPped child never does). Waits until all are reaped, so their pids are gone when
    /// this returns.
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
        // dead backend; then the backends, both at once, so that two frozen ones cost one
        // grace period, not two.
        let frontend_cleaned_up = stop_child(ChildRole::Frontend, &mut self.frontend).await;
        let standby = async {
            if let Some(standby) = &mut self.standby {
                stop_child(ChildRole::Standby, standby).await;
            }
        };
        tokio::join!(stop_child(ChildRole::Backend, &mut self.backend), standby);
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

/// Stops one child: SIGTERM, then SIGKILL if it has not exited within [`SHUTDOWN_GRACE`]; waits
/// until it is reaped. Whether it exited successfully by itself.
async fn stop_child(role: ChildRole, child: &mut DemoChild) -> bool {
    if let Some(pid) = child.process.id() {
        // Still ours (not reaped), so the pid cannot have been reused.
        if let Err(error) = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        ) {
            tracing::warn!(%error, %role, pid, "failed to send SIGTERM to demo child");
        }
        if let Ok(Ok(status)) = tokio::time::timeout(SHUTDOWN_GRACE, child.process.wait()).await {
            return status.success();
        }
    }
    // SIGKILL (works on a SIGSTOPped process too) to this child's own
    // pid, then wait for it.
    if let Err(error) = child.process.kill().await {
        tracing::warn!(%error, %role, pid = child.pid, "failed to kill demo child");
    }
    false
}

/// A path for a child's command line, which must be UTF-8 and not empty.
fn command_line_path(path: Option<&Path>) -> Result<Option<String>, String> {
    match path {
        Some(path) => match path.to_str() {
            Some(text) if !text.is_empty() => Ok(Some(text.to_owned())),
            _ => Err(format!("{} is empty or not UTF-8", path.display())),
        },
        None => Ok(None),
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
///   [--auth-ban-ms MILLIS]]]
///   [--standby URL [--failover-inter-ms MILLIS] [--failover-timeout-ms MILLIS]
///   [--failover-fall N] [--failover-rise N] [--failback]]
///   [--jobs-per-request N [--job-work-ms MILLIS] [--job-max-queue N]] [--event-log PATH]`;
///   the limiter's defaults are those of [`DemoAuth::default`], the failover's those of
///   [`FailoverOptions::default`], the jobs' those of [`JobOptions::default`] (the job's work
///   must be shorter than the upstream timeout)
///
/// The standby is a `backend` like the primary (same arguments); `ChildRole::Standby` only
/// names it in the parent's errors.
///
/// The child asks to be SIGKILLed when its parent dies, binds `ADDR`, prints
/// `relapse-demo listening on HOST:PORT` to stdout, and serves until SIGTERM.
pub async fn run_child(args: &[String]) -> Result<(), DemoError> {
    child::run(args).await
}
