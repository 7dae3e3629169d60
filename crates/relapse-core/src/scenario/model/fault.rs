//! The model of faults: what each kind injects, and into what.

use std::path::PathBuf;
use std::time::Duration;

use crate::scenario::{DbServer, FaultKind, Template};

/// One `[[fault]]`: its schedule, and its kind's model (`FaultKind` comes from the kind list in
/// `scenario::fault`).
#[derive(Debug, Clone)]
pub struct FaultSpec {
    pub name: String,
    /// Offset from the instant steady state was confirmed.
    pub start: Duration,
    /// How long the fault stays applied, from the instant it became effective.
    pub duration: Duration,
    pub kind: FaultKind,
    /// Gates for the episode this fault belongs to, over the scenario's `[gates]`, key by key.
    pub gates: super::Gates,
    /// Where it runs: none on relapse's own host; one agent (`on = "NAME"`); or, for a flood
    /// spread over agents (`on = ["a1", "a2"]`), one per shard, each with its shard's table.
    pub on: Vec<OnAgent>,
}

/// A fault or probe an agent runs: the agent, and the kind's table as the agent reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnAgent {
    /// The `[[agent]]`'s name.
    pub agent: String,
    /// The kind's key and value, as TOML on one line: `process_freeze = { command = "x" }`.
    pub table: String,
}

/// The kinds that act on what the run itself made (its db_proxies, its fs gates), which only
/// relapse's own host has.
pub const LOCAL_ONLY_KINDS: &[&str] = &["db_proxy", "fs_gate"];

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
    /// A template that renders to a process id when the fault is injected
    /// (`"{demo.primary.pid}"`).
    PidOf(Template),
    Pidfile(PathBuf),
    Demo(DemoComponent),
    /// A `[[target.process]]` of the run, by name.
    Started(String),
    /// The one process whose command line contains this text, found when the fault is
    /// injected: for processes whose pid is not known in advance (`"postgres: checkpointer"`).
    Command(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DemoComponent {
    Frontend,
    /// The backend, or with failover the backend that starts active (`demo = "backend"` or
    /// `"primary"`).
    Primary,
    /// The second backend, which the frontend fails over to; only with `failover`.
    Standby,
}

impl DemoComponent {
    pub fn name(self) -> &'static str {
        match self {
            DemoComponent::Frontend => "frontend",
            DemoComponent::Primary => "primary",
            DemoComponent::Standby => "standby",
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
    /// Answer statements with this error.
    Error { code: DbErrorCode },
    /// Reset open connections and every new one.
    Reset,
    /// Refuse new connections; open ones go on.
    RefuseNew,
}

/// An error a `db_proxy` fault answers statements with, parsed once from the scenario's
/// SQLSTATE or MySQL error number; the proxy speaks it in each protocol's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbErrorCode {
    /// PostgreSQL 55P03, MySQL 1205: a lock wait gave up.
    LockNotAvailable,
    /// PostgreSQL 40P01, MySQL 1213: a deadlock.
    Deadlock,
    /// PostgreSQL 57014, MySQL 1317: the statement was cancelled.
    QueryCanceled,
}

impl DbErrorCode {
    /// Every code, in the order of the lists below.
    pub const ALL: [DbErrorCode; 3] = [
        DbErrorCode::LockNotAvailable,
        DbErrorCode::Deadlock,
        DbErrorCode::QueryCanceled,
    ];

    /// The code a scenario names for a proxy in front of `server`.
    pub fn parse(server: DbServer, text: &str) -> Option<DbErrorCode> {
        let list = match server {
            DbServer::Postgres => &POSTGRES_PROXY_ERRORS,
            DbServer::Mysql => &MYSQL_PROXY_ERRORS,
        };
        let index = list.iter().position(|code| *code == text)?;
        Some(DbErrorCode::ALL[index])
    }
}

/// The errors a `db_proxy` fault can answer with, per server, in the order of
/// [`DbErrorCode::ALL`]; the root crate's tests check them against the proxy's own codes.
pub const POSTGRES_PROXY_ERRORS: [&str; 3] = ["55P03", "40P01", "57014"];
pub const MYSQL_PROXY_ERRORS: [&str; 3] = ["1205", "1213", "1317"];
