//! Which hosts a run may reach. By default only loopback: relapse must never become the incident
//! on somebody else's network. Anything else must be named by the user.

use std::net::IpAddr;

/// The host of an `http://host[:port]/…` URL, brackets removed from IPv6 literals.
pub fn http_host(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("http://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    address_host(authority)
        .or(Some(authority))
        .filter(|h| !h.is_empty())
}

/// The host of a `host:port` address, brackets removed from IPv6 literals.
pub fn address_host(address: &str) -> Option<&str> {
    if let Some(rest) = address.strip_prefix('[') {
        return rest.split_once(']').map(|(host, _)| host);
    }
    match address.rsplit_once(':') {
        Some((host, _)) if !host.contains(':') => Some(host),
        Some(_) => Some(address),
        None => Some(address),
    }
}

/// Whether `host` is loopback: `localhost`, 127.0.0.0/8 or ::1.
pub fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| match ip {
            IpAddr::V4(v4) => v4.is_loopback(),
            IpAddr::V6(v6) => {
                v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
            }
        })
}

/// Allows loopback and the hosts named in `allowed`; says how to allow anything else.
pub fn check(host: &str, allowed: &[String]) -> Result<(), String> {
    if is_loopback(host) || allowed.iter().any(|a| a.eq_ignore_ascii_case(host)) {
        Ok(())
    } else {
        Err(format!(
            "target \"{host}\" is not loopback: relapse reaches only 127.0.0.0/8, ::1 and localhost unless told otherwise; name it with --allow-target {host} or in [scenario] allow_targets"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_hosts() {
        assert_eq!(http_host("http://127.0.0.1:8080/health"), Some("127.0.0.1"));
        assert_eq!(http_host("http://db.staging/x?y"), Some("db.staging"));
        assert_eq!(http_host("http://[::1]:80/"), Some("::1"));
        assert_eq!(http_host("http://user@10.0.0.1:80/"), Some("10.0.0.1"));
        assert_eq!(http_host("https://x/"), None);
        assert_eq!(address_host("127.0.0.1:5432"), Some("127.0.0.1"));
        assert_eq!(address_host("[::1]:5432"), Some("::1"));
        assert_eq!(address_host("db:5432"), Some("db"));
    }

    #[test]
    fn only_loopback_unless_named() {
        for ok in [
            "127.0.0.1",
            "127.8.9.10",
            "::1",
            "localhost",
            "LOCALHOST",
            "::ffff:127.0.0.1",
        ] {
            assert!(check(ok, &[]).is_ok(), "{ok}");
        }
        for refused in [
            "10.0.0.5",
            "192.168.1.1",
            "8.8.8.8",
            "db.staging",
            "0.0.0.0",
            "::",
        ] {
            let err = check(refused, &[]).unwrap_err();
            assert!(err.contains(&format!("--allow-target {refused}")), "{err}");
        }
        assert!(check("db.staging", &["db.staging".to_string()]).is_ok());
    }
}
