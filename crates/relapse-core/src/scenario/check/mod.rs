//! The checks of the file's sections besides `[[fault]]` (see `super::fault`): each converts its
//! section into model values, or says what is wrong and where.

pub mod agent;
pub mod backlog;
pub mod db_proxy;
pub mod demo;
pub mod detect;
pub mod expect;
pub mod fs_gate;
pub mod gates;
pub mod limits;
pub mod probe;
pub mod process;
pub mod scratch_fs;
pub mod sink;
pub mod steady;
pub mod stop;

use std::ops::Range;

use toml::Spanned;

use super::load::{problem, Problem};
use super::{
    target, template, DbProxySpec, DemoTarget, FsGateSpec, ProcessSpec, ScratchFsSpec, Template,
    Vars,
};

/// What the checks after the demo and the proxies may ask: which hosts are reachable, which
/// template variables exist, whether there is a demo, which proxies the run has.
#[derive(Clone, Copy)]
pub struct Env<'a> {
    pub allowed: &'a [String],
    pub vars: &'a Vars,
    pub demo: Option<&'a DemoTarget>,
    pub db_proxies: &'a [DbProxySpec],
    pub scratch_fs: &'a [ScratchFsSpec],
    pub fs_gates: &'a [FsGateSpec],
    /// The run's `[[target.process]]`, which faults may name.
    pub processes: &'a [ProcessSpec],
    /// The agent a fault is checked for (`on`), whose host has none of the run's own things.
    pub on_agent: Option<&'a str>,
}

impl<'a> Env<'a> {
    /// A world of reachable hosts and variables only: no demo, proxies, scratch file systems,
    /// gates or processes; what an agent's own tables, or a table written from flags, are
    /// checked against.
    pub fn bare(allowed: &'a [String], vars: &'a Vars) -> Env<'a> {
        Env {
            allowed,
            vars,
            demo: None,
            db_proxies: &[],
            scratch_fs: &[],
            fs_gates: &[],
            processes: &[],
            on_agent: None,
        }
    }

    /// See [`reachable`].
    pub fn reachable(&self, s: &Spanned<String>, host: Option<&str>) -> Result<(), Problem> {
        reachable(self.allowed, s, host)
    }

    /// A template whose variables are all known.
    pub fn template(&self, s: &Spanned<String>) -> Result<Template, Problem> {
        let t = Template::new(s.get_ref());
        t.check(self.vars).map_err(|e| Problem {
            span: s.span(),
            message: e.to_string(),
        })?;
        Ok(t)
    }
}

/// Literal hosts are checked here, with their place in the file; hosts that come from template
/// variables are checked again once rendered.
pub fn reachable(
    allowed: &[String],
    s: &Spanned<String>,
    host: Option<&str>,
) -> Result<(), Problem> {
    match host {
        Some(host) if !s.get_ref().contains('{') => {
            target::check(host, allowed).map_err(|message| Problem {
                span: s.span(),
                message,
            })
        }
        _ => Ok(()),
    }
}

/// Every variable a scenario may use: the proxies' and, with a demo, the demo's (its
/// standby's with failover).
pub fn variables(proxy_vars: &Vars, demo: Option<&DemoTarget>) -> Vars {
    let mut vars = proxy_vars.clone();
    if let Some(demo) = demo {
        for name in template::DEMO_VARIABLES {
            vars.set(name, "");
        }
        if demo.failover.is_some() {
            for name in template::STANDBY_VARIABLES {
                vars.set(name, "");
            }
        }
    }
    vars
}

/// The name of something relapse makes for the run (`[[scratch_fs]]`, `[[fs_gate]]`): it becomes
/// part of a file name and of a template variable, so 1 to 32 of a-z, 0-9, `_`, `-`, once.
pub fn made_name(
    name: &Spanned<String>,
    what: &str,
    taken: impl IntoIterator<Item = String>,
) -> Result<String, Problem> {
    let text = name.get_ref();
    if text.is_empty()
        || text.len() > 32
        || !text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
    {
        return problem(
            name.span(),
            format!("invalid {what} name \"{text}\": expected 1 to 32 of a-z, 0-9, `_` or `-`"),
        );
    }
    if taken.into_iter().any(|t| &t == text) {
        return problem(name.span(), format!("duplicate {what} name \"{text}\""));
    }
    Ok(text.clone())
}

/// An `http://` URL, or a template that starts with a variable (checked again once rendered).
pub fn is_http_url(url: &str) -> bool {
    url.starts_with("http://") || url.starts_with('{')
}

/// An HTTP method, upper-cased and checked.
pub fn http_method(m: &Spanned<String>) -> Result<String, Problem> {
    let upper = m.get_ref().to_ascii_uppercase();
    if crate::scenario::HTTP_METHODS.contains(&upper.as_str()) {
        Ok(upper)
    } else {
        problem(
            m.span(),
            format!("unknown HTTP method \"{}\": expected GET, HEAD, POST, PUT, DELETE, OPTIONS or PATCH", m.get_ref()),
        )
    }
}

pub fn check_statuses(statuses: &[u16], span: Range<usize>) -> Result<(), Problem> {
    match statuses.iter().find(|s| !(100..=599).contains(*s)) {
        Some(bad) => problem(
            span,
            format!("HTTP status {bad} is out of range: expected 100 to 599"),
        ),
        None if statuses.is_empty() => {
            problem(span, "the list of statuses is empty: expected at least one")
        }
        None => Ok(()),
    }
}

pub fn quoted_list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names
        .map(|n| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The longest `[scenario] mitigation` label: it stands beside "time to mitigate" in a table.
const MAX_MITIGATION_LABEL: usize = 32;

/// `[scenario] mitigation`: a short label for what works around the fault (`"failover"`).
pub fn mitigation(label: Option<&Spanned<String>>) -> Result<Option<String>, Problem> {
    let Some(label) = label else {
        return Ok(None);
    };
    let text = label.get_ref().trim();
    if text.is_empty()
        || text.chars().count() > MAX_MITIGATION_LABEL
        || text.chars().any(char::is_control)
    {
        return problem(
            label.span(),
            format!("expected a short label for what mitigates the fault, 1 to {MAX_MITIGATION_LABEL} characters on one line, e.g. \"failover\""),
        );
    }
    Ok(Some(text.to_string()))
}
