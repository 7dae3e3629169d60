//! From a checked scenario to a running plan: the webhook sink, the demo target, probes,
//! detection sources and injectors. This is the only place that knows every crate.

use std::path::Path;
use std::sync::Arc;

use relapse_core::engine::{self, Plan, PlannedDetector, PlannedFault, PlannedProbe, Progress};
use relapse_core::measure::SteadyRule;
use relapse_core::report::RunReport;
use relapse_core::scenario::target;
use relapse_core::scenario::{
    DemoComponent, DetectorKind, FaultKind, ProbeKind, ProcessTarget, Scenario, Template, Vars,
};
use relapse_core::sense::{Detector, Probe};
use relapse_demo::{Demo, DemoOptions, Launcher, MonitorOptions};
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
            let options = DemoOptions {
                upstream_timeout: target.upstream_timeout,
                monitor: Some(monitor),
                launcher: launcher.clone(),
                host: None,
            };
            let demo = Demo::start(options)
                .await
                .map_err(|e| harness(format!("demo target: {e}")))?;
            vars.set("demo.url", demo.frontend_url());
            vars.set("demo.frontend.url", demo.frontend_url());
            vars.set("demo.backend.url", demo.backend_url());
            vars.set("demo.frontend.pid", demo.frontend_pid().to_string());
            vars.set("demo.backend.pid", demo.backend_pid().to_string());
            Some(demo)
        }
    };

    let result = match build_plan(scenario, &vars, &sink, demo.as_ref()) {
        Ok(mut plan) => {
            plan.journal = journal.map(|j| Box::new(j) as Box<dyn relapse_core::fault::RevertLog>);
            Ok(engine::run(plan, cancel, progress).await)
        }
        Err(message) => Err(invalid(message)),
    };
    if let Some(demo) = demo {
        demo.shutdown().await;
    }
    let mut report = result?;
    report.file = Some(file.to_path_buf());
    Ok(report)
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
fn build_plan(
    scenario: &Scenario,
    vars: &Vars,
    sink: &WebhookSink,
    demo: Option<&Demo>,
) -> Result<Plan, String> {
    let allowed = &scenario.allow_targets;
    let mut probes = Vec::new();
    for spec in &scenario.probes {
        let probe: Arc<dyn Probe> = match &spec.kind {
            ProbeKind::Http {
                url,
                method,
                timeout,
                expect,
            } => {
                let url = render(url, vars)?;
                let context = |e: String| format!("probe \"{}\": {e}", spec.name);
                reachable(target::http_host(&url), allowed).map_err(context)?;
                Arc::new(
                    HttpProbe::new(&url, method, *timeout, expect.clone())
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
        let context = |e: String| format!("fault \"{}\": {e}", spec.name);
        let fault = match &spec.kind {
            FaultKind::ProcessFreeze {
                target,
                process_group,
            } => {
                let pid = match target {
                    ProcessTarget::Pid(pid) => *pid,
                    ProcessTarget::Pidfile(path) => {
                        relapse_hang::read_pidfile(path).map_err(|e| context(e.to_string()))?
                    }
                    ProcessTarget::Demo(component) => {
                        let demo =
                            demo.ok_or_else(|| context("the demo target is not running".into()))?;
                        match component {
                            DemoComponent::Backend => demo.backend_pid(),
                            DemoComponent::Frontend => demo.frontend_pid(),
                        }
                    }
                };
                relapse_hang::ProcessFreeze::new(pid, *process_group)
                    .map_err(|e| context(e.to_string()))?
            }
        };
        faults.push(PlannedFault {
            name: spec.name.clone(),
            start: spec.start,
            duration: spec.duration,
            fault: Box::new(fault),
        });
    }

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
        journal: None,
    })
}
