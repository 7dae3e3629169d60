//! `db_proxy`: a TCP proxy that the target application is pointed at instead of its database.
//!
//! It frames PostgreSQL and MySQL/MariaDB traffic well enough to know message and statement
//! boundaries, passes everything through byte for byte while healthy, and on command reproduces
//! what a database in trouble looks like to its clients: statements that hang (all of them, or
//! only writes, as behind the Kolab incident's held locks), slow answers, lock or deadlock
//! errors, reset connections and refused new ones. Modes switch at runtime while connections stay
//! open, and every connection sees a switch at its next message.
//!
//! Modules: [`pg`] and [`mysql`] (pure framing and message builders), [`classify`] (which SQL
//! writes), [`proxy`] (the server), [`fault`] (the proxy as a relapse fault).

#![forbid(unsafe_code)]
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod classify;
pub mod fault;
pub mod mysql;
pub mod pg;
pub mod proxy;

pub use fault::{revert_record, DbProxyFault, DbProxyRecord, KIND};
pub use proxy::{DbProxy, ErrorCode, Protocol, ProxyConfig, ProxyError, ProxyMode, ProxyStats};

/// Why a stream could not be framed. The proxy logs it and closes that connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("message length {0} out of range")]
    Length(u64),
    #[error("unsupported startup code {0}")]
    StartupCode(u32),
    #[error("packet out of sequence: expected {expected}, got {got}")]
    Sequence { expected: u8, got: u8 },
}
