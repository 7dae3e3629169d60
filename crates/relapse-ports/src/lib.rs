//! Port and file-descriptor exhaustion: the iPaper incident, where a service leaked sockets until
//! the host's ephemeral ports ran out and the server looked decommissioned.
//!
//! Host-wide faults act inside a network namespace ([`netns`]): relapse's own, a named one, a
//! process's, or a demo "host" relapse made — never the machine's own unless a scenario says so.

#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod fd;
pub mod netns;
pub mod ports;
