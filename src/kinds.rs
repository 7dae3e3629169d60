//! The table of fault kinds: the one place that knows, per kind, its name (the injector crate's
//! `KIND`), its help line, how its injector is built from the scenario model, how a journal
//! entry of it is reverted, and a sample scenario the crash test runs. `relapse list`, the plan
//! builder, the guardian and `relapse cleanup` all read it.
//!
//! Besides faults, the journal holds what the harness itself makes for a run (the demo's host
//! namespace, the demo's tables): [`HARNESS_RECORDS`] reverts those.

use std::path::{Path, PathBuf};
use std::time::Duration;

use relapse_core::fault::{decode_as, decode_record, BoxFuture, Fault, RevertError};
use relapse_core::scenario::{
    is_flood_placeholder, DbLockTarget, DemoComponent, FaultKind, FloodLoad, NetnsTarget,
    PortsMode, ProcessTarget, ReserveAmount, Template, Vars,
};
use relapse_demo::Demo;
use relapse_ports::netns::Host;

use crate::reach::{dsn_host, reachable, reachable_address, reachable_url, render};

/// What building a fault may use besides its own model: the run's template variables and
/// allowlist, the running demo and its host, the run's db_proxies, the relapse executable.
pub struct BuildContext<'a> {
    pub vars: &'a Vars,
    /// Loopback is always allowed; these are the other hosts (the scenario's, the command
    /// line's, and the addresses of a namespace relapse made).
    pub allowed: &'a [String],
    pub demo: Option<&'a Demo>,
    pub host: Option<&'a Host>,
    /// The scenario's db_proxies, in the order they are declared.
    pub proxies: &'a [relapse_dbproxy::DbProxy],
    /// The relapse executable, which also serves as the port holder.
    pub program: &'a Path,
    /// How long the fault is scheduled to stay applied: the bound of a flood that is never
    /// reverted.
    pub duration: Duration,
    /// The mount points of the file systems relapse made for the run.
    pub scratch_mounts: &'a [PathBuf],
    /// The run's `[[fs_gate]]`s, in the order they are declared.
    pub gates: &'a [relapse_fs::GateHandle],
    /// Paths that must stay writable whatever a fault does: relapse's state directory, its
    /// executable, its working directory.
    pub protected: &'a [PathBuf],
}

impl BuildContext<'_> {
    fn render(&self, template: &Template) -> Result<String, String> {
        render(template, self.vars)
    }

    fn pid(&self, target: &ProcessTarget) -> Result<u32, String> {
        Ok(match target {
            ProcessTarget::Pid(pid) => *pid,
            ProcessTarget::PidOf(template) => {
                let text = self.render(template)?;
                match text.trim().parse::<u32>() {
                    Ok(pid) if pid > 1 => pid,
                    _ => return Err(format!("pid \"{text}\": expected a process id, not 0 or 1")),
                }
            }
            ProcessTarget::Pidfile(path) => {
                relapse_hang::read_pidfile(path).map_err(|e| e.to_string())?
            }
            ProcessTarget::Demo(component) => {
                let demo = self.demo.ok_or("the demo target is not running")?;
                match component {
                    DemoComponent::Primary => demo.primary_pid(),
                    DemoComponent::Standby => demo
                        .standby_pid()
                        .ok_or("the demo has no standby: it runs without failover")?,
                    DemoComponent::Frontend => demo.frontend_pid(),
                }
            }
            ProcessTarget::Started(name) => self
                .vars
                .get(&format!("process.{name}.pid"))
                .and_then(|pid| pid.parse().ok())
                .ok_or_else(|| format!("the process \"{name}\" is not running"))?,
            ProcessTarget::Command(text) => {
                relapse_hang::find_by_command(text).map_err(|e| e.to_string())?
            }
        })
    }

    fn netns_path(&self, target: &NetnsTarget) -> Result<PathBuf, String> {
        match target {
            NetnsTarget::Named(name) => {
                let path = relapse_ports::netns::named_path(name);
                if path.exists() {
                    Ok(path)
                } else {
                    Err(format!(
                        "no network namespace named \"{name}\" (ip netns list shows them)"
                    ))
                }
            }
            NetnsTarget::Pid(pid) => Ok(PathBuf::from(format!("/proc/{pid}/ns/net"))),
            NetnsTarget::DemoHost => self
                .host
                .map(|h| h.path())
                .ok_or_else(|| "the demo host is not running".to_string()),
        }
    }

    /// A flood's target, rendered (its per-request placeholders left in) and allowed; returns
    /// the address and the path.
    fn flood_target(&self, url: &Template) -> Result<(std::net::SocketAddr, String), String> {
        let url = url
            .render_keeping(self.vars, is_flood_placeholder)
            .map_err(|e| e.to_string())?;
        reachable_url(&url, self.allowed)?;
        relapse_flood::LoadSpec::parse_url(&url).map_err(|e| e.to_string())
    }

    /// How to start this kind's helper process: the relapse executable's hidden `__helper KIND`
    /// subcommand, which runs the entry's `helper`.
    fn helper(&self, kind: &str) -> (PathBuf, Vec<String>) {
        (
            self.program.to_path_buf(),
            vec![HELPER_COMMAND.to_string(), kind.to_string()],
        )
    }

    /// When a flood stops by itself should its revert never come: the engine reverts it on
    /// schedule, this is the backstop.
    fn flood_deadline(&self) -> Duration {
        self.duration + FLOOD_SELF_STOP_MARGIN
    }
}

/// How long past its scheduled duration a flood stops by itself.
const FLOOD_SELF_STOP_MARGIN: Duration = Duration::from_secs(5);

/// Builds an injector; an error says why the fault cannot run (nothing was injected).
pub type Build = for<'a> fn(
    &'a FaultKind,
    &'a BuildContext<'a>,
) -> BoxFuture<'a, Result<Box<dyn Fault>, String>>;

/// Executes a journal entry's revert from its record alone (in the guardian or `cleanup`).
pub type Revert = fn(serde_json::Value) -> Result<String, RevertError>;

/// The main of a kind's helper process (a port holder, a thaw holder), given its arguments.
/// Called before any async runtime exists, while the process has one thread.
pub type Helper = fn(&[String]) -> Result<(), String>;

/// The relapse subcommand that runs a kind's helper: `relapse __helper KIND ARGS…`.
pub const HELPER_COMMAND: &str = "__helper";

/// One fault kind.
pub struct FaultKindEntry {
    /// The kind's name in scenarios and journals: the injector crate's `KIND`.
    pub kind: &'static str,
    /// One line (or two) for `relapse list`.
    pub help: &'static str,
    pub build: Build,
    pub revert: Revert,
    /// The kind's helper process, if it has one.
    pub helper: Option<Helper>,
    /// A small scenario whose fault is of this kind, for the crash test. `@TARGET_PID@` stands
    /// for a process the test starts (kinds that act on a process); everything else runs
    /// against the embedded demo.
    pub sample: &'static str,
}

/// A record the harness journals for something it makes for a run (not a fault).
pub struct HarnessRecord {
    pub kind: &'static str,
    pub revert: Revert,
}

/// What every sample scenario shares: the demo's health as the SLI, a short steady state, and
/// the head of its one `[[fault]]`, which the kind's sample goes on with (its kind's key, then
/// any tables of its own).
macro_rules! sample_prelude {
    () => {
        r#"[scenario]
name = "crash-sample"

[[probe]]
name = "sli"
http = { url = "{demo.url}/health", timeout = "500ms" }
every = "50ms"

[steady_state]
probe = "sli"
window = "200ms"
min_success = 0.5
timeout = "10s"

[limits]
observe_after = "1s"

[[fault]]
name = "sample"
start = "0s"
duration = "10s"
"#
    };
}

/// The fault kinds, in the order `relapse list` shows them.
pub static FAULT_KINDS: &[FaultKindEntry] = &[
    FaultKindEntry {
        kind: relapse_hang::KIND,
        help: "stop a process (or its process group) with SIGSTOP, resume with SIGCONT\n\
               (the FLG incident: a healthcheck script hung the database server)",
        build: build_process_freeze,
        helper: None,
        revert: |v| relapse_hang::revert_record(&decode_record(v)?),
        sample: concat!(
            sample_prelude!(),
            r#"process_freeze = { pid = @TARGET_PID@ }

[target.demo]
"#
        ),
    },
    FaultKindEntry {
        kind: relapse_ports::ports::KIND,
        help: "take a network namespace's ephemeral ports: reserve (bind), leak (hold\n\
               connections) or time_wait (churn) (the iPaper incident)",
        build: build_port_exhaustion,
        helper: Some(relapse_ports::ports::holder_main),
        revert: |v| relapse_ports::ports::revert_record(&decode_record(v)?),
        sample: concat!(
            sample_prelude!(),
            r#"port_exhaustion = { demo = "host", mode = "reserve" }

[target.demo]
host = "netns"
"#
        ),
    },
    FaultKindEntry {
        kind: relapse_ports::fd::KIND,
        help: "lower a process's RLIMIT_NOFILE to what it uses, so it can open nothing new",
        build: build_fd_exhaustion,
        helper: None,
        revert: |v| relapse_ports::fd::revert_record(&decode_record(v)?),
        sample: concat!(
            sample_prelude!(),
            r#"fd_exhaustion = { pid = @TARGET_PID@ }

[target.demo]
"#
        ),
    },
    FaultKindEntry {
        kind: relapse_db::KIND,
        help: "hold a real lock on PostgreSQL or MySQL/MariaDB: a table, rows, or the\n\
               global read lock (the Kolab incident)",
        build: build_db_lock,
        // The revert needs a runtime of its own, and `cleanup` is called from inside the CLI's:
        // run it on a thread of its own.
        helper: None,
        revert: |v| {
            let record = decode_record(v)?;
            std::thread::spawn(move || relapse_db::revert_record_blocking(&record))
                .join()
                .unwrap_or_else(|_| {
                    Err(RevertError::NotConfirmed(
                        "the db_lock revert panicked".into(),
                    ))
                })
        },
        sample: concat!(
            sample_prelude!(),
            r#"db_lock = { postgres = "host=127.0.0.1 port=5432 user=postgres dbname=test", table = "{demo.mail_table}" }

[target.demo]
database = { postgres = "host=127.0.0.1 port=5432 user=postgres dbname=test" }
"#
        ),
    },
    FaultKindEntry {
        kind: relapse_flood::HTTP_FLOOD,
        help: "an HTTP request flood: open model (a rate) or closed (connections), from\n\
               many loopback source addresses (the OpenSRS incident)",
        build: build_http_flood,
        helper: None,
        revert: |v| relapse_flood::revert_record(&decode_as(relapse_flood::HTTP_FLOOD, v)?),
        sample: concat!(
            sample_prelude!(),
            r#"http_flood = { url = "{demo.url}/health", rate = 200.0, source_cidr = "127.61.0.0/28" }

[target.demo]
"#
        ),
    },
    FaultKindEntry {
        kind: relapse_flood::SLOWLORIS,
        help: "connections that send headers slowly and never finish them",
        build: build_slowloris,
        helper: None,
        revert: |v| relapse_flood::revert_record(&decode_as(relapse_flood::SLOWLORIS, v)?),
        sample: concat!(
            sample_prelude!(),
            r#"slowloris = { url = "{demo.url}/", connections = 20, header_interval = "200ms" }

[target.demo]
"#
        ),
    },
    FaultKindEntry {
        kind: relapse_flood::CONNECTION_FLOOD,
        help: "connections opened and held idle",
        build: build_connection_flood,
        helper: None,
        revert: |v| relapse_flood::revert_record(&decode_as(relapse_flood::CONNECTION_FLOOD, v)?),
        sample: concat!(
            sample_prelude!(),
            r#"connection_flood = { url = "{demo.url}/", connections = 20 }

[target.demo]
"#
        ),
    },
    FaultKindEntry {
        kind: relapse_dbproxy::KIND,
        help: "switch a [[db_proxy]] (a PostgreSQL / MySQL aware proxy the target talks\n\
               through) to stall, stall_writes, latency, error (SQLSTATE / MySQL error),\n\
               reset or refuse_new",
        build: build_db_proxy,
        helper: None,
        revert: |v| relapse_dbproxy::revert_record(&decode_record(v)?),
        sample: concat!(
            sample_prelude!(),
            r#"db_proxy = { proxy = "pg", mode = "stall" }

[[db_proxy]]
name = "pg"
postgres = "127.0.0.1:5432"

[target.demo]
database = { postgres = "host={db_proxy.pg.host} port={db_proxy.pg.port} user=postgres dbname=test" }
"#
        ),
    },
    FaultKindEntry {
        kind: relapse_fs::KIND,
        help: "freeze a file system relapse made (FIFREEZE): writers block in state D, reads\n\
               go on (the OpenSRS Cluster B incident: a file system locked up)",
        build: build_fs_freeze,
        helper: Some(|args| relapse_fs::holder_main(args).map_err(|e| e.to_string())),
        revert: |v| relapse_fs::revert_record(&decode_record(v)?),
        sample: concat!(
            sample_prelude!(),
            r#"fs_freeze = { mount = "{scratch_fs.sample.path}" }

[[scratch_fs]]
name = "sample"
size = "32MiB"

[target.demo]
"#
        ),
    },
    FaultKindEntry {
        kind: relapse_fs::GATE_KIND,
        help: "switch an [[fs_gate]] (a FUSE passthrough relapse mounts) to stall, latency or\n\
               error (EIO, ENOSPC, EROFS), for all operations, writes or fsync",
        build: build_fs_gate,
        helper: Some(|args| relapse_fs::holder_main(args).map_err(|e| e.to_string())),
        revert: |v| relapse_fs::gate::revert_record(&decode_record(v)?),
        sample: concat!(
            sample_prelude!(),
            r#"fs_gate = { gate = "sample", mode = "stall", scope = "writes" }

[[scratch_fs]]
name = "sample"
size = "32MiB"

[[fs_gate]]
name = "sample"
source = "{scratch_fs.sample.path}"

[target.demo]
"#
        ),
    },
];

/// What the harness journals besides faults, and what a fault on agents journals: the records
/// that release a run on its agents.
pub static HARNESS_RECORDS: &[HarnessRecord] = &[
    HarnessRecord {
        kind: crate::remote::KIND,
        revert: |v| crate::remote::revert_record(&decode_record(v)?),
    },
    HarnessRecord {
        kind: crate::remote::SPREAD_KIND,
        revert: |v| crate::remote::revert_spread_record(&decode_record(v)?),
    },
    HarnessRecord {
        kind: relapse_ports::netns::KIND,
        revert: |v| relapse_ports::netns::revert_record(&decode_record(v)?),
    },
    HarnessRecord {
        kind: relapse_fs::SCRATCH_KIND,
        revert: |v| relapse_fs::remove_record(&decode_record(v)?),
    },
    HarnessRecord {
        kind: crate::harness::processes::KIND,
        revert: |v| {
            let record: crate::harness::processes::ProcessRecord =
                decode_as(crate::harness::processes::KIND, v)?;
            crate::harness::processes::revert_record(&record)
        },
    },
    HarnessRecord {
        kind: crate::harness::DEMO_TABLES,
        revert: |v| {
            let record: relapse_demo::DemoTablesRecord = decode_as(crate::harness::DEMO_TABLES, v)?;
            // Like db_lock: a runtime of its own, on a thread of its own.
            std::thread::spawn(move || relapse_demo::drop_tables_blocking(&record))
                .join()
                .unwrap_or_else(|_| Ok("the demo tables' drop panicked".into()))
                .map_err(|e| RevertError::failed("dropping the demo tables", e))
        },
    },
];

/// Runs the helper process of `kind` (`relapse __helper KIND ARGS…`).
pub fn run_helper(kind: &str, args: &[String]) -> Result<(), String> {
    let helper = fault_kind(kind)
        .and_then(|e| e.helper)
        .ok_or_else(|| format!("no helper process for the kind \"{kind}\""))?;
    helper(args)
}

/// The entry of a fault kind.
pub fn fault_kind(kind: &str) -> Option<&'static FaultKindEntry> {
    FAULT_KINDS.iter().find(|e| e.kind == kind)
}

/// Reverts a journal entry with whatever knows its kind.
pub fn revert_entry(kind: &str, record: serde_json::Value) -> Result<String, RevertError> {
    let revert = fault_kind(kind)
        .map(|e| e.revert)
        .or_else(|| {
            HARNESS_RECORDS
                .iter()
                .find(|r| r.kind == kind)
                .map(|r| r.revert)
        })
        .ok_or_else(|| RevertError::UnknownKind(kind.to_string()))?;
    revert(record)
}

/// Builds the injector of a fault through its kind's entry.
pub async fn build(kind: &FaultKind, context: &BuildContext<'_>) -> Result<Box<dyn Fault>, String> {
    let entry = fault_kind(kind.name())
        .ok_or_else(|| format!("fault kind {} has no entry in the kind table", kind.name()))?;
    (entry.build)(kind, context).await
}

fn wrong_kind(kind: &FaultKind, wanted: &str) -> String {
    format!(
        "the {wanted} builder was handed a {} fault (a kind table entry names the wrong kind)",
        kind.name()
    )
}

fn build_process_freeze<'a>(
    kind: &'a FaultKind,
    cx: &'a BuildContext<'a>,
) -> BoxFuture<'a, Result<Box<dyn Fault>, String>> {
    Box::pin(async move {
        let FaultKind::ProcessFreeze(spec) = kind else {
            return Err(wrong_kind(kind, relapse_hang::KIND));
        };
        let freeze = relapse_hang::ProcessFreeze::new(cx.pid(&spec.target)?, spec.process_group)
            .map_err(|e| e.to_string())?;
        Ok(Box::new(freeze) as Box<dyn Fault>)
    })
}

fn build_fd_exhaustion<'a>(
    kind: &'a FaultKind,
    cx: &'a BuildContext<'a>,
) -> BoxFuture<'a, Result<Box<dyn Fault>, String>> {
    Box::pin(async move {
        let FaultKind::FdExhaustion(spec) = kind else {
            return Err(wrong_kind(kind, relapse_ports::fd::KIND));
        };
        let fault = relapse_ports::fd::FdExhaustion::new(cx.pid(&spec.target)?, spec.headroom)
            .map_err(|e| e.to_string())?;
        Ok(Box::new(fault) as Box<dyn Fault>)
    })
}

fn build_port_exhaustion<'a>(
    kind: &'a FaultKind,
    cx: &'a BuildContext<'a>,
) -> BoxFuture<'a, Result<Box<dyn Fault>, String>> {
    Box::pin(async move {
        use relapse_ports::ports::{Amount, Mode};
        let FaultKind::PortExhaustion(spec) = kind else {
            return Err(wrong_kind(kind, relapse_ports::ports::KIND));
        };
        let path = cx.netns_path(&spec.target)?;
        let destination = |t: &Template| -> Result<std::net::SocketAddr, String> {
            let text = cx.render(t)?;
            reachable_address(&text, cx.allowed)?;
            text.parse()
                .map_err(|_| format!("destination \"{text}\" is not IP:PORT"))
        };
        let mode = match &spec.mode {
            PortsMode::Reserve(ReserveAmount::All) => Mode::Reserve(Amount::All),
            PortsMode::Reserve(ReserveAmount::Fraction(f)) => Mode::Reserve(Amount::Fraction(*f)),
            PortsMode::Reserve(ReserveAmount::LeaveFree(n)) => Mode::Reserve(Amount::LeaveFree(*n)),
            PortsMode::Leak {
                destination: d,
                rate,
                count,
            } => Mode::Leak {
                destination: destination(d)?,
                rate: *rate,
                count: *count,
            },
            PortsMode::TimeWait {
                destination: d,
                rate,
                count,
            } => Mode::TimeWait {
                destination: destination(d)?,
                rate: *rate,
                count: *count,
            },
        };
        let (program, args) = cx.helper(relapse_ports::ports::KIND);
        let holder = relapse_ports::ports::HolderLauncher { program, args };
        let fault =
            relapse_ports::ports::PortExhaustion::new(path, mode, spec.allow_own_namespace, holder)
                .map_err(|e| e.to_string())?;
        Ok(Box::new(fault) as Box<dyn Fault>)
    })
}

fn build_db_lock<'a>(
    kind: &'a FaultKind,
    cx: &'a BuildContext<'a>,
) -> BoxFuture<'a, Result<Box<dyn Fault>, String>> {
    Box::pin(async move {
        let FaultKind::DbLock(db) = kind else {
            return Err(wrong_kind(kind, relapse_db::KIND));
        };
        let dsn = cx.render(&db.dsn)?;
        reachable(dsn_host(&dsn), cx.allowed)?;
        let spec = match &db.lock {
            DbLockTarget::Table { table, mode } => relapse_db::LockSpec::Table {
                table: cx.render(table)?,
                mode: mode.clone(),
            },
            DbLockTarget::Rows {
                table,
                where_clause,
            } => relapse_db::LockSpec::Rows {
                table: cx.render(table)?,
                where_clause: where_clause.clone(),
            },
            DbLockTarget::GlobalRead => relapse_db::LockSpec::GlobalRead,
        };
        let lock = relapse_db::DbLock::new(db.server.into(), &dsn, spec)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Box::new(lock) as Box<dyn Fault>)
    })
}

fn build_db_proxy<'a>(
    kind: &'a FaultKind,
    cx: &'a BuildContext<'a>,
) -> BoxFuture<'a, Result<Box<dyn Fault>, String>> {
    Box::pin(async move {
        let FaultKind::DbProxy(spec) = kind else {
            return Err(wrong_kind(kind, relapse_dbproxy::KIND));
        };
        let proxy = cx
            .proxies
            .get(spec.proxy)
            .ok_or("its db_proxy is not running")?;
        Ok(Box::new(relapse_dbproxy::DbProxyFault::new(
            proxy.clone(),
            (&spec.mode).into(),
        )) as Box<dyn Fault>)
    })
}

fn build_fs_freeze<'a>(
    kind: &'a FaultKind,
    cx: &'a BuildContext<'a>,
) -> BoxFuture<'a, Result<Box<dyn Fault>, String>> {
    Box::pin(async move {
        let FaultKind::FsFreeze(spec) = kind else {
            return Err(wrong_kind(kind, relapse_fs::KIND));
        };
        let mount = PathBuf::from(cx.render(&spec.mount)?);
        if !spec.allow_foreign_mount && !cx.scratch_mounts.contains(&mount) {
            return Err(format!(
                "{} is not a file system relapse made for this run; a mount of your own needs allow_foreign_mount = true",
                mount.display()
            ));
        }
        let (program, args) = cx.helper(relapse_fs::KIND);
        let launcher = relapse_fs::HolderLauncher { program, args };
        let freeze =
            relapse_fs::FsFreeze::new(&mount, launcher, cx.protected).map_err(|e| e.to_string())?;
        Ok(Box::new(freeze) as Box<dyn Fault>)
    })
}

fn build_fs_gate<'a>(
    kind: &'a FaultKind,
    cx: &'a BuildContext<'a>,
) -> BoxFuture<'a, Result<Box<dyn Fault>, String>> {
    Box::pin(async move {
        let FaultKind::FsGate(spec) = kind else {
            return Err(wrong_kind(kind, relapse_fs::GATE_KIND));
        };
        let gate = cx
            .gates
            .get(spec.gate)
            .ok_or("its fs_gate is not mounted")?;
        let fault = relapse_fs::FsGateFault::new(gate.clone(), spec.mode.into())
            .map_err(|e| e.to_string())?;
        Ok(Box::new(fault) as Box<dyn Fault>)
    })
}

fn build_http_flood<'a>(
    kind: &'a FaultKind,
    cx: &'a BuildContext<'a>,
) -> BoxFuture<'a, Result<Box<dyn Fault>, String>> {
    Box::pin(async move {
        let FaultKind::HttpFlood(flood) = kind else {
            return Err(wrong_kind(kind, relapse_flood::HTTP_FLOOD));
        };
        let (target, path) = cx.flood_target(&flood.url)?;
        let mut request = relapse_flood::RequestTemplate::new(&flood.method, &path, &flood.body)
            .map_err(|e| e.to_string())?;
        for (name, value) in &flood.headers {
            request = request.header(name, value).map_err(|e| e.to_string())?;
        }
        let spec = relapse_flood::LoadSpec::new(target)
            .request(request)
            .keep_alive(flood.keep_alive)
            .sources(flood.sources.clone())
            .ramp_up(flood.ramp_up)
            .max_requests(flood.max_requests)
            .max_duration(cx.flood_deadline())
            .timeout(flood.timeout)
            // The target passed relapse's own allowlist just above.
            .allow_target(target.ip());
        let spec = match flood.load {
            FloodLoad::Open {
                rate,
                max_in_flight,
            } => spec.open(rate, max_in_flight),
            FloodLoad::Closed { connections } => spec.closed(connections),
        };
        spec.validate().map_err(|e| e.to_string())?;
        let flood = relapse_flood::HttpFlood::new(spec).map_err(|e| e.to_string())?;
        Ok(Box::new(flood) as Box<dyn Fault>)
    })
}

fn build_slowloris<'a>(
    kind: &'a FaultKind,
    cx: &'a BuildContext<'a>,
) -> BoxFuture<'a, Result<Box<dyn Fault>, String>> {
    Box::pin(async move {
        let FaultKind::Slowloris(spec) = kind else {
            return Err(wrong_kind(kind, relapse_flood::SLOWLORIS));
        };
        let (target, _) = cx.flood_target(&spec.url)?;
        let fault = relapse_flood::Slowloris::new(
            target,
            spec.connections,
            spec.sources.clone(),
            spec.header_interval,
            cx.flood_deadline(),
            &[target.ip()],
        )
        .map_err(|e| e.to_string())?;
        Ok(Box::new(fault) as Box<dyn Fault>)
    })
}

fn build_connection_flood<'a>(
    kind: &'a FaultKind,
    cx: &'a BuildContext<'a>,
) -> BoxFuture<'a, Result<Box<dyn Fault>, String>> {
    Box::pin(async move {
        let FaultKind::ConnectionFlood(spec) = kind else {
            return Err(wrong_kind(kind, relapse_flood::CONNECTION_FLOOD));
        };
        let (target, _) = cx.flood_target(&spec.url)?;
        let fault = relapse_flood::ConnectionFlood::new(
            target,
            spec.connections,
            spec.sources.clone(),
            cx.flood_deadline(),
            &[target.ip()],
        )
        .map_err(|e| e.to_string())?;
        Ok(Box::new(fault) as Box<dyn Fault>)
    })
}

#[cfg(test)]
mod tests;
