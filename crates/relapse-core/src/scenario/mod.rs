//! The scenario model: what a run does, converted from the file format and checked.

mod file;
pub mod target;
mod template;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

pub use template::{Template, TemplateError, Vars};

/// The longest run any scenario may ask for; `limits.max_run` above it is refused.
pub const MAX_RUN_CEILING: Duration = Duration::from_secs(3600);

/// A scenario, checked and with defaults filled in.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub description: Option<String>,
    pub incident: Option<String>,
    pub demo: Option<DemoTarget>,
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
    /// A backlog that recovery must also wait out.
    pub backlog: Option<BacklogSpec>,
    /// Hosts besides loopback that probes and detection sources may reach.
    pub allow_targets: Vec<String>,
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

/// What a `db_proxy` fault makes the proxy do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbProxyMode {
    /// Hold every server response until the revert, as a lock wait does.
    Stall,
    /// Hold only statements that write or commit; reads go on.
    StallWrites,
    /// Delay each response by `latency` ± a uniform `jitter`.
    Latency { latency: Duration, jitter: Duration },
    /// Answer statements with this error (a SQLSTATE, or a MySQL error number).
    Error { code: String },
    /// Reset open connections and every new one.
    Reset,
    /// Refuse new connections; open ones go on.
    RefuseNew,
}

/// The errors a `db_proxy` fault can answer with, per server.
pub const POSTGRES_PROXY_ERRORS: [&str; 3] = ["55P03", "40P01", "57014"];
pub const MYSQL_PROXY_ERRORS: [&str; 3] = ["1205", "1213", "1317"];

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
}

impl ProbeKind {
    pub fn timeout(&self) -> Duration {
        match self {
            ProbeKind::Http { timeout, .. } | ProbeKind::Tcp { timeout, .. } => *timeout,
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
}

impl DetectorKind {
    /// The interval that bounds how late this source can notice a signal; zero for pushed signals.
    pub fn resolution(&self) -> Duration {
        match self {
            DetectorKind::Webhook { .. } => Duration::ZERO,
            DetectorKind::Http { every, .. }
            | DetectorKind::Command { every, .. }
            | DetectorKind::Log { every, .. } => *every,
        }
    }
}

#[derive(Debug, Clone)]
pub struct FaultSpec {
    pub name: String,
    /// Offset from the instant steady state was confirmed.
    pub start: Duration,
    /// How long the fault stays applied, from the instant it became effective.
    pub duration: Duration,
    pub kind: FaultKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum FaultKind {
    ProcessFreeze {
        target: ProcessTarget,
        process_group: bool,
    },
    PortExhaustion {
        target: NetnsTarget,
        mode: PortsMode,
        allow_own_namespace: bool,
    },
    FdExhaustion {
        target: ProcessTarget,
        headroom: u32,
    },
    DbLock {
        server: DbServer,
        /// Connection string (template): a PostgreSQL DSN or URL, or a `mysql://` URL.
        dsn: Template,
        lock: DbLockTarget,
    },
    DbProxy {
        /// Index into `Scenario::db_proxies`.
        proxy: usize,
        mode: DbProxyMode,
    },
    HttpFlood(HttpFloodSpec),
    Slowloris {
        url: Template,
        connections: usize,
        sources: FloodSources,
        header_interval: Duration,
    },
    ConnectionFlood {
        url: Template,
        connections: usize,
        sources: FloodSources,
    },
}

/// A request flood: what each request is, how they arrive, from where, and its bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpFloodSpec {
    /// A template; the request's own placeholders (`{rand.u32}`, `{seq}`, …) are left to the
    /// load generator.
    pub url: Template,
    pub method: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub load: FloodLoad,
    pub keep_alive: bool,
    pub sources: FloodSources,
    pub ramp_up: Duration,
    /// The count bound; the time bound is the fault's duration.
    pub max_requests: u64,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum FloodLoad {
    /// A constant arrival rate, latency measured from each request's intended send time.
    Open { rate: f64, max_in_flight: usize },
    /// `connections` senders, each as fast as the target answers.
    Closed { connections: usize },
}

/// Where flood connections come from. Loopback only: every 127.x.y.z is a source without setup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FloodSources {
    /// The kernel picks.
    Default,
    List(Vec<std::net::IpAddr>),
    Cidr {
        network: std::net::IpAddr,
        prefix: u8,
    },
}

/// The most connections a flood may hold: each is a descriptor of relapse's own.
pub const MAX_FLOOD_CONNECTIONS: u64 = 10_000;
/// The most requests a flood may send.
pub const MAX_FLOOD_REQUESTS: u64 = 100_000_000;
/// The most source addresses a CIDR may expand to.
pub const MAX_FLOOD_SOURCES: u64 = 65_536;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbServer {
    Postgres,
    Mysql,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbLockTarget {
    /// A table lock (the table is a template); the mode is checked against the server's list
    /// when the run starts.
    Table { table: Template, mode: String },
    /// The rows a (trusted) WHERE clause selects, FOR UPDATE.
    Rows {
        table: Template,
        where_clause: String,
    },
    /// MySQL's FLUSH TABLES WITH READ LOCK.
    GlobalRead,
}

impl FaultKind {
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::ProcessFreeze { .. } => "process_freeze",
            FaultKind::PortExhaustion { .. } => "port_exhaustion",
            FaultKind::FdExhaustion { .. } => "fd_exhaustion",
            FaultKind::DbLock { .. } => "db_lock",
            FaultKind::DbProxy { .. } => "db_proxy",
            FaultKind::HttpFlood(_) => "http_flood",
            FaultKind::Slowloris { .. } => "slowloris",
            FaultKind::ConnectionFlood { .. } => "connection_flood",
        }
    }
}

/// The network namespace a host-wide fault acts in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetnsTarget {
    /// A namespace named by `ip netns` (`/run/netns/NAME`).
    Named(String),
    /// The namespace of a process (`/proc/PID/ns/net`).
    Pid(u32),
    /// The demo's own host namespace.
    DemoHost,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PortsMode {
    Reserve(ReserveAmount),
    Leak {
        destination: Template,
        rate: u32,
        count: u32,
    },
    TimeWait {
        destination: Template,
        rate: u32,
        count: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReserveAmount {
    All,
    Fraction(f64),
    LeaveFree(u32),
}

#[derive(Debug, Clone, PartialEq)]
pub enum ProcessTarget {
    Pid(u32),
    Pidfile(PathBuf),
    Demo(DemoComponent),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DemoComponent {
    Frontend,
    Backend,
}

impl DemoComponent {
    pub fn name(self) -> &'static str {
        match self {
            DemoComponent::Frontend => "frontend",
            DemoComponent::Backend => "backend",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Gates {
    pub detect_within: Option<Duration>,
    pub recover_within: Option<Duration>,
    pub mitigate_within: Option<Duration>,
    pub max_error_ratio: Option<f64>,
    pub allowed_error_statuses: Option<Vec<u16>>,
}

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

/// Why a scenario could not be loaded. `Invalid` carries the place in the file.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{}: cannot read the scenario: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}:{column}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
}

/// Reads and checks a scenario file. Probes and detection sources may reach only loopback and
/// the scenario's own `allow_targets`.
pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
    load_allowing(path, &[])
}

/// Like [`load`], with more hosts allowed (the command line's `--allow-target`).
pub fn load_allowing(path: &Path, allowed: &[String]) -> Result<Scenario, ScenarioError> {
    let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_allowing(path, &text, allowed)
}

/// Parses and checks scenario text; `path` is used in error messages only.
pub fn parse(path: &Path, text: &str) -> Result<Scenario, ScenarioError> {
    parse_allowing(path, text, &[])
}

/// Like [`parse`], with more hosts allowed.
pub fn parse_allowing(
    path: &Path,
    text: &str,
    allowed: &[String],
) -> Result<Scenario, ScenarioError> {
    let invalid = |span: Option<Range<usize>>, message: String| {
        let (line, column) = line_column(text, span.map_or(0, |s| s.start));
        ScenarioError::Invalid {
            path: path.to_path_buf(),
            line,
            column,
            message,
        }
    };
    let parsed: file::ScenarioFile = toml::from_str(text)
        .map_err(|err| invalid(err.span(), err.message().trim_end_matches('.').to_string()))?;
    convert(parsed, allowed).map_err(|Problem { span, message }| invalid(Some(span), message))
}

/// A checking failure at a place in the file.
struct Problem {
    span: Range<usize>,
    message: String,
}

fn problem<T>(span: Range<usize>, message: impl Into<String>) -> Result<T, Problem> {
    Err(Problem {
        span,
        message: message.into(),
    })
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

fn convert(f: file::ScenarioFile, extra_allowed: &[String]) -> Result<Scenario, Problem> {
    let allowed: Vec<String> = f
        .scenario
        .allow_targets
        .iter()
        .chain(extra_allowed)
        .cloned()
        .collect();
    // Literal hosts are checked here, with their place in the file; hosts that come from
    // template variables are checked again once rendered.
    let reachable = |s: &Spanned<String>, host: Option<&str>| -> Result<(), Problem> {
        match host {
            Some(host) if !s.get_ref().contains('{') => {
                target::check(host, &allowed).map_err(|message| Problem {
                    span: s.span(),
                    message,
                })
            }
            _ => Ok(()),
        }
    };
    let demo_host = match f.target.demo.as_ref().and_then(|d| d.host.as_ref()) {
        None => DemoHostKind::Loopback,
        Some(h) => match h.get_ref().as_str() {
            "loopback" => DemoHostKind::Loopback,
            "netns" => DemoHostKind::Netns,
            other => {
                return problem(
                    h.span(),
                    format!("unknown demo host \"{other}\": expected \"loopback\" or \"netns\""),
                )
            }
        },
    };
    let mut db_proxies = Vec::new();
    for p in &f.db_proxy {
        let name = p.name.get_ref().clone();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return problem(p.name.span(), format!("invalid proxy name \"{name}\": expected letters, digits, `_` or `-` (it becomes part of {{db_proxy.NAME.address}})"));
        }
        if db_proxies.iter().any(|d: &DbProxySpec| d.name == name) {
            return problem(p.name.span(), format!("duplicate db_proxy name \"{name}\""));
        }
        let (server, upstream) = match (&p.postgres, &p.mysql) {
            (Some(a), None) => (DbServer::Postgres, a),
            (None, Some(a)) => (DbServer::Mysql, a),
            _ => return problem(p.name.span(), format!("db_proxy \"{name}\" needs exactly one server: expected `postgres = \"HOST:PORT\"` or `mysql = \"HOST:PORT\"`")),
        };
        let Some((host, port)) = upstream
            .get_ref()
            .rsplit_once(':')
            .filter(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p != 0))
        else {
            return problem(
                upstream.span(),
                format!(
                    "invalid database address \"{}\": expected HOST:PORT, e.g. \"127.0.0.1:5432\"",
                    upstream.get_ref()
                ),
            );
        };
        let _ = port;
        reachable(
            upstream,
            Some(host.trim_start_matches('[').trim_end_matches(']')),
        )?;
        let listen = match &p.listen {
            None => SocketAddr::from(([127, 0, 0, 1], 0)),
            Some(l) => match l.get_ref().parse::<SocketAddr>() {
                Ok(addr) if addr.ip().is_loopback() => addr,
                Ok(_) => {
                    return problem(
                        l.span(),
                        "a db_proxy listens on loopback only: expected e.g. \"127.0.0.1:0\"",
                    )
                }
                Err(_) => {
                    return problem(
                        l.span(),
                        format!(
                            "invalid listen address \"{}\": expected IP:PORT, e.g. \"127.0.0.1:0\"",
                            l.get_ref()
                        ),
                    )
                }
            },
        };
        db_proxies.push(DbProxySpec {
            name,
            server,
            upstream: upstream.get_ref().clone(),
            listen,
        });
    }

    // The demo's database may be reached through a proxy of the run; the demo's own variables
    // are not known before the demo starts.
    let mut proxy_vars = Vars::known(false);
    for proxy in &db_proxies {
        for part in ["address", "host", "port"] {
            proxy_vars.set(&format!("db_proxy.{}.{part}", proxy.name), "");
        }
    }
    let demo_database = match f.target.demo.as_ref().and_then(|d| d.database.as_ref()) {
        None => None,
        Some(spanned) => Some(DemoDatabaseSpec {
            server: match (&spanned.get_ref().postgres, &spanned.get_ref().mysql) {
                (Some(_), None) => DbServer::Postgres,
                (None, Some(_)) => DbServer::Mysql,
                _ => return problem(spanned.span(), "the demo database needs exactly one server: expected `postgres = \"DSN\"` or `mysql = \"mysql://…\"`"),
            },
            dsn: {
                let db = spanned.get_ref();
                let dsn = db.postgres.as_ref().or(db.mysql.as_ref()).expect("one server was checked above");
                let template = Template::new(dsn.get_ref());
                template.check(&proxy_vars).map_err(|e| Problem {
                    span: dsn.span(),
                    message: match e {
                        TemplateError::NeedsDemo(name) => format!("the demo database cannot use `{{{name}}}`: the demo starts after its database is known; expected a literal DSN or {{db_proxy.NAME.*}}"),
                        other => other.to_string(),
                    },
                })?;
                template
            },
            misleading_errors: match spanned.get_ref().profile.as_ref().map(|p| (p.get_ref().as_str(), p.span())) {
                None | Some(("honest", _)) => false,
                Some(("misleading_errors", _)) => true,
                Some((other, span)) => {
                    return problem(
                        span,
                        format!("unknown error profile \"{other}\": expected \"honest\" or \"misleading_errors\""),
                    )
                }
            },
        }),
    };
    let demo_auth = match f.target.demo.as_ref().and_then(|d| d.auth.as_ref()) {
        None => None,
        Some(spanned) => {
            let a = spanned.get_ref();
            let mitigation = match a.profile.as_ref().map(|p| (p.get_ref().as_str(), p.span())) {
                None | Some(("mitigation", _)) => true,
                Some(("no_mitigation", _)) => false,
                Some((other, span)) => {
                    return problem(span, format!("unknown auth profile \"{other}\": expected \"mitigation\" or \"no_mitigation\""))
                }
            };
            let max_failures = match &a.max_failures {
                None => 3,
                Some(n) if *n.get_ref() == 0 => {
                    return problem(n.span(), "max_failures must be at least 1")
                }
                Some(n) => *n.get_ref(),
            };
            let window = a.window.map_or(Duration::from_secs(10), |d| d.0);
            let ban = a.ban.map_or(Duration::from_secs(30), |d| d.0);
            if window.is_zero() || ban.is_zero() {
                return problem(
                    spanned.span(),
                    "auth `window` and `ban` must be more than 0ms",
                );
            }
            Some(DemoAuthSpec {
                mitigation,
                max_failures,
                window,
                ban,
            })
        }
    };
    let demo = f.target.demo.map(|d| {
        let m = d.monitor.unwrap_or_default();
        DemoTarget {
            host: demo_host,
            database: demo_database,
            auth: demo_auth,
            upstream_timeout: d
                .upstream_timeout
                .map_or(Duration::from_millis(250), |d| d.0),
            monitor: MonitorSpec {
                interval: m.interval.map_or(Duration::from_millis(500), |d| d.0),
                timeout: m.timeout.map_or(Duration::from_secs(1), |d| d.0),
                fall: m.fall.unwrap_or(3).max(1),
                rise: m.rise.unwrap_or(2).max(1),
                alertname: m.alertname.unwrap_or_else(|| "FrontendDown".to_string()),
            },
        }
    });
    let mut vars = proxy_vars.clone();
    if demo.is_some() {
        for name in template::DEMO_VARIABLES {
            vars.set(name, "");
        }
    }
    let template = |s: &Spanned<String>| -> Result<Template, Problem> {
        let t = Template::new(s.get_ref());
        t.check(&vars).map_err(|e| Problem {
            span: s.span(),
            message: e.to_string(),
        })?;
        Ok(t)
    };

    let sink_listen = match &f.sink.listen {
        None => SocketAddr::from(([127, 0, 0, 1], 0)),
        Some(s) => s.get_ref().parse().map_err(|_| Problem {
            span: s.span(),
            message: format!(
                "invalid sink address \"{}\": expected IP:PORT, e.g. \"127.0.0.1:9095\"",
                s.get_ref()
            ),
        })?,
    };

    let mut probes = Vec::new();
    let mut probe_names = BTreeSet::new();
    for p in &f.probe {
        if !probe_names.insert(p.name.get_ref().clone()) {
            return problem(
                p.name.span(),
                format!("duplicate probe name \"{}\"", p.name.get_ref()),
            );
        }
        let every = p.every.map_or(Duration::from_millis(100), |d| d.0);
        if every.is_zero() {
            return problem(p.name.span(), "probe `every` must be more than 0ms");
        }
        let kind = match (&p.http, &p.tcp) {
            (Some(h), None) => {
                if !is_http_url(h.url.get_ref()) {
                    return problem(
                        h.url.span(),
                        "expected an http:// URL (https is not supported by the http probe yet)",
                    );
                }
                let method = match &h.method {
                    None => "GET".to_string(),
                    Some(m) => http_method(m)?,
                };
                let expect = h.expect.clone().unwrap_or_else(|| vec![200]);
                check_statuses(&expect, h.url.span())?;
                reachable(&h.url, target::http_host(h.url.get_ref()))?;
                ProbeKind::Http {
                    url: template(&h.url)?,
                    method,
                    timeout: h.timeout.map_or(Duration::from_secs(1), |d| d.0),
                    expect,
                    headers: h.headers.clone().into_iter().collect(),
                    body: h.body.clone().unwrap_or_default(),
                }
            }
            (None, Some(t)) => ProbeKind::Tcp {
                address: {
                    reachable(&t.address, target::address_host(t.address.get_ref()))?;
                    template(&t.address)?
                },
                timeout: t.timeout.map_or(Duration::from_secs(1), |d| d.0),
            },
            _ => {
                return problem(
                    p.name.span(),
                    format!(
                        "probe \"{}\" needs exactly one kind: expected one of `http`, `tcp`",
                        p.name.get_ref()
                    ),
                )
            }
        };
        probes.push(ProbeSpec {
            name: p.name.get_ref().clone(),
            every,
            kind,
        });
    }

    let steady_span = f.steady_state.span();
    let s = f.steady_state.into_inner();
    let probe = probes
        .iter()
        .position(|p| &p.name == s.probe.get_ref())
        .ok_or_else(|| Problem {
            span: s.probe.span(),
            message: if probes.is_empty() {
                format!(
                    "unknown probe \"{}\": the scenario declares no [[probe]]",
                    s.probe.get_ref()
                )
            } else {
                format!(
                    "unknown probe \"{}\": expected one of {}",
                    s.probe.get_ref(),
                    quoted_list(probes.iter().map(|p| p.name.as_str()))
                )
            },
        })?;
    let min_success = *s.min_success.get_ref();
    if !(0.0..=1.0).contains(&min_success) {
        return problem(s.min_success.span(), "min_success must lie between 0 and 1");
    }
    if s.window.0 < probes[probe].every {
        return problem(
            steady_span,
            "the steady-state window must be at least one probe interval",
        );
    }
    let steady_state = SteadyStateSpec {
        probe,
        window: s.window.0,
        min_success,
        max_p99: s.max_p99.map(|d| d.0),
        timeout: s.timeout.map_or(Duration::from_secs(30), |d| d.0),
    };

    let mut detectors = Vec::new();
    let mut detector_names = BTreeSet::new();
    for d in &f.detect {
        let name = d.name.get_ref().clone();
        if !detector_names.insert(name.clone()) {
            return problem(
                d.name.span(),
                format!("duplicate detection source name \"{name}\""),
            );
        }
        let kinds = [
            d.webhook.is_some(),
            d.http.is_some(),
            d.command.is_some(),
            d.log.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return problem(
                d.name.span(),
                format!("detection source \"{name}\" needs exactly one kind: expected one of `webhook`, `http`, `command`, `log`"),
            );
        }
        let kind = if let Some(w) = &d.webhook {
            DetectorKind::Webhook {
                matchers: w.matchers.clone(),
            }
        } else if let Some(h) = &d.http {
            let healthy = h.healthy.clone().unwrap_or_else(|| vec![200]);
            check_statuses(&healthy, h.url.span())?;
            if !is_http_url(h.url.get_ref()) {
                return problem(h.url.span(), "expected an http:// URL");
            }
            reachable(&h.url, target::http_host(h.url.get_ref()))?;
            DetectorKind::Http {
                url: template(&h.url)?,
                every: h.every.map_or(Duration::from_millis(250), |d| d.0),
                timeout: h.timeout.map_or(Duration::from_secs(1), |d| d.0),
                healthy,
            }
        } else if let Some(c) = &d.command {
            if c.run.get_ref().is_empty() {
                return problem(c.run.span(), "`run` must name a program: expected e.g. [\"check_mail\", \"--host\", \"mx1\"]");
            }
            DetectorKind::Command {
                run: c
                    .run
                    .get_ref()
                    .iter()
                    .map(template)
                    .collect::<Result<_, _>>()?,
                every: c.every.map_or(Duration::from_secs(1), |d| d.0),
                timeout: c.timeout.map_or(Duration::from_secs(5), |d| d.0),
            }
        } else if let Some(l) = &d.log {
            if let Err(e) = regex::Regex::new(l.pattern.get_ref()) {
                let first_line = e.to_string().lines().last().unwrap_or_default().to_string();
                return problem(
                    l.pattern.span(),
                    format!("invalid regular expression: {}", first_line.trim()),
                );
            }
            DetectorKind::Log {
                path: template(&l.path)?,
                pattern: l.pattern.get_ref().clone(),
                every: l.every.map_or(Duration::from_millis(100), |d| d.0),
            }
        } else {
            unreachable!("exactly one kind was checked above")
        };
        detectors.push(DetectorSpec { name, kind });
    }

    if f.fault.is_empty() {
        return problem(0..0, "the scenario has no [[fault]]: expected at least one");
    }
    let mut faults = Vec::new();
    let mut fault_names = BTreeSet::new();
    for spanned in &f.fault {
        let fault = spanned.get_ref();
        let name = fault.name.get_ref().clone();
        if !fault_names.insert(name.clone()) {
            return problem(
                fault.name.span(),
                format!("duplicate fault name \"{name}\""),
            );
        }
        if fault.duration.0.is_zero() {
            return problem(
                spanned.span(),
                format!("fault \"{name}\": duration must be more than 0ms"),
            );
        }
        let kinds = [
            fault.process_freeze.is_some(),
            fault.port_exhaustion.is_some(),
            fault.fd_exhaustion.is_some(),
            fault.db_lock.is_some(),
            fault.db_proxy.is_some(),
            fault.http_flood.is_some(),
            fault.slowloris.is_some(),
            fault.connection_flood.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return problem(
                fault.name.span(),
                format!("fault \"{name}\" needs exactly one kind: expected one of `process_freeze`, `port_exhaustion`, `fd_exhaustion`, `db_lock`, `db_proxy`, `http_flood`, `slowloris`, `connection_flood`"),
            );
        }
        let kind = if let Some(pf) = &fault.process_freeze {
            let target = process_target(
                pf.span(),
                pf.get_ref().pid,
                &pf.get_ref().pidfile,
                &pf.get_ref().demo,
                demo.is_some(),
                "process_freeze",
            )?;
            FaultKind::ProcessFreeze {
                target,
                process_group: pf.get_ref().process_group,
            }
        } else if let Some(fe) = &fault.fd_exhaustion {
            let target = process_target(
                fe.span(),
                fe.get_ref().pid,
                &fe.get_ref().pidfile,
                &fe.get_ref().demo,
                demo.is_some(),
                "fd_exhaustion",
            )?;
            FaultKind::FdExhaustion {
                target,
                headroom: fe.get_ref().headroom,
            }
        } else if let Some(db) = &fault.db_lock {
            let span = db.span();
            let db = db.get_ref();
            let (server, dsn) = match (&db.postgres, &db.mysql) {
                (Some(dsn), None) => (DbServer::Postgres, dsn),
                (None, Some(dsn)) => (DbServer::Mysql, dsn),
                _ => return problem(span, "db_lock needs exactly one server: expected `postgres = \"DSN\"` or `mysql = \"mysql://…\"`"),
            };
            let lock = match (&db.table, &db.rows, db.global_read) {
                (None, None, true) if server == DbServer::Mysql => DbLockTarget::GlobalRead,
                (_, _, true) if server == DbServer::Postgres => {
                    return problem(span, "global_read is MySQL's FLUSH TABLES WITH READ LOCK: PostgreSQL has none; expected `table`")
                }
                (Some(table), None, false) => DbLockTarget::Table {
                    table: template(table)?,
                    mode: db.mode.clone().unwrap_or_else(|| match server {
                        DbServer::Postgres => "ACCESS EXCLUSIVE".to_string(),
                        DbServer::Mysql => "WRITE".to_string(),
                    }),
                },
                (Some(table), Some(rows), false) if db.mode.is_none() => DbLockTarget::Rows {
                    table: template(table)?,
                    where_clause: rows.clone(),
                },
                _ => return problem(span, "db_lock needs `table` (with an optional `mode`), `table` and `rows` (a WHERE clause), or `global_read = true`"),
            };
            FaultKind::DbLock {
                server,
                dsn: template(dsn)?,
                lock,
            }
        } else if let Some(dp) = &fault.db_proxy {
            db_proxy_fault(dp, &db_proxies)?
        } else if let Some(flood) = &fault.http_flood {
            let span = flood.span();
            let f = flood.get_ref();
            if !is_http_url(f.url.get_ref()) {
                return problem(f.url.span(), "expected an http:// URL");
            }
            reachable(&f.url, target::http_host(f.url.get_ref()))?;
            let method = match &f.method {
                None => "GET".to_string(),
                Some(m) => http_method(m)?,
            };
            let connections = match &f.connections {
                None => None,
                Some(c) => Some(flood_connections(c)?),
            };
            let load = match &f.rate {
                Some(rate) => {
                    let r = *rate.get_ref();
                    if !(r.is_finite() && r > 0.0 && r <= 1_000_000.0) {
                        return problem(rate.span(), "rate must be more than 0 and at most 1000000 requests per second");
                    }
                    FloodLoad::Open { rate: r, max_in_flight: connections.unwrap_or(256) }
                }
                None => match connections {
                    Some(connections) => FloodLoad::Closed { connections },
                    None => return problem(span, "http_flood needs `rate` (requests per second: an open model) or `connections` (each as fast as answered: a closed model)"),
                },
            };
            let max_requests = match &f.max_requests {
                None => 1_000_000,
                Some(n) if *n.get_ref() == 0 || *n.get_ref() > MAX_FLOOD_REQUESTS => {
                    return problem(
                        n.span(),
                        format!("max_requests must lie between 1 and {MAX_FLOOD_REQUESTS}"),
                    )
                }
                Some(n) => *n.get_ref(),
            };
            let url = Template::new(f.url.get_ref());
            url.render_keeping(&vars, is_flood_placeholder)
                .map_err(|e| Problem {
                    span: f.url.span(),
                    message: e.to_string(),
                })?;
            FaultKind::HttpFlood(HttpFloodSpec {
                url,
                method,
                headers: f.headers.clone().into_iter().collect(),
                body: f.body.clone().unwrap_or_default(),
                load,
                keep_alive: f.keep_alive.unwrap_or(true),
                sources: flood_sources(span, &f.sources, &f.source_cidr)?,
                ramp_up: f.ramp_up.map_or(Duration::ZERO, |d| d.0),
                max_requests,
                timeout: f.timeout.map_or(Duration::from_secs(5), |d| d.0),
            })
        } else if let Some(c) = fault.slowloris.as_ref().or(fault.connection_flood.as_ref()) {
            let span = c.span();
            let c = c.get_ref();
            if !is_http_url(c.url.get_ref()) {
                return problem(c.url.span(), "expected an http:// URL");
            }
            reachable(&c.url, target::http_host(c.url.get_ref()))?;
            let connections = flood_connections(&c.connections)?;
            let sources = flood_sources(span.clone(), &c.sources, &c.source_cidr)?;
            if fault.slowloris.is_some() {
                let header_interval = c.header_interval.map_or(Duration::from_secs(1), |d| d.0);
                if header_interval.is_zero() {
                    return problem(span, "header_interval must be more than 0ms");
                }
                FaultKind::Slowloris {
                    url: template(&c.url)?,
                    connections,
                    sources,
                    header_interval,
                }
            } else {
                if c.header_interval.is_some() {
                    return problem(
                        span,
                        "`header_interval` is a slowloris setting: connection_flood sends nothing",
                    );
                }
                FaultKind::ConnectionFlood {
                    url: template(&c.url)?,
                    connections,
                    sources,
                }
            }
        } else if let Some(pe) = &fault.port_exhaustion {
            let span = pe.span();
            let pe = pe.get_ref();
            let target = match (&pe.netns, &pe.pid, &pe.demo) {
                (Some(name), None, None) => NetnsTarget::Named(name.clone()),
                (None, Some(pid), None) => NetnsTarget::Pid(*pid),
                (None, None, Some(component)) => {
                    if component.get_ref() != "host" {
                        return problem(component.span(), format!("unknown demo component \"{}\" for port_exhaustion: expected \"host\"", component.get_ref()));
                    }
                    if demo.as_ref().map(|d| d.host) != Some(DemoHostKind::Netns) {
                        return problem(component.span(), "`demo = \"host\"` needs the demo to run as its own host: expected [target.demo] host = \"netns\"");
                    }
                    NetnsTarget::DemoHost
                }
                _ => return problem(span, "port_exhaustion needs exactly one target: expected one of `netns`, `pid`, `demo`"),
            };
            let mode_name = pe.mode.as_ref().map_or("reserve", |m| m.get_ref().as_str());
            let mode = match mode_name {
                "reserve" => {
                    let amount = match (&pe.fraction, pe.leave_free) {
                        (None, None) => ReserveAmount::All,
                        (Some(f), None) => {
                            if !(*f.get_ref() > 0.0 && *f.get_ref() <= 1.0) {
                                return problem(f.span(), "fraction must lie in (0, 1]");
                            }
                            ReserveAmount::Fraction(*f.get_ref())
                        }
                        (None, Some(n)) => ReserveAmount::LeaveFree(n),
                        (Some(f), Some(_)) => {
                            return problem(f.span(), "give `fraction` or `leave_free`, not both")
                        }
                    };
                    PortsMode::Reserve(amount)
                }
                "leak" | "time_wait" => {
                    let Some(destination) = &pe.destination else {
                        return problem(
                            span,
                            format!("mode \"{mode_name}\" needs a `destination` (host:port)"),
                        );
                    };
                    reachable(destination, target::address_host(destination.get_ref()))?;
                    let destination = template(destination)?;
                    let rate = pe.rate.unwrap_or(1000).max(1);
                    let count = pe.count.unwrap_or(10_000).max(1);
                    if mode_name == "leak" {
                        PortsMode::Leak {
                            destination,
                            rate,
                            count,
                        }
                    } else {
                        PortsMode::TimeWait {
                            destination,
                            rate,
                            count,
                        }
                    }
                }
                other => {
                    let at = pe.mode.as_ref().map_or(span.clone(), |m| m.span());
                    return problem(at, format!("unknown port_exhaustion mode \"{other}\": expected \"reserve\", \"leak\" or \"time_wait\""));
                }
            };
            FaultKind::PortExhaustion {
                target,
                mode,
                allow_own_namespace: pe.allow_own_namespace,
            }
        } else {
            unreachable!("exactly one kind was checked above")
        };
        faults.push(FaultSpec {
            name,
            start: fault.start.0,
            duration: fault.duration.0,
            kind,
        });
    }

    let mut stops = Vec::new();
    for stop in &f.stop {
        let probe = match &stop.probe {
            None => steady_state.probe,
            Some(name) => probes
                .iter()
                .position(|p| &p.name == name.get_ref())
                .ok_or_else(|| Problem {
                    span: name.span(),
                    message: format!(
                        "unknown probe \"{}\": expected one of {}",
                        name.get_ref(),
                        quoted_list(probes.iter().map(|p| p.name.as_str()))
                    ),
                })?,
        };
        let min_success = *stop.min_success.get_ref();
        if !(0.0..=1.0).contains(&min_success) {
            return problem(
                stop.min_success.span(),
                "min_success must lie between 0 and 1",
            );
        }
        if stop.window.0 < probes[probe].every {
            return problem(
                stop.name.span(),
                "a stop condition's `for` must be at least one probe interval",
            );
        }
        stops.push(StopSpec {
            name: stop.name.get_ref().clone(),
            probe,
            min_success,
            window: stop.window.0,
        });
    }

    let gates = Gates {
        detect_within: f.gates.detect_within.as_ref().map(|d| d.get_ref().0),
        recover_within: f.gates.recover_within.map(|d| d.0),
        mitigate_within: f.gates.mitigate_within.map(|d| d.0),
        max_error_ratio: match &f.gates.max_error_ratio {
            Some(r) if !(0.0..=1.0).contains(r.get_ref()) => {
                return problem(r.span(), "max_error_ratio must lie between 0 and 1")
            }
            r => r.as_ref().map(|r| *r.get_ref()),
        },
        allowed_error_statuses: f.gates.allowed_error_statuses.clone(),
    };
    if let (Some(gate), true) = (&f.gates.detect_within, detectors.is_empty()) {
        return problem(
            gate.span(),
            "detect_within needs a detection source: expected at least one [[detect]]",
        );
    }

    let limits = Limits {
        max_run: f
            .limits
            .max_run
            .as_ref()
            .map_or(Duration::from_secs(600), |d| d.get_ref().0),
        observe_after: f
            .limits
            .observe_after
            .map_or(Duration::from_secs(30), |d| d.0),
        inject_timeout: f
            .limits
            .inject_timeout
            .map_or(Duration::from_secs(10), |d| d.0),
    };
    if let Some(max_run) = f
        .limits
        .max_run
        .as_ref()
        .filter(|_| limits.max_run > MAX_RUN_CEILING)
    {
        return problem(
            max_run.span(),
            "max_run is above the ceiling of 1h: expected at most \"1h\"",
        );
    }

    let backlog = match &f.backlog {
        None => None,
        Some(b) => {
            let max = *b.max.get_ref();
            if !(max.is_finite() && max >= 0.0) {
                return problem(b.max.span(), "backlog `max` must be a number of at least 0");
            }
            let kind = match (&b.metric, &b.sql) {
                (Some(m), None) => {
                    if !is_http_url(m.url.get_ref()) {
                        return problem(m.url.span(), "expected an http:// URL");
                    }
                    reachable(&m.url, target::http_host(m.url.get_ref()))?;
                    let metric = m.name.get_ref();
                    if metric.is_empty() || !metric.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
                        return problem(m.name.span(), format!("invalid metric name \"{metric}\": expected a Prometheus metric name such as \"mail_queue_depth\""));
                    }
                    BacklogKind::Metric { url: template(&m.url)?, metric: metric.clone() }
                }
                (None, Some(q)) => {
                    let (server, dsn) = match (&q.postgres, &q.mysql) {
                        (Some(d), None) => (DbServer::Postgres, d),
                        (None, Some(d)) => (DbServer::Mysql, d),
                        _ => return problem(q.query.span(), "a sql backlog needs exactly one server: expected `postgres = \"DSN\"` or `mysql = \"mysql://…\"`"),
                    };
                    BacklogKind::Sql { server, dsn: template(dsn)?, query: template(&q.query)? }
                }
                _ => return problem(b.name.span(), "backlog needs exactly one kind: expected `metric = { url, name }` or `sql = { postgres | mysql, query }`"),
            };
            let every = b.every.map_or(Duration::from_millis(100), |d| d.0);
            if every.is_zero() {
                return problem(b.name.span(), "backlog `every` must be more than 0ms");
            }
            Some(BacklogSpec {
                name: b.name.get_ref().clone(),
                max,
                every,
                timeout: b.timeout.map_or(Duration::from_secs(1), |d| d.0),
                kind,
            })
        }
    };

    Ok(Scenario {
        name: f.scenario.name,
        description: f.scenario.description,
        incident: f.scenario.incident,
        demo,
        sink_listen,
        probes,
        steady_state,
        detectors,
        faults,
        gates,
        limits,
        stops,
        db_proxies,
        backlog,
        allow_targets: allowed,
    })
}

/// Placeholders the flood fills in per request: `{seq}`, `{source}`, `{rand.…}`.
pub fn is_flood_placeholder(name: &str) -> bool {
    name == "seq" || name == "source" || name.starts_with("rand.")
}

/// An HTTP method, upper-cased and checked.
fn http_method(m: &Spanned<String>) -> Result<String, Problem> {
    let upper = m.get_ref().to_ascii_uppercase();
    if ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"].contains(&upper.as_str()) {
        Ok(upper)
    } else {
        problem(
            m.span(),
            format!("unknown HTTP method \"{}\": expected GET, HEAD, POST, PUT, DELETE, OPTIONS or PATCH", m.get_ref()),
        )
    }
}

fn flood_connections(c: &Spanned<u64>) -> Result<usize, Problem> {
    match *c.get_ref() {
        0 => problem(c.span(), "connections must be at least 1"),
        n if n > MAX_FLOOD_CONNECTIONS => problem(
            c.span(),
            format!("connections must be at most {MAX_FLOOD_CONNECTIONS}: each one is a file descriptor of relapse's own"),
        ),
        n => Ok(n as usize),
    }
}

/// Flood source addresses: a list or a CIDR, loopback only (every 127.x.y.z works as a source
/// on loopback without any setup; anything else would be somebody's address).
fn flood_sources(
    span: Range<usize>,
    list: &Option<Spanned<Vec<String>>>,
    cidr: &Option<Spanned<String>>,
) -> Result<FloodSources, Problem> {
    let loopback = |ip: &std::net::IpAddr| ip.is_loopback();
    match (list, cidr) {
        (None, None) => Ok(FloodSources::Default),
        (Some(_), Some(_)) => problem(span, "give `sources` or `source_cidr`, not both"),
        (Some(list), None) => {
            if list.get_ref().is_empty() {
                return problem(
                    list.span(),
                    "`sources` is empty: expected at least one address",
                );
            }
            let mut ips = Vec::new();
            for text in list.get_ref() {
                match text.parse::<std::net::IpAddr>() {
                    Ok(ip) if loopback(&ip) => ips.push(ip),
                    Ok(_) => return problem(list.span(), format!("source address {text} is not loopback: floods come from 127.0.0.0/8 or ::1 only")),
                    Err(_) => return problem(list.span(), format!("invalid source address \"{text}\": expected an IP address such as \"127.0.0.2\"")),
                }
            }
            Ok(FloodSources::List(ips))
        }
        (None, Some(cidr)) => {
            let text = cidr.get_ref();
            let bad = || {
                Problem {
                span: cidr.span(),
                message: format!("invalid source_cidr \"{text}\": expected NETWORK/PREFIX such as \"127.20.0.0/23\""),
            }
            };
            let (network, prefix) = text.split_once('/').ok_or_else(bad)?;
            let network: std::net::IpAddr = network.parse().map_err(|_| bad())?;
            let prefix: u8 = prefix.parse().map_err(|_| bad())?;
            let bits: u8 = if network.is_ipv4() { 32 } else { 128 };
            if prefix > bits {
                return Err(bad());
            }
            if !loopback(&network) || (network.is_ipv4() && prefix < 8) {
                return problem(cidr.span(), format!("source_cidr {text} is not within loopback: floods come from 127.0.0.0/8 only"));
            }
            if bits - prefix > 16 {
                return problem(cidr.span(), format!("source_cidr {text} has more than {MAX_FLOOD_SOURCES} addresses: expected a prefix of at least /{}", bits - 16));
            }
            Ok(FloodSources::Cidr { network, prefix })
        }
    }
}

/// A `db_proxy` fault: which proxy, and a mode whose settings fit it.
fn db_proxy_fault(
    spanned: &Spanned<file::DbProxyFaultSection>,
    proxies: &[DbProxySpec],
) -> Result<FaultKind, Problem> {
    let span = spanned.span();
    let dp = spanned.get_ref();
    let Some(proxy) = proxies.iter().position(|p| &p.name == dp.proxy.get_ref()) else {
        return problem(
            dp.proxy.span(),
            if proxies.is_empty() {
                format!(
                    "unknown db_proxy \"{}\": the scenario declares no [[db_proxy]]",
                    dp.proxy.get_ref()
                )
            } else {
                format!(
                    "unknown db_proxy \"{}\": expected one of {}",
                    dp.proxy.get_ref(),
                    quoted_list(proxies.iter().map(|p| p.name.as_str()))
                )
            },
        );
    };
    let mode_name = dp.mode.get_ref().as_str();
    let settings_for = |wanted: &str| -> Result<(), Problem> {
        let given = [
            ("latency", dp.latency.is_some()),
            ("jitter", dp.jitter.is_some()),
            ("error", dp.error.is_some()),
        ];
        match given
            .iter()
            .find(|(key, set)| *set && !wanted.contains(key))
        {
            Some((key, _)) => problem(
                span.clone(),
                format!("`{key}` does not apply to mode \"{mode_name}\""),
            ),
            None => Ok(()),
        }
    };
    let mode = match mode_name {
        "stall" => DbProxyMode::Stall,
        "stall_writes" => DbProxyMode::StallWrites,
        "reset" => DbProxyMode::Reset,
        "refuse_new" => DbProxyMode::RefuseNew,
        "latency" => {
            settings_for("latency jitter")?;
            let Some(latency) = dp.latency else {
                return problem(span, "mode \"latency\" needs `latency`, e.g. latency = \"200ms\"");
            };
            let jitter = dp.jitter.map_or(Duration::ZERO, |d| d.0);
            if jitter > latency.0 {
                return problem(span, "`jitter` must not exceed `latency`");
            }
            DbProxyMode::Latency { latency: latency.0, jitter }
        }
        "error" => {
            settings_for("error")?;
            let Some(code) = &dp.error else {
                return problem(span, "mode \"error\" needs `error`: a SQLSTATE such as \"55P03\" or a MySQL error number such as 1205");
            };
            let text = match code.get_ref() {
                file::ErrorCodeValue::Number(n) => n.to_string(),
                file::ErrorCodeValue::Text(t) => t.to_ascii_uppercase(),
            };
            let allowed: &[&str] = match proxies[proxy].server {
                DbServer::Postgres => &POSTGRES_PROXY_ERRORS,
                DbServer::Mysql => &MYSQL_PROXY_ERRORS,
            };
            if !allowed.contains(&text.as_str()) {
                return problem(code.span(), format!("unknown error {text} for a {} proxy: expected one of {}", match proxies[proxy].server { DbServer::Postgres => "postgres", DbServer::Mysql => "mysql" }, allowed.join(", ")));
            }
            DbProxyMode::Error { code: text }
        }
        other => {
            return problem(
                dp.mode.span(),
                format!("unknown db_proxy mode \"{other}\": expected \"stall\", \"stall_writes\", \"latency\", \"error\", \"reset\" or \"refuse_new\""),
            )
        }
    };
    if !matches!(
        mode,
        DbProxyMode::Latency { .. } | DbProxyMode::Error { .. }
    ) {
        settings_for("")?;
    }
    Ok(FaultKind::DbProxy { proxy, mode })
}

/// The target process of a fault: exactly one of `pid`, `pidfile`, `demo`.
fn process_target(
    span: Range<usize>,
    pid: Option<u32>,
    pidfile: &Option<String>,
    demo_component: &Option<Spanned<String>>,
    has_demo: bool,
    kind: &str,
) -> Result<ProcessTarget, Problem> {
    match (pid, pidfile, demo_component) {
        (Some(pid), None, None) => {
            if pid <= 1 {
                return problem(
                    span,
                    format!(
                        "refusing to {} pid 0 or 1",
                        if kind == "process_freeze" {
                            "freeze"
                        } else {
                            "starve"
                        }
                    ),
                );
            }
            Ok(ProcessTarget::Pid(pid))
        }
        (None, Some(file), None) => Ok(ProcessTarget::Pidfile(PathBuf::from(file))),
        (None, None, Some(component)) => {
            if !has_demo {
                return problem(
                    component.span(),
                    "`demo` names a demo component but the scenario has no [target.demo]",
                );
            }
            match component.get_ref().as_str() {
                "backend" => Ok(ProcessTarget::Demo(DemoComponent::Backend)),
                "frontend" => Ok(ProcessTarget::Demo(DemoComponent::Frontend)),
                other => problem(
                    component.span(),
                    format!(
                        "unknown demo component \"{other}\": expected \"backend\" or \"frontend\""
                    ),
                ),
            }
        }
        _ => problem(
            span,
            format!("{kind} needs exactly one target: expected one of `pid`, `pidfile`, `demo`"),
        ),
    }
}

/// An `http://` URL, or a template that starts with a variable (checked again once rendered).
fn is_http_url(url: &str) -> bool {
    url.starts_with("http://") || url.starts_with('{')
}

fn check_statuses(statuses: &[u16], span: Range<usize>) -> Result<(), Problem> {
    match statuses.iter().find(|s| !(100..=599).contains(*s)) {
        Some(bad) => problem(
            span,
            format!("HTTP status {bad} is out of range: expected 100 to 599"),
        ),
        None if statuses.is_empty() => {
            problem(span, "the list of statuses is empty: expected at least one")
        }
        None => Ok(()),
    }
}

fn quoted_list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names
        .map(|n| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests;
