//! Why a probe or a detection source could not be built.

use std::net::SocketAddr;

/// A probe or detection source refused at construction time, before anything runs.
#[derive(thiserror::Error, Debug)]
pub enum ProbeError {
    /// The URL has a scheme other than `http://` (TLS is out of scope), or none at all.
    #[error("unsupported url {url:?}: expected http://")]
    UnsupportedUrl { url: String },
    /// The URL could not be parsed or has no host.
    #[error("invalid url {url:?}: {reason}, expected http://host[:port][/path]")]
    InvalidUrl { url: String, reason: String },
    /// The HTTP method is not a valid token.
    #[error("invalid http method {method:?}: expected a method such as GET or HEAD")]
    InvalidMethod { method: String },
    /// A status list contains something that is not an HTTP status code.
    #[error("invalid http status {status}: expected a code from 100 to 599")]
    InvalidStatus { status: u16 },
    /// A status list is empty, so no answer could ever count as good.
    #[error("empty status list: expected at least one http status code")]
    NoStatus,
    /// A header name or value that HTTP does not allow.
    #[error("invalid http header {name:?}: expected a token name and a visible-ASCII value")]
    InvalidHeader { name: String },
    /// A TCP address is not of the form `host:port`.
    #[error("invalid address {address:?}: expected host:port")]
    InvalidAddress { address: String },
    /// An IMAP probe's user, password, mailbox or header name that the probe cannot send. The
    /// reason never repeats a password.
    #[error("invalid imap {field}: {reason}")]
    InvalidImap { field: &'static str, reason: String },
    /// A Prometheus query that is empty or only whitespace.
    #[error("empty query: expected PromQL such as \"probe_success == 0\"")]
    EmptyQuery,
    /// An `above` threshold that is not a finite number, which no sample could be compared with.
    #[error("invalid threshold {above}: expected a finite number")]
    InvalidThreshold { above: f64 },
    /// The webhook sink could not listen on the requested address.
    #[error("cannot listen on {addr} for the webhook sink: {reason}")]
    Bind {
        addr: SocketAddr,
        reason: std::io::Error,
    },
}
