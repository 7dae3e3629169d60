//! The model of faults: what each kind injects, and into what.

use std::path::PathBuf;
use std::time::Duration;

use super::DbServer;
use crate::scenario::Template;

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

/// Placeholders the flood fills in per request: `{seq}`, `{source}`, `{rand.…}`.
pub fn is_flood_placeholder(name: &str) -> bool {
    name == "seq" || name == "source" || name.starts_with("rand.")
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
