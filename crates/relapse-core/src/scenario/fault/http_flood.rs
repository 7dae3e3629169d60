//! `http_flood`: a request flood, open model (`rate`) or closed (`connections`).

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use toml::Spanned;

use super::flood;
use crate::scenario::check::{http_method, Env};
use crate::scenario::file::{patterns, Dur};
use crate::scenario::load::{problem, Problem};
use crate::scenario::{
    is_flood_placeholder, FloodLoad, FloodSources, Template, MAX_FLOOD_CONNECTIONS,
    MAX_FLOOD_REQUESTS,
};

/// A request flood: what each request is, how they arrive, from where, and its bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpFloodSpec {
    /// A template; the request's own placeholders (`{rand.u32}`, `{seq}`, …) are left to the
    /// load generator.
    pub url: Template,
    pub method: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub load: FloodLoad,
    pub keep_alive: bool,
    pub sources: FloodSources,
    pub ramp_up: Duration,
    /// The count bound; the time bound is the fault's duration.
    pub max_requests: u64,
    pub timeout: Duration,
}

/// `http_flood = { url, … }`: what each request is, how they arrive (`rate`, `connections`),
/// from where, and its bounds.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpFloodSection {
    /// The requests' URL: a template, `http://`, loopback or allowed; required. It may hold the
    /// flood's own placeholders, `{seq}`, `{source}`, `{rand.u32}`, `{rand.alnum:N}`.
    #[schemars(with = "String", pattern(patterns::HTTP_URL))]
    pub url: Spanned<String>,
    /// GET (the default), HEAD, POST, PUT, DELETE, OPTIONS or PATCH, in any case.
    #[schemars(with = "Option<String>", pattern(patterns::http_method()))]
    pub method: Option<Spanned<String>>,
    /// Header fields sent with every request, name → value (the flood's placeholders too).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The requests' body (the flood's placeholders too); default empty.
    pub body: Option<String>,
    /// An open model: requests due per second whatever the target does; more than 0, at most
    /// 1000000.
    #[schemars(
        with = "Option<f64>",
        range(max = 1_000_000),
        extend("exclusiveMinimum" = 0)
    )]
    pub rate: Option<Spanned<f64>>,
    /// With `rate`, the most connections (default 256); without, required: a closed model, each
    /// connection sending as fast as it is answered. 1 to 10000.
    #[schemars(with = "Option<u64>", range(min = 1, max = MAX_FLOOD_CONNECTIONS))]
    pub connections: Option<Spanned<u64>>,
    /// Reuse each connection; with false, one connection per request (`Connection: close`).
    /// Default true.
    pub keep_alive: Option<bool>,
    /// Source addresses, loopback only, used in turn, one per connection. Or `source_cidr`.
    #[schemars(with = "Option<Vec<String>>", length(min = 1))]
    pub sources: Option<Spanned<Vec<String>>>,
    /// Source addresses as a loopback CIDR of at most 65536 addresses (`"127.20.0.0/23"`). Or
    /// `sources`.
    #[schemars(with = "Option<String>")]
    pub source_cidr: Option<Spanned<String>>,
    /// With `rate`: ramp the rate up from 0 over this long; default 0.
    pub ramp_up: Option<Dur>,
    /// The most requests sent (the fault's `duration` bounds the flood too); default 1000000,
    /// 1 to 100000000.
    #[schemars(with = "Option<u64>", range(min = 1, max = MAX_FLOOD_REQUESTS))]
    pub max_requests: Option<Spanned<u64>>,
    /// The bound of each request; default `"5s"`.
    pub timeout: Option<Dur>,
}

pub fn check(section: &Spanned<HttpFloodSection>, env: &Env) -> Result<HttpFloodSpec, Problem> {
    let span = section.span();
    let f = section.get_ref();
    flood::url(&f.url, env)?;
    let method = match &f.method {
        None => "GET".to_string(),
        Some(m) => http_method(m)?,
    };
    let connections = match &f.connections {
        None => None,
        Some(c) => Some(flood::connections(c)?),
    };
    let load = match &f.rate {
        Some(rate) => {
            let r = *rate.get_ref();
            if !(r.is_finite() && r > 0.0 && r <= 1_000_000.0) {
                return problem(
                    rate.span(),
                    "rate must be more than 0 and at most 1000000 requests per second",
                );
            }
            FloodLoad::Open {
                rate: r,
                max_in_flight: connections.unwrap_or(256),
            }
        }
        None => match connections {
            Some(connections) => FloodLoad::Closed { connections },
            None => return problem(span, "http_flood needs `rate` (requests per second: an open model) or `connections` (each as fast as answered: a closed model)"),
        },
    };
    let max_requests = match &f.max_requests {
        None => 1_000_000,
        Some(n) if *n.get_ref() == 0 || *n.get_ref() > MAX_FLOOD_REQUESTS => {
            return problem(
                n.span(),
                format!("max_requests must lie between 1 and {MAX_FLOOD_REQUESTS}"),
            )
        }
        Some(n) => *n.get_ref(),
    };
    // The run's variables are checked now; the flood's own placeholders are its to fill.
    let url = Template::new(f.url.get_ref());
    url.render_keeping(env.vars, is_flood_placeholder)
        .map_err(|e| Problem {
            span: f.url.span(),
            message: e.to_string(),
        })?;
    Ok(HttpFloodSpec {
        url,
        method,
        headers: f.headers.clone().into_iter().collect(),
        body: f.body.clone().unwrap_or_default(),
        load,
        keep_alive: f.keep_alive.unwrap_or(true),
        sources: flood::sources(span, &f.sources, &f.source_cidr)?,
        ramp_up: f.ramp_up.map_or(Duration::ZERO, |d| d.0),
        max_requests,
        timeout: f.timeout.map_or(Duration::from_secs(5), |d| d.0),
    })
}

/// One small valid table of this kind, for the kind list's own test.
#[cfg(test)]
pub const EXAMPLE: &str = r#"http_flood = { url = "{demo.url}/", rate = 10 }"#;
