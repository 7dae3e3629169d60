//! Source addresses: which local address each flood connection is bound to.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};

use nix::sys::socket::{setsockopt, sockopt};
use tokio::net::{TcpSocket, TcpStream};

use crate::{FloodError, MAX_SOURCES};

/// Where flood connections come from: the scenario model's own type, so a scenario's sources
/// reach the load generator as they are.
pub use relapse_core::scenario::FloodSources as Sources;

/// What the load generator does with [`Sources`].
pub trait SourcesExt: Sized {
    /// Parses `127.3.0.0/24` (or a single address, taken as a one-address list).
    fn parse_cidr(text: &str) -> Result<Self, FloodError>;
    /// The addresses, in the order they are used; empty for `Sources::Default`. Checks the
    /// size cap and that every address is of the target's family.
    fn expand(&self, target: IpAddr) -> Result<Vec<IpAddr>, FloodError>;
}

impl SourcesExt for Sources {
    fn parse_cidr(text: &str) -> Result<Sources, FloodError> {
        let bad = || FloodError::InvalidCidr(text.to_string());
        match text.split_once('/') {
            Some((net, prefix)) => Ok(Sources::Cidr {
                network: net.parse().map_err(|_| bad())?,
                prefix: prefix.parse().map_err(|_| bad())?,
            }),
            None => Ok(Sources::List(vec![text.parse().map_err(|_| bad())?])),
        }
    }

    fn expand(&self, target: IpAddr) -> Result<Vec<IpAddr>, FloodError> {
        let addrs = match self {
            Sources::Default => return Ok(Vec::new()),
            Sources::List(list) if list.is_empty() => return Err(FloodError::NoSources),
            Sources::List(list) => list.clone(),
            Sources::Cidr { network, prefix } => expand_cidr(*network, *prefix)?,
        };
        if let Some(addr) = addrs.iter().find(|a| a.is_ipv4() != target.is_ipv4()) {
            return Err(FloodError::FamilyMismatch {
                addr: *addr,
                target,
            });
        }
        Ok(addrs)
    }
}

fn expand_cidr(network: IpAddr, prefix: u8) -> Result<Vec<IpAddr>, FloodError> {
    let bits = if network.is_ipv4() { 32 } else { 128 };
    if prefix > bits {
        return Err(FloodError::InvalidCidr(format!("{network}/{prefix}")));
    }
    let count: u128 = 1u128 << (bits - prefix).min(127);
    if count > u128::from(MAX_SOURCES) {
        return Err(FloodError::CidrTooLarge {
            network,
            prefix,
            count,
        });
    }
    let addrs = match network {
        IpAddr::V4(v4) => {
            let base = u32::from(v4) & !((count - 1) as u32);
            (0..count as u32)
                .map(|i| IpAddr::V4(Ipv4Addr::from(base + i)))
                .collect()
        }
        IpAddr::V6(v6) => {
            let base = u128::from(v6) & !(count - 1);
            (0..count)
                .map(|i| IpAddr::V6(Ipv6Addr::from(base + i)))
                .collect()
        }
    };
    Ok(addrs)
}

/// Hands out source addresses round-robin; shared by the tasks of one flood.
#[derive(Debug)]
pub(crate) struct SourcePicker {
    addrs: Vec<IpAddr>,
    next: AtomicUsize,
}

impl SourcePicker {
    pub(crate) fn new(addrs: Vec<IpAddr>) -> SourcePicker {
        SourcePicker {
            addrs,
            next: AtomicUsize::new(0),
        }
    }

    /// The next source, or `None` when the kernel picks.
    pub(crate) fn next(&self) -> Option<IpAddr> {
        if self.addrs.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        Some(self.addrs[i % self.addrs.len()])
    }
}

/// Connects to `target` from `source` (any port), with Nagle off.
pub(crate) async fn connect_from(
    source: Option<IpAddr>,
    target: SocketAddr,
) -> io::Result<TcpStream> {
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = source {
        // Without this, bind() reserves a port from the whole ephemeral range for the address
        // alone, whatever the destination; with it the port is picked at connect() time and only
        // has to be unique per 4-tuple, so many sources do not use the range up early.
        setsockopt(&socket, sockopt::IpBindAddressNoPort, &true)?;
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    socket.set_nodelay(true)?;
    socket.connect(target).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_expands_from_the_network_address() {
        let s = Sources::parse_cidr("127.3.0.9/30").unwrap();
        let addrs = s.expand("127.0.0.1".parse().unwrap()).unwrap();
        let want: Vec<IpAddr> = (8..12)
            .map(|i| format!("127.3.0.{i}").parse().unwrap())
            .collect();
        assert_eq!(addrs, want);
    }

    #[test]
    fn cidr_too_large_and_family_mismatch_are_refused() {
        let target: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(matches!(
            Sources::parse_cidr("127.0.0.0/15").unwrap().expand(target),
            Err(FloodError::CidrTooLarge { .. })
        ));
        assert!(Sources::parse_cidr("127.0.0.0/16")
            .unwrap()
            .expand(target)
            .is_ok());
        assert!(matches!(
            Sources::parse_cidr("::1").unwrap().expand(target),
            Err(FloodError::FamilyMismatch { .. })
        ));
        assert!(matches!(
            Sources::parse_cidr("fd00::/100")
                .unwrap()
                .expand("::1".parse().unwrap()),
            Err(FloodError::CidrTooLarge { .. })
        ));
    }
}
