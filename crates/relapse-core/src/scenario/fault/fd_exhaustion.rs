//! `fd_exhaustion`: lower a process's soft RLIMIT_NOFILE to what it uses, plus a headroom.

use schemars::JsonSchema;
use serde::Deserialize;
use toml::Spanned;

use super::process;
use crate::scenario::check::Env;
use crate::scenario::{ProcessTarget};
use crate::scenario::load::Problem;

/// `fd_exhaustion`: lower a process's descriptor limit to what it uses plus `headroom`.
#[derive(Debug, Clone, PartialEq)]
pub struct FdExhaustionSpec {
    pub target: ProcessTarget,
    pub headroom: u32,
}

/// `fd_exhaustion = { … }`: exactly one target of `pid`, `pidfile`, `demo`, `process`,
/// `command`, and a
/// `headroom`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FdExhaustionSection {
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
    /// Descriptors left to open under the lowered limit; default 0.
    #[serde(default)]
    pub headroom: u32,
}

pub fn check(section: &Spanned<FdExhaustionSection>, env: &Env) -> Result<FdExhaustionSpec, Problem> {
    let fe = section.get_ref();
    let keys = process::TargetKeys {
        pid: fe.pid.as_ref(),
        pidfile: &fe.pidfile,
        demo: &fe.demo,
        process: &fe.process,
        command: &fe.command,
    };
    let target = process::target(section.span(), keys, env, "fd_exhaustion", "starve")?;
    Ok(FdExhaustionSpec {
        target,
        headroom: fe.headroom,
    })
}

/// One small valid table of this kind, for the kind list's own test.
#[cfg(test)]
pub const EXAMPLE: &str = r#"fd_exhaustion = { pid = 4242 }"#;
