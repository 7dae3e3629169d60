//! The MySQL/MariaDB halves of the pumps: packets that continue a command, prepared statements
//! by id, and the greeting whose CLIENT_SSL is cleared.

use std::sync::atomic::Ordering;

use crate::classify::{self, Dialect, CLASSIFY_PREFIX};
use crate::{mysql, FrameError};

use super::pump::{lock, ClientDialect, ConnShared, Decision, Inject, ServerDialect};
use super::{ErrorCode, ProxyMode};

/// Bytes of a MySQL server greeting read to clear CLIENT_SSL; real greetings are ~100 bytes.
const MYSQL_GREETING_PREFIX: usize = mysql::HEADER_LEN + 4096;

/// How the packets that continue the current client message are treated.
#[derive(Clone, Copy)]
pub(super) enum Continue {
    Forward,
    Drop,
}

#[derive(Default)]
pub(super) struct MyClient {
    decoder: mysql::PacketDecoder,
    continuing: Option<Continue>,
}

pub(super) fn mysql_writes(payload: &[u8], conn: &ConnShared) -> bool {
    match payload.first().copied() {
        Some(mysql::COM_QUERY | mysql::COM_STMT_PREPARE) => {
            classify::is_write(&payload[1..], Dialect::Mysql)
        }
        Some(mysql::COM_STMT_EXECUTE) => mysql::statement_id(payload)
            .and_then(|id| lock(&conn.statements).get(&id).copied())
            .unwrap_or(false),
        _ => false,
    }
}

impl ClientDialect for MyClient {
    type Frame = mysql::Frame;

    fn header(&self, buf: &[u8]) -> Result<Option<mysql::Frame>, FrameError> {
        self.decoder.header(buf)
    }

    fn len(f: &mysql::Frame) -> usize {
        f.len()
    }

    fn needed(&self, f: &mysql::Frame) -> usize {
        if f.continuation || f.seq != 0 {
            mysql::HEADER_LEN
        } else {
            mysql::HEADER_LEN + 1 + CLASSIFY_PREFIX
        }
    }

    fn decide(
        &self,
        f: &mysql::Frame,
        prefix: &[u8],
        mode: ProxyMode,
        conn: &ConnShared,
    ) -> Decision {
        if f.continuation {
            return match self.continuing {
                Some(Continue::Drop) => {
                    let code = match mode {
                        ProxyMode::Error { code } => code,
                        _ => ErrorCode::LockNotAvailable,
                    };
                    let last = !f.continues();
                    Decision::Drop {
                        reply: last.then(|| Inject {
                            after_z: 0,
                            bytes: code.mysql_error(f.seq.wrapping_add(1)),
                            ready: false,
                        }),
                        error: last,
                    }
                }
                _ => Decision::Forward { delay: false },
            };
        }
        if f.seq != 0 {
            // Authentication or LOCAL INFILE data: part of an exchange already under way.
            return Decision::Forward { delay: false };
        }
        let payload = f.payload(prefix);
        match mode {
            ProxyMode::PassThrough | ProxyMode::Reset | ProxyMode::RefuseNew => {
                Decision::Forward { delay: false }
            }
            ProxyMode::Latency { .. } => Decision::Forward { delay: true },
            ProxyMode::Stall => Decision::Hold,
            ProxyMode::StallWrites if mysql_writes(payload, conn) => Decision::Hold,
            ProxyMode::StallWrites => Decision::Forward { delay: false },
            ProxyMode::Error { code } => match payload.first().copied() {
                Some(mysql::COM_QUERY | mysql::COM_STMT_PREPARE | mysql::COM_STMT_EXECUTE) => {
                    // The ERR answers the whole message, so it waits for its last packet.
                    let last = !f.continues();
                    Decision::Drop {
                        reply: last.then(|| Inject {
                            after_z: 0,
                            bytes: code.mysql_error(f.seq.wrapping_add(1)),
                            ready: false,
                        }),
                        error: last,
                    }
                }
                _ => Decision::Forward { delay: false },
            },
        }
    }

    fn consume(
        &mut self,
        f: &mysql::Frame,
        prefix: &[u8],
        forwarded: bool,
        conn: &ConnShared,
    ) -> bool {
        self.decoder.consume(f);
        if f.continuation {
            if !f.continues() {
                self.continuing = None;
            }
            return false;
        }
        self.continuing = f.continues().then_some(if forwarded {
            Continue::Forward
        } else {
            Continue::Drop
        });
        if f.seq != 0 {
            return false;
        }
        conn.established.store(true, Ordering::Relaxed);
        let payload = f.payload(prefix);
        let command = payload.first().copied();
        if forwarded {
            match command {
                Some(mysql::COM_STMT_PREPARE) => {
                    let writes = classify::is_write(&payload[1..], Dialect::Mysql);
                    *lock(&conn.awaiting_prepare) = Some(writes);
                }
                Some(mysql::COM_STMT_CLOSE) => {
                    if let Some(id) = mysql::statement_id(payload) {
                        lock(&conn.statements).remove(&id);
                    }
                }
                _ => {}
            }
        }
        matches!(command, Some(mysql::COM_QUERY | mysql::COM_STMT_EXECUTE))
    }
}

#[derive(Default)]
pub(super) struct MyServer {
    decoder: mysql::PacketDecoder,
    greeted: bool,
}

impl ServerDialect for MyServer {
    type Frame = mysql::Frame;

    fn header(&self, buf: &[u8]) -> Result<Option<mysql::Frame>, FrameError> {
        self.decoder.header(buf)
    }

    fn len(f: &mysql::Frame) -> usize {
        f.len()
    }

    fn needed(&self, f: &mysql::Frame, conn: &ConnShared) -> usize {
        if !self.greeted {
            MYSQL_GREETING_PREFIX
        } else if !f.continuation && lock(&conn.awaiting_prepare).is_some() {
            // COM_STMT_PREPARE_OK: status byte and statement id.
            mysql::HEADER_LEN + 5
        } else {
            mysql::HEADER_LEN
        }
    }

    fn inspect(&mut self, f: &mysql::Frame, prefix: &mut [u8], conn: &ConnShared) {
        self.decoder.consume(f);
        if !self.greeted {
            self.greeted = true;
            let end = prefix.len().min(f.len());
            if let Some(payload) = prefix.get_mut(mysql::HEADER_LEN..end) {
                if mysql::clear_ssl_capability(payload) {
                    tracing::debug!("cleared CLIENT_SSL in the server greeting");
                }
            }
            return;
        }
        if f.continuation {
            return;
        }
        let Some(writes) = lock(&conn.awaiting_prepare).take() else {
            return;
        };
        if let Some(id) = mysql::prepare_ok_id(f.payload(prefix)) {
            lock(&conn.statements).insert(id, writes);
        }
    }

    fn established(&self, conn: &ConnShared) -> bool {
        conn.established.load(Ordering::Relaxed)
    }

    fn due(&self, _: &Inject) -> bool {
        true
    }

    fn ready_status(&self) -> u8 {
        b'I'
    }
}
