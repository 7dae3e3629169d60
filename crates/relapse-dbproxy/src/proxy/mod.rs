//! The proxy server: accepts clients, connects each to the upstream database, and pumps bytes
//! both ways through the framing of [`crate::pg`] or [`crate::mysql`].
//!
//! Each connection is one task running two pumps concurrently (client → server and server →
//! client), so a full socket in one direction never stops the other. The client pump makes every
//! decision (forward, hold, delay, answer with an error); answers the proxy writes itself go to
//! the server pump over a channel, which writes them at a message boundary and, for PostgreSQL,
//! only after the server has answered everything forwarded before them (counted in
//! ReadyForQuery messages), so replies stay in order. MySQL clients do not pipeline commands, so
//! there an answer is due at the next packet boundary.
//!
//! In pass-through each read is scanned for frame headers in place and written whole: no copy per
//! message, and only a few header bytes are ever carried over between reads.
//!
//! Holding is "not advancing": a held message stays at the head of the connection's buffer and
//! everything the client sends after it queues behind it, so per-connection order is kept. The
//! pump keeps reading (up to its buffer) so that it notices a client that hangs up; that
//! client's held statements are then dropped and the server connection closed, as a client
//! that gives up on a lock wait aborts its statement.
//!
//! Here: the proxy's settings, its accept loop and one connection's life. The pumps are in
//! `pump`, their PostgreSQL and MySQL halves in `pg_dialect` and `mysql_dialect`.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::{mysql, pg};

mod mysql_dialect;
mod pg_dialect;
mod pump;

use mysql_dialect::{MyClient, MyServer};
use pg_dialect::{PgClient, PgServer};
use pump::{client_to_server, server_to_client, ConnError, ConnShared};

/// Which wire protocol the proxy frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Postgres,
    Mysql,
}

impl std::str::FromStr for Protocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Protocol, String> {
        match s {
            "postgres" | "postgresql" | "pg" => Ok(Protocol::Postgres),
            "mysql" | "mariadb" => Ok(Protocol::Mysql),
            _ => Err(format!(
                "unknown protocol \"{s}\": expected postgres or mysql"
            )),
        }
    }
}

/// The scenario model parses the code once; the proxy speaks it.
impl From<relapse_core::scenario::DbErrorCode> for ErrorCode {
    fn from(code: relapse_core::scenario::DbErrorCode) -> ErrorCode {
        use relapse_core::scenario::DbErrorCode;
        match code {
            DbErrorCode::LockNotAvailable => ErrorCode::LockNotAvailable,
            DbErrorCode::Deadlock => ErrorCode::Deadlock,
            DbErrorCode::QueryCanceled => ErrorCode::QueryCanceled,
        }
    }
}

/// A scenario's mode, as the proxy runs it.
impl From<&relapse_core::scenario::DbProxyMode> for ProxyMode {
    fn from(mode: &relapse_core::scenario::DbProxyMode) -> ProxyMode {
        use relapse_core::scenario::DbProxyMode;
        match mode {
            DbProxyMode::Stall => ProxyMode::Stall,
            DbProxyMode::StallWrites => ProxyMode::StallWrites,
            DbProxyMode::Latency { latency, jitter } => ProxyMode::Latency {
                latency: *latency,
                jitter: *jitter,
            },
            DbProxyMode::Error { code } => ProxyMode::Error {
                code: (*code).into(),
            },
            DbProxyMode::Reset => ProxyMode::Reset,
            DbProxyMode::RefuseNew => ProxyMode::RefuseNew,
        }
    }
}

impl From<relapse_core::scenario::DbServer> for Protocol {
    fn from(server: relapse_core::scenario::DbServer) -> Protocol {
        match server {
            relapse_core::scenario::DbServer::Postgres => Protocol::Postgres,
            relapse_core::scenario::DbServer::Mysql => Protocol::Mysql,
        }
    }
}

/// The error an `error` mode answers statements with, in each protocol's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// PostgreSQL 55P03 lock_not_available; MySQL 1205 (HY000) lock wait timeout exceeded.
    LockNotAvailable,
    /// PostgreSQL 40P01 deadlock_detected; MySQL 1213 (40001) deadlock found.
    Deadlock,
    /// PostgreSQL 57014 query_canceled; MySQL 1317 (70100) query execution was interrupted.
    QueryCanceled,
}

impl ErrorCode {
    /// Every code, for checking the scenario model's lists against this one.
    pub const ALL: [ErrorCode; 3] = [
        ErrorCode::LockNotAvailable,
        ErrorCode::Deadlock,
        ErrorCode::QueryCanceled,
    ];

    pub fn pg_sqlstate(self) -> &'static str {
        match self {
            ErrorCode::LockNotAvailable => "55P03",
            ErrorCode::Deadlock => "40P01",
            ErrorCode::QueryCanceled => "57014",
        }
    }

    pub fn mysql_code(self) -> u16 {
        match self {
            ErrorCode::LockNotAvailable => 1205,
            ErrorCode::Deadlock => 1213,
            ErrorCode::QueryCanceled => 1317,
        }
    }

    pub fn mysql_sqlstate(self) -> &'static [u8; 5] {
        match self {
            ErrorCode::LockNotAvailable => b"HY000",
            ErrorCode::Deadlock => b"40001",
            ErrorCode::QueryCanceled => b"70100",
        }
    }

    /// The server's own wording, marked as injected so nobody debugs the database over it.
    fn message(self, protocol: Protocol) -> &'static str {
        match (self, protocol) {
            (ErrorCode::LockNotAvailable, Protocol::Postgres) => {
                "could not obtain lock (injected by relapse db_proxy)"
            }
            (ErrorCode::Deadlock, Protocol::Postgres) => {
                "deadlock detected (injected by relapse db_proxy)"
            }
            (ErrorCode::QueryCanceled, Protocol::Postgres) => {
                "canceling statement due to statement timeout (injected by relapse db_proxy)"
            }
            (ErrorCode::LockNotAvailable, Protocol::Mysql) => {
                "Lock wait timeout exceeded; try restarting transaction (injected by relapse db_proxy)"
            }
            (ErrorCode::Deadlock, Protocol::Mysql) => {
                "Deadlock found when trying to get lock; try restarting transaction (injected by relapse db_proxy)"
            }
            (ErrorCode::QueryCanceled, Protocol::Mysql) => {
                "Query execution was interrupted (injected by relapse db_proxy)"
            }
        }
    }

    fn pg_error(self) -> Vec<u8> {
        pg::error_response(self.pg_sqlstate(), self.message(Protocol::Postgres))
    }

    fn mysql_error(self, seq: u8) -> Vec<u8> {
        mysql::err_packet(
            seq,
            self.mysql_code(),
            self.mysql_sqlstate(),
            self.message(Protocol::Mysql),
        )
    }
}

/// What the proxy does to traffic. Switching takes effect at each connection's next message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProxyMode {
    /// Byte-exact forwarding.
    #[default]
    PassThrough,
    /// Every statement waits (is held, not forwarded) and nothing more from the server reaches
    /// established clients, until the mode changes. Connecting still works.
    Stall,
    /// Statements that write or commit wait; reads pass.
    StallWrites,
    /// Each client message is forwarded `latency` ± uniform `jitter` after it arrived, in order.
    Latency { latency: Duration, jitter: Duration },
    /// Statements are answered with this error instead of being forwarded.
    Error { code: ErrorCode },
    /// Open connections are reset (RST) and new ones are reset on accept.
    Reset,
    /// New connections are reset on accept; open ones carry on.
    RefuseNew,
}

impl fmt::Display for ProxyMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyMode::PassThrough => f.write_str("pass-through"),
            ProxyMode::Stall => f.write_str("stall"),
            ProxyMode::StallWrites => f.write_str("stall_writes"),
            ProxyMode::Latency { latency, jitter } => {
                write!(f, "latency {latency:?} ± {jitter:?}")
            }
            ProxyMode::Error { code } => {
                write!(f, "error {} / {}", code.pg_sqlstate(), code.mysql_code())
            }
            ProxyMode::Reset => f.write_str("reset"),
            ProxyMode::RefuseNew => f.write_str("refuse_new"),
        }
    }
}

/// Where the proxy listens and what it forwards to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyConfig {
    pub listen: SocketAddr,
    pub upstream: SocketAddr,
    pub protocol: Protocol,
}

/// A snapshot of the proxy's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Connections accepted, including the ones then refused.
    pub accepted: u64,
    /// Connections reset on accept (`refuse_new`, `reset`).
    pub refused: u64,
    /// Connections open right now.
    pub open: u64,
    /// Statements seen from clients: PostgreSQL Query, Execute and FunctionCall messages, MySQL
    /// COM_QUERY and COM_STMT_EXECUTE.
    pub statements: u64,
    /// Messages held right now, one per holding connection: the one at the head of its queue
    /// (messages queued behind it are not counted).
    pub held: u64,
    /// Error answers the proxy wrote instead of forwarding a statement.
    pub errors_injected: u64,
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

struct Counters {
    accepted: AtomicU64,
    refused: AtomicU64,
    statements: AtomicU64,
    errors_injected: AtomicU64,
    /// Watched, so that a reset can wait for every connection to be gone.
    open: watch::Sender<u64>,
    /// Watched, so that a revert can wait for held statements to be released.
    held: watch::Sender<u64>,
}

struct Inner {
    config: ProxyConfig,
    local_addr: SocketAddr,
    mode: watch::Sender<ProxyMode>,
    counters: Counters,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

/// A running proxy. Cheap to clone; every clone controls the same proxy. It runs until
/// [`DbProxy::shutdown`].
#[derive(Clone)]
pub struct DbProxy {
    inner: Arc<Inner>,
}

impl fmt::Debug for DbProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbProxy")
            .field("local_addr", &self.inner.local_addr)
            .field("config", &self.inner.config)
            .field("mode", &self.mode())
            .finish()
    }
}

impl DbProxy {
    /// Binds the listener and starts accepting, in pass-through mode.
    pub async fn start(config: ProxyConfig) -> Result<DbProxy, ProxyError> {
        let listen_error = |source| ProxyError::Listen {
            addr: config.listen,
            source,
        };
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(listen_error)?;
        let local_addr = listener.local_addr().map_err(listen_error)?;
        let inner = Arc::new(Inner {
            config,
            local_addr,
            mode: watch::Sender::new(ProxyMode::PassThrough),
            counters: Counters {
                accepted: AtomicU64::new(0),
                refused: AtomicU64::new(0),
                statements: AtomicU64::new(0),
                errors_injected: AtomicU64::new(0),
                open: watch::Sender::new(0),
                held: watch::Sender::new(0),
            },
            cancel: CancellationToken::new(),
            tracker: TaskTracker::new(),
        });
        inner.tracker.spawn(accept_loop(listener, inner.clone()));
        tracing::debug!(listen = %local_addr, upstream = %config.upstream, "db proxy started");
        Ok(DbProxy { inner })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    pub fn config(&self) -> ProxyConfig {
        self.inner.config
    }

    /// Switches the mode. Synchronous: every message a connection looks at after this returns
    /// is treated under the new mode, and held messages are re-decided at once.
    pub fn set_mode(&self, mode: ProxyMode) {
        self.inner.mode.send_replace(mode);
    }

    pub fn mode(&self) -> ProxyMode {
        *self.inner.mode.borrow()
    }

    pub fn stats(&self) -> ProxyStats {
        let c = &self.inner.counters;
        ProxyStats {
            accepted: c.accepted.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            open: *c.open.borrow(),
            statements: c.statements.load(Ordering::Relaxed),
            held: *c.held.borrow(),
            errors_injected: c.errors_injected.load(Ordering::Relaxed),
        }
    }

    /// Returns once no message is held.
    ///
    /// Cancel safety: cancel safe; it only watches a counter.
    pub async fn released(&self) {
        let mut held = self.inner.counters.held.subscribe();
        // The sender lives in `inner`, which `self` keeps alive, so this cannot fail.
        let _ = held.wait_for(|n| *n == 0).await;
    }

    /// Returns once at least `n` messages are held, for callers that wait for a statement to
    /// reach the proxy.
    ///
    /// Cancel safety: cancel safe; it only watches a counter.
    pub async fn held_at_least(&self, n: u64) {
        let mut held = self.inner.counters.held.subscribe();
        let _ = held.wait_for(|h| *h >= n).await;
    }

    /// Returns once no connection is open.
    ///
    /// Cancel safety: cancel safe; it only watches a counter.
    pub async fn all_closed(&self) {
        let mut open = self.inner.counters.open.subscribe();
        let _ = open.wait_for(|n| *n == 0).await;
    }

    /// Stops accepting, closes every connection, and waits up to `grace` for the tasks to end.
    /// Returns whether they all ended in time.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        self.inner.cancel.cancel();
        self.inner.tracker.close();
        tokio::time::timeout(grace, self.inner.tracker.wait())
            .await
            .is_ok()
    }
}

/// Makes the next close of `stream` send RST instead of FIN, as a network reset would.
fn set_reset_on_close(stream: &TcpStream) {
    if let Err(e) = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO)) {
        tracing::debug!(error = %e, "cannot set SO_LINGER 0; closing with FIN");
    }
}

async fn accept_loop(listener: TcpListener, inner: Arc<Inner>) {
    loop {
        let accepted = tokio::select! {
            _ = inner.cancel.cancelled() => return,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                // Errors such as EMFILE persist until something closes; back off, don't spin.
                tokio::select! {
                    _ = inner.cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(10)) => continue,
                }
            }
        };
        inner.counters.accepted.fetch_add(1, Ordering::Relaxed);
        let mode = *inner.mode.borrow();
        if matches!(mode, ProxyMode::Reset | ProxyMode::RefuseNew) {
            inner.counters.refused.fetch_add(1, Ordering::Relaxed);
            set_reset_on_close(&stream);
            drop(stream);
            continue;
        }
        inner.counters.open.send_modify(|n| *n += 1);
        let conn_inner = inner.clone();
        inner.tracker.spawn(async move {
            let _open = OpenGuard(&conn_inner.counters);
            serve(stream, peer, &conn_inner).await;
        });
    }
}

struct OpenGuard<'a>(&'a Counters);

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.open.send_modify(|n| *n -= 1);
    }
}

/// Returns when the mode becomes `Reset`; never if the mode channel is gone.
async fn reset_requested(rx: &mut watch::Receiver<ProxyMode>) {
    if rx.wait_for(|m| *m == ProxyMode::Reset).await.is_err() {
        std::future::pending::<()>().await;
    }
}

enum End {
    Closed,
    Failed(ConnError),
    Reset,
    Shutdown,
}

async fn serve(mut client: TcpStream, peer: SocketAddr, inner: &Inner) {
    let _ = client.set_nodelay(true);
    let mut mode_rx = inner.mode.subscribe();
    let connected = tokio::select! {
        _ = inner.cancel.cancelled() => return,
        _ = reset_requested(&mut mode_rx) => {
            set_reset_on_close(&client);
            return;
        }
        r = TcpStream::connect(inner.config.upstream) => r,
    };
    let mut server = match connected {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%peer, upstream = %inner.config.upstream, error = %e,
                "cannot connect upstream; closing the client");
            return;
        }
    };
    let _ = server.set_nodelay(true);
    let conn = ConnShared::default();
    let (inject_tx, inject_rx) = mpsc::unbounded_channel();
    let end = {
        let (cr, cw) = client.split();
        let (sr, sw) = server.split();
        let pumps = async {
            match inner.config.protocol {
                Protocol::Postgres => tokio::try_join!(
                    client_to_server(PgClient::default(), cr, sw, inner, &conn, inject_tx),
                    server_to_client(PgServer::default(), sr, cw, inner, &conn, inject_rx),
                ),
                Protocol::Mysql => tokio::try_join!(
                    client_to_server(MyClient::default(), cr, sw, inner, &conn, inject_tx),
                    server_to_client(MyServer::default(), sr, cw, inner, &conn, inject_rx),
                ),
            }
        };
        tokio::select! {
            r = pumps => match r {
                Ok(_) => End::Closed,
                Err(e) => End::Failed(e),
            },
            _ = reset_requested(&mut mode_rx) => End::Reset,
            _ = inner.cancel.cancelled() => End::Shutdown,
        }
    };
    match end {
        End::Closed | End::Shutdown => {}
        End::Reset => {
            set_reset_on_close(&client);
            set_reset_on_close(&server);
        }
        End::Failed(ConnError::Io(e)) => tracing::debug!(%peer, error = %e, "connection ended"),
        End::Failed(e) => tracing::warn!(%peer, error = %e, "closing connection"),
    }
}
