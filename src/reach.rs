//! Where the harness may send traffic: rendered templates checked against the allowlist. Hosts
//! written literally in a scenario were checked when it was loaded; hosts that come from template
//! variables are checked here, once rendered, before anything runs.

use std::net::SocketAddr;

use relapse_core::scenario::{target, Template, Vars};

/// Renders a template, its error as text for the message that names the part it belongs to.
pub fn render(template: &Template, vars: &Vars) -> Result<String, String> {
    template.render(vars).map_err(|e| e.to_string())
}

/// Checks a rendered host against the allowlist. `None` means the text names no network host
/// at all (a Unix socket path, a DSN without `host=`), which is local by construction; callers
/// pass `None` only from parsers that say so ([`dsn_host`]), never for an address they could
/// not parse — that is refused by [`address_host`].
pub fn reachable(host: Option<&str>, allowed: &[String]) -> Result<(), String> {
    match host {
        Some(host) => target::check(host, allowed),
        None => Ok(()),
    }
}

/// Checks the host of a rendered URL against the allowlist; a URL without a host is refused.
pub fn reachable_url(url: &str, allowed: &[String]) -> Result<(), String> {
    let host = target::http_host(url).ok_or_else(|| format!("no host in \"{url}\""))?;
    target::check(host, allowed)
}

/// Checks the host of a rendered `HOST:PORT` against the allowlist; an address without a host
/// is refused.
pub fn reachable_address(address: &str, allowed: &[String]) -> Result<(), String> {
    let host = target::address_host(address).ok_or_else(|| format!("no host in \"{address}\""))?;
    target::check(host, allowed)
}

/// The host a database connection string names: a URL's authority, or a PostgreSQL key/value
/// DSN's `host=`. A Unix socket path (or no host at all) is local.
pub fn dsn_host(dsn: &str) -> Option<&str> {
    if let Some((_, rest)) = dsn.split_once("://") {
        let authority = rest.split(['/', '?']).next()?;
        let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
        return target::address_host(authority).filter(|h| !h.is_empty());
    }
    dsn.split_whitespace()
        .find_map(|kv| kv.strip_prefix("host="))
        .filter(|h| !h.starts_with('/'))
}

/// The address a proxy forwards to: resolved once, and every address it resolves to must be
/// loopback or allowed (a name could otherwise lead anywhere).
pub async fn resolve_upstream(upstream: &str, allowed: &[String]) -> Result<SocketAddr, String> {
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host(upstream)
        .await
        .map_err(|e| format!("cannot resolve {upstream}: {e}"))?
        .collect();
    for address in &addresses {
        if !address.ip().is_loopback() {
            reachable_address(upstream, allowed)?;
        }
    }
    addresses
        .first()
        .copied()
        .ok_or_else(|| format!("{upstream} resolves to no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_without_a_host_is_refused_not_let_through() {
        // `reachable(None)` used to let any unparsable address through.
        assert!(reachable_address("no-port-here", &[]).is_err());
        assert!(reachable_url("http:///path", &[]).is_err());
        assert!(reachable_address("127.0.0.1:80", &[]).is_ok());
        assert!(reachable_address("192.0.2.1:80", &[]).is_err());
        assert!(reachable_address("192.0.2.1:80", &["192.0.2.1".to_string()]).is_ok());
    }

    #[test]
    fn dsn_hosts_are_found_in_urls_and_key_value_strings() {
        assert_eq!(
            dsn_host("mysql://root@127.0.0.1:3306/test"),
            Some("127.0.0.1")
        );
        assert_eq!(
            dsn_host("host=192.0.2.7 user=postgres dbname=test"),
            Some("192.0.2.7")
        );
        assert_eq!(dsn_host("host=/var/run/postgresql dbname=test"), None);
    }
}
