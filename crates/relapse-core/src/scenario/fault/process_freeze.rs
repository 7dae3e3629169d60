//! `process_freeze`: SIGSTOP a process (or its process group), SIGCONT on revert.

use serde::Deserialize;
use toml::Spanned;

use super::process;
use crate::scenario::check::Env;
use crate::scenario::load::Problem;
use crate::scenario::FaultKind;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessFreezeSection {
    pub pid: Option<u32>,
    pub pidfile: Option<String>,
    pub demo: Option<Spanned<String>>,
    #[serde(default)]
    pub process_group: bool,
}

pub fn check(section: &Spanned<ProcessFreezeSection>, env: &Env) -> Result<FaultKind, Problem> {
    let pf = section.get_ref();
    let target = process::target(
        section.span(),
        pf.pid,
        &pf.pidfile,
        &pf.demo,
        env.demo.is_some(),
        "process_freeze",
        "freeze",
    )?;
    Ok(FaultKind::ProcessFreeze {
        target,
        process_group: pf.process_group,
    })
}
