//! Floods for relapse: HTTP request floods, slowloris and idle-connection floods. This reproduces
//! the OpenSRS incident, where a DoS flood from many addresses overwhelmed the authentication
//! service until the abusive addresses were blocked.
//!
//! Safety: every flood here refuses a target that is not on loopback unless the caller lists it
//! in an allowlist (addresses in network namespaces the caller created), every load loop is
//! bounded in count and in time and stops by itself, and connection counts are capped well
//! under the process's file-descriptor limit.

#![forbid(unsafe_code)]
#![deny(clippy::print_stdout, clippy::print_stderr)]

use std::net::IpAddr;
use std::time::Duration;

pub mod cli;
pub mod faults;
mod http1;
pub mod load;
pub mod shard;
pub mod source;
pub mod template;

pub use faults::{revert_record, ConnectionFlood, FloodRecord, HttpFlood, Slowloris};
pub use load::{
    run_load, run_load_on_threads, run_load_with_probe, LoadProbe, LoadReport, LoadSpec, Model,
    SourceStats,
};
pub use source::{Sources, SourcesExt};
pub use template::{RequestTemplate, Template};

/// The most connections (or requests in flight) one flood may hold: fds are a shared, limited
/// resource (20000 on the CI machines) and the target's side needs as many again.
/// The scenario model owns the limit; this is the same number in the load generator's units.
pub const MAX_CONNECTIONS: usize = relapse_core::scenario::MAX_FLOOD_CONNECTIONS as usize;

/// The most source addresses a CIDR may expand to (owned by the scenario model too).
pub const MAX_SOURCES: u64 = relapse_core::scenario::MAX_FLOOD_SOURCES;

/// The most requests one flood may send (owned by the scenario model too).
pub const MAX_REQUESTS: u64 = relapse_core::scenario::MAX_FLOOD_REQUESTS;

/// The fault kinds of this crate, as scenarios and the journal spell them.
pub const HTTP_FLOOD: &str = "http_flood";
pub const SLOWLORIS: &str = "slowloris";
pub const CONNECTION_FLOOD: &str = "connection_flood";

/// Why a flood was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FloodError {
    #[error("refusing to flood {0}: not loopback and not in the allowlist")]
    TargetNotAllowed(IpAddr),
    #[error("rate must be finite and above 0, got {0}")]
    InvalidRate(f64),
    #[error("max_requests must be at least 1")]
    ZeroRequests,
    #[error("{what} must be above 0")]
    ZeroDuration { what: &'static str },
    #[error("{0} connections asked; at least 1 and at most {MAX_CONNECTIONS} are allowed")]
    Connections(usize),
    #[error("source network {network}/{prefix} has {count} addresses; at most {MAX_SOURCES} are allowed")]
    CidrTooLarge {
        network: IpAddr,
        prefix: u8,
        count: u128,
    },
    #[error("invalid source network: {0}")]
    InvalidCidr(String),
    #[error("no source addresses given")]
    NoSources,
    #[error("source address {addr} is not of the target's address family ({target})")]
    FamilyMismatch { addr: IpAddr, target: IpAddr },
    #[error("template: {0}")]
    Template(String),
    #[error("runtime: {0}")]
    Runtime(String),
    #[error("url: {0}")]
    Url(String),
}

/// Refuses a target that is neither loopback nor explicitly allowed.
pub fn check_target(target: IpAddr, allow: &[IpAddr]) -> Result<(), FloodError> {
    let loopback = match target {
        IpAddr::V4(v4) => v4.is_loopback(),
        // An IPv4-mapped IPv6 address reaches the IPv4 address it maps.
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    };
    if loopback || allow.contains(&target) {
        Ok(())
    } else {
        Err(FloodError::TargetNotAllowed(target))
    }
}

pub(crate) fn check_positive(what: &'static str, d: Duration) -> Result<(), FloodError> {
    if d.is_zero() {
        Err(FloodError::ZeroDuration { what })
    } else {
        Ok(())
    }
}

pub(crate) fn check_connections(n: usize) -> Result<(), FloodError> {
    if n == 0 || n > MAX_CONNECTIONS {
        Err(FloodError::Connections(n))
    } else {
        Ok(())
    }
}
