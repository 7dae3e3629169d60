//! `[[target.process]]`: processes relapse starts for the run — the service under test, a load
//! balancer in front of it, the monitoring that watches it.

use std::time::Duration;

use toml::Spanned;

use super::{check_statuses, is_http_url, made_name, Env};
use crate::scenario::file::{ProcessSection, ReadySection, StopProcessSection};
use crate::scenario::load::{problem, Problem};
use crate::scenario::template::RUN_DIR_VARIABLE;
use crate::scenario::{target, ProcessSpec, ProcessStop, ReadyCheck, ReadySpec, Template, Vars};

/// How long a process may take to be ready unless `ready.timeout` says otherwise.
const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest readiness wait a scenario may ask for.
const MAX_READY_TIMEOUT: Duration = Duration::from_secs(300);
const DEFAULT_GRACE: Duration = Duration::from_secs(5);
/// The longest grace period before SIGKILL: a run's end must not wait on a process for long.
const MAX_GRACE: Duration = Duration::from_secs(60);
const MAX_PROCESSES: usize = 16;

/// The signals `stop.signal` may name, with and without the `SIG` prefix.
pub(crate) const SIGNALS: &[(&str, i32)] = &[
    ("TERM", 15),
    ("INT", 2),
    ("QUIT", 3),
    ("HUP", 1),
    ("KILL", 9),
    ("USR1", 10),
    ("USR2", 12),
];

/// `{run.dir}` and `{port.NAME}` for every port any process declares: known before the first
/// process starts, so any process's files may name any port (HAProxy's config, its backends').
pub fn run_variables(sections: &[ProcessSection], vars: &mut Vars) {
    if sections.is_empty() {
        return;
    }
    vars.set(RUN_DIR_VARIABLE, "");
    for port in sections.iter().flat_map(|s| &s.ports) {
        vars.set(&format!("port.{}", port.get_ref()), "");
    }
}

/// `{process.NAME.pid}` and `{process.NAME.log}` of a started process.
pub fn variables(name: &str, vars: &mut Vars) {
    vars.set(&format!("process.{name}.pid"), "");
    vars.set(&format!("process.{name}.log"), "");
}

/// Checks every process with `env`'s variables plus [`run_variables`] and, for each process,
/// those of the processes declared (so started) before it.
pub fn check(sections: &[ProcessSection], env: &Env) -> Result<Vec<ProcessSpec>, Problem> {
    let mut specs: Vec<ProcessSpec> = Vec::new();
    let mut ports: Vec<String> = Vec::new();
    let mut vars = env.vars.clone();
    run_variables(sections, &mut vars);
    for section in sections {
        let name = made_name(
            &section.name,
            "process",
            specs.iter().map(|s| s.name.clone()),
        )?;
        if specs.len() == MAX_PROCESSES {
            return problem(
                section.name.span(),
                format!("too many processes: expected at most {MAX_PROCESSES}"),
            );
        }
        for port in &section.ports {
            ports.push(made_name(port, "port", ports.clone())?);
        }
        let own = Env {
            vars: &vars,
            ..*env
        };
        let template = |s: &Spanned<String>| own.template(s);
        if section.run.get_ref().is_empty() {
            return problem(
                section.run.span(),
                "`run` must name a program: expected e.g. [\"haproxy\", \"-db\", \"-f\", \"{run.dir}/haproxy.cfg\"]",
            );
        }
        let run = section
            .run
            .get_ref()
            .iter()
            .map(template)
            .collect::<Result<Vec<_>, _>>()?;
        let mut environment = Vec::new();
        for (key, value) in &section.env {
            if key.is_empty() || key.contains(['=', '\0']) {
                return problem(
                    value.span(),
                    format!(
                        "invalid environment variable name \"{key}\": expected a name without `=`"
                    ),
                );
            }
            environment.push((key.clone(), template(value)?));
        }
        let cwd = section.cwd.as_ref().map(template).transpose()?;
        let mut files = Vec::new();
        for (path, content) in &section.files {
            let relative = std::path::Path::new(path);
            let plain = relative
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
            if path.is_empty() || !plain {
                return problem(
                    content.span(),
                    format!("file \"{path}\" must be a relative path inside {{run.dir}}: expected e.g. \"haproxy.cfg\" or \"conf/nginx.conf\", without `..`"),
                );
            }
            let text = Template::new(content.get_ref());
            text.check_config(&vars).map_err(|e| Problem {
                span: content.span(),
                message: format!("file \"{path}\": {e}"),
            })?;
            files.push((path.clone(), text));
        }
        let ready = section.ready.as_ref().map(|r| ready(r, &own)).transpose()?;
        let stop = stop(section.stop.as_ref())?;
        specs.push(ProcessSpec {
            name: name.clone(),
            run,
            env: environment,
            cwd,
            ports: section.ports.iter().map(|p| p.get_ref().clone()).collect(),
            files,
            ready,
            stop,
        });
        variables(&name, &mut vars);
    }
    Ok(specs)
}

fn ready(section: &Spanned<ReadySection>, env: &Env) -> Result<ReadySpec, Problem> {
    let r = section.get_ref();
    let timeout = match &r.timeout {
        None => DEFAULT_READY_TIMEOUT,
        Some(t) if t.get_ref().0.is_zero() || t.get_ref().0 > MAX_READY_TIMEOUT => {
            return problem(t.span(), "ready timeout must be above 0 and at most 5m")
        }
        Some(t) => t.get_ref().0,
    };
    if r.status.is_some() && r.http.is_none() {
        return problem(
            section.span(),
            "`status` goes with `http`: expected `ready = { http = \"…\", status = [200] }`",
        );
    }
    let check = match (&r.tcp, &r.http, &r.log) {
        (Some(address), None, None) => {
            env.reachable(address, target::address_host(address.get_ref()))?;
            ReadyCheck::Tcp(env.template(address)?)
        }
        (None, Some(url), None) => {
            if !is_http_url(url.get_ref()) {
                return problem(url.span(), "expected an http:// URL");
            }
            env.reachable(url, target::http_host(url.get_ref()))?;
            let status = r.status.clone().unwrap_or_else(|| vec![200]);
            check_statuses(&status, url.span())?;
            ReadyCheck::Http {
                url: env.template(url)?,
                status,
            }
        }
        (None, None, Some(pattern)) => {
            if let Err(e) = regex::Regex::new(pattern.get_ref()) {
                let last = e.to_string().lines().last().unwrap_or_default().to_string();
                return problem(
                    pattern.span(),
                    format!("invalid regular expression: {}", last.trim()),
                );
            }
            ReadyCheck::Log(pattern.get_ref().clone())
        }
        _ => {
            return problem(
                section.span(),
                "`ready` needs exactly one check: expected one of `tcp`, `http`, `log`",
            )
        }
    };
    Ok(ReadySpec { check, timeout })
}

fn stop(section: Option<&StopProcessSection>) -> Result<ProcessStop, Problem> {
    let signal = match section.and_then(|s| s.signal.as_ref()) {
        None => 15,
        Some(name) => {
            let text = name.get_ref().to_ascii_uppercase();
            let bare = text.strip_prefix("SIG").unwrap_or(&text);
            match SIGNALS.iter().find(|(n, _)| *n == bare) {
                Some((_, number)) => *number,
                None => {
                    return problem(
                        name.span(),
                        format!(
                            "unknown signal \"{}\": expected one of TERM, INT, QUIT, HUP, KILL, USR1, USR2",
                            name.get_ref()
                        ),
                    )
                }
            }
        }
    };
    let grace = match section.and_then(|s| s.grace.as_ref()) {
        None => DEFAULT_GRACE,
        Some(g) if g.get_ref().0 > MAX_GRACE => {
            return problem(g.span(), "stop grace must be at most 1m")
        }
        Some(g) => g.get_ref().0,
    };
    Ok(ProcessStop { signal, grace })
}
