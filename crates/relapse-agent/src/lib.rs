//! relapse-agent: what a relapse agent on a target's host needs besides the fault kinds it runs
//! for a coordinator (`relapse run` on another host).
//!
//! - [`lease`]: the dead-man lease. A coordinator holds one lease per agent for its run and
//!   renews it; when the renewals stop (the coordinator was killed, the network cut, its host
//!   frozen) the lease lapses and the agent reverts everything it applied for that run. A second
//!   coordinator cannot take over a run it did not start.
//! - [`clock`]: one clock. Instants taken on an agent are mapped to the coordinator's clock with
//!   an offset estimated from round trips, NTP-style: the sample with the shortest round trip
//!   wins, and half of its round trip is the offset's uncertainty.
//! - [`wire`]: the calls' bodies: HTTP/2 + JSON over TLS ([`tls`]); [`server`] is the agent's
//!   end, [`client`] the coordinator's.
//!
//! What the agent does with a fault is the [`FaultHost`]'s: relapse's own kind table, journal
//! and guardian, outside this crate.

#![forbid(unsafe_code)]
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod client;
pub mod clock;
pub mod lease;
pub mod server;
pub mod tls;
pub mod wire;

use std::future::Future;
use std::pin::Pin;

use sha2::{Digest, Sha256};

use wire::{Applied, ApplyRequest, Checked, HeldFault, ProbeRequest};

/// A confirmed revert: what was done, and a flood's figures as JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Reverted {
    pub detail: String,
    pub figures: Option<serde_json::Value>,
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What runs faults (and probes) on the agent's host. Each fault method is called with the
/// agent's lease held for `run` and no other apply or revert under way; probes are checked
/// while faults are applied, so their methods take no such turn.
pub trait FaultHost: Send + Sync + 'static {
    /// Applies one fault, confirmed (or, with `prepare`, builds it and journals its revert, for
    /// `go`); on an error nothing of it is left applied.
    fn apply<'a>(
        &'a self,
        run: &'a str,
        request: &'a ApplyRequest,
    ) -> BoxFuture<'a, Result<Applied, String>>;
    /// Injects a prepared fault at `at` (this host's clock), confirmed; on an error nothing of
    /// it is left applied.
    fn go<'a>(
        &'a self,
        run: &'a str,
        fault: u64,
        at: tokio::time::Instant,
    ) -> BoxFuture<'a, Result<Applied, String>>;
    /// Reverts one fault the run applied, confirmed; returns what was done.
    fn revert<'a>(&'a self, run: &'a str, fault: u64) -> BoxFuture<'a, Result<Reverted, String>>;
    /// Reverts everything the run still has applied (its lease lapsed, or it ended).
    fn revert_run<'a>(&'a self, run: &'a str) -> BoxFuture<'a, Vec<Result<String, String>>>;
    /// What is applied now, of any run.
    fn held(&self) -> Vec<HeldFault>;
    /// Reads and checks a probe's table, and keeps the probe for the run's checks.
    fn open_probe<'a>(
        &'a self,
        run: &'a str,
        request: &'a ProbeRequest,
    ) -> BoxFuture<'a, Result<u64, String>>;
    /// One check of a probe the run opened, timed on this host's clock.
    fn check_probe<'a>(
        &'a self,
        run: &'a str,
        probe: u64,
    ) -> BoxFuture<'a, Result<Checked, String>>;
    /// Forgets the run's probes (its lease lapsed, or it ended).
    fn end_probes(&self, run: &str);
}

/// The secret a coordinator presents (`Authorization: Bearer …`). Kept as its SHA-256, and
/// compared digest to digest, so the comparison's time says nothing of the secret.
#[derive(Clone)]
pub struct Token([u8; 32]);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

impl Token {
    /// A token must be long enough not to be guessed: 16 characters at least.
    pub fn new(secret: &str) -> Result<Token, String> {
        let secret = secret.trim();
        if secret.len() < 16 {
            return Err("the agent token is shorter than 16 characters".into());
        }
        Ok(Token(Sha256::digest(secret.as_bytes()).into()))
    }

    fn admits(&self, headers: &hyper::HeaderMap) -> bool {
        let Some(presented) = headers
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        let digest: [u8; 32] = Sha256::digest(presented.trim().as_bytes()).into();
        digest
            .iter()
            .zip(self.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}
