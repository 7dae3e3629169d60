//! `[[agent]]`: relapse agents on the target's other hosts, and `on = "NAME"`, which sends a
//! fault to one of them.

use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use super::{made_name, Env};
use crate::scenario::file::{AgentSection, Dur};
use crate::scenario::load::{problem, Problem};
use crate::scenario::{
    AgentSpec, Vars, DEFAULT_LEASE, DEFAULT_RENEW_EVERY, LOCAL_ONLY_KINDS, MAX_LEASE, MIN_LEASE,
};

pub fn check(sections: &[AgentSection]) -> Result<Vec<AgentSpec>, Problem> {
    let mut agents: Vec<AgentSpec> = Vec::new();
    for section in sections {
        let name = made_name(
            &section.name,
            "agent",
            agents.iter().map(|a| a.name.clone()),
        )?;
        let url = section.url.get_ref().trim_end_matches('/').to_string();
        let Some(host) = https_host(&url) else {
            return problem(
                section.url.span(),
                format!(
                    "invalid agent url \"{}\": expected https://HOST:PORT, e.g. \"https://10.0.0.12:7700\" (an agent speaks only TLS)",
                    section.url.get_ref()
                ),
            );
        };
        let ca = path(&section.ca, "ca")?;
        let token_file = path(&section.token_file, "token_file")?;
        let lease = duration(section.lease.as_ref(), DEFAULT_LEASE);
        let renew_every = duration(section.renew_every.as_ref(), DEFAULT_RENEW_EVERY);
        if !(MIN_LEASE..=MAX_LEASE).contains(&lease) {
            return problem(
                section
                    .lease
                    .as_ref()
                    .map_or(section.name.span(), Spanned::span),
                format!("agent \"{name}\": lease must be 1s to 5m"),
            );
        }
        if renew_every.is_zero() || renew_every >= lease {
            return problem(
                section
                    .renew_every
                    .as_ref()
                    .map_or(section.name.span(), Spanned::span),
                format!(
                    "agent \"{name}\": renew_every must be more than 0ms and less than the lease ({})",
                    crate::duration::format_duration(lease)
                ),
            );
        }
        agents.push(AgentSpec {
            name,
            url,
            host,
            ca,
            token_file,
            lease,
            renew_every,
        });
    }
    Ok(agents)
}

/// `{agent.NAME.address}` (the host of its URL) and `{agent.NAME.url}`, known from the file.
pub fn variables(agents: &[AgentSpec], vars: &mut Vars) {
    for agent in agents {
        vars.set(&format!("agent.{}.address", agent.name), agent.host.clone());
        vars.set(&format!("agent.{}.url", agent.name), agent.url.clone());
    }
}

/// A fault's or probe's `on` (at `span`) names an agent of the scenario (`what` says which, for
/// the error: `fault "x"`). Returns the agent's name.
pub fn named(
    name: &str,
    span: std::ops::Range<usize>,
    what: &str,
    agents: &[AgentSpec],
) -> Result<String, Problem> {
    if agents.iter().any(|a| a.name == name) {
        return Ok(name.to_string());
    }
    let known = if agents.is_empty() {
        "the scenario has no [[agent]]".to_string()
    } else {
        format!(
            "expected one of {}",
            super::quoted_list(agents.iter().map(|a| a.name.as_str()))
        )
    };
    problem(span, format!("{what}: unknown agent \"{name}\": {known}"))
}

/// A fault on an agent must be of a kind that can run away from the run's own host.
pub fn runs_remotely(span: std::ops::Range<usize>, kind: &str, fault: &str) -> Result<(), Problem> {
    if LOCAL_ONLY_KINDS.contains(&kind) {
        return problem(
            span,
            format!(
                "fault \"{fault}\": a {kind} fault switches what the run itself started, so it runs only on relapse's own host: remove `on`"
            ),
        );
    }
    Ok(())
}

/// The key and value `key` of one `[[fault]]` or `[[probe]]` table, as one line of TOML,
/// whichever way the file wrote it (an inline table or a `[fault.KIND]` section): a TOML value
/// displays inline. This is what travels to the agent.
pub fn kind_table(section: Option<&toml::Value>, key: &str) -> Option<String> {
    let value = kind_value(section, key)?;
    Some(format!("{key} = {value}"))
}

/// The value of `key` in one `[[fault]]` or `[[probe]]` table.
pub fn kind_value<'a>(section: Option<&'a toml::Value>, key: &str) -> Option<&'a toml::Value> {
    section?.get(key)
}

/// On an agent's host the run has made nothing: no demo, proxies, file systems or processes of
/// its own to name; the agent renders the templates.
pub fn env<'a>(env: &Env<'a>, agent: &'a str) -> Env<'a> {
    Env {
        on_agent: Some(agent),
        ..Env::bare(env.allowed, env.vars)
    }
}

/// The host of `https://HOST:PORT` (brackets off an IPv6 address), if that is what `url` is.
fn https_host(url: &str) -> Option<String> {
    let authority = url.strip_prefix("https://")?;
    if authority.contains(['/', '?', '#', '@']) {
        return None;
    }
    let (host, port) = authority.rsplit_once(':')?;
    port.parse::<u16>().ok().filter(|p| *p > 0)?;
    let host = match host.strip_prefix('[') {
        Some(inner) => inner.strip_suffix(']')?,
        None if host.contains(':') => return None,
        None => host,
    };
    (!host.is_empty()).then(|| host.to_string())
}

fn path(text: &Spanned<String>, key: &str) -> Result<PathBuf, Problem> {
    if text.get_ref().trim().is_empty() {
        return problem(
            text.span(),
            format!("the agent's {key} is empty: expected a file"),
        );
    }
    Ok(PathBuf::from(text.get_ref()))
}

fn duration(value: Option<&Spanned<Dur>>, default: Duration) -> Duration {
    value.map_or(default, |d| d.get_ref().0)
}

#[cfg(test)]
mod tests {
    use super::https_host;

    #[test]
    fn an_agent_url_is_https_with_a_host_and_a_port() {
        assert_eq!(
            https_host("https://10.0.0.12:7700").as_deref(),
            Some("10.0.0.12")
        );
        assert_eq!(https_host("https://[::1]:7700").as_deref(), Some("::1"));
        assert_eq!(
            https_host("https://db1.example:7700").as_deref(),
            Some("db1.example")
        );
        for bad in [
            "http://10.0.0.12:7700",
            "https://10.0.0.12",
            "https://10.0.0.12:0",
            "https://10.0.0.12:7700/v1",
            "https://::1:7700",
            "https://:7700",
            "https://user@host:7700",
        ] {
            assert_eq!(https_host(bad), None, "{bad}");
        }
    }
}
