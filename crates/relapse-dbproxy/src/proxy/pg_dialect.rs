//! The PostgreSQL halves of the pumps: framing phases, statement classes by name, and the
//! extended-protocol group a client is in.

use std::collections::HashMap;

use crate::classify::{self, Dialect, CLASSIFY_PREFIX};
use crate::{pg, FrameError};

use super::pump::{ClientDialect, ConnShared, Decision, Inject, ServerDialect};
use super::ProxyMode;

/// Bytes of a Bind/Execute/Close the PostgreSQL pump reads: the portal and statement names.
const PG_NAMES_PREFIX: usize = 5 + 2 * 1024;

/// The PostgreSQL client pump's state: the framing phase, statement classes by name, and the
/// extended-protocol group the client is in.
#[derive(Default)]
pub(super) struct PgClient {
    decoder: pg::FrontendDecoder,
    /// Prepared statement name → whether it writes (from Parse).
    statements: HashMap<Vec<u8>, bool>,
    /// Portal name → whether its statement writes (from Bind).
    portals: HashMap<Vec<u8>, bool>,
    /// Extended-protocol messages of the current group were forwarded (no Sync yet): an error
    /// cannot replace the group any more, so it passes.
    in_group: bool,
    /// An error replaced the first message of a group; drop the rest until Sync.
    discarding: bool,
    /// ReadyForQuery messages the server will have sent once it answered everything forwarded.
    expected_z: u64,
}

impl PgClient {
    fn writes(&self, tag: u8, body: &[u8]) -> bool {
        match tag {
            b'Q' => classify::is_write(pg::query_sql(body), Dialect::Postgres),
            b'P' => classify::is_write(pg::parse_fields(body).1, Dialect::Postgres),
            b'B' => {
                let statement = pg::bind_names(body).1;
                self.statements.get(statement).copied().unwrap_or(false)
            }
            b'E' => {
                let portal = pg::execute_portal(body);
                self.portals.get(portal).copied().unwrap_or(false)
            }
            _ => false,
        }
    }
}

impl ClientDialect for PgClient {
    type Frame = pg::Frame;

    fn header(&self, buf: &[u8]) -> Result<Option<pg::Frame>, FrameError> {
        self.decoder.header(buf)
    }

    fn len(f: &pg::Frame) -> usize {
        f.len
    }

    fn needed(&self, f: &pg::Frame) -> usize {
        match f.kind {
            pg::FrameKind::Message(b'Q' | b'P') => PG_NAMES_PREFIX + CLASSIFY_PREFIX,
            pg::FrameKind::Message(b'B' | b'E' | b'C') => PG_NAMES_PREFIX,
            _ => f.header_len(),
        }
    }

    fn decide(&self, f: &pg::Frame, prefix: &[u8], mode: ProxyMode, _: &ConnShared) -> Decision {
        let tag = match f.kind {
            pg::FrameKind::SslRequest | pg::FrameKind::GssEncRequest => {
                // No TLS: 'N' makes the client go on in plaintext, as with a server without it.
                return Decision::Drop {
                    reply: Some(Inject {
                        after_z: 0,
                        bytes: b"N".to_vec(),
                        ready: false,
                    }),
                    error: false,
                };
            }
            pg::FrameKind::CancelRequest | pg::FrameKind::Startup => {
                return Decision::Forward { delay: false }
            }
            pg::FrameKind::Message(t) => t,
        };
        if tag == b'p' {
            // Password and SASL messages only occur while authenticating: connecting works in
            // every mode that lets the connection exist.
            return Decision::Forward { delay: false };
        }
        if self.discarding {
            let reply = (tag == b'S').then(|| Inject {
                after_z: self.expected_z,
                bytes: Vec::new(),
                ready: true,
            });
            return Decision::Drop {
                reply,
                error: false,
            };
        }
        match mode {
            ProxyMode::PassThrough | ProxyMode::Reset | ProxyMode::RefuseNew => {
                Decision::Forward { delay: false }
            }
            ProxyMode::Latency { .. } => Decision::Forward { delay: true },
            ProxyMode::Stall => Decision::Hold,
            ProxyMode::StallWrites if self.writes(tag, f.body(prefix)) => Decision::Hold,
            ProxyMode::StallWrites => Decision::Forward { delay: false },
            ProxyMode::Error { code } => match tag {
                // Simple query and function call: the error, then ReadyForQuery.
                b'Q' | b'F' => Decision::Drop {
                    reply: Some(Inject {
                        after_z: self.expected_z,
                        bytes: code.pg_error(),
                        ready: true,
                    }),
                    error: true,
                },
                // Extended protocol: the error at the group's first message, then discard until
                // Sync, which gets the ReadyForQuery, as the server does after an error.
                b'P' | b'B' | b'E' if !self.in_group => Decision::Drop {
                    reply: Some(Inject {
                        after_z: self.expected_z,
                        bytes: code.pg_error(),
                        ready: false,
                    }),
                    error: true,
                },
                _ => Decision::Forward { delay: false },
            },
        }
    }

    fn consume(&mut self, f: &pg::Frame, prefix: &[u8], forwarded: bool, _: &ConnShared) -> bool {
        self.decoder.consume(f);
        let tag = match f.kind {
            pg::FrameKind::Startup => {
                // The server answers the startup with ReadyForQuery once authenticated.
                self.expected_z += u64::from(forwarded);
                return false;
            }
            pg::FrameKind::Message(t) => t,
            _ => return false,
        };
        let body = f.body(prefix);
        match tag {
            b'P' => {
                let (name, sql) = pg::parse_fields(body);
                let writes = classify::is_write(sql, Dialect::Postgres);
                self.statements.insert(name.to_vec(), writes);
            }
            b'B' => {
                let (portal, statement) = pg::bind_names(body);
                let writes = self.statements.get(statement).copied().unwrap_or(false);
                self.portals.insert(portal.to_vec(), writes);
            }
            b'C' => match pg::close_target(body) {
                Some((b'S', name)) => {
                    self.statements.remove(name);
                }
                Some((b'P', name)) => {
                    self.portals.remove(name);
                }
                _ => {}
            },
            _ => {}
        }
        if forwarded {
            match tag {
                b'Q' | b'F' => self.expected_z += 1,
                b'S' => {
                    self.expected_z += 1;
                    self.in_group = false;
                }
                b'P' | b'B' | b'E' | b'D' | b'C' | b'H' => self.in_group = true,
                _ => {}
            }
        } else {
            match tag {
                b'S' => self.discarding = false,
                b'P' | b'B' | b'E' => self.discarding = true,
                _ => {}
            }
        }
        matches!(tag, b'Q' | b'E' | b'F')
    }
}

/// The PostgreSQL server pump's state: ReadyForQuery messages seen and the last status.
pub(super) struct PgServer {
    z_seen: u64,
    status: u8,
}

impl Default for PgServer {
    fn default() -> PgServer {
        PgServer {
            z_seen: 0,
            status: b'I',
        }
    }
}

impl ServerDialect for PgServer {
    type Frame = pg::Frame;

    fn header(&self, buf: &[u8]) -> Result<Option<pg::Frame>, FrameError> {
        pg::message_header(buf)
    }

    fn len(f: &pg::Frame) -> usize {
        f.len
    }

    fn needed(&self, f: &pg::Frame, _: &ConnShared) -> usize {
        match f.kind {
            pg::FrameKind::Message(b'Z') => 6,
            _ => 5,
        }
    }

    fn inspect(&mut self, f: &pg::Frame, prefix: &mut [u8], _: &ConnShared) {
        if f.kind == pg::FrameKind::Message(b'Z') {
            self.z_seen += 1;
            self.status = prefix.get(5).copied().unwrap_or(b'I');
        }
    }

    fn established(&self, _: &ConnShared) -> bool {
        self.z_seen > 0
    }

    fn due(&self, inject: &Inject) -> bool {
        self.z_seen >= inject.after_z
    }

    fn ready_status(&self) -> u8 {
        // An error inside a transaction fails it, as the server's own error would.
        // FIXME: the server is not told; its transaction stays healthy, so a client that
        // COMMITs instead of rolling back after an injected error commits.
        if self.status == b'I' {
            b'I'
        } else {
            b'E'
        }
    }
}
