//! `[[detect]]`: the detection sources whose signals count as the incident being noticed.

use std::collections::BTreeSet;
use std::time::Duration;

use super::{check_statuses, is_http_url, Env};
use crate::scenario::file::DetectSection;
use crate::scenario::load::{problem, Problem};
use crate::scenario::{target, DetectorKind, DetectorSpec};

pub fn check(sections: &[DetectSection], env: &Env) -> Result<Vec<DetectorSpec>, Problem> {
    let mut detectors = Vec::new();
    let mut detector_names = BTreeSet::new();
    for d in sections {
        let name = d.name.get_ref().clone();
        if !detector_names.insert(name.clone()) {
            return problem(
                d.name.span(),
                format!("duplicate detection source name \"{name}\""),
            );
        }
        let kinds = [
            d.webhook.is_some(),
            d.http.is_some(),
            d.command.is_some(),
            d.log.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return problem(
                d.name.span(),
                format!("detection source \"{name}\" needs exactly one kind: expected one of `webhook`, `http`, `command`, `log`"),
            );
        }
        let kind = if let Some(w) = &d.webhook {
            DetectorKind::Webhook {
                matchers: w.matchers.clone(),
            }
        } else if let Some(h) = &d.http {
            let healthy = h.healthy.clone().unwrap_or_else(|| vec![200]);
            check_statuses(&healthy, h.url.span())?;
            if !is_http_url(h.url.get_ref()) {
                return problem(h.url.span(), "expected an http:// URL");
            }
            env.reachable(&h.url, target::http_host(h.url.get_ref()))?;
            DetectorKind::Http {
                url: env.template(&h.url)?,
                every: h.every.map_or(Duration::from_millis(250), |d| d.0),
                timeout: h.timeout.map_or(Duration::from_secs(1), |d| d.0),
                healthy,
            }
        } else if let Some(c) = &d.command {
            if c.run.get_ref().is_empty() {
                return problem(c.run.span(), "`run` must name a program: expected e.g. [\"check_mail\", \"--host\", \"mx1\"]");
            }
            DetectorKind::Command {
                run: c
                    .run
                    .get_ref()
                    .iter()
                    .map(|arg| env.template(arg))
                    .collect::<Result<_, _>>()?,
                every: c.every.map_or(Duration::from_secs(1), |d| d.0),
                timeout: c.timeout.map_or(Duration::from_secs(5), |d| d.0),
            }
        } else if let Some(l) = &d.log {
            if let Err(e) = regex::Regex::new(l.pattern.get_ref()) {
                let first_line = e.to_string().lines().last().unwrap_or_default().to_string();
                return problem(
                    l.pattern.span(),
                    format!("invalid regular expression: {}", first_line.trim()),
                );
            }
            DetectorKind::Log {
                path: env.template(&l.path)?,
                pattern: l.pattern.get_ref().clone(),
                every: l.every.map_or(Duration::from_millis(100), |d| d.0),
            }
        } else {
            unreachable!("exactly one kind was checked above")
        };
        detectors.push(DetectorSpec { name, kind });
    }
    Ok(detectors)
}
