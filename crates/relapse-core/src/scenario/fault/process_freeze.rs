//! `process_freeze`: SIGSTOP a process (or its process group), SIGCONT on revert.

use schemars::JsonSchema;
use serde::Deserialize;
use toml::Spanned;

use super::process;
use crate::scenario::check::Env;
use crate::scenario::{ProcessTarget};
use crate::scenario::load::Problem;

/// `process_freeze`: stop a process (or its group) until the revert.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessFreezeSpec {
    pub target: ProcessTarget,
    pub process_group: bool,
}

/// `process_freeze = { … }`: exactly one target of `pid`, `pidfile`, `demo`, `process`,
/// `command`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcessFreezeSection {
    /// A process id (not 0 or 1), or a template that renders to one when the fault is
    /// injected, such as `"{demo.primary.pid}"`.
    pub pid: Option<process::PidKey>,
    /// A file holding the process id, read when the fault is injected.
    pub pidfile: Option<String>,
    /// A process of `[target.demo]`: `"backend"` (or `"primary"`), `"standby"` (with
    /// `failover`) or `"frontend"`.
    #[schemars(
        with = "Option<String>",
        extend("enum" = ["backend", "primary", "standby", "frontend"])
    )]
    pub demo: Option<Spanned<String>>,
    /// A `[[target.process]]` of the run, by name.
    #[schemars(with = "Option<String>")]
    pub process: Option<Spanned<String>>,
    /// The one process whose command line (its arguments joined by spaces, as `ps` shows them)
    /// contains this text, found when the fault is injected; none or more than one is an error
    /// that names the matches.
    #[schemars(with = "Option<String>", length(min = 1))]
    pub command: Option<Spanned<String>>,
    /// Freeze the target's whole process group (refused when it is relapse's own); default
    /// false.
    #[serde(default)]
    pub process_group: bool,
}

pub fn check(section: &Spanned<ProcessFreezeSection>, env: &Env) -> Result<ProcessFreezeSpec, Problem> {
    let pf = section.get_ref();
    let keys = process::TargetKeys {
        pid: pf.pid.as_ref(),
        pidfile: &pf.pidfile,
        demo: &pf.demo,
        process: &pf.process,
        command: &pf.command,
    };
    let target = process::target(section.span(), keys, env, "process_freeze", "freeze")?;
    Ok(ProcessFreezeSpec {
        target,
        process_group: pf.process_group,
    })
}

/// One small valid table of this kind, for the kind list's own test.
#[cfg(test)]
pub const EXAMPLE: &str = r#"process_freeze = { demo = "backend" }"#;
