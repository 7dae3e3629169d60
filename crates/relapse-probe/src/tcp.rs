//! The TCP SLI probe: can a connection be opened at all?

use std::time::Duration;

use relapse_core::fault::BoxFuture;
use relapse_core::sense::{Outcome, Probe};
use tokio::net::TcpStream;

use crate::http::classify_io;
use crate::ProbeError;

/// Succeeds when a TCP connection to the address completes within the timeout; the connection is
/// closed right away.
pub struct TcpProbe {
    address: String,
    timeout: Duration,
}

impl TcpProbe {
    /// Builds a probe for `host:port` (an IPv6 host goes in brackets: `[::1]:80`).
    ///
    /// The name is resolved on every check, inside the timeout, so that `new` never blocks and a
    /// changed DNS answer is followed; IP literals skip resolution.
    pub fn new(address: &str, timeout: Duration) -> Result<TcpProbe, ProbeError> {
        Ok(TcpProbe {
            address: check_address(address)?.to_owned(),
            timeout,
        })
    }
}

/// Checks that `address` is `host:port` (an IPv6 host in brackets) and returns it trimmed; shared
/// with the IMAP probe.
pub(crate) fn check_address(address: &str) -> Result<&str, ProbeError> {
    let address = address.trim();
    let invalid = || ProbeError::InvalidAddress {
        address: address.to_owned(),
    };
    let (host, port) = address.rsplit_once(':').ok_or_else(invalid)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(invalid());
    }
    // An unbracketed IPv6 address would be split at its last colon and misread.
    if host.contains(':') && !address.starts_with('[') {
        return Err(invalid());
    }
    Ok(address)
}

impl Probe for TcpProbe {
    fn check(&self) -> BoxFuture<'_, Outcome> {
        Box::pin(async move {
            match tokio::time::timeout(self.timeout, connect(&self.address)).await {
                Ok(Ok(())) => Outcome::Success { status: None },
                Ok(Err(error)) => Outcome::Failure {
                    status: None,
                    error,
                },
                Err(_elapsed) => Outcome::Failure {
                    status: None,
                    error: "timeout".to_owned(),
                },
            }
        })
    }
}

/// Resolves and connects, trying each address like `TcpStream::connect` does, but keeping a
/// resolution failure apart (`connect: dns`) from a connection failure.
async fn connect(address: &str) -> Result<(), String> {
    let addrs = tokio::net::lookup_host(address)
        .await
        .map_err(|_| "connect: dns".to_owned())?;
    let mut last = "connect: dns".to_owned();
    for addr in addrs {
        match TcpStream::connect(addr).await {
            // Dropping the stream closes it: the probe only asks whether it could connect.
            Ok(_stream) => return Ok(()),
            Err(error) => last = classify_io(error.kind(), true),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_addresses() {
        let t = Duration::from_secs(1);
        assert!(TcpProbe::new("127.0.0.1:80", t).is_ok());
        assert!(TcpProbe::new("localhost:8080", t).is_ok());
        assert!(TcpProbe::new("[::1]:80", t).is_ok());
        for bad in ["127.0.0.1", ":80", "host:", "host:99999", "::1:80", "[]:80"] {
            let error = TcpProbe::new(bad, t).err().unwrap();
            assert_eq!(
                error.to_string(),
                format!("invalid address {bad:?}: expected host:port")
            );
        }
    }
}
