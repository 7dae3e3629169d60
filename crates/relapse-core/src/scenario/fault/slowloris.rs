//! `slowloris`: connections that send a request line, then a header line every
//! `header_interval`, never finishing.

use std::time::Duration;

use toml::Spanned;

pub use super::flood::ConnectionsSection;

use super::flood;
use crate::scenario::check::Env;
use crate::scenario::{Template, FloodSources};
use crate::scenario::load::{problem, Problem};

/// `slowloris`: connections that send headers slowly and never finish them.
#[derive(Debug, Clone, PartialEq)]
pub struct SlowlorisSpec {
    pub url: Template,
    pub connections: usize,
    pub sources: FloodSources,
    pub header_interval: Duration,
}


pub fn check(section: &Spanned<ConnectionsSection>, env: &Env) -> Result<SlowlorisSpec, Problem> {
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
    let header_interval = c.header_interval.map_or(Duration::from_secs(1), |d| d.0);
    if header_interval.is_zero() {
        return problem(span, "header_interval must be more than 0ms");
    }
    Ok(SlowlorisSpec {
        url: env.template(&c.url)?,
        connections,
        sources,
        header_interval,
    })
}

/// One small valid table of this kind, for the kind list's own test.
#[cfg(test)]
pub const EXAMPLE: &str = r#"slowloris = { url = "{demo.url}/", connections = 2 }"#;
