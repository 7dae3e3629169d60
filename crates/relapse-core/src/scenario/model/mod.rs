//! The scenario model: what a run does, checked and with defaults filled in. The loader
//! (`super::load`) builds it from the file format; everything here is re-exported from
//! `crate::scenario`.

mod fault;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::Template;

pub use fault::*;

/// The longest run any scenario may ask for; `limits.max_run` above it is refused.
pub const MAX_RUN_CEILING: Duration = Duration::from_secs(3600);

/// A scenario, checked and with defaults filled in.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub description: Option<String>,
    pub incident: Option<String>,
    /// What works around the fault while it lasts (`"failover"`): the report names the time to
    /// mitigate after it.
    pub mitigation: Option<String>,
    /// What the gates are expected to do: hold (the default), or fail (`[scenario] expect`).
    pub expect: Expectation,
    pub demo: Option<DemoTarget>,
    /// Processes relapse starts for the run (`[[target.process]]`), in the order they start.
    pub processes: Vec<ProcessSpec>,
    pub sink_listen: SocketAddr,
    pub probes: Vec<ProbeSpec>,
    pub steady_state: SteadyStateSpec,
    pub detectors: Vec<DetectorSpec>,
    pub faults: Vec<FaultSpec>,
    pub gates: Gates,
    pub limits: Limits,
    pub stops: Vec<StopSpec>,
    /// Protocol-aware proxies in front of databases, started with the run.
    pub db_proxies: Vec<DbProxySpec>,
    /// File systems relapse makes for the run (an ext4 image on a loop device, mounted), the only
    /// ones a file-system fault acts on unless a scenario says otherwise.
    pub scratch_fs: Vec<ScratchFsSpec>,
    /// FUSE passthroughs relapse mounts for the run, which `fs_gate` faults switch.
    pub fs_gates: Vec<FsGateSpec>,
    /// A backlog that recovery must also wait out.
    pub backlog: Option<BacklogSpec>,
    /// Hosts besides loopback that probes and detection sources may reach.
    pub allow_targets: Vec<String>,
    /// Agents on other hosts, which apply the faults that name them in `on`.
    pub agents: Vec<AgentSpec>,
}

/// A relapse agent on another host (`[[agent]]`): where it listens, what to trust, and the
/// lease the run holds on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSpec {
    pub name: String,
    /// `https://HOST:PORT`, as written.
    pub url: String,
    /// The URL's host (an IP address or a name, without brackets), `{agent.NAME.address}`.
    pub host: String,
    /// The CA's certificate and the token's file, as written: relative to the scenario's
    /// directory unless absolute.
    pub ca: std::path::PathBuf,
    pub token_file: std::path::PathBuf,
    /// How long the agent keeps the run's faults after the last renewal.
    pub lease: Duration,
    pub renew_every: Duration,
}

/// The default lease on an agent and its renewal interval.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(5);
pub const DEFAULT_RENEW_EVERY: Duration = Duration::from_secs(1);
/// The bounds of a lease: at least a second, so a renewal has time to cross a network; at most
/// five minutes, so a fault left by a dead coordinator does not outlive anyone's patience.
pub const MIN_LEASE: Duration = Duration::from_secs(1);
pub const MAX_LEASE: Duration = Duration::from_secs(300);

/// A process relapse starts for the run, after the demo, in declaration order, and stops after
/// the run in reverse order (`stop`: a signal to its process group, a grace period, then
/// SIGKILL). Its pid is `{process.NAME.pid}`, its output (stdout and stderr, in one file) is
/// `{process.NAME.log}` in `{run.dir}`.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    pub name: String,
    /// The program and its arguments.
    pub run: Vec<Template>,
    pub env: Vec<(String, Template)>,
    /// Where it starts; `{run.dir}` by default.
    pub cwd: Option<Template>,
    /// Free loopback ports picked for the run, `{port.NAME}`.
    pub ports: Vec<String>,
    /// Written into `{run.dir}` before it starts: a relative path and a config template (see
    /// [`Template::render_config`]).
    pub files: Vec<(String, Template)>,
    pub ready: Option<ReadySpec>,
    pub stop: ProcessStop,
}

/// When a started process counts as ready; not ready within `timeout` (or exited before) and
/// the run is inconclusive, with nothing injected.
#[derive(Debug, Clone)]
pub struct ReadySpec {
    pub check: ReadyCheck,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub enum ReadyCheck {
    /// A TCP connect to `host:port` succeeds.
    Tcp(Template),
    /// A GET answers one of `status`.
    Http { url: Template, status: Vec<u16> },
    /// A line of the process's output matches a regular expression.
    Log(String),
}

/// How a started process is stopped: `signal` to its process group, then SIGKILL after
/// `grace`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessStop {
    /// A signal number (`SIGTERM` is 15).
    pub signal: i32,
    pub grace: Duration,
}

/// Abort the run when a probe's success ratio over `window` falls under `min_success` after the
/// first injection: the target is hurt beyond what the experiment may cost.
#[derive(Debug, Clone, PartialEq)]
pub struct StopSpec {
    pub name: String,
    /// Index into `Scenario::probes`.
    pub probe: usize,
    pub min_success: f64,
    pub window: Duration,
}

/// The embedded demo target and its monitor's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoTarget {
    pub upstream_timeout: Duration,
    pub monitor: MonitorSpec,
    /// Where the frontend runs: on loopback, or as its own host in a network namespace.
    pub host: DemoHostKind,
    /// The frontend's mail store and queue on PostgreSQL, if it has one.
    pub database: Option<DemoDatabaseSpec>,
    /// The frontend's `/login`, if it has one.
    pub auth: Option<DemoAuthSpec>,
    /// The backend's maildir (a template naming a `{scratch_fs.NAME.path}`, usually), with
    /// `/mailbox` reading and indexing it and `/health/deep` writing to it.
    pub mailstore: Option<Template>,
    /// A standby backend and the frontend's health checks that fail over to it; `None` is one
    /// backend (`failover = "none"`).
    pub failover: Option<FailoverSpec>,
    /// Background jobs that the frontend's requests enqueue, if any.
    pub jobs: Option<JobsSpec>,
}

/// The frontend's health checks of its two backends, like a load balancer's: a round every
/// `inter` checks each backend's `/health`, bounded by `timeout`; `fall` failed checks in a row
/// mark a backend DOWN, `rise` passed ones UP again. Traffic moves off a DOWN backend to an UP
/// one; with `failback` it returns to the primary once that is UP again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverSpec {
    pub inter: Duration,
    pub timeout: Duration,
    pub fall: u32,
    pub rise: u32,
    pub failback: bool,
}

impl Default for FailoverSpec {
    /// A round every 250 ms, 250 ms per check, DOWN after 2 failures, UP after 2 passes, no
    /// failback: a promoted standby stays the primary, as a promoted database does.
    fn default() -> Self {
        FailoverSpec {
            inter: Duration::from_millis(250),
            timeout: Duration::from_millis(250),
            fall: 2,
            rise: 2,
            failback: false,
        }
    }
}

/// Background work: every `GET /` enqueues `per_request` jobs, which one worker runs in order
/// against the active backend, each taking the backend `work`; jobs wait while no backend
/// answers. `/metrics` shows the queue's depth as `relapse_demo_jobs_queued`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobsSpec {
    pub per_request: u32,
    pub work: Duration,
    pub max_queue: u64,
}

/// The demo's login: real password hashing, and a limiter that blocks a source address after
/// `max_failures` failed logins within `window`, for `ban` (the mitigation that worked at
/// OpenSRS); `mitigation = false` is the `no_mitigation` profile.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoAuthSpec {
    pub mitigation: bool,
    pub max_failures: u32,
    pub window: Duration,
    pub ban: Duration,
}

/// A proxy relapse runs between a target and its database, pass-through until a `db_proxy`
/// fault switches it. Its address is in the template variables `{db_proxy.NAME.address}`,
/// `{db_proxy.NAME.host}` and `{db_proxy.NAME.port}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbProxySpec {
    pub name: String,
    pub server: DbServer,
    /// The database server, `host:port`, checked against the allowlist.
    pub upstream: String,
    pub listen: SocketAddr,
}

/// A gauge whose value must be at or under `max` before a run counts as recovered.
#[derive(Debug, Clone)]
pub struct BacklogSpec {
    pub name: String,
    pub max: f64,
    pub every: Duration,
    pub timeout: Duration,
    pub kind: BacklogKind,
}

#[derive(Debug, Clone)]
pub enum BacklogKind {
    /// A metric in Prometheus text format: the sum of the samples named `metric`.
    Metric { url: Template, metric: String },
    /// The first column of the first row of a query.
    Sql {
        server: DbServer,
        dsn: Template,
        query: Template,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct DemoDatabaseSpec {
    pub server: DbServer,
    /// A PostgreSQL DSN or a `mysql://` URL; may name a `db_proxy` of the run.
    pub dsn: Template,
    /// During a database outage: `false` answers 503 with Retry-After, `true` 401 "planned
    /// maintenance", as Kolab's front ends did.
    pub misleading_errors: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DemoHostKind {
    Loopback,
    /// A network namespace relapse creates for the run (veth pair, 198.18.0.0/15) and removes.
    Netns,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MonitorSpec {
    pub interval: Duration,
    pub timeout: Duration,
    pub fall: u32,
    pub rise: u32,
    pub alertname: String,
}

#[derive(Debug, Clone)]
pub struct ProbeSpec {
    pub name: String,
    pub every: Duration,
    pub kind: ProbeKind,
    /// Where it checks from: `None` from relapse's own host, or from an agent's
    /// (`on = "NAME"`).
    pub on: Option<OnAgent>,
}

#[derive(Debug, Clone)]
pub enum ProbeKind {
    Http {
        url: Template,
        method: String,
        timeout: Duration,
        expect: Vec<u16>,
        /// Sent with every check, e.g. a login form and its content type.
        headers: Vec<(String, String)>,
        body: String,
    },
    Tcp {
        address: Template,
        timeout: Duration,
    },
    /// An IMAP session: LOGIN, SELECT `mailbox` (and FETCH one header of the first message if
    /// `fetch_header`), LOGOUT; success = every step answered OK within `timeout`. A mail store
    /// that hangs shows here, where a LOGIN alone still answers.
    Imap {
        address: Template,
        user: String,
        password: String,
        mailbox: String,
        fetch_header: Option<String>,
        timeout: Duration,
    },
}

impl ProbeKind {
    /// The kind's key in a `[[probe]]` table.
    pub fn key(&self) -> &'static str {
        match self {
            ProbeKind::Http { .. } => "http",
            ProbeKind::Tcp { .. } => "tcp",
            ProbeKind::Imap { .. } => "imap",
        }
    }

    pub fn timeout(&self) -> Duration {
        match self {
            ProbeKind::Http { timeout, .. }
            | ProbeKind::Tcp { timeout, .. }
            | ProbeKind::Imap { timeout, .. } => *timeout,
        }
    }
}

/// Steady state: over `window`, the SLI probe's success ratio is at least `min_success` and its
/// p99 latency at most `max_p99`.
#[derive(Debug, Clone, PartialEq)]
pub struct SteadyStateSpec {
    /// Index into `Scenario::probes`.
    pub probe: usize,
    pub window: Duration,
    pub min_success: f64,
    pub max_p99: Option<Duration>,
    /// How long the run waits for steady state before injecting; past it, `inconclusive`.
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct DetectorSpec {
    pub name: String,
    pub kind: DetectorKind,
}

#[derive(Debug, Clone)]
pub enum DetectorKind {
    /// An alert POSTed to the harness's sink whose labels include all of `matchers`.
    Webhook { matchers: BTreeMap<String, String> },
    /// A health endpoint answering a status outside `healthy` (or not answering).
    Http {
        url: Template,
        every: Duration,
        timeout: Duration,
        healthy: Vec<u16>,
    },
    /// A command exiting non-zero (or outliving its timeout).
    Command {
        run: Vec<Template>,
        every: Duration,
        timeout: Duration,
    },
    /// A line appended to a file matching a regular expression.
    Log {
        path: Template,
        pattern: String,
        every: Duration,
    },
    /// An instant PromQL `query` on the Prometheus server at `url` returning a sample (with
    /// `above`, a sample greater than it); a failed query counts neither way. The query is not a
    /// template: PromQL's label matchers are written in braces.
    Prometheus {
        url: Template,
        query: String,
        every: Duration,
        timeout: Duration,
        above: Option<f64>,
    },
    /// An active (neither silenced nor inhibited) alert on the Alertmanager at `url` whose labels
    /// include all of `matchers`; a failed poll counts neither way.
    Alertmanager {
        url: Template,
        matchers: BTreeMap<String, String>,
        every: Duration,
        timeout: Duration,
    },
}

impl DetectorKind {
    /// The interval that bounds how late this source can notice a signal; zero for pushed signals.
    pub fn resolution(&self) -> Duration {
        match self {
            DetectorKind::Webhook { .. } => Duration::ZERO,
            DetectorKind::Http { every, .. }
            | DetectorKind::Command { every, .. }
            | DetectorKind::Log { every, .. }
            | DetectorKind::Prometheus { every, .. }
            | DetectorKind::Alertmanager { every, .. } => *every,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbServer {
    Postgres,
    Mysql,
}
/// Limits on what a run measures, per episode. `[gates]` sets them for every episode; a fault's
/// own `gates` set them for its episode only ([`Gates::overlay`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Gates {
    pub detect_within: Option<Duration>,
    pub recover_within: Option<Duration>,
    pub mitigate_within: Option<Duration>,
    pub max_error_ratio: Option<f64>,
    pub allowed_error_statuses: Option<Vec<u16>>,
    /// The request flood's p99 latency at most this (a spread flood's merged).
    pub flood_p99_within: Option<Duration>,
    /// The request flood sent at least this share of the requests due (open model), 0 to 1.
    pub flood_min_delivered: Option<f64>,
}

impl Gates {
    /// These gates with every gate that `over` sets replaced by its value there.
    pub fn overlay(&self, over: &Gates) -> Gates {
        Gates {
            detect_within: over.detect_within.or(self.detect_within),
            recover_within: over.recover_within.or(self.recover_within),
            mitigate_within: over.mitigate_within.or(self.mitigate_within),
            max_error_ratio: over.max_error_ratio.or(self.max_error_ratio),
            allowed_error_statuses: over
                .allowed_error_statuses
                .clone()
                .or_else(|| self.allowed_error_statuses.clone()),
            flood_p99_within: over.flood_p99_within.or(self.flood_p99_within),
            flood_min_delivered: over.flood_min_delivered.or(self.flood_min_delivered),
        }
    }

    /// The gates each set, by name, for messages.
    pub fn set_names(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.detect_within.is_some() {
            names.push("detect_within");
        }
        if self.recover_within.is_some() {
            names.push("recover_within");
        }
        if self.mitigate_within.is_some() {
            names.push("mitigate_within");
        }
        if self.max_error_ratio.is_some() {
            names.push("max_error_ratio");
        }
        if self.allowed_error_statuses.is_some() {
            names.push("allowed_error_statuses");
        }
        if self.flood_p99_within.is_some() {
            names.push("flood_p99_within");
        }
        if self.flood_min_delivered.is_some() {
            names.push("flood_min_delivered");
        }
        names
    }
}

/// What a scenario expects of its gates. A scenario that shows a failure mode on purpose (a
/// system that cannot mitigate, misleading errors) expects its gates to fail; the run then
/// succeeds when exactly the expected gates fail.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Expectation {
    /// Every gate holds.
    #[default]
    Pass,
    /// At least one gate fails; with `gates`, each failed gate matches one of them and each of
    /// them matches a failed gate. A name matches that gate in every episode
    /// (`allowed_error_statuses`), a name with an episode number only there
    /// (`recover_within[2]`).
    Fail { gates: Vec<String> },
}

/// The names of the gates a run can judge, as `expect_failed` may name them.
pub const GATE_NAMES: &[&str] = &[
    "detect_within",
    "detected",
    "mitigate_within",
    "recover_within",
    "max_error_ratio",
    "allowed_error_statuses",
    "flood_p99_within",
    "flood_min_delivered",
    "flood_shards",
];

#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// The whole run, steady-state wait included; past it every fault is reverted and the run is
    /// `aborted`.
    pub max_run: Duration,
    /// How long to keep watching after the last revert for detection and recovery.
    pub observe_after: Duration,
    /// How long an injector may take to confirm a fault before the run is aborted.
    pub inject_timeout: Duration,
}

/// The HTTP methods a probe or a flood may send (the "unknown HTTP method" message lists them
/// in this order); the root crate's tests check that the flood and the probe accept each.
pub const HTTP_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"];

/// A file system relapse makes for the run: a sparse ext4 image of `size` bytes on a loop
/// device, mounted under the run's directory; its path is `{scratch_fs.NAME.path}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScratchFsSpec {
    pub name: String,
    pub size: u64,
}

/// A FUSE passthrough of `source` that relapse mounts for the run at `{fs_gate.NAME.path}`,
/// passing everything through until an `fs_gate` fault switches it.
#[derive(Debug, Clone, PartialEq)]
pub struct FsGateSpec {
    pub name: String,
    /// The directory passed through (a template: it may name a `{scratch_fs.NAME.path}`).
    pub source: Template,
}
