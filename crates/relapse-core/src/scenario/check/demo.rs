//! `[target.demo]`: where the demo runs, its database, its login and its monitor.

use std::time::Duration;

use toml::Spanned;

use crate::scenario::file::{
    DemoAuthSection, DemoDatabaseSection, DemoSection, FailoverSetting, JobsSection,
};
use crate::scenario::load::{problem, Problem};
use crate::scenario::{
    DbServer, DemoAuthSpec, DemoDatabaseSpec, DemoHostKind, DemoTarget, FailoverSpec, JobsSpec,
    MonitorSpec, Template, TemplateError, Vars,
};

/// The most jobs one request may enqueue, and the longest queue: the demo keeps its queue in
/// memory and must stay small.
const MAX_JOBS_PER_REQUEST: u32 = 1000;
const MAX_JOB_QUEUE: u64 = 10_000_000;

/// `host`: checked before the `[[db_proxy]]` sections, the rest of the demo after them.
pub fn host(demo: Option<&DemoSection>) -> Result<DemoHostKind, Problem> {
    match demo.and_then(|d| d.host.as_ref()) {
        None => Ok(DemoHostKind::Loopback),
        Some(h) => match h.get_ref().as_str() {
            "loopback" => Ok(DemoHostKind::Loopback),
            "netns" => Ok(DemoHostKind::Netns),
            other => problem(
                h.span(),
                format!("unknown demo host \"{other}\": expected \"loopback\" or \"netns\""),
            ),
        },
    }
}

/// The demo, if the scenario has one; its database may use the proxies' variables only.
pub fn check(
    demo: Option<DemoSection>,
    host: DemoHostKind,
    proxy_vars: &Vars,
) -> Result<Option<DemoTarget>, Problem> {
    let Some(d) = demo else {
        return Ok(None);
    };
    let database = match &d.database {
        None => None,
        Some(spanned) => Some(database(spanned, proxy_vars)?),
    };
    let auth = match &d.auth {
        None => None,
        Some(spanned) => Some(auth(spanned)?),
    };
    let mailstore = match &d.mailstore {
        None => None,
        Some(path) => {
            if !(path.get_ref().starts_with('/') || path.get_ref().starts_with('{')) {
                return problem(
                    path.span(),
                    "expected an absolute directory, e.g. \"{scratch_fs.mail.path}\"",
                );
            }
            let template = Template::new(path.get_ref());
            template.check(proxy_vars).map_err(|e| Problem {
                span: path.span(),
                message: e.to_string(),
            })?;
            Some(template)
        }
    };
    let upstream_timeout = d
        .upstream_timeout
        .map_or(Duration::from_millis(250), |d| d.0);
    let failover = match &d.failover {
        None => None,
        Some(spanned) => failover(spanned)?,
    };
    let jobs = match &d.jobs {
        None => None,
        Some(spanned) => Some(jobs(spanned, upstream_timeout)?),
    };
    let m = d.monitor.unwrap_or_default();
    Ok(Some(DemoTarget {
        host,
        database,
        auth,
        mailstore,
        failover,
        jobs,
        upstream_timeout,
        monitor: MonitorSpec {
            interval: m.interval.map_or(Duration::from_millis(500), |d| d.0),
            timeout: m.timeout.map_or(Duration::from_secs(1), |d| d.0),
            fall: m.fall.unwrap_or(3).max(1),
            rise: m.rise.unwrap_or(2).max(1),
            alertname: m.alertname.unwrap_or_else(|| "FrontendDown".to_string()),
        },
    }))
}

fn database(
    spanned: &Spanned<DemoDatabaseSection>,
    proxy_vars: &Vars,
) -> Result<DemoDatabaseSpec, Problem> {
    let db = spanned.get_ref();
    let (server, dsn) = match (&db.postgres, &db.mysql) {
        (Some(dsn), None) => (DbServer::Postgres, dsn),
        (None, Some(dsn)) => (DbServer::Mysql, dsn),
        _ => return problem(spanned.span(), "the demo database needs exactly one server: expected `postgres = \"DSN\"` or `mysql = \"mysql://…\"`"),
    };
    let template = Template::new(dsn.get_ref());
    template.check(proxy_vars).map_err(|e| Problem {
        span: dsn.span(),
        message: match e {
            TemplateError::NeedsDemo(name) => format!("the demo database cannot use `{{{name}}}`: the demo starts after its database is known; expected a literal DSN or {{db_proxy.NAME.*}}"),
            other => other.to_string(),
        },
    })?;
    let misleading_errors = match db
        .profile
        .as_ref()
        .map(|p| (p.get_ref().as_str(), p.span()))
    {
        None | Some(("honest", _)) => false,
        Some(("misleading_errors", _)) => true,
        Some((other, span)) => {
            return problem(
                span,
                format!(
                "unknown error profile \"{other}\": expected \"honest\" or \"misleading_errors\""
            ),
            )
        }
    };
    Ok(DemoDatabaseSpec {
        server,
        dsn: template,
        misleading_errors,
    })
}

fn auth(spanned: &Spanned<DemoAuthSection>) -> Result<DemoAuthSpec, Problem> {
    let a = spanned.get_ref();
    let mitigation = match a.profile.as_ref().map(|p| (p.get_ref().as_str(), p.span())) {
        None | Some(("mitigation", _)) => true,
        Some(("no_mitigation", _)) => false,
        Some((other, span)) => {
            return problem(
                span,
                format!(
                "unknown auth profile \"{other}\": expected \"mitigation\" or \"no_mitigation\""
            ),
            )
        }
    };
    let max_failures = match &a.max_failures {
        None => 3,
        Some(n) if *n.get_ref() == 0 => {
            return problem(n.span(), "max_failures must be at least 1")
        }
        Some(n) => *n.get_ref(),
    };
    let window = a.window.map_or(Duration::from_secs(10), |d| d.0);
    let ban = a.ban.map_or(Duration::from_secs(30), |d| d.0);
    if window.is_zero() || ban.is_zero() {
        return problem(
            spanned.span(),
            "auth `window` and `ban` must be more than 0ms",
        );
    }
    Ok(DemoAuthSpec {
        mitigation,
        max_failures,
        window,
        ban,
    })
}

/// `failover`: `"none"`, or the health checks with defaults for what is left out.
fn failover(spanned: &Spanned<FailoverSetting>) -> Result<Option<FailoverSpec>, Problem> {
    let section = match spanned.get_ref() {
        FailoverSetting::Named(name) if name == "none" => return Ok(None),
        FailoverSetting::Named(other) => {
            return problem(
                spanned.span(),
                format!("unknown failover \"{other}\": expected \"none\" or a table {{ inter, timeout, fall, rise, failback }}"),
            )
        }
        FailoverSetting::Checks(section) => section,
    };
    let defaults = FailoverSpec::default();
    let mut spec = defaults.clone();
    for (value, slot, name) in [
        (&section.inter, &mut spec.inter, "inter"),
        (&section.timeout, &mut spec.timeout, "timeout"),
    ] {
        if let Some(value) = value {
            if value.get_ref().0.is_zero() {
                return problem(
                    value.span(),
                    format!("failover `{name}` must be more than 0ms"),
                );
            }
            *slot = value.get_ref().0;
        }
    }
    for (value, slot, name) in [
        (&section.fall, &mut spec.fall, "fall"),
        (&section.rise, &mut spec.rise, "rise"),
    ] {
        if let Some(value) = value {
            if *value.get_ref() == 0 {
                return problem(
                    value.span(),
                    format!("failover `{name}` must be at least 1"),
                );
            }
            *slot = *value.get_ref();
        }
    }
    spec.failback = section.failback.unwrap_or(defaults.failback);
    Ok(Some(spec))
}

/// `jobs`: how many jobs a request enqueues, how long each takes the backend, how many may wait.
fn jobs(spanned: &Spanned<JobsSection>, upstream_timeout: Duration) -> Result<JobsSpec, Problem> {
    let section = spanned.get_ref();
    let per_request = match &section.per_request {
        None => 1,
        Some(n) if !(1..=MAX_JOBS_PER_REQUEST).contains(n.get_ref()) => {
            return problem(
                n.span(),
                format!("jobs `per_request` must lie between 1 and {MAX_JOBS_PER_REQUEST}"),
            )
        }
        Some(n) => *n.get_ref(),
    };
    let work = match &section.work {
        None => Duration::from_millis(20),
        Some(w) if w.get_ref().0.is_zero() || w.get_ref().0 >= upstream_timeout => {
            return problem(
                w.span(),
                format!(
                    "jobs `work` must be more than 0ms and less than the upstream timeout ({}): a job on a healthy backend must finish within it",
                    crate::duration::format_duration(upstream_timeout)
                ),
            )
        }
        Some(w) => w.get_ref().0,
    };
    let max_queue = match &section.max_queue {
        None => 100_000,
        Some(n) if !(1..=MAX_JOB_QUEUE).contains(n.get_ref()) => {
            return problem(
                n.span(),
                format!("jobs `max_queue` must lie between 1 and {MAX_JOB_QUEUE}"),
            )
        }
        Some(n) => *n.get_ref(),
    };
    Ok(JobsSpec {
        per_request,
        work,
        max_queue,
    })
}
