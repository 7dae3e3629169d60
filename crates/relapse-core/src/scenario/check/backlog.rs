//! `[backlog]`: a gauge that recovery must also wait out.

use std::time::Duration;

use super::{is_http_url, Env};
use crate::scenario::file::BacklogSection;
use crate::scenario::load::{problem, Problem};
use crate::scenario::{target, BacklogKind, BacklogSpec, DbServer};

pub fn check(section: Option<&BacklogSection>, env: &Env) -> Result<Option<BacklogSpec>, Problem> {
    let Some(b) = section else {
        return Ok(None);
    };
    let max = *b.max.get_ref();
    if !(max.is_finite() && max >= 0.0) {
        return problem(b.max.span(), "backlog `max` must be a number of at least 0");
    }
    let kind = match (&b.metric, &b.sql) {
        (Some(m), None) => {
            if !is_http_url(m.url.get_ref()) {
                return problem(m.url.span(), "expected an http:// URL");
            }
            env.reachable(&m.url, target::http_host(m.url.get_ref()))?;
            let metric = m.name.get_ref();
            if metric.is_empty()
                || !metric
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            {
                return problem(m.name.span(), format!("invalid metric name \"{metric}\": expected a Prometheus metric name such as \"mail_queue_depth\""));
            }
            BacklogKind::Metric {
                url: env.template(&m.url)?,
                metric: metric.clone(),
            }
        }
        (None, Some(q)) => {
            let (server, dsn) = match (&q.postgres, &q.mysql) {
                (Some(d), None) => (DbServer::Postgres, d),
                (None, Some(d)) => (DbServer::Mysql, d),
                _ => return problem(q.query.span(), "a sql backlog needs exactly one server: expected `postgres = \"DSN\"` or `mysql = \"mysql://…\"`"),
            };
            BacklogKind::Sql {
                server,
                dsn: env.template(dsn)?,
                query: env.template(&q.query)?,
            }
        }
        _ => return problem(b.name.span(), "backlog needs exactly one kind: expected `metric = { url, name }` or `sql = { postgres | mysql, query }`"),
    };
    let every = b.every.map_or(Duration::from_millis(100), |d| d.0);
    if every.is_zero() {
        return problem(b.name.span(), "backlog `every` must be more than 0ms");
    }
    Ok(Some(BacklogSpec {
        name: b.name.get_ref().clone(),
        max,
        every,
        timeout: b.timeout.map_or(Duration::from_secs(1), |d| d.0),
        kind,
    }))
}
