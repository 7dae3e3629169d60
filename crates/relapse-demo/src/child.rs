//! The demo child processes: argument parsing, process hygiene and the
//! readiness handshake with the parent.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::getppid;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

use tokio_util::sync::CancellationToken;

use crate::auth::{Auth, LimiterConfig};
use crate::database::Database;
use crate::failover::{EventLog, Upstream};
use crate::jobs::Jobs;
use crate::maildir::Maildir;
use crate::{
    backend, failover, frontend, ChildRole, DatabaseDsn, DemoError, DemoTables, FailoverOptions,
    JobOptions,
};

/// How long the backend's deep health check waits for its write without
/// `--deep-check-timeout-ms`: the default upstream timeout.
const DEFAULT_DEEP_CHECK_TIMEOUT: Duration = Duration::from_millis(250);

/// What the child prints, followed by its address, once it accepts
/// connections. The parent waits for exactly this line.
pub(crate) const READY_PREFIX: &str = "relapse-demo listening on ";

/// A parsed child command line.
// Parsed once per process and taken apart at once: the frontend's variant being the larger
// costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, PartialEq, Eq)]
enum ChildArgs {
    Backend {
        listen: SocketAddr,
        /// The maildir to serve `/mailbox` from, and how long `/health/deep` waits for its
        /// write there.
        mailstore: Option<(PathBuf, Duration)>,
    },
    Frontend {
        listen: SocketAddr,
        backend: String,
        upstream_timeout: Duration,
        /// A new upstream connection per request, closed after it (no keep-alive pool).
        fresh_upstream: bool,
        /// Back `/mail`, `/send` and `/metrics` with this database, in these
        /// (validated) tables.
        database: Option<(DatabaseDsn, DemoTables)>,
        /// Answer a database outage with 401 "planned maintenance" instead of 503.
        misleading_errors: bool,
        /// Offer `/login`; the limiter is `None` in the no_mitigation profile.
        auth: Option<Option<LimiterConfig>>,
        /// Offer `/health/deep`, the backend's deep check (it has a mail store).
        deep_health: bool,
        /// Health-check `backend` and this standby, and fail over between them.
        failover: Option<(String, FailoverOptions)>,
        /// Queue background jobs on every inbox request.
        jobs: Option<JobOptions>,
        /// Append the failover's events to this file.
        event_log: Option<PathBuf>,
    },
}

fn usage(message: impl Into<String>) -> DemoError {
    DemoError::Usage(message.into())
}

/// A whole number of at least 1, as the value of `flag`.
fn at_least_one<T: std::str::FromStr + Default + PartialOrd>(
    flag: &str,
    value: &str,
) -> Result<T, DemoError> {
    value
        .parse::<T>()
        .ok()
        .filter(|n| *n > T::default())
        .ok_or_else(|| {
            usage(format!(
                "bad {flag} value {value:?}: expected a whole number of at least 1"
            ))
        })
}

/// Whole milliseconds, at least 1, as the value of `flag`.
fn millis_at_least_one(flag: &str, value: &str) -> Result<Duration, DemoError> {
    at_least_one::<u64>(flag, value)
        .map(Duration::from_millis)
        .map_err(|_| {
            usage(format!(
                "bad {flag} value {value:?}: expected whole milliseconds, at least 1"
            ))
        })
}

fn parse(args: &[String]) -> Result<ChildArgs, DemoError> {
    let (role, rest) = args
        .split_first()
        .ok_or_else(|| usage("missing role, expected `backend` or `frontend`"))?;
    let role = match role.as_str() {
        "backend" => ChildRole::Backend,
        "frontend" => ChildRole::Frontend,
        other => return Err(usage(format!("unknown role {other:?}"))),
    };

    let mut listen = None;
    let mut backend = None;
    let mut upstream_timeout = None;
    let mut fresh_upstream = false;
    let mut database = None;
    let mut mail_table = None;
    let mut queue_table = None;
    let mut misleading_errors = false;
    let mut auth = false;
    let mut no_mitigation = false;
    let defaults = crate::DemoAuth::default();
    let mut limiter = LimiterConfig {
        max_failures: defaults.max_failures,
        window: defaults.window,
        ban: defaults.ban,
    };
    // The limiter flags given, so that `--no-mitigation` can refuse them.
    let mut limiter_flags = Vec::new();
    let mut mailstore = None;
    let mut deep_check_timeout = None;
    let mut deep_health = false;
    let mut standby = None;
    let mut failover = FailoverOptions::default();
    // The failover and job flags given, so that they can be refused without what they set.
    let mut failover_flags = Vec::new();
    let mut jobs = None;
    let mut job_options = JobOptions::default();
    let mut job_flags = Vec::new();
    let mut event_log = None;
    let mut rest = rest.iter();
    while let Some(flag) = rest.next() {
        let mut value = || {
            rest.next()
                .ok_or_else(|| usage(format!("{flag} needs a value")))
        };
        match (role, flag.as_str()) {
            (_, "--listen") => {
                let value = value()?;
                let addr = value
                    .parse::<SocketAddr>()
                    .map_err(|error| usage(format!("bad --listen address {value:?}: {error}")))?;
                listen = Some(addr);
            }
            (ChildRole::Frontend, "--backend") => {
                let value = value()?;
                value
                    .parse::<hyper::Uri>()
                    .map_err(|error| usage(format!("bad --backend url {value:?}: {error}")))?;
                backend = Some(value.clone());
            }
            (ChildRole::Frontend, "--upstream-timeout-ms") => {
                let value = value()?;
                let millis = value.parse::<u64>().map_err(|error| {
                    usage(format!(
                        "bad --upstream-timeout-ms value {value:?}: {error}"
                    ))
                })?;
                upstream_timeout = Some(Duration::from_millis(millis));
            }
            (ChildRole::Frontend, "--standby") => {
                let value = value()?;
                value
                    .parse::<hyper::Uri>()
                    .map_err(|error| usage(format!("bad --standby url {value:?}: {error}")))?;
                standby = Some(value.clone());
            }
            (ChildRole::Frontend, "--failover-inter-ms" | "--failover-timeout-ms") => {
                let millis = millis_at_least_one(flag, value()?)?;
                if flag == "--failover-inter-ms" {
                    failover.inter = millis;
                } else {
                    failover.timeout = millis;
                }
                failover_flags.push(flag);
            }
            (ChildRole::Frontend, "--failover-fall" | "--failover-rise") => {
                let count = at_least_one(flag, value()?)?;
                if flag == "--failover-fall" {
                    failover.fall = count;
                } else {
                    failover.rise = count;
                }
                failover_flags.push(flag);
            }
            (ChildRole::Frontend, "--failback") => {
                failover.failback = true;
                failover_flags.push(flag);
            }
            (ChildRole::Frontend, "--event-log") => {
                let value = value()?;
                if value.is_empty() {
                    return Err(usage("--event-log needs a file"));
                }
                event_log = Some(PathBuf::from(value));
            }
            (ChildRole::Frontend, "--jobs-per-request") => {
                jobs = Some(at_least_one(flag, value()?)?);
            }
            (ChildRole::Frontend, "--job-work-ms") => {
                job_options.work = millis_at_least_one(flag, value()?)?;
                job_flags.push(flag);
            }
            (ChildRole::Frontend, "--job-max-queue") => {
                job_options.max_queue = at_least_one(flag, value()?)?;
                job_flags.push(flag);
            }
            (ChildRole::Frontend, "--fresh-upstream") => fresh_upstream = true,
            (ChildRole::Frontend, "--deep-health") => deep_health = true,
            (ChildRole::Backend, "--mailstore") => {
                let value = value()?;
                if value.is_empty() {
                    return Err(usage("--mailstore needs a directory"));
                }
                mailstore = Some(PathBuf::from(value));
            }
            (ChildRole::Backend, "--deep-check-timeout-ms") => {
                let value = value()?;
                let millis = value
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| {
                        usage(format!(
                            "bad --deep-check-timeout-ms value {value:?}: expected whole milliseconds, at least 1"
                        ))
                    })?;
                deep_check_timeout = Some(Duration::from_millis(millis));
            }
            (ChildRole::Frontend, "--postgres-dsn") => {
                let value = value()?;
                value
                    .parse::<tokio_postgres::Config>()
                    .map_err(|error| usage(format!("bad --postgres-dsn: {error}")))?;
                set_database(&mut database, DatabaseDsn::Postgres(value.clone()))?;
            }
            (ChildRole::Frontend, "--mysql-url") => {
                let value = value()?;
                crate::database::parse_mysql_url(value)
                    .map_err(|error| usage(format!("bad --mysql-url: {error}")))?;
                set_database(&mut database, DatabaseDsn::Mysql(value.clone()))?;
            }
            (ChildRole::Frontend, "--mail-table") => {
                let value = value()?;
                crate::tables::validate_table_name(value)
                    .map_err(|error| usage(format!("bad --mail-table: {error}")))?;
                mail_table = Some(value.clone());
            }
            (ChildRole::Frontend, "--queue-table") => {
                let value = value()?;
                crate::tables::validate_table_name(value)
                    .map_err(|error| usage(format!("bad --queue-table: {error}")))?;
                queue_table = Some(value.clone());
            }
            (ChildRole::Frontend, "--misleading-errors") => misleading_errors = true,
            (ChildRole::Frontend, "--auth") => auth = true,
            (ChildRole::Frontend, "--no-mitigation") => no_mitigation = true,
            (ChildRole::Frontend, "--auth-max-failures") => {
                let value = value()?;
                limiter.max_failures = value
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| {
                        usage(format!(
                            "bad --auth-max-failures value {value:?}: expected a whole number of at least 1"
                        ))
                    })?;
                limiter_flags.push(flag);
            }
            (ChildRole::Frontend, "--auth-window-ms" | "--auth-ban-ms") => {
                let value = value()?;
                let millis = value
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| {
                        usage(format!(
                            "bad {flag} value {value:?}: expected whole milliseconds, at least 1"
                        ))
                    })?;
                let slot = if flag == "--auth-window-ms" {
                    &mut limiter.window
                } else {
                    &mut limiter.ban
                };
                *slot = Duration::from_millis(millis);
                limiter_flags.push(flag);
            }
            (_, other) => {
                return Err(usage(format!("unknown argument {other:?} for the {role}")));
            }
        }
    }

    let listen = listen.ok_or_else(|| usage(format!("the {role} needs --listen")))?;
    if misleading_errors && database.is_none() {
        return Err(usage(
            "--misleading-errors needs --postgres-dsn or --mysql-url",
        ));
    }
    // The parent chose (and may have journaled) the table names: a database
    // without them would create tables nobody knows about.
    let database = match (database, mail_table, queue_table) {
        (None, None, None) => None,
        (Some(dsn), Some(mail), Some(queue)) => {
            let tables = DemoTables { mail, queue };
            tables
                .validate()
                .map_err(|error| usage(format!("bad tables: {error}")))?;
            Some((dsn, tables))
        }
        (Some(_), _, _) => return Err(usage("a database needs --mail-table and --queue-table")),
        (None, _, _) => {
            return Err(usage(
                "--mail-table and --queue-table need --postgres-dsn or --mysql-url",
            ))
        }
    };
    if !auth && (no_mitigation || !limiter_flags.is_empty()) {
        let flag = limiter_flags
            .first()
            .map_or("--no-mitigation", |flag| flag.as_str());
        return Err(usage(format!("{flag} needs --auth")));
    }
    if no_mitigation {
        if let Some(flag) = limiter_flags.first() {
            return Err(usage(format!(
                "{flag} sets the limiter, which --no-mitigation turns off"
            )));
        }
    }
    let auth = auth.then_some((!no_mitigation).then_some(limiter));
    if mailstore.is_none() && deep_check_timeout.is_some() {
        return Err(usage("--deep-check-timeout-ms needs --mailstore"));
    }
    let mailstore = mailstore.map(|dir| {
        (
            dir,
            deep_check_timeout.unwrap_or(DEFAULT_DEEP_CHECK_TIMEOUT),
        )
    });
    let failover = match (standby, failover_flags.first()) {
        (Some(standby), _) => Some((standby, failover)),
        (None, Some(flag)) => return Err(usage(format!("{flag} needs --standby"))),
        (None, None) => None,
    };
    let jobs = match (jobs, job_flags.first()) {
        (Some(per_request), _) => Some(JobOptions {
            per_request,
            ..job_options
        }),
        (None, Some(flag)) => return Err(usage(format!("{flag} needs --jobs-per-request"))),
        (None, None) => None,
    };
    Ok(match role {
        ChildRole::Backend | ChildRole::Standby => ChildArgs::Backend { listen, mailstore },
        ChildRole::Frontend => {
            let upstream_timeout = upstream_timeout
                .ok_or_else(|| usage("the frontend needs --upstream-timeout-ms"))?;
            if let Some(jobs) = &jobs {
                jobs.check(upstream_timeout)
                    .map_err(|reason| usage(format!("bad job settings: {reason}")))?;
            }
            ChildArgs::Frontend {
                listen,
                backend: backend.ok_or_else(|| usage("the frontend needs --backend"))?,
                upstream_timeout,
                fresh_upstream,
                database,
                misleading_errors,
                auth,
                deep_health,
                failover,
                jobs,
                event_log,
            }
        }
    })
}

/// Records the frontend's database; one frontend has at most one.
fn set_database(slot: &mut Option<DatabaseDsn>, dsn: DatabaseDsn) -> Result<(), DemoError> {
    if slot.replace(dsn).is_some() {
        return Err(usage(
            "give one database: --postgres-dsn or --mysql-url, once",
        ));
    }
    Ok(())
}

pub(crate) async fn run(args: &[String]) -> Result<(), DemoError> {
    // A demo child must never outlive the harness that started it, even if
    // the harness is SIGKILLed and gets no chance to clean up.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(DemoError::ParentDeathSignal)?;
    // The parent may have died between fork and prctl, in which case the
    // death signal will never come: we were already re-parented to init.
    if getppid().as_raw() == 1 {
        return Err(DemoError::Orphaned);
    }

    let args = parse(args)?;
    let listen = match &args {
        ChildArgs::Backend { listen, .. } | ChildArgs::Frontend { listen, .. } => *listen,
    };
    // Install the handler before announcing readiness so that a SIGTERM sent
    // right after the readiness line already shuts us down cleanly.
    let mut sigterm = signal(SignalKind::terminate()).map_err(DemoError::SignalHandler)?;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| DemoError::Bind {
            addr: listen,
            source,
        })?;
    let local = listener.local_addr().map_err(|source| DemoError::Bind {
        addr: listen,
        source,
    })?;
    let shutdown = async move {
        sigterm.recv().await;
    };
    match args {
        ChildArgs::Backend { mailstore, .. } => {
            // The maildir's directories exist before the readiness line, so the parent can
            // deliver (or look) as soon as `Demo::start` returns.
            let maildir = match mailstore {
                Some((dir, deep_timeout)) => Some(Arc::new(
                    Maildir::open(dir, deep_timeout)
                        .map_err(|error| DemoError::Mailstore(error.to_string()))?,
                )),
                None => None,
            };
            announce(local)?;
            let state = Arc::new(backend::Backend { maildir });
            crate::http::serve(
                listener,
                move |request| state.clone().handle(request),
                shutdown,
            )
            .await;
        }
        ChildArgs::Frontend {
            backend,
            upstream_timeout,
            fresh_upstream,
            database,
            misleading_errors,
            auth,
            deep_health,
            failover,
            jobs,
            event_log,
            ..
        } => {
            // The tables exist before the readiness line, so the parent can
            // use them as soon as `Demo::start` returns.
            let database = match database {
                Some((dsn, tables)) => Some(
                    Database::open(dsn, tables, upstream_timeout, misleading_errors)
                        .await
                        .map_err(|failure| DemoError::Database(failure.to_string()))?,
                ),
                None => None,
            };
            // Opened before the readiness line too, so a path that cannot be written fails the
            // start instead of silently losing the events.
            let event_log = EventLog::open(event_log.as_deref()).map_err(DemoError::EventLog)?;
            announce(local)?;
            let cancel = CancellationToken::new();
            let delivery = database
                .clone()
                .map(|database| tokio::spawn(database.deliver(cancel.clone())));
            let upstream = Arc::new(Upstream::new(
                &backend,
                failover.as_ref().map(|(standby, _)| standby.as_str()),
            ));
            let jobs = jobs.map(|options| Arc::new(Jobs::new(options)));
            let state = frontend::Frontend::new(
                upstream.clone(),
                upstream_timeout,
                fresh_upstream,
                database.clone(),
                // A login waits for a hashing slot as long as the frontend waits for anything
                // upstream, then gives up with 503.
                auth.map(|limiter| Arc::new(Auth::new(limiter, upstream_timeout))),
                deep_health,
                jobs.clone(),
            );
            if let Some((_, options)) = failover {
                tokio::spawn(
                    cancel
                        .clone()
                        .run_until_cancelled_owned(failover::supervise(
                            options, upstream, event_log,
                        )),
                );
            }
            if let Some(jobs) = jobs {
                let state = state.clone();
                tokio::spawn(cancel.clone().run_until_cancelled_owned(async move {
                    let path = jobs.path();
                    jobs.work(|| state.run_job(&path)).await;
                }));
            }
            crate::http::serve(
                listener,
                move |request| state.clone().handle(request),
                shutdown,
            )
            .await;
            // Stop delivering (its transaction would hold locks the DROP waits
            // for), then drop the tables.
            cancel.cancel();
            if let Some(delivery) = delivery {
                let _ = delivery.await;
            }
            // A failure exits non-zero, which tells the parent to drop them
            // itself (see `Demo::shutdown`).
            if let Some(database) = database {
                database
                    .drop_tables()
                    .await
                    .map_err(|failure| DemoError::DropTables(failure.to_string()))?;
            }
        }
    }
    Ok(())
}

/// Prints the readiness line; flushing matters because stdout is a pipe and
/// therefore block-buffered. Stdout here is the protocol with the parent (it reads the port from
/// this line), not output for a person: that is why a library writes to it.
fn announce(addr: SocketAddr) -> Result<(), DemoError> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{READY_PREFIX}{addr}")
        .and_then(|()| stdout.flush())
        .map_err(DemoError::Announce)
}

/// Parses a readiness line (without its newline) into the child's address.
pub(crate) fn parse_ready_line(line: &str) -> Option<SocketAddr> {
    line.strip_prefix(READY_PREFIX)?.parse().ok()
}

#[cfg(test)]
mod tests;
