//! From a checked scenario and a started harness to the engine's plan: every probe, detection
//! source, backlog gauge and injector is built before anything runs, so a bad target is refused
//! with nothing injected. Faults are built through the kind table.

use std::sync::Arc;

use relapse_core::engine::{Plan, PlannedBacklog, PlannedDetector, PlannedFault, PlannedProbe};
use relapse_core::measure::SteadyRule;
use relapse_core::report::Placed;
use relapse_core::scenario::{
    BacklogKind, DetectorKind, FaultKind, FloodLoad, ProbeKind, Scenario, Vars,
};
use relapse_core::sense::{Detector, Gauge, Probe};
use relapse_probe::{
    AlertmanagerDetector, CommandDetector, HttpHealthDetector, HttpProbe, ImapProbe, LogDetector,
    PrometheusDetector, TcpProbe,
};

use crate::harness::Harness;
use crate::kinds::{self, BuildContext};
use crate::reach::{dsn_host, reachable, reachable_address, reachable_url, render};

/// Builds the plan; an error names the part of the scenario it came from.
pub async fn build_plan(scenario: &Scenario, harness: &Harness) -> Result<Plan, String> {
    let vars = harness.vars();
    let allowed = harness.allowed(scenario);
    let allowed = allowed.as_slice();

    let mut probes = Vec::new();
    for spec in &scenario.probes {
        let context = |e: String| format!("probe \"{}\": {e}", spec.name);
        let (probe, placement) = match &spec.on {
            None => (
                build_probe(&spec.kind, vars, allowed).map_err(context)?,
                None,
            ),
            Some(remote) => {
                let agent = connected(harness, &remote.agent).map_err(context)?;
                let probe = agent.probe(spec, remote, vars).await.map_err(context)?;
                (
                    probe,
                    Some(agent.placement(Placed::Probe(spec.name.clone()))),
                )
            }
        };
        probes.push(PlannedProbe {
            name: spec.name.clone(),
            every: spec.every,
            timeout: spec.kind.timeout(),
            probe,
            placement,
        });
    }

    let mut detectors = Vec::new();
    for spec in &scenario.detectors {
        let context = |e: String| format!("detection source \"{}\": {e}", spec.name);
        let detector: Box<dyn Detector> = match &spec.kind {
            DetectorKind::Webhook { matchers } => {
                Box::new(harness.sink().detector(matchers.clone()))
            }
            DetectorKind::Http {
                url,
                every,
                timeout,
                healthy,
            } => {
                let url = render(url, vars).map_err(context)?;
                reachable_url(&url, allowed).map_err(context)?;
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
            DetectorKind::Prometheus {
                url,
                query,
                every,
                timeout,
                above,
            } => {
                let url = render(url, vars).map_err(context)?;
                reachable_url(&url, allowed).map_err(context)?;
                Box::new(
                    PrometheusDetector::new(&url, query, *every, *timeout, *above)
                        .map_err(|e| context(e.to_string()))?,
                )
            }
            DetectorKind::Alertmanager {
                url,
                matchers,
                every,
                timeout,
            } => {
                let url = render(url, vars).map_err(context)?;
                reachable_url(&url, allowed).map_err(context)?;
                Box::new(
                    AlertmanagerDetector::new(&url, matchers.clone(), *every, *timeout)
                        .map_err(|e| context(e.to_string()))?,
                )
            }
        };
        detectors.push(PlannedDetector {
            name: spec.name.clone(),
            resolution: spec.kind.resolution(),
            detector,
        });
    }

    let scratch_mounts = harness.scratch_mounts();
    let gates = harness.gates();
    let protected = harness.protected();
    let mut faults = Vec::new();
    for spec in &scenario.faults {
        let context = BuildContext {
            vars,
            allowed,
            demo: harness.demo(),
            host: harness.host(),
            proxies: harness.proxies(),
            program: harness.program(),
            duration: spec.duration,
            scratch_mounts: &scratch_mounts,
            gates: &gates,
            protected: &protected,
        };
        let in_context = |e: String| format!("fault \"{}\": {e}", spec.name);
        let mut placements = Vec::new();
        let fault = match spec.on.as_slice() {
            [] => kinds::build(&spec.kind, &context)
                .await
                .map_err(in_context)?,
            [remote] => {
                let agent = connected(harness, &remote.agent).map_err(in_context)?;
                placements.push(agent.placement(Placed::Fault(spec.name.clone())));
                agent.fault(spec, remote, vars)
            }
            shards => {
                let rate = shard_rate(&spec.kind, shards.len());
                let mut faults = Vec::with_capacity(shards.len());
                for remote in shards {
                    let agent = connected(harness, &remote.agent).map_err(in_context)?;
                    placements.push(agent.placement(Placed::Fault(spec.name.clone())));
                    faults.push((agent.remote_fault(spec, remote, vars, true), rate));
                }
                let describe = format!("{} \"{}\"", spec.kind.name(), spec.name);
                let counts_requests = matches!(spec.kind, FaultKind::HttpFlood(_));
                Box::new(crate::remote::SpreadFault::new(
                    describe,
                    faults,
                    counts_requests,
                ))
            }
        };
        faults.push(PlannedFault {
            name: spec.name.clone(),
            start: spec.start,
            duration: spec.duration,
            fault,
            gates: spec.gates.clone(),
            placements,
        });
    }

    let backlog = match &scenario.backlog {
        None => None,
        Some(spec) => {
            let context = |e: String| format!("backlog \"{}\": {e}", spec.name);
            let gauge: Arc<dyn Gauge> = match &spec.kind {
                BacklogKind::Metric { url, metric } => {
                    let url = render(url, vars).map_err(context)?;
                    reachable_url(&url, allowed).map_err(context)?;
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
                        relapse_db::SqlGauge::new((*server).into(), &dsn, &query)
                            .map_err(|e| context(e.to_string()))?,
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
        mitigation: scenario.mitigation.clone(),
        expect: scenario.expect.clone(),
        limits: scenario.limits.clone(),
        stops: scenario.stops.clone(),
        backlog,
        journal: None,
        aborts: None,
        pacer: Arc::new(relapse_probe::KernelPacer),
    })
}

/// Each shard's asked rate when a flood of the open model is spread over `shards` agents (the
/// loader's shares of it).
fn shard_rate(kind: &FaultKind, shards: usize) -> Option<f64> {
    match kind {
        FaultKind::HttpFlood(flood) => match flood.load {
            FloodLoad::Open { rate, .. } => Some(rate / shards as f64),
            FloodLoad::Closed { .. } => None,
        },
        _ => None,
    }
}

fn connected<'a>(
    harness: &'a Harness,
    agent: &str,
) -> Result<&'a crate::remote::Connected, String> {
    crate::remote::find(harness.agents(), agent)
        .ok_or_else(|| format!("agent \"{agent}\" is not connected"))
}

/// A probe that checks from this host (or, on an agent, from the agent's): its targets
/// rendered with `vars` and checked against `allowed`.
pub fn build_probe(
    kind: &ProbeKind,
    vars: &Vars,
    allowed: &[String],
) -> Result<Arc<dyn Probe>, String> {
    Ok(match kind {
        ProbeKind::Http {
            url,
            method,
            timeout,
            expect,
            headers,
            body,
        } => {
            let url = render(url, vars)?;
            reachable_url(&url, allowed)?;
            Arc::new(
                HttpProbe::new(&url, method, *timeout, expect.clone())
                    .and_then(|probe| probe.with_request(headers, body))
                    .map_err(|e| e.to_string())?,
            )
        }
        ProbeKind::Tcp { address, timeout } => {
            let address = render(address, vars)?;
            reachable_address(&address, allowed)?;
            Arc::new(TcpProbe::new(&address, *timeout).map_err(|e| e.to_string())?)
        }
        ProbeKind::Imap {
            address,
            user,
            password,
            mailbox,
            fetch_header,
            timeout,
        } => {
            let address = render(address, vars)?;
            reachable_address(&address, allowed)?;
            Arc::new(
                ImapProbe::new(
                    &address,
                    user,
                    password,
                    mailbox,
                    fetch_header.clone(),
                    *timeout,
                )
                .map_err(|e| e.to_string())?,
            )
        }
    })
}
