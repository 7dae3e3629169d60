//! `connection_flood`: connections opened and held idle.

use serde::Deserialize;
use toml::Spanned;

use super::flood;
use crate::scenario::check::Env;
use crate::scenario::file::Dur;
use crate::scenario::{Template, FloodSources};
use crate::scenario::load::{problem, Problem};

/// Named as `connection_flood`'s and `slowloris`'s shared table was: serde puts the type's
/// name in its messages ("invalid type: …, expected struct ConnectionsSection").
/// `connection_flood`: connections opened and held idle.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionFloodSpec {
    pub url: Template,
    pub connections: usize,
    pub sources: FloodSources,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionsSection {
    pub url: Spanned<String>,
    pub connections: Spanned<u64>,
    pub sources: Option<Spanned<Vec<String>>>,
    pub source_cidr: Option<Spanned<String>>,
    /// A slowloris setting, read only to say so (instead of an unknown key).
    pub header_interval: Option<Dur>,
}

pub fn check(section: &Spanned<ConnectionsSection>, env: &Env) -> Result<ConnectionFloodSpec, Problem> {
    let span = section.span();
    let c = section.get_ref();
    let (connections, sources) = flood::held_connections(
        span.clone(),
        &c.url,
        &c.connections,
        &c.sources,
        &c.source_cidr,
        env,
    )?;
    if c.header_interval.is_some() {
        return problem(
            span,
            "`header_interval` is a slowloris setting: connection_flood sends nothing",
        );
    }
    Ok(ConnectionFloodSpec {
        url: env.template(&c.url)?,
        connections,
        sources,
    })
}

/// One small valid table of this kind, for the kind list's own test.
#[cfg(test)]
pub const EXAMPLE: &str = r#"connection_flood = { url = "{demo.url}/", connections = 2 }"#;
