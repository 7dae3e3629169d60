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
//! - [`wire`]: the calls' bodies (HTTP/2 + JSON over TLS; the transport itself follows).

#![forbid(unsafe_code)]
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod clock;
pub mod lease;
pub mod wire;
