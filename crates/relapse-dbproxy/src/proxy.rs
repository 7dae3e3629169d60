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

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::classify::{self, Dialect, CLASSIFY_PREFIX};
use crate::{mysql, pg, FrameError};

/// Per-direction buffer. Large enough that a pgbench-style exchange is one read and one write.
const BUF_SIZE: usize = 64 * 1024;
/// Bytes of a Bind/Execute/Close the PostgreSQL pump reads: the portal and statement names.
const PG_NAMES_PREFIX: usize = 5 + 2 * 1024;
/// Bytes of a MySQL server greeting read to clear CLIENT_SSL; real greetings are ~100 bytes.
const MYSQL_GREETING_PREFIX: usize = mysql::HEADER_LEN + 4096;

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

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("malformed client stream: {0}")]
    Client(FrameError),
    #[error("malformed server stream: {0}")]
    Server(FrameError),
    #[error("client closed with a statement held; dropped it")]
    ClosedWhileHeld,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// What the two pumps of one connection share.
#[derive(Default)]
struct ConnShared {
    /// MySQL: the client has sent a command, so server output is held while stalled. (PostgreSQL
    /// knows this from the first ReadyForQuery, in its server pump.)
    established: AtomicBool,
    /// MySQL: whether the COM_STMT_PREPARE just forwarded writes, until its response names the
    /// statement id.
    awaiting_prepare: Mutex<Option<bool>>,
    /// MySQL: prepared statement id → whether it writes.
    statements: Mutex<HashMap<u32, bool>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data is plain maps and flags; a panic elsewhere cannot leave them inconsistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An answer the proxy writes to the client itself.
struct Inject {
    /// PostgreSQL: due once the server has sent this many ReadyForQuery messages.
    after_z: u64,
    bytes: Vec<u8>,
    /// Follow `bytes` with a ReadyForQuery carrying the tracked transaction status.
    ready: bool,
}

enum Decision {
    Forward { delay: bool },
    Hold,
    Drop { reply: Option<Inject>, error: bool },
}

enum Blocked {
    NeedMore,
    Held,
    Until(Instant),
}

/// The protocol-specific half of the client pump.
trait ClientDialect: Send {
    type Frame: Send;
    fn header(&self, buf: &[u8]) -> Result<Option<Self::Frame>, FrameError>;
    fn len(f: &Self::Frame) -> usize;
    /// How many bytes of the frame (header included) `decide` and `consume` read.
    fn needed(&self, f: &Self::Frame) -> usize;
    /// What to do with the frame at the head of the queue under `mode`. No side effects: a held
    /// frame is decided again when the mode changes.
    fn decide(
        &self,
        f: &Self::Frame,
        prefix: &[u8],
        mode: ProxyMode,
        conn: &ConnShared,
    ) -> Decision;
    /// Moves past the frame, which the server gets if `forwarded`. Returns whether it was a
    /// statement, for the counter.
    fn consume(
        &mut self,
        f: &Self::Frame,
        prefix: &[u8],
        forwarded: bool,
        conn: &ConnShared,
    ) -> bool;
}

/// The protocol-specific half of the server pump.
trait ServerDialect: Send {
    type Frame: Send;
    fn header(&self, buf: &[u8]) -> Result<Option<Self::Frame>, FrameError>;
    fn len(f: &Self::Frame) -> usize;
    fn needed(&self, f: &Self::Frame, conn: &ConnShared) -> usize;
    /// Looks at (and may rewrite) the frame's first `needed` bytes, and moves past it.
    fn inspect(&mut self, f: &Self::Frame, prefix: &mut [u8], conn: &ConnShared);
    /// Whether the client is past connecting, so that a stall holds what the server sends.
    fn established(&self, conn: &ConnShared) -> bool;
    fn due(&self, inject: &Inject) -> bool;
    /// The status for an injected ReadyForQuery.
    fn ready_status(&self) -> u8;
}

/// Holds the `held` counter up by one while this connection holds a message.
struct HeldSlot<'a> {
    counters: &'a Counters,
    on: bool,
}

impl HeldSlot<'_> {
    fn set(&mut self, on: bool) {
        if on != self.on {
            self.on = on;
            self.counters
                .held
                .send_modify(|n| if on { *n += 1 } else { *n -= 1 });
        }
    }
}

impl Drop for HeldSlot<'_> {
    fn drop(&mut self) {
        self.set(false);
    }
}

fn sample_latency(latency: Duration, jitter: Duration) -> Duration {
    if jitter.is_zero() {
        return latency;
    }
    let j = jitter.as_secs_f64();
    let d = latency.as_secs_f64() + rand::random_range(-j..=j);
    Duration::from_secs_f64(d.max(0.0))
}

async fn client_to_server<D: ClientDialect>(
    mut d: D,
    mut cr: ReadHalf<'_>,
    mut sw: WriteHalf<'_>,
    inner: &Inner,
    conn: &ConnShared,
    inject: mpsc::UnboundedSender<Inject>,
) -> Result<(), ConnError> {
    let counters = &inner.counters;
    let mut mode_rx = inner.mode.subscribe();
    let mut buf = vec![0u8; BUF_SIZE];
    let (mut scan, mut end) = (0usize, 0usize);
    // Bytes of the current frame still to forward, or to drop, without looking at them.
    let (mut forward_left, mut drop_left) = (0usize, 0usize);
    let mut held = HeldSlot {
        counters,
        on: false,
    };
    // Under latency: when the head frame goes out; the last release, to keep order with jitter.
    let mut release_at: Option<Instant> = None;
    let mut last_release = Instant::now();
    let mut read_at = Instant::now();
    let mut eof = false;
    loop {
        let mode = *mode_rx.borrow_and_update();
        let mut run = scan;
        let blocked = loop {
            if forward_left > 0 {
                let k = forward_left.min(end - scan);
                scan += k;
                forward_left -= k;
                if forward_left > 0 {
                    break Blocked::NeedMore;
                }
                continue;
            }
            if drop_left > 0 {
                if run < scan {
                    sw.write_all(&buf[run..scan]).await?;
                }
                let k = drop_left.min(end - scan);
                scan += k;
                run = scan;
                drop_left -= k;
                if drop_left > 0 {
                    break Blocked::NeedMore;
                }
                continue;
            }
            let Some(f) = d.header(&buf[scan..end]).map_err(ConnError::Client)? else {
                break Blocked::NeedMore;
            };
            let need = d.needed(&f).min(D::len(&f));
            if end - scan < need {
                break Blocked::NeedMore;
            }
            let prefix = &buf[scan..scan + need];
            match d.decide(&f, prefix, mode, conn) {
                Decision::Hold => {
                    held.set(true);
                    break Blocked::Held;
                }
                Decision::Forward { delay } => {
                    if let (true, ProxyMode::Latency { latency, jitter }) = (delay, mode) {
                        let at = *release_at.get_or_insert_with(|| {
                            let at = (read_at + sample_latency(latency, jitter)).max(last_release);
                            last_release = at;
                            at
                        });
                        if Instant::now() < at {
                            break Blocked::Until(at);
                        }
                    }
                    held.set(false);
                    release_at = None;
                    if d.consume(&f, prefix, true, conn) {
                        counters.statements.fetch_add(1, Ordering::Relaxed);
                    }
                    forward_left = D::len(&f);
                }
                Decision::Drop { reply, error } => {
                    held.set(false);
                    release_at = None;
                    if d.consume(&f, prefix, false, conn) {
                        counters.statements.fetch_add(1, Ordering::Relaxed);
                    }
                    if error {
                        counters.errors_injected.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Some(reply) = reply {
                        // The server pump only goes away with the whole connection.
                        let _ = inject.send(reply);
                    }
                    drop_left = D::len(&f);
                }
            }
        };
        if run < scan {
            sw.write_all(&buf[run..scan]).await?;
        }
        // Keep only what is not yet decided: a partial header or prefix, or queued messages.
        buf.copy_within(scan..end, 0);
        end -= scan;
        scan = 0;

        if eof {
            match blocked {
                Blocked::NeedMore => {
                    let _ = sw.shutdown().await;
                    return Ok(());
                }
                Blocked::Held => return Err(ConnError::ClosedWhileHeld),
                Blocked::Until(_) => {}
            }
        }
        let room = end < buf.len() && !eof;
        let waiting_on_mode = !matches!(blocked, Blocked::NeedMore);
        let until = match blocked {
            Blocked::Until(at) => Some(at),
            _ => None,
        };
        tokio::select! {
            r = cr.read(&mut buf[end..]), if room => {
                let n = r?;
                if n == 0 {
                    eof = true;
                } else {
                    end += n;
                    read_at = Instant::now();
                }
            }
            r = mode_rx.changed(), if waiting_on_mode => {
                if r.is_err() {
                    return Ok(());
                }
            }
            _ = tokio::time::sleep_until(until.unwrap_or(read_at)), if until.is_some() => {}
            else => return Ok(()),
        }
    }
}

async fn server_to_client<D: ServerDialect>(
    mut d: D,
    mut sr: ReadHalf<'_>,
    mut cw: WriteHalf<'_>,
    inner: &Inner,
    conn: &ConnShared,
    mut inject: mpsc::UnboundedReceiver<Inject>,
) -> Result<(), ConnError> {
    let mut mode_rx = inner.mode.subscribe();
    let mut buf = vec![0u8; BUF_SIZE];
    let mut end = 0usize;
    // Bytes of the current frame still to pass without looking.
    let mut in_frame = 0usize;
    let mut pending: VecDeque<Inject> = VecDeque::new();
    let mut injects_open = true;
    let mut eof = false;
    loop {
        let stalled = *mode_rx.borrow_and_update() == ProxyMode::Stall && d.established(conn);
        if !stalled {
            let (mut scan, mut written) = (0usize, 0usize);
            loop {
                if in_frame > 0 {
                    let k = in_frame.min(end - scan);
                    scan += k;
                    in_frame -= k;
                    if in_frame > 0 {
                        break;
                    }
                    continue;
                }
                while let Some(i) = pending.front() {
                    if !d.due(i) {
                        break;
                    }
                    if written < scan {
                        cw.write_all(&buf[written..scan]).await?;
                        written = scan;
                    }
                    cw.write_all(&i.bytes).await?;
                    if i.ready {
                        cw.write_all(&pg::ready_for_query(d.ready_status())).await?;
                    }
                    pending.pop_front();
                }
                let Some(f) = d.header(&buf[scan..end]).map_err(ConnError::Server)? else {
                    break;
                };
                let need = d.needed(&f, conn).min(D::len(&f));
                if end - scan < need {
                    break;
                }
                d.inspect(&f, &mut buf[scan..scan + need], conn);
                in_frame = D::len(&f);
            }
            if written < scan {
                cw.write_all(&buf[written..scan]).await?;
            }
            buf.copy_within(scan..end, 0);
            end -= scan;
            if eof {
                // Whatever could not be framed (a cut-off header) goes out as it is.
                cw.write_all(&buf[..end]).await?;
                let _ = cw.shutdown().await;
                return Ok(());
            }
        }
        // While stalled, leave the server's output in the socket buffers: the server feels the
        // back-pressure of a client that does not read, and memory stays bounded.
        let room = end < buf.len() && !stalled && !eof;
        tokio::select! {
            i = inject.recv(), if injects_open => match i {
                Some(i) => pending.push_back(i),
                None => injects_open = false,
            },
            r = sr.read(&mut buf[end..]), if room => {
                let n = r?;
                if n == 0 {
                    eof = true;
                } else {
                    end += n;
                }
            }
            r = mode_rx.changed(), if stalled => {
                if r.is_err() {
                    return Ok(());
                }
            }
            else => return Ok(()),
        }
    }
}

/// The PostgreSQL client pump's state: the framing phase, statement classes by name, and the
/// extended-protocol group the client is in.
#[derive(Default)]
struct PgClient {
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
struct PgServer {
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

/// How the packets that continue the current client message are treated.
#[derive(Clone, Copy)]
enum Continue {
    Forward,
    Drop,
}

#[derive(Default)]
struct MyClient {
    decoder: mysql::PacketDecoder,
    continuing: Option<Continue>,
}

fn mysql_writes(payload: &[u8], conn: &ConnShared) -> bool {
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
struct MyServer {
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
