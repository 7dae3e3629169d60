//! One run's harness: what relapse starts around a scenario — the webhook sink, the db_proxies,
//! the demo's host namespace, the demo and its tables — started once, in order, and torn down
//! once, in reverse order, on every path: a normal end, an error, and a failure half way through
//! start-up (which tears down what had started). What outlives a crash (the namespace, the
//! tables) is journaled before it exists, so the guardian or `relapse cleanup` removes it.
//!
//! Here: the order of start-up and of teardown. The demo is started in `demo`, the run's own
//! file systems in `file_systems`, its `[[target.process]]` in `processes`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use relapse_core::engine::{self, Progress};
use relapse_core::fault::{RevertInstructions, RevertLog};
use relapse_core::report::RunReport;
use relapse_core::scenario::{target, Scenario, Vars};
use relapse_demo::{Demo, Launcher};
use relapse_ports::netns::Host;
use relapse_probe::WebhookSink;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::reach::resolve_upstream;
use crate::safety::JournalLog;

mod demo;
mod file_systems;
pub mod processes;

/// The journal kind of the demo's tables (a [`relapse_demo::DemoTablesRecord`]).
pub const DEMO_TABLES: &str = "demo_tables";

/// How long a db_proxy's connections may take to close when the run ends.
const PROXY_SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

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

/// Runs one scenario end to end: starts the harness, builds the plan, runs the engine, tears the
/// harness down.
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
    let mut harness = Harness::start(scenario, launcher, journal.clone())
        .await
        .map_err(|failure| failure.into_start_error(&file_name))?;
    let result = match crate::plan::build_plan(scenario, &harness).await {
        Ok(mut plan) => {
            plan.journal = journal.map(|j| Box::new(j) as Box<dyn RevertLog>);
            plan.aborts = harness.take_lost_leases();
            Ok(engine::run(plan, cancel, progress).await)
        }
        Err(message) => Err(StartError::Invalid {
            file: file_name,
            message,
        }),
    };
    let ended = harness.shutdown().await;
    let mut report = result?;
    report.file = Some(file.to_path_buf());
    report.run_dir = ended.run_dir;
    report.processes = ended
        .processes
        .into_iter()
        .map(|p| relapse_core::report::ProcessReport {
            name: p.name,
            pid: p.pid,
            log: p.log,
            ended: p.how,
        })
        .collect();
    Ok(report)
}

/// What a harness leaves behind for the report: the run's directory and how its processes
/// ended.
#[derive(Debug, Default)]
pub struct Ended {
    pub run_dir: Option<PathBuf>,
    pub processes: Vec<processes::Ended>,
}

/// A start-up failure: whose fault it is decides the exit code.
#[derive(Debug)]
pub enum StartFailure {
    /// The scenario names something that is not there.
    Invalid(String),
    /// The harness could not set itself up.
    Harness(String),
}

impl StartFailure {
    fn into_start_error(self, file: &str) -> StartError {
        match self {
            StartFailure::Invalid(message) => StartError::Invalid {
                file: file.to_string(),
                message,
            },
            StartFailure::Harness(message) => StartError::Harness {
                file: file.to_string(),
                message,
            },
        }
    }
}

/// What relapse started for one run. Made by [`Harness::start`], ended by
/// [`Harness::shutdown`]; dropping it without a shutdown (a dropped future, a panic) still stops
/// the sink and the demo, and leaves the namespace and tables to the journal.
pub struct Harness {
    journal: Option<JournalLog>,
    program: PathBuf,
    vars: Vars,
    sink: Option<(WebhookSink, CancellationToken)>,
    proxies: Vec<relapse_dbproxy::DbProxy>,
    /// The demo's host, and its journal entry.
    host: Option<(Host, Option<u64>)>,
    /// The file systems relapse made for the run, and their journal entries.
    scratch: Vec<(relapse_fs::ScratchFs, Option<u64>)>,
    /// The FUSE gates relapse mounted for the run, and their journal entries.
    gates: Vec<(relapse_fs::Gate, Option<u64>)>,
    /// The demo's tables as the guardian would drop them (on the real server, not through a
    /// proxy), and their journal entry.
    tables: Option<(relapse_demo::DemoTablesRecord, Option<u64>)>,
    demo: Option<Demo>,
    /// `{run.dir}`: made for the run's processes, kept after it.
    output_dir: Option<PathBuf>,
    /// The run's `[[target.process]]`, in the order they started.
    processes: Vec<processes::Started>,
    /// The run's agents, each with its lease held, and the lease's journal entry.
    agents: Vec<(crate::remote::Connected, Option<u64>)>,
    /// Why an agent's lease was lost, for the engine to abort the run at once.
    lost: (
        tokio::sync::mpsc::UnboundedSender<String>,
        Option<tokio::sync::mpsc::UnboundedReceiver<String>>,
    ),
}

impl Harness {
    /// Starts everything the scenario asks for. On a failure, what had started is torn down
    /// before the error is returned.
    pub async fn start(
        scenario: &Scenario,
        launcher: &Launcher,
        journal: Option<JournalLog>,
    ) -> Result<Harness, StartFailure> {
        let mut harness = Harness {
            journal,
            program: launcher.program.clone(),
            vars: Vars::default(),
            sink: None,
            proxies: Vec::new(),
            host: None,
            scratch: Vec::new(),
            gates: Vec::new(),
            tables: None,
            demo: None,
            output_dir: None,
            processes: Vec::new(),
            agents: Vec::new(),
            lost: {
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                (tx, Some(rx))
            },
        };
        let started = match harness.start_parts(scenario, launcher).await {
            Ok(()) => harness.start_processes(scenario).await,
            Err(failure) => Err(failure),
        };
        let started = match started {
            Ok(()) => harness.connect_agents(scenario).await,
            Err(failure) => Err(failure),
        };
        match started {
            Ok(()) => Ok(harness),
            Err(failure) => {
                harness.shutdown().await;
                Err(failure)
            }
        }
    }

    async fn start_parts(
        &mut self,
        scenario: &Scenario,
        launcher: &Launcher,
    ) -> Result<(), StartFailure> {
        let harness = StartFailure::Harness;
        let stop = CancellationToken::new();
        let sink = WebhookSink::bind(scenario.sink_listen, stop.clone())
            .await
            .map_err(|e| harness(format!("webhook sink: {e}")))?;
        self.vars.set("sink.url", sink.url());
        self.sink = Some((sink, stop));

        // Proxies first: the demo's database may be reached through one. `upstream` holds the
        // same variables naming the servers behind them, for what must outlive the proxies.
        let mut upstream = self.vars.clone();
        for spec in &scenario.db_proxies {
            let context = |e: String| harness(format!("db_proxy \"{}\": {e}", spec.name));
            let address = resolve_upstream(&spec.upstream, &scenario.allow_targets)
                .await
                .map_err(context)?;
            let config = relapse_dbproxy::ProxyConfig {
                listen: spec.listen,
                upstream: address,
                protocol: spec.server.into(),
            };
            let proxy = relapse_dbproxy::DbProxy::start(config)
                .await
                .map_err(|e| context(e.to_string()))?;
            set_address_vars(&mut self.vars, &spec.name, proxy.local_addr());
            let host = target::address_host(&spec.upstream).unwrap_or(&spec.upstream);
            let port = spec.upstream.rsplit_once(':').map_or("", |(_, p)| p);
            set_vars(&mut upstream, &spec.name, &spec.upstream, host, port);
            self.proxies.push(proxy);
        }

        for spec in &scenario.scratch_fs {
            self.start_scratch(spec).await?;
        }
        for spec in &scenario.fs_gates {
            self.start_gate(spec).await?;
        }

        match &scenario.demo {
            Some(target) => {
                self.start_demo(target, launcher, &upstream, &scenario.allow_targets)
                    .await
            }
            None => Ok(()),
        }
    }

    /// The run's `[[target.process]]`, after the demo (a proxy in front of it names its
    /// address), in order, each journaled before it exists and ready before the next starts.
    async fn start_processes(&mut self, scenario: &Scenario) -> Result<(), StartFailure> {
        if scenario.processes.is_empty() {
            return Ok(());
        }
        let harness = StartFailure::Harness;
        let dir = self.new_output_dir(&scenario.name);
        std::fs::create_dir_all(&dir)
            .map_err(|e| harness(format!("run directory {}: {e}", dir.display())))?;
        self.vars.set(
            relapse_core::scenario::RUN_DIR_VARIABLE,
            dir.display().to_string(),
        );
        self.output_dir = Some(dir.clone());
        let ports = processes::pick_ports(scenario.processes.iter().flat_map(|p| &p.ports))
            .map_err(|e| harness(format!("picking free loopback ports: {e}")))?;
        for (name, port) in ports {
            self.vars.set(&format!("port.{name}"), port.to_string());
        }
        let allowed = self.allowed(scenario);
        for spec in &scenario.processes {
            let journal = self.journal.clone();
            let record = |record: &processes::ProcessRecord| match journal {
                None => Ok(None),
                Some(mut journal) => journal
                    .record(
                        "process",
                        &format!("process \"{}\" started for the run", record.name),
                        &RevertInstructions::for_kind(processes::KIND, record),
                    )
                    .map(Some)
                    .map_err(|e| format!("cannot journal the process: {e}")),
            };
            match processes::start(spec, &self.vars, &dir, &allowed, record).await {
                Ok(started) => {
                    self.vars.set(
                        &format!("process.{}.pid", spec.name),
                        started.pid.to_string(),
                    );
                    self.vars.set(
                        &format!("process.{}.log", spec.name),
                        started.log.display().to_string(),
                    );
                    self.processes.push(started);
                }
                Err(error) => {
                    self.forget(error.entry);
                    if let Some(started) = error.started {
                        self.processes.push(started);
                    }
                    return Err(harness(format!(
                        "process \"{}\": {}",
                        spec.name, error.message
                    )));
                }
            }
        }
        Ok(())
    }

    /// `{run.dir}`: a fresh directory under the state directory's `output/` (beside the
    /// journal, which goes when the run does), named after the scenario and the time, kept.
    fn new_output_dir(&self, scenario: &str) -> PathBuf {
        static RUNS: AtomicU32 = AtomicU32::new(0);
        let n = RUNS.fetch_add(1, Ordering::SeqCst);
        let safe: String = scenario
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
            .to_string()
            .replace(':', "");
        let name = format!("{safe}-{stamp}-{}-{n}", std::process::id());
        match &self.journal {
            Some(journal) => {
                let runs = journal.dir();
                let state = runs.parent().and_then(Path::parent).unwrap_or(&runs);
                state.join("output").join(name)
            }
            None => std::env::temp_dir().join(format!("relapse-output-{name}")),
        }
    }

    /// Where what the run makes on disk lives: the journal's run directory, else a temporary one.
    fn run_dir(&self) -> PathBuf {
        match &self.journal {
            Some(journal) => journal.dir(),
            None => std::env::temp_dir().join(format!("relapse-{}-scratch", std::process::id())),
        }
    }

    /// Journals something the harness is about to make; `None` when the run has no journal.
    fn journal_record(
        &self,
        what: &str,
        description: &str,
        instructions: RevertInstructions,
    ) -> Result<Option<u64>, StartFailure> {
        let Some(journal) = &self.journal else {
            return Ok(None);
        };
        journal
            .clone()
            .record(what, description, &instructions)
            .map(Some)
            .map_err(|e| StartFailure::Harness(format!("cannot journal the {what}: {e}")))
    }

    /// Strikes an entry once what it records is gone (or was never made).
    fn forget(&self, entry: Option<u64>) {
        if let (Some(journal), Some(id)) = (&self.journal, entry) {
            if let Err(e) = journal.clone().remove(id) {
                tracing::warn!(error = %e, "could not strike a harness entry from the journal");
            }
        }
    }

    /// Tears down what started, in reverse order; each part once. Returns what the report
    /// needs of it.
    pub async fn shutdown(mut self) -> Ended {
        let mut ended = Ended {
            run_dir: self.output_dir.clone(),
            processes: Vec::new(),
        };
        // Agents first: they were connected last, and their faults act on what follows.
        for (mut agent, entry) in std::mem::take(&mut self.agents).into_iter().rev() {
            match agent.release().await {
                Ok(()) => self.forget(entry),
                Err(e) => tracing::error!(
                    error = %e,
                    "could not release the run on an agent; its lease lapses there, and `relapse cleanup` tries again"
                ),
            }
        }
        for started in std::mem::take(&mut self.processes).into_iter().rev() {
            let entry = started.entry;
            let process = started.stop().await;
            tracing::debug!(process = %process.name, how = %process.how, "target process");
            self.forget(entry);
            ended.processes.push(process);
        }
        ended.processes.reverse();
        if let Some(demo) = self.demo.take() {
            let event_log = demo.event_log().map(Path::to_path_buf);
            demo.shutdown().await;
            // A journaled run's directory goes with its event log; a temporary one must not
            // keep it.
            if let (None, Some(path)) = (&self.journal, event_log) {
                let _ = std::fs::remove_file(path);
            }
        }
        if let Some((record, entry)) = self.tables.take() {
            // The demo drops its tables when it stops; this confirms it (and drops them when
            // the demo could not, or never got to start). Idempotent.
            match relapse_demo::drop_tables(&record).await {
                Ok(done) => {
                    tracing::debug!(%done, "demo tables");
                    self.forget(entry);
                }
                Err(e) => {
                    tracing::error!(error = %e, "could not drop the demo tables; `relapse cleanup` will")
                }
            }
        }
        for proxy in std::mem::take(&mut self.proxies) {
            if !proxy.shutdown(PROXY_SHUTDOWN_GRACE).await {
                tracing::warn!(proxy = %proxy.local_addr(), "db_proxy connections did not close in time");
            }
        }
        for (gate, entry) in std::mem::take(&mut self.gates).into_iter().rev() {
            let mountpoint = gate.mountpoint().to_path_buf();
            match gate.stop().await {
                Ok(done) => {
                    tracing::debug!(%done, "fs_gate");
                    let _ = std::fs::remove_dir(&mountpoint);
                    self.forget(entry);
                }
                Err(e) => {
                    tracing::error!(error = %e, "could not stop an fs_gate; `relapse cleanup` will")
                }
            }
        }
        for (fs, entry) in std::mem::take(&mut self.scratch).into_iter().rev() {
            let removed = tokio::task::spawn_blocking(move || fs.remove()).await;
            match removed {
                Ok(Ok(done)) => {
                    tracing::debug!(%done, "scratch_fs");
                    self.forget(entry);
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "could not remove a scratch file system; `relapse cleanup` will")
                }
                Err(e) => {
                    tracing::error!(error = %e, "removing a scratch file system panicked; `relapse cleanup` will")
                }
            }
        }
        if let Some((mut host, entry)) = self.host.take() {
            match host.remove() {
                Ok(()) => self.forget(entry),
                Err(e) => {
                    tracing::error!(error = %e, "could not remove the demo host; `relapse cleanup` will")
                }
            }
        }
        if let Some((_, stop)) = self.sink.take() {
            stop.cancel();
        }
        ended
    }

    pub fn vars(&self) -> &Vars {
        &self.vars
    }

    /// The run's connected agents.
    pub fn agents(&self) -> impl Iterator<Item = &crate::remote::Connected> {
        self.agents.iter().map(|(a, _)| a)
    }

    /// Why an agent's lease was lost, once: the engine aborts the run on it (the agent has
    /// reverted, or is reverting, the run's faults there).
    pub fn take_lost_leases(&mut self) -> Option<tokio::sync::mpsc::UnboundedReceiver<String>> {
        self.lost.1.take()
    }

    /// Connects each `[[agent]]` and takes the run's lease on it, journaled first.
    async fn connect_agents(&mut self, scenario: &Scenario) -> Result<(), StartFailure> {
        for spec in &scenario.agents {
            crate::remote::check_files(spec)
                .map_err(|e| StartFailure::Invalid(format!("agent \"{}\": {e}", spec.name)))?;
            let mut entry = None;
            let journal = self.journal.clone();
            let connected = crate::remote::Connected::connect(
                spec,
                |record| {
                    if let Some(mut journal) = journal {
                        entry = Some(
                            journal
                                .record(
                                    &format!("agent {}", record.agent),
                                    &format!(
                                        "run {} on agent {} ({})",
                                        record.run, record.agent, record.url
                                    ),
                                    &RevertInstructions::new(record),
                                )
                                .map_err(|e| format!("cannot journal the agent's lease: {e}"))?,
                        );
                    }
                    Ok(())
                },
                self.lost.0.clone(),
            )
            .await;
            let connected = match connected {
                Ok(connected) => connected,
                Err(error) => {
                    // Journaled, but no lease was taken: nothing to end on the agent.
                    if let (Some(mut journal), Some(id)) = (self.journal.clone(), entry) {
                        if let Err(error) = journal.remove(id) {
                            tracing::warn!(%error, "the agent's journal entry stays (its release is harmless)");
                        }
                    }
                    return Err(StartFailure::Harness(format!(
                        "agent \"{}\": {error}",
                        spec.name
                    )));
                }
            };
            self.vars
                .set(&format!("agent.{}.address", spec.name), spec.host.clone());
            self.vars
                .set(&format!("agent.{}.url", spec.name), spec.url.clone());
            self.agents.push((connected, entry));
        }
        Ok(())
    }

    /// The hosts besides loopback the run may reach: the scenario's, and the addresses of the
    /// namespace relapse made (as much the run's own as loopback).
    pub fn allowed(&self, scenario: &Scenario) -> Vec<String> {
        let mut allowed = scenario.allow_targets.clone();
        if let Some((host, _)) = &self.host {
            allowed.extend([host.inside.to_string(), host.outside.to_string()]);
        }
        allowed
    }

    pub fn sink(&self) -> &WebhookSink {
        &self.sink.as_ref().expect("a started harness has a sink").0
    }

    pub fn demo(&self) -> Option<&Demo> {
        self.demo.as_ref()
    }

    pub fn host(&self) -> Option<&Host> {
        self.host.as_ref().map(|(h, _)| h)
    }

    pub fn proxies(&self) -> &[relapse_dbproxy::DbProxy] {
        &self.proxies
    }

    pub fn program(&self) -> &Path {
        &self.program
    }

    /// Handles on the run's gates, in the order they are declared.
    pub fn gates(&self) -> Vec<relapse_fs::GateHandle> {
        self.gates.iter().map(|(gate, _)| gate.handle()).collect()
    }

    /// The mount points of the file systems relapse made for the run.
    pub fn scratch_mounts(&self) -> Vec<PathBuf> {
        self.scratch
            .iter()
            .map(|(fs, _)| fs.mountpoint().to_path_buf())
            .collect()
    }

    /// What no fault may make unwritable: the journal, the relapse executable, the working
    /// directory.
    pub fn protected(&self) -> Vec<PathBuf> {
        let mut protected = vec![self.program.clone()];
        if let Some(journal) = &self.journal {
            protected.push(journal.dir());
        }
        if let Ok(cwd) = std::env::current_dir() {
            protected.push(cwd);
        }
        protected
    }
}

impl Drop for Harness {
    /// The backstop for a harness dropped without [`Harness::shutdown`]: stops what cannot be
    /// left running. The demo's children die with it (`kill_on_drop`), the host removes itself
    /// (`Host`'s drop); the tables stay journaled for the guardian.
    fn drop(&mut self) {
        for started in &self.processes {
            started.kill_now();
        }
        if let Some((_, stop)) = &self.sink {
            stop.cancel();
        }
        for proxy in std::mem::take(&mut self.proxies) {
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    proxy.shutdown(PROXY_SHUTDOWN_GRACE).await;
                });
            }
        }
    }
}

fn set_vars(vars: &mut Vars, proxy: &str, address: &str, host: &str, port: &str) {
    vars.set(&format!("db_proxy.{proxy}.address"), address);
    vars.set(&format!("db_proxy.{proxy}.host"), host);
    vars.set(&format!("db_proxy.{proxy}.port"), port);
}

fn set_address_vars(vars: &mut Vars, proxy: &str, address: SocketAddr) {
    set_vars(
        vars,
        proxy,
        &address.to_string(),
        &address.ip().to_string(),
        &address.port().to_string(),
    );
}
