//! `connection_flood`: connections opened and held idle.

use toml::Spanned;

pub use super::flood::ConnectionsSection;

use super::flood;
use crate::scenario::check::Env;
use crate::scenario::{Template, FloodSources};
use crate::scenario::load::{problem, Problem};

/// `connection_flood`: connections opened and held idle.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionFloodSpec {
    pub url: Template,
    pub connections: usize,
    pub sources: FloodSources,
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
