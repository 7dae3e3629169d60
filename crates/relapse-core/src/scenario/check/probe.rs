//! `[[probe]]`: the checks that measure the target's health.

use std::collections::BTreeSet;
use std::time::Duration;

use super::{check_statuses, http_method, is_http_url, Env};
use crate::scenario::check;
use crate::scenario::file::ProbeSection;
use crate::scenario::load::{problem, Problem};
use crate::scenario::{target, OnAgent, ProbeKind, ProbeSpec};

pub fn check(
    sections: &[ProbeSection],
    env: &Env,
    remote: &crate::scenario::fault::Remote,
) -> Result<Vec<ProbeSpec>, Problem> {
    let mut probes = Vec::new();
    let mut probe_names = BTreeSet::new();
    for (index, p) in sections.iter().enumerate() {
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
        let kinds = [p.http.is_some(), p.tcp.is_some(), p.imap.is_some()];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return problem(
                p.name.span(),
                format!(
                    "probe \"{}\" needs exactly one kind: expected one of `http`, `tcp`, `imap`",
                    p.name.get_ref()
                ),
            );
        }
        let on = match &p.on {
            None => None,
            Some(on) => {
                let what = format!("probe \"{}\"", p.name.get_ref());
                Some((
                    check::agent::named(on.get_ref(), on.span(), &what, remote.agents)?,
                    on,
                ))
            }
        };
        let kind = match on {
            None => kind(p, env)?,
            Some((_, on)) => kind(p, &check::agent::env(env, on.get_ref()))?,
        };
        let on =
            match on {
                None => None,
                Some((agent, on)) => {
                    let key = kind.key();
                    let table = check::agent::kind_table(remote.tables.get(index), key)
                        .ok_or_else(|| Problem {
                            span: on.span(),
                            message: format!(
                                "probe \"{}\": its {key} table cannot be sent to an agent",
                                p.name.get_ref()
                            ),
                        })?;
                    Some(OnAgent { agent, table })
                }
            };
        probes.push(ProbeSpec {
            name: p.name.get_ref().clone(),
            every,
            kind,
            on,
        });
    }
    Ok(probes)
}

/// The probe's one kind, checked.
fn kind(p: &ProbeSection, env: &Env) -> Result<ProbeKind, Problem> {
    let kind = match (&p.http, &p.tcp, &p.imap) {
        (Some(h), _, _) => {
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
        (_, Some(t), _) => ProbeKind::Tcp {
            address: {
                env.reachable(&t.address, target::address_host(t.address.get_ref()))?;
                env.template(&t.address)?
            },
            timeout: t.timeout.map_or(Duration::from_secs(1), |d| d.0),
        },
        (_, _, Some(i)) => {
            env.reachable(&i.address, target::address_host(i.address.get_ref()))?;
            if i.user.get_ref().is_empty() {
                return problem(i.user.span(), "the imap probe needs a `user`");
            }
            ProbeKind::Imap {
                address: env.template(&i.address)?,
                user: i.user.get_ref().clone(),
                password: i.password.clone(),
                mailbox: i.mailbox.clone().unwrap_or_else(|| "INBOX".to_string()),
                fetch_header: i.fetch_header.clone(),
                timeout: i.timeout.map_or(Duration::from_secs(1), |d| d.0),
            }
        }
        (None, None, None) => unreachable!("exactly one kind was checked above"),
    };
    Ok(kind)
}
