//! `fd_exhaustion`: lower a process's soft RLIMIT_NOFILE to what it uses, plus a headroom.

use serde::Deserialize;
use toml::Spanned;

use super::process;
use crate::scenario::check::Env;
use crate::scenario::load::Problem;
use crate::scenario::FaultKind;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FdExhaustionSection {
    pub pid: Option<u32>,
    pub pidfile: Option<String>,
    pub demo: Option<Spanned<String>>,
    #[serde(default)]
    pub headroom: u32,
}

pub fn check(section: &Spanned<FdExhaustionSection>, env: &Env) -> Result<FaultKind, Problem> {
    let fe = section.get_ref();
    let target = process::target(
        section.span(),
        fe.pid,
        &fe.pidfile,
        &fe.demo,
        env.demo.is_some(),
        "fd_exhaustion",
        "starve",
    )?;
    Ok(FaultKind::FdExhaustion {
        target,
        headroom: fe.headroom,
    })
}
