//! What the floods share: how many connections, from which source addresses, to which URL.

use std::ops::Range;

use toml::Spanned;

use crate::scenario::check::{is_http_url, Env};
use crate::scenario::file::patterns;
use crate::scenario::load::{problem, Problem};
use crate::scenario::{target, FloodSources, MAX_FLOOD_CONNECTIONS, MAX_FLOOD_SOURCES};

/// The flood's URL: `http://` (or a template starting with a variable), to a reachable host.
pub fn url(url: &Spanned<String>, env: &Env) -> Result<(), Problem> {
    if !is_http_url(url.get_ref()) {
        return problem(url.span(), "expected an http:// URL");
    }
    env.reachable(url, target::http_host(url.get_ref()))
}

pub fn connections(c: &Spanned<u64>) -> Result<usize, Problem> {
    match *c.get_ref() {
        0 => problem(c.span(), "connections must be at least 1"),
        n if n > MAX_FLOOD_CONNECTIONS => problem(
            c.span(),
            format!("connections must be at most {MAX_FLOOD_CONNECTIONS}: each one is a file descriptor of relapse's own"),
        ),
        n => Ok(n as usize),
    }
}

/// Flood source addresses: a list or a CIDR, loopback only (every 127.x.y.z works as a source
/// on loopback without any setup; anything else would be somebody's address).
pub fn sources(
    span: Range<usize>,
    list: &Option<Spanned<Vec<String>>>,
    cidr: &Option<Spanned<String>>,
) -> Result<FloodSources, Problem> {
    let loopback = |ip: &std::net::IpAddr| ip.is_loopback();
    match (list, cidr) {
        (None, None) => Ok(FloodSources::Default),
        (Some(_), Some(_)) => problem(span, "give `sources` or `source_cidr`, not both"),
        (Some(list), None) => {
            if list.get_ref().is_empty() {
                return problem(
                    list.span(),
                    "`sources` is empty: expected at least one address",
                );
            }
            let mut ips = Vec::new();
            for text in list.get_ref() {
                match text.parse::<std::net::IpAddr>() {
                    Ok(ip) if loopback(&ip) => ips.push(ip),
                    Ok(_) => return problem(list.span(), format!("source address {text} is not loopback: floods come from 127.0.0.0/8 or ::1 only")),
                    Err(_) => return problem(list.span(), format!("invalid source address \"{text}\": expected an IP address such as \"127.0.0.2\"")),
                }
            }
            Ok(FloodSources::List(ips))
        }
        (None, Some(cidr)) => {
            let text = cidr.get_ref();
            let bad = || {
                Problem {
                span: cidr.span(),
                message: format!("invalid source_cidr \"{text}\": expected NETWORK/PREFIX such as \"127.20.0.0/23\""),
            }
            };
            let (network, prefix) = text.split_once('/').ok_or_else(bad)?;
            let network: std::net::IpAddr = network.parse().map_err(|_| bad())?;
            let prefix: u8 = prefix.parse().map_err(|_| bad())?;
            let bits: u8 = if network.is_ipv4() { 32 } else { 128 };
            if prefix > bits {
                return Err(bad());
            }
            if !loopback(&network) || (network.is_ipv4() && prefix < 8) {
                return problem(cidr.span(), format!("source_cidr {text} is not within loopback: floods come from 127.0.0.0/8 only"));
            }
            if bits - prefix > 16 {
                return problem(cidr.span(), format!("source_cidr {text} has more than {MAX_FLOOD_SOURCES} addresses: expected a prefix of at least /{}", bits - 16));
            }
            Ok(FloodSources::Cidr { network, prefix })
        }
    }
}

/// `slowloris` and `connection_flood`: the URL, then `connections`, then the sources.
pub fn held_connections(
    span: Range<usize>,
    address: &Spanned<String>,
    count: &Spanned<u64>,
    list: &Option<Spanned<Vec<String>>>,
    cidr: &Option<Spanned<String>>,
    env: &Env,
) -> Result<(usize, FloodSources), Problem> {
    url(address, env)?;
    let count = connections(count)?;
    Ok((count, sources(span, list, cidr)?))
}

/// The table of `slowloris` and `connection_flood`: connections held open against a server. One
/// type for both, named as it always was: serde puts the name in its messages ("invalid type:
/// …, expected struct ConnectionsSection").
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    description = "`slowloris = { … }` or `connection_flood = { … }`: connections held open against a server."
)]
pub struct ConnectionsSection {
    /// The server's URL: a template, `http://`, loopback or allowed; required.
    #[schemars(with = "String", pattern(patterns::HTTP_URL))]
    pub url: Spanned<String>,
    /// How many connections to hold open; required, 1 to 10000.
    #[schemars(with = "u64", range(min = 1, max = MAX_FLOOD_CONNECTIONS))]
    pub connections: Spanned<u64>,
    /// Source addresses, loopback only, used in turn, one per connection. Or `source_cidr`.
    #[schemars(with = "Option<Vec<String>>", length(min = 1))]
    pub sources: Option<Spanned<Vec<String>>>,
    /// Source addresses as a loopback CIDR of at most 65536 addresses (`"127.20.0.0/23"`). Or
    /// `sources`.
    #[schemars(with = "Option<String>")]
    pub source_cidr: Option<Spanned<String>>,
    /// slowloris only: how often each connection sends one more header line; default `"1s"`,
    /// more than 0 (connection_flood reads it only to say it does not apply, rather than
    /// calling it an unknown key).
    pub header_interval: Option<crate::scenario::file::Dur>,
}
