//! The target process of `process_freeze` and `fd_exhaustion`.

use std::ops::Range;
use std::path::PathBuf;

use toml::Spanned;

use crate::scenario::check::{quoted_list, Env};
use crate::scenario::load::{problem, Problem};
use crate::scenario::{DemoComponent, ProcessTarget};

/// `pid`: a number, or a template rendered when the fault is injected.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(
    untagged,
    expecting = "a process id, or a template that renders to one such as \"{demo.primary.pid}\""
)]
pub enum PidKey {
    Number(#[schemars(range(min = 2))] u32),
    Template(String),
}

/// The keys of a fault's table that name its process; exactly one is set.
pub struct TargetKeys<'a> {
    pub pid: Option<&'a PidKey>,
    pub pidfile: &'a Option<String>,
    pub demo: &'a Option<Spanned<String>>,
    pub process: &'a Option<Spanned<String>>,
    pub command: &'a Option<Spanned<String>>,
}

/// Exactly one of `pid`, `pidfile`, `demo`, `process`, `command`. `kind` names the fault in
/// messages, `verb` says what it does to the process ("freeze"). `demo = "standby"` needs the
/// demo's failover; `process` names a `[[target.process]]`; `command` is matched when the fault
/// is injected.
pub fn target(
    span: Range<usize>,
    keys: TargetKeys,
    env: &Env,
    kind: &str,
    verb: &str,
) -> Result<ProcessTarget, Problem> {
    let demo = env.demo;
    let exactly_one = format!(
        "{kind} needs exactly one target: expected one of `pid`, `pidfile`, `demo`, `process`, `command`"
    );
    if let Some(command) = keys.command {
        if keys.process.is_some()
            || keys.pid.is_some()
            || keys.pidfile.is_some()
            || keys.demo.is_some()
        {
            return problem(span, exactly_one);
        }
        if command.get_ref().trim().is_empty() {
            return problem(
                command.span(),
                "`command` is empty: expected text of the target's command line, such as \"postgres: checkpointer\"",
            );
        }
        return Ok(ProcessTarget::Command(command.get_ref().clone()));
    }
    if let (Some(name), None, None, None) = (keys.process, keys.pid, keys.pidfile, keys.demo) {
        if env.processes.iter().any(|p| &p.name == name.get_ref()) {
            return Ok(ProcessTarget::Started(name.get_ref().clone()));
        }
        if let Some(agent) = env.on_agent {
            return problem(name.span(), on_agent_message(agent));
        }
        let known = if env.processes.is_empty() {
            "the scenario has no [[target.process]]".to_string()
        } else {
            format!(
                "expected one of {}",
                quoted_list(env.processes.iter().map(|p| p.name.as_str()))
            )
        };
        return problem(
            name.span(),
            format!("unknown process \"{}\": {known}", name.get_ref()),
        );
    }
    if keys.process.is_some() {
        return problem(span, exactly_one);
    }
    match (keys.pid, keys.pidfile, keys.demo) {
        (Some(PidKey::Number(pid)), None, None) => {
            if *pid <= 1 {
                return problem(span, format!("refusing to {verb} pid 0 or 1"));
            }
            Ok(ProcessTarget::Pid(*pid))
        }
        (Some(PidKey::Template(text)), None, None) => {
            // Untagged, the value carries no place of its own: the table's is given.
            let text = Spanned::new(span.clone(), text.clone());
            if !text.get_ref().contains('{') {
                return problem(
                    text.span(),
                    "expected a process id as a number, or a template such as \"{demo.primary.pid}\"",
                );
            }
            Ok(ProcessTarget::PidOf(env.template(&text)?))
        }
        (None, Some(file), None) => Ok(ProcessTarget::Pidfile(PathBuf::from(file))),
        (None, None, Some(component)) => {
            if let Some(agent) = env.on_agent {
                return problem(component.span(), on_agent_message(agent));
            }
            let Some(demo) = demo else {
                return problem(
                    component.span(),
                    "`demo` names a demo component but the scenario has no [target.demo]",
                );
            };
            match component.get_ref().as_str() {
                "backend" | "primary" => Ok(ProcessTarget::Demo(DemoComponent::Primary)),
                "standby" if demo.failover.is_some() => {
                    Ok(ProcessTarget::Demo(DemoComponent::Standby))
                }
                "standby" => problem(
                    component.span(),
                    "the demo has no standby: expected `failover = { … }` in [target.demo]",
                ),
                "frontend" => Ok(ProcessTarget::Demo(DemoComponent::Frontend)),
                other => problem(
                    component.span(),
                    format!(
                        "unknown demo component \"{other}\": expected \"backend\" (or \"primary\"), \"standby\" or \"frontend\""
                    ),
                ),
            }
        }
        _ => problem(span, exactly_one),
    }
}

/// Why a fault on an agent cannot name the demo or a started process: those run on relapse's
/// own host, and their pids mean nothing to the agent unless the hosts share them.
fn on_agent_message(agent: &str) -> String {
    format!(
        "this fault runs on agent \"{agent}\", which has no demo or started processes of the run: name its process by `pid`, `pidfile` or `command`"
    )
}
