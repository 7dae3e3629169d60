//! `[[db_proxy]]`: the proxies relapse runs in front of databases.

use std::net::SocketAddr;

use super::reachable;
use crate::scenario::file::DbProxySection;
use crate::scenario::load::{problem, Problem};
use crate::scenario::{DbProxySpec, DbServer, Vars};

pub fn check(sections: &[DbProxySection], allowed: &[String]) -> Result<Vec<DbProxySpec>, Problem> {
    let mut db_proxies = Vec::new();
    for p in sections {
        let name = p.name.get_ref().clone();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return problem(p.name.span(), format!("invalid proxy name \"{name}\": expected letters, digits, `_` or `-` (it becomes part of {{db_proxy.NAME.address}})"));
        }
        if db_proxies.iter().any(|d: &DbProxySpec| d.name == name) {
            return problem(p.name.span(), format!("duplicate db_proxy name \"{name}\""));
        }
        let (server, upstream) = match (&p.postgres, &p.mysql) {
            (Some(a), None) => (DbServer::Postgres, a),
            (None, Some(a)) => (DbServer::Mysql, a),
            _ => return problem(p.name.span(), format!("db_proxy \"{name}\" needs exactly one server: expected `postgres = \"HOST:PORT\"` or `mysql = \"HOST:PORT\"`")),
        };
        let Some((host, _port)) = upstream
            .get_ref()
            .rsplit_once(':')
            .filter(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p != 0))
        else {
            return problem(
                upstream.span(),
                format!(
                    "invalid database address \"{}\": expected HOST:PORT, e.g. \"127.0.0.1:5432\"",
                    upstream.get_ref()
                ),
            );
        };
        reachable(
            allowed,
            upstream,
            Some(host.trim_start_matches('[').trim_end_matches(']')),
        )?;
        let listen = match &p.listen {
            None => SocketAddr::from(([127, 0, 0, 1], 0)),
            Some(l) => match l.get_ref().parse::<SocketAddr>() {
                Ok(addr) if addr.ip().is_loopback() => addr,
                Ok(_) => {
                    return problem(
                        l.span(),
                        "a db_proxy listens on loopback only: expected e.g. \"127.0.0.1:0\"",
                    )
                }
                Err(_) => {
                    return problem(
                        l.span(),
                        format!(
                            "invalid listen address \"{}\": expected IP:PORT, e.g. \"127.0.0.1:0\"",
                            l.get_ref()
                        ),
                    )
                }
            },
        };
        db_proxies.push(DbProxySpec {
            name,
            server,
            upstream: upstream.get_ref().clone(),
            listen,
        });
    }
    Ok(db_proxies)
}

/// The run's variables and each proxy's `{db_proxy.NAME.address}`, `.host` and `.port`.
pub fn variables(proxies: &[DbProxySpec]) -> Vars {
    let mut vars = Vars::known(false);
    for proxy in proxies {
        for part in ["address", "host", "port"] {
            vars.set(&format!("db_proxy.{}.{part}", proxy.name), "");
        }
    }
    vars
}
