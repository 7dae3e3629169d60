//! `[[detect]]`: the detection sources whose signals count as the incident being noticed.

use std::collections::BTreeSet;
use std::time::Duration;

use toml::Spanned;

use super::{check_statuses, is_http_url, Env};
use crate::scenario::file::{
    AlertmanagerDetectSection, DetectSection, Dur, PrometheusDetectSection,
};
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
            d.prometheus.is_some(),
            d.alertmanager.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return problem(
                d.name.span(),
                format!("detection source \"{name}\" needs exactly one kind: expected one of `webhook`, `http`, `command`, `log`, `prometheus`, `alertmanager`"),
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
        } else if let Some(p) = &d.prometheus {
            prometheus(p, env)?
        } else if let Some(a) = &d.alertmanager {
            alertmanager(a, env)?
        } else {
            unreachable!("exactly one kind was checked above")
        };
        detectors.push(DetectorSpec { name, kind });
    }
    Ok(detectors)
}

/// How often a pulled source (`prometheus`, `alertmanager`) asks, as often as the `http` source
/// by default.
const PULL_EVERY: Duration = Duration::from_millis(250);

/// How long one poll of a pulled source may take by default.
const PULL_TIMEOUT: Duration = Duration::from_secs(1);

fn prometheus(p: &PrometheusDetectSection, env: &Env) -> Result<DetectorKind, Problem> {
    let url = base_url(&p.url, "Prometheus", "9090", env)?;
    if p.query.get_ref().trim().is_empty() {
        return problem(
            p.query.span(),
            "the query is empty: expected PromQL such as \"probe_success == 0\"",
        );
    }
    let above = match &p.above {
        None => None,
        Some(above) if above.get_ref().is_finite() => Some(*above.get_ref()),
        Some(above) => {
            return problem(
                above.span(),
                "`above` must be a finite number: a sample counts when its value is greater",
            )
        }
    };
    Ok(DetectorKind::Prometheus {
        url,
        query: p.query.get_ref().clone(),
        every: positive(p.every.as_ref(), "every", PULL_EVERY)?,
        timeout: positive(p.timeout.as_ref(), "timeout", PULL_TIMEOUT)?,
        above,
    })
}

fn alertmanager(
    a: &Spanned<AlertmanagerDetectSection>,
    env: &Env,
) -> Result<DetectorKind, Problem> {
    let section = a.get_ref();
    let url = base_url(&section.url, "Alertmanager", "9093", env)?;
    // Unlike the webhook sink, which hears only what is routed to it, an Alertmanager holds every
    // alert of the system, and one usually fires all the time (a Watchdog): "any alert" would
    // count as detected before anything was injected.
    let expected =
        "expected the labels an alert must have, e.g. `match = { alertname = \"FrontendDown\" }`";
    let Some(matchers) = &section.matchers else {
        return problem(
            a.span(),
            format!("the alertmanager source needs `match`: {expected}"),
        );
    };
    if matchers.get_ref().is_empty() {
        return problem(
            matchers.span(),
            format!("`match` is empty, so every alert would count: {expected}"),
        );
    }
    for (name, value) in matchers.get_ref() {
        if name.is_empty() {
            return problem(
                matchers.span(),
                "`match` has an empty label name: expected a label such as `alertname`",
            );
        }
        if value.is_empty() {
            return problem(
                matchers.span(),
                format!("label \"{name}\" matches an empty value, which no alert has: Alertmanager drops empty labels"),
            );
        }
    }
    Ok(DetectorKind::Alertmanager {
        url,
        matchers: matchers.get_ref().clone(),
        every: positive(section.every.as_ref(), "every", PULL_EVERY)?,
        timeout: positive(section.timeout.as_ref(), "timeout", PULL_TIMEOUT)?,
    })
}

/// A server's base URL, to which the source appends its API path: `http://`, reachable, and
/// without a query or fragment that the path would land inside.
fn base_url(
    url: &Spanned<String>,
    server: &str,
    port: &str,
    env: &Env,
) -> Result<crate::scenario::Template, Problem> {
    let text = url.get_ref();
    if !is_http_url(text) {
        return problem(
            url.span(),
            format!("expected an http:// URL: the {server} server's base URL, e.g. \"http://127.0.0.1:{port}\""),
        );
    }
    if text.contains(['?', '#']) {
        return problem(
            url.span(),
            format!("expected the {server} server's base URL, e.g. \"http://127.0.0.1:{port}\", without a query or fragment: the API's path is appended to it"),
        );
    }
    env.reachable(url, target::http_host(text))?;
    env.template(url)
}

/// A polling setting that must be more than zero: an interval of zero would spin, a timeout of
/// zero would fail every poll.
fn positive(
    value: Option<&Spanned<Dur>>,
    key: &str,
    default: Duration,
) -> Result<Duration, Problem> {
    match value {
        None => Ok(default),
        Some(d) if d.get_ref().0.is_zero() => {
            problem(d.span(), format!("`{key}` must be more than 0ms"))
        }
        Some(d) => Ok(d.get_ref().0),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use crate::scenario::{parse, DetectorKind, Vars};

    const BASE: &str = r#"
[scenario]
name = "pull"

[[probe]]
name = "p"
tcp = { address = "127.0.0.1:1" }

[steady_state]
probe = "p"
window = "1s"
min_success = 0.9

[[fault]]
name = "f"
process_freeze = { pid = 4242 }
start = "1s"
duration = "1s"

[[detect]]
name = "d"
"#;

    fn kind(line: &str) -> Result<DetectorKind, String> {
        parse(Path::new("s.toml"), &format!("{BASE}{line}\n"))
            .map(|s| s.detectors[0].kind.clone())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn prometheus_fills_defaults_and_polls_at_its_resolution() {
        let DetectorKind::Prometheus {
            url,
            query,
            every,
            timeout,
            above,
        } = kind(r#"prometheus = { url = "http://127.0.0.1:9090", query = 'up{job="a"} == 0' }"#)
            .unwrap()
        else {
            panic!("not a prometheus source");
        };
        assert_eq!(
            url.render(&Vars::default()).unwrap(),
            "http://127.0.0.1:9090"
        );
        // Not a template: the braces are PromQL's.
        assert_eq!(query, r#"up{job="a"} == 0"#);
        assert_eq!(
            (every, timeout),
            (Duration::from_millis(250), Duration::from_secs(1))
        );
        assert_eq!(above, None);

        let with = kind(r#"prometheus = { url = "http://127.0.0.1:9090", query = "x", every = "2s", above = 1 }"#).unwrap();
        assert!(matches!(with, DetectorKind::Prometheus { above: Some(a), .. } if a == 1.0));
        assert_eq!(with.resolution(), Duration::from_secs(2));
    }

    #[test]
    fn prometheus_refuses_what_could_never_work() {
        let zero_timeout =
            kind(r#"prometheus = { url = "http://127.0.0.1:9090", query = "x", timeout = "0s" }"#);
        assert_eq!(
            zero_timeout.unwrap_err(),
            "s.toml:22:70: `timeout` must be more than 0ms"
        );
        let infinite =
            kind(r#"prometheus = { url = "http://127.0.0.1:9090", query = "x", above = inf }"#);
        assert!(infinite
            .unwrap_err()
            .contains("`above` must be a finite number"));
        let unknown =
            kind(r#"prometheus = { url = "http://127.0.0.1:9090", query = "x", for = "1m" }"#);
        assert!(unknown.unwrap_err().contains("unknown field `for`"));
    }

    #[test]
    fn alertmanager_needs_labels_to_match() {
        let DetectorKind::Alertmanager {
            matchers, every, ..
        } = kind(r#"alertmanager = { url = "http://[::1]:9093", match = { alertname = "Down", team = "mail" }, every = "1s" }"#).unwrap()
        else {
            panic!("not an alertmanager source");
        };
        assert_eq!(matchers.len(), 2);
        assert_eq!(matchers["team"], "mail");
        assert_eq!(every, Duration::from_secs(1));
        let empty = kind(r#"alertmanager = { url = "http://127.0.0.1:9093", match = {} }"#);
        assert!(
            empty
                .as_ref()
                .unwrap_err()
                .starts_with("s.toml:22:57: `match` is empty"),
            "{empty:?}"
        );
        let unnamed =
            kind(r#"alertmanager = { url = "http://127.0.0.1:9093", match = { "" = "x" } }"#);
        assert!(unnamed.unwrap_err().contains("empty label name"));
        let remote =
            kind(r#"alertmanager = { url = "http://am.example:9093", match = { a = "b" } }"#);
        assert!(remote
            .unwrap_err()
            .contains("target \"am.example\" is not loopback"));
    }
}
