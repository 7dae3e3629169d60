//! `[[probe]]`: the checks that measure the target's health.

use std::collections::BTreeSet;
use std::time::Duration;

use super::{check_statuses, http_method, is_http_url, Env};
use crate::scenario::file::ProbeSection;
use crate::scenario::load::{problem, Problem};
use crate::scenario::{target, ProbeKind, ProbeSpec};

pub fn check(sections: &[ProbeSection], env: &Env) -> Result<Vec<ProbeSpec>, Problem> {
    let mut probes = Vec::new();
    let mut probe_names = BTreeSet::new();
    for p in sections {
        if !probe_names.insert(p.name.get_ref().clone()) {
            return problem(
                p.name.span(),
                format!("duplicate probe name \"{}\"", p.name.get_ref()),
            );
        }
        let every = p.every.map_or(Duration::from_millis(100), |d| d.0);
        if every.is_zero() {
            return problem(p.name.span(), "probe `every` must be more than 0ms");
        }
        let kind = match (&p.http, &p.tcp) {
            (Some(h), None) => {
                if !is_http_url(h.url.get_ref()) {
                    return problem(
                        h.url.span(),
                        "expected an http:// URL (https is not supported by the http probe yet)",
                    );
                }
                let method = match &h.method {
                    None => "GET".to_string(),
                    Some(m) => http_method(m)?,
                };
                let expect = h.expect.clone().unwrap_or_else(|| vec![200]);
                check_statuses(&expect, h.url.span())?;
                env.reachable(&h.url, target::http_host(h.url.get_ref()))?;
                ProbeKind::Http {
                    url: env.template(&h.url)?,
                    method,
                    timeout: h.timeout.map_or(Duration::from_secs(1), |d| d.0),
                    expect,
                    headers: h.headers.clone().into_iter().collect(),
                    body: h.body.clone().unwrap_or_default(),
                }
            }
            (None, Some(t)) => ProbeKind::Tcp {
                address: {
                    env.reachable(&t.address, target::address_host(t.address.get_ref()))?;
                    env.template(&t.address)?
                },
                timeout: t.timeout.map_or(Duration::from_secs(1), |d| d.0),
            },
            _ => {
                return problem(
                    p.name.span(),
                    format!(
                        "probe \"{}\" needs exactly one kind: expected one of `http`, `tcp`",
                        p.name.get_ref()
                    ),
                )
            }
        };
        probes.push(ProbeSpec {
            name: p.name.get_ref().clone(),
            every,
            kind,
        });
    }
    Ok(probes)
}
