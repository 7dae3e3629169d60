//! The settings of a [`Demo`](crate::Demo): what [`Demo::start`](crate::Demo::start) starts and
//! how. Re-exported from the crate root.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::{DemoTables, DemoTablesRecord};

/// Settings of the monitor task (the customer's external monitoring).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorOptions {
    /// Time between the starts of two health checks; checks never overlap.
    pub interval: Duration,
    /// Bound on one health check (and on one alert delivery).
    pub timeout: Duration,
    /// Consecutive failed checks that turn UP into DOWN and fire the alert.
    pub fall: u32,
    /// Consecutive passed checks that turn DOWN into UP and resolve the alert.
    pub rise: u32,
    /// The `alertname` label of the alert.
    pub alertname: String,
    /// Where to POST Alertmanager (version 4) webhook payloads, an `http://`
    /// URL; `None` only tracks state and logs transitions.
    pub sink_url: Option<String>,
}

impl Default for MonitorOptions {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(500),
            timeout: Duration::from_secs(1),
            fall: 3,
            rise: 2,
            alertname: "FrontendDown".to_owned(),
            sink_url: None,
        }
    }
}

/// How to start a demo child process: `program` is run with `args` followed
/// by the role's own arguments (which [`run_child`](crate::run_child) parses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launcher {
    /// The executable, e.g. the `relapse` binary itself.
    pub program: PathBuf,
    /// Leading arguments, e.g. the hidden subcommand that calls [`run_child`](crate::run_child).
    pub args: Vec<OsString>,
}

/// Settings of a [`Demo`](crate::Demo).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoOptions {
    /// How long the frontend waits for the backend before answering 504
    /// (`/`) or 503 (`/health`, `/health/deep`), and a login for a hashing slot before 503.
    /// With a mail store, also how long the backend's deep check waits for its write.
    pub upstream_timeout: Duration,
    /// The monitor task to run, if any.
    pub monitor: Option<MonitorOptions>,
    /// How to start the child processes.
    pub launcher: Launcher,
    /// Run the frontend as its own "host" (e.g. in a network namespace); `None` keeps every
    /// part on 127.0.0.1.
    pub host: Option<DemoHost>,
    /// Back the frontend's `/mail` and `/send` with PostgreSQL or MariaDB / MySQL, and add the
    /// queue gauges to `/metrics` (the Kolab incident); `None` leaves those routes out.
    pub database: Option<DemoDatabase>,
    /// Offer `POST /login` with real password hashing and, unless turned off, the per-source
    /// limiter (the OpenSRS incident); `None` leaves `/login` out.
    pub auth: Option<DemoAuth>,
    /// Keep the backend's mail in a maildir in this directory (created if missing, with `tmp/`,
    /// `new/` and `cur/`; directories 0755, files 0644), for the OpenSRS Cluster B incident: the
    /// harness mounts a file system there that it can freeze. The backend then serves
    /// `/mailbox` from the maildir (and rewrites `seen.index` there on every listing), takes
    /// `POST /deliver`, and answers `/health/deep` and `/metrics`; the frontend proxies
    /// `/health/deep`. `/health` stays shallow. `None` keeps the fixed mailbox and leaves those
    /// routes out. The path must be UTF-8 (it is passed on a command line).
    pub mailstore: Option<PathBuf>,
    /// Start a standby backend next to the primary and have the frontend health-check both and
    /// fail over between them (the FLG incident); `None` keeps one backend and no checks.
    /// With [`DemoOptions::host`], the standby listens on the same `backend_address` as the
    /// primary; with [`DemoOptions::mailstore`], both serve the same maildir.
    pub failover: Option<FailoverOptions>,
    /// Queue background jobs on the frontend, worked off one at a time against the backend, and
    /// show the queue in `/metrics` (the FLG incident's workflows); `None` queues nothing.
    pub jobs: Option<JobOptions>,
    /// Have the frontend append its failover events to this file, one line each (see
    /// [`crate`]'s documentation for the lines); `None` only logs them with `tracing`. The path
    /// must be UTF-8 (it is passed on a command line).
    pub event_log: Option<PathBuf>,
}

/// The frontend's health checks of its backends, and the failover they drive (the FLG incident).
///
/// Checks run in rounds: a round checks every backend at once, each check a `GET /health` on a
/// new connection bounded by `timeout`, and rounds start every `inter` (a round that takes
/// longer delays the next; they never overlap). Every backend starts UP; `fall` consecutive
/// failed checks mark it DOWN, `rise` consecutive passed ones UP again (HAProxy's semantics).
/// After each round, if the active backend is DOWN and another is UP, the frontend switches to
/// it; with `failback`, it switches back to the primary once the primary is UP. If no backend is
/// UP, it stays where it is.
///
/// So a backend frozen at some instant is marked DOWN, and the traffic switched, between
/// `(fall - 1) * inter + timeout` and `fall * inter + timeout` later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverOptions {
    /// Time between the starts of two check rounds; more than zero.
    pub inter: Duration,
    /// Bound on one check (connect, response head and body); more than zero.
    pub timeout: Duration,
    /// Consecutive failed checks that mark a backend DOWN; at least 1.
    pub fall: u32,
    /// Consecutive passed checks that mark a backend UP again; at least 1.
    pub rise: u32,
    /// Once the primary is UP again, switch back to it (otherwise the standby stays active
    /// until it fails itself).
    pub failback: bool,
}

impl Default for FailoverOptions {
    /// HAProxy-like: checks every 250 ms bounded by 250 ms, 2 to fall, 2 to rise, no failback.
    fn default() -> Self {
        Self {
            inter: Duration::from_millis(250),
            timeout: Duration::from_millis(250),
            fall: 2,
            rise: 2,
            failback: false,
        }
    }
}

impl FailoverOptions {
    /// Why these settings cannot run, if they cannot.
    pub(crate) fn check(&self) -> Result<(), String> {
        for (name, value) in [("inter", self.inter), ("timeout", self.timeout)] {
            if value.is_zero() {
                return Err(format!("{name} must be more than zero"));
            }
        }
        for (name, value) in [("fall", self.fall), ("rise", self.rise)] {
            if value == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        Ok(())
    }
}

/// Background jobs (the FLG incident's workflows): every `GET /` on the frontend queues
/// `per_request` jobs, and one worker sends them, one at a time and in order, to the active
/// backend as `POST /job?ms=WORK`, each bounded by the upstream timeout. A failed job is retried
/// until it is done, so a frozen backend leaves a backlog that takes time to drain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobOptions {
    /// Jobs each `GET /` queues; at least 1.
    pub per_request: u32,
    /// How long the backend works on one job: more than zero, at most 10 s, and less than the
    /// upstream timeout (or no job could ever finish in time).
    pub work: Duration,
    /// Jobs queued beyond this many are dropped and counted; at least 1.
    pub max_queue: u64,
}

impl Default for JobOptions {
    /// One 20 ms job per request, at most 100 000 queued.
    fn default() -> Self {
        Self {
            per_request: 1,
            work: Duration::from_millis(20),
            max_queue: 100_000,
        }
    }
}

impl JobOptions {
    /// Why these settings cannot run with this upstream timeout, if they cannot. Compared in
    /// the whole milliseconds that go on the frontend's command line.
    pub(crate) fn check(&self, upstream_timeout: Duration) -> Result<(), String> {
        if self.per_request == 0 {
            return Err("per_request must be at least 1".to_owned());
        }
        if self.max_queue == 0 {
            return Err("max_queue must be at least 1".to_owned());
        }
        if self.work.is_zero() || self.work > crate::backend::MAX_JOB_WORK {
            return Err(format!(
                "work must be more than zero and at most {}",
                humantime::format_duration(crate::backend::MAX_JOB_WORK)
            ));
        }
        let (work, timeout) = (
            crate::command_line_millis(self.work),
            crate::command_line_millis(upstream_timeout),
        );
        if work >= timeout {
            return Err(format!(
                "work ({work} ms) must be less than the upstream timeout ({timeout} ms)"
            ));
        }
        Ok(())
    }
}

/// The frontend's login: `POST /login` with the form `user=demo&password=demo-password`, checked
/// with argon2id (4 MiB, 2 passes: a few milliseconds of one core each). A login that waits longer
/// than the upstream timeout for a hashing slot is answered 503 with `Retry-After`.
///
/// With `mitigation`, a source address that fails `max_failures` logins within `window` is banned
/// for `ban`: its requests, on every route, are answered 429 `blocked` at once and without hashing.
/// Successful logins never count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoAuth {
    /// `false` is the `no_mitigation` profile: no limiter, every login is hashed.
    pub mitigation: bool,
    /// Failed logins within `window` that ban a source; at least 1.
    pub max_failures: u32,
    /// How far back failures count; at least 1 ms.
    pub window: Duration,
    /// How long a ban lasts; at least 1 ms.
    pub ban: Duration,
}

impl Default for DemoAuth {
    /// The limiter on: 3 failures within 10 s ban a source for 30 s.
    fn default() -> Self {
        Self {
            mitigation: true,
            max_failures: 3,
            window: Duration::from_secs(10),
            ban: Duration::from_secs(30),
        }
    }
}

impl DemoAuth {
    /// The `no_mitigation` profile: the login without the limiter.
    pub fn no_mitigation() -> Self {
        Self {
            mitigation: false,
            ..Self::default()
        }
    }

    /// Why these settings cannot run, if they cannot. The limiter's settings are only checked
    /// when it is on.
    pub(crate) fn check(&self) -> Result<(), String> {
        if !self.mitigation {
            return Ok(());
        }
        if self.max_failures == 0 {
            return Err("max_failures must be at least 1".to_owned());
        }
        for (name, value) in [("window", self.window), ("ban", self.ban)] {
            if value < Duration::from_millis(1) {
                return Err(format!("{name} must be at least 1 ms"));
            }
        }
        Ok(())
    }
}

/// The frontend's database. The frontend creates `tables` at start and drops them when it gets
/// SIGTERM ([`Demo::shutdown`](crate::Demo::shutdown) drops them itself if the frontend could
/// not).
///
/// The names are known before anything exists, so a harness can journal
/// [`DemoDatabase::record`] first and have a guardian run [`drop_tables`](crate::drop_tables) on
/// it after a crash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoDatabase {
    /// Which server, and how to connect to it.
    pub dsn: DatabaseDsn,
    /// What the frontend answers while the database does not.
    pub profile: ErrorProfile,
    /// The two tables the frontend creates; [`Demo::start`](crate::Demo::start) refuses names
    /// that fail [`DemoTables::validate`].
    pub tables: DemoTables,
}

impl DemoDatabase {
    /// A database with [`DemoTables::fresh`] tables (`relapse_demo_<pid>_<n>_…`, named after
    /// the calling process).
    pub fn new(dsn: DatabaseDsn, profile: ErrorProfile) -> DemoDatabase {
        DemoDatabase {
            dsn,
            profile,
            tables: DemoTables::fresh(),
        }
    }

    /// What to journal before [`Demo::start`](crate::Demo::start): enough for
    /// [`drop_tables`](crate::drop_tables) to drop the tables from another process.
    pub fn record(&self) -> DemoTablesRecord {
        DemoTablesRecord::new(&self.dsn, &self.tables)
    }
}

/// Where the frontend's database is. Either way the frontend connects without TLS and bounds
/// every statement by the upstream timeout, on the client and on the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseDsn {
    /// A PostgreSQL connection string, libpq-style (`host=127.0.0.1 user=postgres dbname=test`)
    /// or a `postgresql://` URL.
    Postgres(String),
    /// A MariaDB or MySQL URL, e.g. `mysql://root@127.0.0.1:3306/test`; the tables are InnoDB.
    Mysql(String),
}

/// How the frontend reports a database outage (a statement that failed or did not finish within
/// the upstream timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorProfile {
    /// 503 Service Unavailable with `Retry-After: 5`, saying the database is unavailable.
    Honest,
    /// 401 Unauthorized saying "planned maintenance", as Kolab's users saw.
    MisleadingErrors,
}

/// Where the frontend runs when it is its own host: started by its own launcher (e.g. `ip netns
/// exec NAME relapse …`), listening on `frontend_address`, calling the backend on
/// `backend_address` with a new connection per request, so that it needs a fresh ephemeral port
/// for every request it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoHost {
    pub frontend_launcher: Launcher,
    pub frontend_address: std::net::IpAddr,
    pub backend_address: std::net::IpAddr,
}

impl DemoOptions {
    /// Options with the default upstream timeout (250 ms), no monitor, one backend, no jobs,
    /// all on loopback.
    pub fn new(launcher: Launcher) -> Self {
        Self {
            upstream_timeout: Duration::from_millis(250),
            monitor: None,
            launcher,
            host: None,
            database: None,
            auth: None,
            mailstore: None,
            failover: None,
            jobs: None,
            event_log: None,
        }
    }
}
