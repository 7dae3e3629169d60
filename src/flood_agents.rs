//! `relapse flood URL --agents FILE`: the standalone flood spread over agents. The flags become
//! one `http_flood` fault with `on` naming every agent of the file, checked by the scenario
//! loader and split into shards as a scenario's flood is; the shards start behind the same
//! barrier (prepare, then one go) and their figures merge into one report.
//!
//! Nothing is journaled here: should `relapse flood` die, each agent stops its shard when the
//! run's lease lapses (the file's `lease`, 5 s by default), and every shard stops at the
//! flood's duration at the latest.

use std::path::Path;
use std::time::Duration;

use relapse_core::fault::Fault;
use relapse_core::report::{FloodOutcome, FloodReport};
use relapse_core::scenario::{self, AgentSpec, FaultSpec, Vars};
use relapse_flood::cli::{FloodArgs, Outcome};

use crate::remote::{Connected, SpreadFault};

/// The fault's name in the agents' logs and in errors.
const FAULT_NAME: &str = "flood";

/// Runs the flood of `args` spread over the agents of `agents_file`. Blocking.
pub fn run(args: &FloodArgs, agents_file: &Path) -> Outcome {
    let (agents, fault) = match checked(args, agents_file) {
        Ok(checked) => checked,
        Err(error) => return Outcome::BadInput { error },
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            return Outcome::Failed {
                error: format!("cannot start a runtime: {error}"),
            }
        }
    };
    runtime.block_on(spread(args, &agents, &fault))
}

/// The agents of the file and the flags as one flood fault spread over all of them: the flags
/// checked as `relapse flood` checks them, then the fault as a scenario's.
fn checked(args: &FloodArgs, agents_file: &Path) -> Result<(Vec<AgentSpec>, FaultSpec), String> {
    args.spec()?;
    if args.per_source {
        return Err("--per-source is not counted across agents: run without it".into());
    }
    let agents = scenario::load_agents(agents_file).map_err(|e| e.to_string())?;
    let text = fault_table(args, &agents);
    let allowed: Vec<String> = args.allow_targets.iter().map(|ip| ip.to_string()).collect();
    let fault = scenario::parse_spread_fault(Path::new("--agents flood"), &text, &agents, &allowed)
        .map_err(|e| match e {
            scenario::ScenarioError::Invalid { message, .. } => {
                format!("the flood over {} agents: {message}", agents.len())
            }
            other => other.to_string(),
        })?;
    Ok((agents, fault))
}

/// The flags as a scenario's `[[fault]]` table, `on` every agent.
fn fault_table(args: &FloodArgs, agents: &[AgentSpec]) -> String {
    use toml::Value;
    let mut flood = toml::Table::new();
    flood.insert("url".into(), Value::String(args.url.clone()));
    if let Some(method) = &args.method {
        flood.insert("method".into(), Value::String(method.clone()));
    }
    let mut headers = toml::Table::new();
    for header in &args.headers {
        if let Some((name, value)) = header.split_once(':') {
            headers.insert(name.trim().into(), Value::String(value.trim().into()));
        }
    }
    if let Some(body) = &args.body {
        // As `relapse flood` sends a body: a form unless a header says otherwise.
        if !headers
            .keys()
            .any(|k| k.eq_ignore_ascii_case("content-type"))
        {
            headers.insert(
                "content-type".into(),
                Value::String("application/x-www-form-urlencoded".into()),
            );
        }
        flood.insert("body".into(), Value::String(body.clone()));
    }
    if !headers.is_empty() {
        flood.insert("headers".into(), Value::Table(headers));
    }
    if let Some(rate) = args.rate {
        flood.insert("rate".into(), Value::Float(rate));
    }
    flood.insert(
        "connections".into(),
        Value::Integer(args.connections as i64),
    );
    flood.insert("keep_alive".into(), Value::Boolean(!args.no_keep_alive));
    if let Some(cidr) = &args.source_cidr {
        flood.insert("source_cidr".into(), Value::String(cidr.clone()));
    } else if !args.sources.is_empty() {
        let sources = args.sources.iter().map(|ip| Value::String(ip.to_string()));
        flood.insert("sources".into(), Value::Array(sources.collect()));
    }
    flood.insert("ramp_up".into(), Value::String(millis(args.ramp_up)));
    flood.insert("max_requests".into(), Value::Integer(args.requests as i64));
    flood.insert("timeout".into(), Value::String(millis(args.timeout)));
    let on: Vec<Value> = agents
        .iter()
        .map(|a| Value::String(a.name.clone()))
        .collect();
    format!(
        "[[fault]]\nname = \"{FAULT_NAME}\"\non = {}\nstart = \"0s\"\nduration = \"{}\"\nhttp_flood = {}\n",
        Value::Array(on),
        millis(args.duration),
        Value::Table(flood)
    )
}

fn millis(duration: Duration) -> String {
    format!("{}ms", duration.as_millis())
}

/// Connects to every agent, runs the shards for the flood's duration (or until Ctrl-C, SIGTERM
/// or a lost lease), stops them, releases the agents and renders the merged report.
async fn spread(args: &FloodArgs, agents: &[AgentSpec], fault: &FaultSpec) -> Outcome {
    let (lost, mut lease_lost) = tokio::sync::mpsc::unbounded_channel();
    let mut connected = Vec::with_capacity(agents.len());
    for agent in agents {
        match Connected::connect(agent, |_| Ok(()), lost.clone()).await {
            Ok(agent) => connected.push(agent),
            Err(error) => {
                release(&mut connected).await;
                return Outcome::Failed {
                    error: format!("agent \"{}\": {error}", agent.name),
                };
            }
        }
    }
    let rate = args.rate.map(|rate| rate / fault.on.len() as f64);
    let shards = fault
        .on
        .iter()
        .zip(&connected)
        .map(|(on, agent)| (agent.remote_fault(fault, on, &Vars::default(), true), rate))
        .collect();
    let mut flood = SpreadFault::new(format!("flood of {}", args.url), shards, true);
    let stopped_early = match flood.inject().await {
        Ok(effective) => {
            tracing::info!(detail = %effective.detail, "spread flood started");
            tokio::select! {
                _ = tokio::time::sleep(fault.duration) => None,
                why = lease_lost.recv() => Some(why.unwrap_or_default()),
                why = interrupted() => Some(why),
            }
        }
        Err(error) => {
            let _ = flood.revert().await;
            release(&mut connected).await;
            return Outcome::Failed {
                error: error.to_string(),
            };
        }
    };
    let reverted = flood.revert().await;
    release(&mut connected).await;
    if let Err(error) = reverted {
        return Outcome::Failed {
            error: error.to_string(),
        };
    }
    let Some(outcome) = flood.flood_outcome() else {
        return Outcome::Failed {
            error: "the shards sent no figures back".into(),
        };
    };
    let report = render(args, outcome.clone());
    let lost_shards = outcome.shards.iter().any(|s| s.lost.is_some());
    match (stopped_early, lost_shards) {
        (None, false) => Outcome::Completed { report },
        (why, _) => {
            if let Some(why) = why {
                tracing::warn!("the spread flood stopped early: {why}");
            }
            Outcome::Interrupted { report }
        }
    }
}

/// Waits for Ctrl-C or SIGTERM; forever if they cannot be caught (the flood's bounds hold).
async fn interrupted() -> String {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => tokio::select! {
            _ = int.recv() => "interrupted (SIGINT)".into(),
            _ = term.recv() => "interrupted (SIGTERM)".into(),
        },
        _ => std::future::pending().await,
    }
}

/// Ends the run on every agent, which stops whatever it still holds of it.
async fn release(connected: &mut [Connected]) {
    for agent in connected {
        if let Err(error) = agent.release().await {
            tracing::error!(%error, "could not release an agent; its lease lapses there");
        }
    }
}

/// The report as the flags ask: the whole flood's summary and each shard's line, or the
/// figures as JSON.
fn render(args: &FloodArgs, outcome: FloodOutcome) -> String {
    if args.json {
        return format!(
            "{}\n",
            serde_json::to_string_pretty(&outcome).expect("figures are JSON")
        );
    }
    let whole = outcome
        .figures
        .as_ref()
        .map(relapse_flood::shard::load_report)
        .map(|report| report.summary())
        .unwrap_or_default();
    let shards = crate::render::flood_shards(&FloodReport {
        fault: FAULT_NAME.into(),
        outcome,
    });
    format!("{whole}shards:\n{shards}")
}
