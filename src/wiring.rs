//! From a checked scenario to a running plan: the webhook sink, the demo target, probes,
//! detection sources and injectors. This is the only place that knows every crate.

use std::path::Path;
use std::sync::Arc;

use relapse_core::engine::{
    self, Plan, PlannedBacklog, PlannedDetector, PlannedFault, PlannedProbe, Progress,
};
use relapse_core::measure::SteadyRule;
use relapse_core::report::RunReport;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use relapse_core::fault::{RevertInstructions, RevertLog};
use relapse_core::scenario::target;
use relapse_core::scenario::{
    BacklogKind, DbLockTarget, DbProxyMode, DbServer, DemoDatabaseSpec, DemoHostKind, FloodLoad,
    FloodSources, HttpFloodSpec, NetnsTarget, PortsMode, ReserveAmount,
};
use relapse_core::scenario::{
    DemoComponent, DetectorKind, FaultKind, ProbeKind, ProcessTarget, Scenario, Template, Vars,
};
use relapse_core::sense::{Detector, Gauge, Probe};
use relapse_demo::{Demo, DemoHost, DemoOptions, Launcher, MonitorOptions};
use relapse_probe::{
    CommandDetector, HttpHealthDetector, HttpProbe, LogDetector, TcpProbe, WebhookSink,
};
use tokio::sync::watch;

use crate::safety::JournalLog;
use tokio_util::sync::CancellationToken;

/// Why a run could not start. Nothing was injected in either case.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The scenario names something that is not there (a process, a pidfile, an address).
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
    /// The harness could not set itself up (the sink, the demo).
    #[error("{file}: {message}")]
    Harness { file: String, message: String },
}

/// Runs one scenario end to end. The demo (if any) and the sink are started here and stopped
/// before returning, on every path.
///
/// Cancel safety: cancel with `cancel`, not by dropping the future: cancellation reverts with
/// confirmation and returns an `aborted` report.
pub async fn run_scenario(
    scenario: &Scenario,
    file: &Path,
    launcher: &Launcher,
    journal: Option<JournalLog>,
    cancel: CancellationToken,
    progress: Option<watch::Sender<Progress>>,
) -> Result<RunReport, StartError> {
    let file_name = file.display().to_string();
    let invalid = |message: String| StartError::Invalid {
        file: file_name.clone(),
        message,
    };
    let harness = |message: String| StartError::Harness {
        file: file_name.clone(),
        message,
    };

    let sink_stop = CancellationToken::new();
    // Stops the sink on every return path below.
    let _sink_guard = sink_stop.clone().drop_guard();
    let sink = WebhookSink::bind(scenario.sink_listen, sink_stop.clone())
        .await
        .map_err(|e| harness(format!("webhook sink: {e}")))?;
    let mut vars = Vars::default();
    vars.set("sink.url", sink.url());

    // Proxies first: the demo's database may be reached through one.
    let proxies = start_proxies(scenario, &mut vars)
        .await
        .map_err(|e| harness(format!("db_proxy: {e}")))?;
    // Stops the proxies on every return path below (they would otherwise live until exit).
    let _proxies_guard = ProxiesGuard(proxies.clone());

    // The demo's own host, when it runs as one: a namespace journaled before it exists, so a
    // crash of relapse leaves nothing for `cleanup` to miss.
    let mut host = None;
    let mut host_entry = None;
    if scenario.demo.as_ref().map(|d| d.host) == Some(DemoHostKind::Netns) {
        static HOSTS: AtomicU32 = AtomicU32::new(0);
        let n = HOSTS.fetch_add(1, Ordering::SeqCst);
        let name = format!("relapse-{}-{n}", std::process::id());
        if let Some(journal) = &journal {
            let instructions = RevertInstructions {
                kind: "netns",
                json: format!("{{\"name\":\"{name}\"}}"),
            };
            let id = journal
                .clone()
                .record(
                    "demo host",
                    &format!("network namespace {name}"),
                    &instructions,
                )
                .map_err(|e| harness(format!("cannot journal the demo host: {e}")))?;
            host_entry = Some(id);
        }
        let seed = std::process::id().wrapping_mul(131).wrapping_add(n);
        let created = relapse_ports::netns::Host::create(&name, seed)
            .map_err(|e| harness(format!("demo host: {e}")));
        match created {
            Ok(created) => host = Some(created),
            Err(e) => {
                forget_host(&journal, host_entry);
                return Err(e);
            }
        }
    }

    let demo = match &scenario.demo {
        None => None,
        Some(target) => {
            let monitor = MonitorOptions {
                interval: target.monitor.interval,
                timeout: target.monitor.timeout,
                fall: target.monitor.fall,
                rise: target.monitor.rise,
                alertname: target.monitor.alertname.clone(),
                sink_url: Some(sink.url()),
            };
            let demo_host = host.as_ref().map(|h| {
                let mut args: Vec<std::ffi::OsString> = vec![
                    "netns".into(),
                    "exec".into(),
                    h.name().into(),
                    launcher.program.clone().into(),
                ];
                args.extend(launcher.args.iter().cloned());
                DemoHost {
                    frontend_launcher: Launcher {
                        program: "ip".into(),
                        args,
                    },
                    frontend_address: h.inside.into(),
                    backend_address: h.outside.into(),
                }
            });
            let database = match &target.database {
                None => None,
                Some(db) => match demo_database(db, &vars, &scenario.allow_targets) {
                    Ok(database) => Some(database),
                    Err(e) => {
                        drop(host);
                        forget_host(&journal, host_entry);
                        return Err(invalid(format!("demo database: {e}")));
                    }
                },
            };
            let options = DemoOptions {
                upstream_timeout: target.upstream_timeout,
                monitor: Some(monitor),
                launcher: launcher.clone(),
                host: demo_host,
                database,
                auth: target.auth.as_ref().map(|a| relapse_demo::DemoAuth {
                    mitigation: a.mitigation,
                    max_failures: a.max_failures,
                    window: a.window,
                    ban: a.ban,
                }),
            };
            match Demo::start(options).await {
                Ok(demo) => {
                    vars.set("demo.url", demo.frontend_url());
                    vars.set("demo.frontend.url", demo.frontend_url());
                    vars.set("demo.backend.url", demo.backend_url());
                    vars.set(
                        "demo.backend.address",
                        demo.backend_url().trim_start_matches("http://"),
                    );
                    vars.set("demo.frontend.pid", demo.frontend_pid().to_string());
                    vars.set("demo.backend.pid", demo.backend_pid().to_string());
                    let tables = demo.database_tables();
                    vars.set(
                        "demo.mail_table",
                        tables.as_ref().map_or(String::new(), |t| t.mail.clone()),
                    );
                    vars.set(
                        "demo.queue_table",
                        tables.as_ref().map_or(String::new(), |t| t.queue.clone()),
                    );
                    Some(demo)
                }
                Err(e) => {
                    drop(host);
                    forget_host(&journal, host_entry);
                    return Err(harness(format!("demo target: {e}")));
                }
            }
        }
    };

    let context = Context {
        demo: demo.as_ref(),
        host: host.as_ref(),
        program: &launcher.program,
        proxies: &proxies,
    };
    let result = match build_plan(scenario, &vars, &sink, &context).await {
        Ok(mut plan) => {
            plan.journal = journal.clone().map(|j| Box::new(j) as Box<dyn RevertLog>);
            Ok(engine::run(plan, cancel, progress).await)
        }
        Err(message) => Err(invalid(message)),
    };
    if let Some(demo) = demo {
        demo.shutdown().await;
    }
    for proxy in &proxies {
        if !proxy.shutdown(PROXY_SHUTDOWN_GRACE).await {
            tracing::warn!(proxy = %proxy.local_addr(), "db_proxy connections did not close in time");
        }
    }
    if let Some(mut host) = host {
        match host.remove() {
            Ok(()) => forget_host(&journal, host_entry),
            Err(e) => {
                tracing::error!(error = %e, "could not remove the demo host; `relapse cleanup` will")
            }
        }
    }
    let mut report = result?;
    report.file = Some(file.to_path_buf());
    Ok(report)
}

/// How long a db_proxy's connections may take to close when the run ends.
const PROXY_SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Starts the scenario's db_proxies, in pass-through, and sets their template variables.
async fn start_proxies(
    scenario: &Scenario,
    vars: &mut Vars,
) -> Result<Vec<relapse_dbproxy::DbProxy>, String> {
    let mut proxies: Vec<relapse_dbproxy::DbProxy> = Vec::new();
    for spec in &scenario.db_proxies {
        let context = |e: String| format!("\"{}\": {e}", spec.name);
        let upstream = resolve_upstream(&spec.upstream, &scenario.allow_targets)
            .await
            .map_err(context)?;
        let config = relapse_dbproxy::ProxyConfig {
            listen: spec.listen,
            upstream,
            protocol: match spec.server {
                DbServer::Postgres => relapse_dbproxy::Protocol::Postgres,
                DbServer::Mysql => relapse_dbproxy::Protocol::Mysql,
            },
        };
        let proxy = match relapse_dbproxy::DbProxy::start(config).await {
            Ok(proxy) => proxy,
            Err(e) => {
                for started in &proxies {
                    started.shutdown(PROXY_SHUTDOWN_GRACE).await;
                }
                return Err(context(e.to_string()));
            }
        };
        let address = proxy.local_addr();
        vars.set(
            &format!("db_proxy.{}.address", spec.name),
            address.to_string(),
        );
        vars.set(
            &format!("db_proxy.{}.host", spec.name),
            address.ip().to_string(),
        );
        vars.set(
            &format!("db_proxy.{}.port", spec.name),
            address.port().to_string(),
        );
        proxies.push(proxy);
    }
    Ok(proxies)
}

/// The address a proxy forwards to: resolved once, and every address it resolves to must be
/// loopback or allowed (a name could otherwise lead anywhere).
async fn resolve_upstream(
    upstream: &str,
    allowed: &[String],
) -> Result<std::net::SocketAddr, String> {
    let addresses: Vec<std::net::SocketAddr> = tokio::net::lookup_host(upstream)
        .await
        .map_err(|e| format!("cannot resolve {upstream}: {e}"))?
        .collect();
    let host = target::address_host(upstream);
    for address in &addresses {
        if !address.ip().is_loopback() {
            reachable(host, allowed)?;
        }
    }
    addresses
        .first()
        .copied()
        .ok_or_else(|| format!("{upstream} resolves to no address"))
}

/// Shuts the proxies down without waiting when dropped: the path that awaits their shutdown is
/// the normal one; this covers early returns.
struct ProxiesGuard(Vec<relapse_dbproxy::DbProxy>);

impl Drop for ProxiesGuard {
    fn drop(&mut self) {
        for proxy in &self.0 {
            // Cancels their tasks at once; the runtime reaps them.
            let proxy = proxy.clone();
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    proxy.shutdown(PROXY_SHUTDOWN_GRACE).await;
                });
            }
        }
    }
}

/// The demo's database settings, its DSN rendered (it may name a proxy of the run) and checked
/// against the allowlist.
fn demo_database(
    db: &DemoDatabaseSpec,
    vars: &Vars,
    allowed: &[String],
) -> Result<relapse_demo::DemoDatabase, String> {
    let dsn = render(&db.dsn, vars)?;
    reachable(dsn_host(&dsn), allowed)?;
    let profile = if db.misleading_errors {
        relapse_demo::ErrorProfile::MisleadingErrors
    } else {
        relapse_demo::ErrorProfile::Honest
    };
    let dsn = match db.server {
        DbServer::Postgres => relapse_demo::DatabaseDsn::Postgres(dsn),
        DbServer::Mysql => relapse_demo::DatabaseDsn::Mysql(dsn),
    };
    Ok(relapse_demo::DemoDatabase { dsn, profile })
}

/// The host a database connection string names: a URL's authority, or a PostgreSQL key/value
/// DSN's `host=`. A Unix socket path (or no host at all) is local.
fn dsn_host(dsn: &str) -> Option<&str> {
    if let Some((_, rest)) = dsn.split_once("://") {
        let authority = rest.split(['/', '?']).next()?;
        let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
        return target::address_host(authority).filter(|h| !h.is_empty());
    }
    dsn.split_whitespace()
        .find_map(|kv| kv.strip_prefix("host="))
        .filter(|h| !h.starts_with('/'))
}

/// Strikes the demo host's namespace from the journal once it is removed (or was never made).
fn forget_host(journal: &Option<JournalLog>, entry: Option<u64>) {
    if let (Some(journal), Some(id)) = (journal, entry) {
        if let Err(e) = journal.clone().remove(id) {
            tracing::warn!(error = %e, "could not strike the demo host from the journal");
        }
    }
}

/// What the plan may refer to besides the scenario: the running demo, its host, and the relapse
/// executable (which also serves as the port holder).
struct Context<'a> {
    demo: Option<&'a Demo>,
    host: Option<&'a relapse_ports::netns::Host>,
    program: &'a Path,
    /// The scenario's db_proxies, in the order they are declared.
    proxies: &'a [relapse_dbproxy::DbProxy],
}

impl Context<'_> {
    fn pid(&self, target: &ProcessTarget) -> Result<u32, String> {
        Ok(match target {
            ProcessTarget::Pid(pid) => *pid,
            ProcessTarget::Pidfile(path) => {
                relapse_hang::read_pidfile(path).map_err(|e| e.to_string())?
            }
            ProcessTarget::Demo(component) => {
                let demo = self.demo.ok_or("the demo target is not running")?;
                match component {
                    DemoComponent::Backend => demo.backend_pid(),
                    DemoComponent::Frontend => demo.frontend_pid(),
                }
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
}

fn render(template: &Template, vars: &Vars) -> Result<String, String> {
    template.render(vars).map_err(|e| e.to_string())
}

/// Checks a rendered URL or address against the allowlist: hosts that came from template
/// variables were not checked when the scenario was loaded.
fn reachable(host: Option<&str>, allowed: &[String]) -> Result<(), String> {
    match host {
        Some(host) => target::check(host, allowed),
        None => Ok(()),
    }
}

/// Builds every probe, source and injector before anything runs, so a bad target is refused
/// with nothing injected.
async fn build_plan(
    scenario: &Scenario,
    vars: &Vars,
    sink: &WebhookSink,
    context: &Context<'_>,
) -> Result<Plan, String> {
    // Hosts in a namespace relapse made are as much the run's own as loopback.
    let mut allowed = scenario.allow_targets.clone();
    if let Some(host) = context.host {
        allowed.extend([host.inside.to_string(), host.outside.to_string()]);
    }
    let allowed = &allowed;
    let mut probes = Vec::new();
    for spec in &scenario.probes {
        let probe: Arc<dyn Probe> = match &spec.kind {
            ProbeKind::Http {
                url,
                method,
                timeout,
                expect,
                headers,
                body,
            } => {
                let url = render(url, vars)?;
                let context = |e: String| format!("probe \"{}\": {e}", spec.name);
                reachable(target::http_host(&url), allowed).map_err(context)?;
                Arc::new(
                    HttpProbe::new(&url, method, *timeout, expect.clone())
                        .and_then(|probe| probe.with_request(headers, body))
                        .map_err(|e| context(e.to_string()))?,
                )
            }
            ProbeKind::Tcp { address, timeout } => {
                let address = render(address, vars)?;
                let context = |e: String| format!("probe \"{}\": {e}", spec.name);
                reachable(target::address_host(&address), allowed).map_err(context)?;
                Arc::new(TcpProbe::new(&address, *timeout).map_err(|e| context(e.to_string()))?)
            }
        };
        probes.push(PlannedProbe {
            name: spec.name.clone(),
            every: spec.every,
            timeout: spec.kind.timeout(),
            probe,
        });
    }

    let mut detectors = Vec::new();
    for spec in &scenario.detectors {
        let context = |e: String| format!("detection source \"{}\": {e}", spec.name);
        let detector: Box<dyn Detector> = match &spec.kind {
            DetectorKind::Webhook { matchers } => Box::new(sink.detector(matchers.clone())),
            DetectorKind::Http {
                url,
                every,
                timeout,
                healthy,
            } => {
                let url = render(url, vars).map_err(context)?;
                reachable(target::http_host(&url), allowed).map_err(context)?;
                Box::new(
                    HttpHealthDetector::new(&url, *every, *timeout, healthy.clone())
                        .map_err(|e| context(e.to_string()))?,
                )
            }
            DetectorKind::Command {
                run,
                every,
                timeout,
            } => {
                let argv = run
                    .iter()
                    .map(|t| render(t, vars))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(context)?;
                Box::new(CommandDetector::new(argv, *every, *timeout))
            }
            DetectorKind::Log {
                path,
                pattern,
                every,
            } => {
                let regex = regex::Regex::new(pattern).map_err(|e| context(e.to_string()))?;
                Box::new(LogDetector::new(
                    render(path, vars).map_err(context)?.into(),
                    regex,
                    *every,
                ))
            }
        };
        detectors.push(PlannedDetector {
            name: spec.name.clone(),
            resolution: spec.kind.resolution(),
            detector,
        });
    }

    let mut faults = Vec::new();
    for spec in &scenario.faults {
        let context_error = |e: String| format!("fault \"{}\": {e}", spec.name);
        let fault: Box<dyn relapse_core::fault::Fault> = match &spec.kind {
            FaultKind::ProcessFreeze {
                target,
                process_group,
            } => {
                let pid = context.pid(target).map_err(context_error)?;
                Box::new(
                    relapse_hang::ProcessFreeze::new(pid, *process_group)
                        .map_err(|e| context_error(e.to_string()))?,
                )
            }
            FaultKind::FdExhaustion { target, headroom } => {
                let pid = context.pid(target).map_err(context_error)?;
                Box::new(
                    relapse_ports::fd::FdExhaustion::new(pid, *headroom)
                        .map_err(|e| context_error(e.to_string()))?,
                )
            }
            FaultKind::DbLock { server, dsn, lock } => {
                let dsn = render(dsn, vars).map_err(context_error)?;
                reachable(dsn_host(&dsn), allowed).map_err(context_error)?;
                let kind = db_kind(*server);
                let spec = match lock {
                    DbLockTarget::Table { table, mode } => relapse_db::LockSpec::Table {
                        table: render(table, vars).map_err(context_error)?,
                        mode: mode.clone(),
                    },
                    DbLockTarget::Rows {
                        table,
                        where_clause,
                    } => relapse_db::LockSpec::Rows {
                        table: render(table, vars).map_err(context_error)?,
                        where_clause: where_clause.clone(),
                    },
                    DbLockTarget::GlobalRead => relapse_db::LockSpec::GlobalRead,
                };
                Box::new(
                    relapse_db::DbLock::new(kind, &dsn, spec)
                        .await
                        .map_err(|e| context_error(e.to_string()))?,
                )
            }
            FaultKind::DbProxy { proxy, mode } => {
                use relapse_dbproxy::{ErrorCode, ProxyMode};
                let mode = match mode {
                    DbProxyMode::Stall => ProxyMode::Stall,
                    DbProxyMode::StallWrites => ProxyMode::StallWrites,
                    DbProxyMode::Latency { latency, jitter } => ProxyMode::Latency {
                        latency: *latency,
                        jitter: *jitter,
                    },
                    DbProxyMode::Error { code } => ProxyMode::Error {
                        code: match code.as_str() {
                            "55P03" | "1205" => ErrorCode::LockNotAvailable,
                            "40P01" | "1213" => ErrorCode::Deadlock,
                            "57014" | "1317" => ErrorCode::QueryCanceled,
                            other => {
                                return Err(context_error(format!("unknown error code {other}")))
                            }
                        },
                    },
                    DbProxyMode::Reset => ProxyMode::Reset,
                    DbProxyMode::RefuseNew => ProxyMode::RefuseNew,
                };
                let proxy = context
                    .proxies
                    .get(*proxy)
                    .ok_or_else(|| context_error("its db_proxy is not running".to_string()))?;
                Box::new(relapse_dbproxy::DbProxyFault::new(proxy.clone(), mode))
            }
            FaultKind::HttpFlood(flood) => {
                let spec =
                    flood_spec(flood, vars, allowed, spec.duration).map_err(context_error)?;
                Box::new(
                    relapse_flood::HttpFlood::new(spec)
                        .map_err(|e| context_error(e.to_string()))?,
                )
            }
            FaultKind::Slowloris {
                url,
                connections,
                sources,
                header_interval,
            } => {
                let (target, _) = flood_target(url, vars, allowed).map_err(context_error)?;
                Box::new(
                    relapse_flood::Slowloris::new(
                        target,
                        *connections,
                        flood_sources(sources),
                        *header_interval,
                        spec.duration + FLOOD_SELF_STOP_MARGIN,
                        &[target.ip()],
                    )
                    .map_err(|e| context_error(e.to_string()))?,
                )
            }
            FaultKind::ConnectionFlood {
                url,
                connections,
                sources,
            } => {
                let (target, _) = flood_target(url, vars, allowed).map_err(context_error)?;
                Box::new(
                    relapse_flood::ConnectionFlood::new(
                        target,
                        *connections,
                        flood_sources(sources),
                        spec.duration + FLOOD_SELF_STOP_MARGIN,
                        &[target.ip()],
                    )
                    .map_err(|e| context_error(e.to_string()))?,
                )
            }
            FaultKind::PortExhaustion {
                target,
                mode,
                allow_own_namespace,
            } => {
                use relapse_ports::ports::{Amount, Mode};
                let path = context.netns_path(target).map_err(context_error)?;
                let destination = |t: &Template| -> Result<std::net::SocketAddr, String> {
                    let text = render(t, vars)?;
                    reachable(target::address_host(&text), allowed)?;
                    text.parse()
                        .map_err(|_| format!("destination \"{text}\" is not IP:PORT"))
                };
                let mode = match mode {
                    PortsMode::Reserve(ReserveAmount::All) => Mode::Reserve(Amount::All),
                    PortsMode::Reserve(ReserveAmount::Fraction(f)) => {
                        Mode::Reserve(Amount::Fraction(*f))
                    }
                    PortsMode::Reserve(ReserveAmount::LeaveFree(n)) => {
                        Mode::Reserve(Amount::LeaveFree(*n))
                    }
                    PortsMode::Leak {
                        destination: d,
                        rate,
                        count,
                    } => Mode::Leak {
                        destination: destination(d).map_err(context_error)?,
                        rate: *rate,
                        count: *count,
                    },
                    PortsMode::TimeWait {
                        destination: d,
                        rate,
                        count,
                    } => Mode::TimeWait {
                        destination: destination(d).map_err(context_error)?,
                        rate: *rate,
                        count: *count,
                    },
                };
                let holder = relapse_ports::ports::HolderLauncher {
                    program: context.program.to_path_buf(),
                    args: vec!["__hold-ports".to_string()],
                };
                Box::new(
                    relapse_ports::ports::PortExhaustion::new(
                        path,
                        mode,
                        *allow_own_namespace,
                        holder,
                    )
                    .map_err(|e| context_error(e.to_string()))?,
                )
            }
        };
        faults.push(PlannedFault {
            name: spec.name.clone(),
            start: spec.start,
            duration: spec.duration,
            fault,
        });
    }

    let backlog = match &scenario.backlog {
        None => None,
        Some(spec) => {
            let context = |e: String| format!("backlog \"{}\": {e}", spec.name);
            let gauge: Arc<dyn Gauge> = match &spec.kind {
                BacklogKind::Metric { url, metric } => {
                    let url = render(url, vars).map_err(context)?;
                    reachable(target::http_host(&url), allowed).map_err(context)?;
                    Arc::new(
                        relapse_probe::MetricGauge::new(&url, metric, spec.timeout)
                            .map_err(|e| context(e.to_string()))?,
                    )
                }
                BacklogKind::Sql { server, dsn, query } => {
                    let dsn = render(dsn, vars).map_err(context)?;
                    reachable(dsn_host(&dsn), allowed).map_err(context)?;
                    let query = render(query, vars).map_err(context)?;
                    Arc::new(
                        relapse_db::SqlGauge::new(db_kind(*server), &dsn, &query)
                            .map_err(context)?,
                    )
                }
            };
            Some(PlannedBacklog {
                name: spec.name.clone(),
                every: spec.every,
                timeout: spec.timeout,
                max: spec.max,
                gauge,
            })
        }
    };

    let sli = &scenario.probes[scenario.steady_state.probe];
    Ok(Plan {
        scenario: scenario.name.clone(),
        probes,
        sli: scenario.steady_state.probe,
        steady: SteadyRule {
            window: scenario.steady_state.window,
            min_success: scenario.steady_state.min_success,
            max_p99: scenario.steady_state.max_p99,
            probe_every: sli.every,
        },
        steady_timeout: scenario.steady_state.timeout,
        detectors,
        faults,
        gates: scenario.gates.clone(),
        limits: scenario.limits.clone(),
        stops: scenario.stops.clone(),
        backlog,
        journal: None,
    })
}

/// How long past its scheduled duration a flood stops by itself, should the revert never come.
const FLOOD_SELF_STOP_MARGIN: std::time::Duration = std::time::Duration::from_secs(5);

/// A flood's target, rendered (its own per-request placeholders left in) and checked against the
/// allowlist; returns the address and the path.
fn flood_target(
    url: &Template,
    vars: &Vars,
    allowed: &[String],
) -> Result<(std::net::SocketAddr, String), String> {
    let url = url
        .render_keeping(vars, relapse_core::scenario::is_flood_placeholder)
        .map_err(|e| e.to_string())?;
    reachable(target::http_host(&url), allowed)?;
    relapse_flood::LoadSpec::parse_url(&url).map_err(|e| e.to_string())
}

fn flood_sources(sources: &FloodSources) -> relapse_flood::Sources {
    match sources {
        FloodSources::Default => relapse_flood::Sources::Default,
        FloodSources::List(list) => relapse_flood::Sources::List(list.clone()),
        FloodSources::Cidr { network, prefix } => relapse_flood::Sources::Cidr {
            network: *network,
            prefix: *prefix,
        },
    }
}

/// The load generator's spec of an `http_flood`: bounded by its request count and by the
/// fault's duration (plus a margin: the engine reverts it on schedule, this is the backstop).
fn flood_spec(
    flood: &HttpFloodSpec,
    vars: &Vars,
    allowed: &[String],
    duration: std::time::Duration,
) -> Result<relapse_flood::LoadSpec, String> {
    let (target, path) = flood_target(&flood.url, vars, allowed)?;
    let mut request = relapse_flood::RequestTemplate::new(&flood.method, &path, &flood.body)
        .map_err(|e| e.to_string())?;
    for (name, value) in &flood.headers {
        request = request.header(name, value).map_err(|e| e.to_string())?;
    }
    let spec = relapse_flood::LoadSpec::new(target)
        .request(request)
        .keep_alive(flood.keep_alive)
        .sources(flood_sources(&flood.sources))
        .ramp_up(flood.ramp_up)
        .max_requests(flood.max_requests)
        .max_duration(duration + FLOOD_SELF_STOP_MARGIN)
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
    Ok(spec)
}

fn db_kind(server: DbServer) -> relapse_db::DbKind {
    match server {
        DbServer::Postgres => relapse_db::DbKind::Postgres,
        DbServer::Mysql => relapse_db::DbKind::Mysql,
    }
}
