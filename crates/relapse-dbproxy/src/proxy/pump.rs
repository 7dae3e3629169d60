//! The two pumps of one connection, client → server and server → client, and what they share;
//! the protocol-specific halves are the dialects of [`super::pg_dialect`] and
//! [`super::mysql_dialect`].

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::{pg, FrameError};

use super::{Counters, Inner, ProxyMode};

/// Per-direction buffer. Large enough that a pgbench-style exchange is one read and one write.
const BUF_SIZE: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub(super) enum ConnError {
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
pub(super) struct ConnShared {
    /// MySQL: the client has sent a command, so server output is held while stalled. (PostgreSQL
    /// knows this from the first ReadyForQuery, in its server pump.)
    pub(super) established: AtomicBool,
    /// MySQL: whether the COM_STMT_PREPARE just forwarded writes, until its response names the
    /// statement id.
    pub(super) awaiting_prepare: Mutex<Option<bool>>,
    /// MySQL: prepared statement id → whether it writes.
    pub(super) statements: Mutex<HashMap<u32, bool>>,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data is plain maps and flags; a panic elsewhere cannot leave them inconsistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An answer the proxy writes to the client itself.
pub(super) struct Inject {
    /// PostgreSQL: due once the server has sent this many ReadyForQuery messages.
    pub(super) after_z: u64,
    pub(super) bytes: Vec<u8>,
    /// Follow `bytes` with a ReadyForQuery carrying the tracked transaction status.
    pub(super) ready: bool,
}

pub(super) enum Decision {
    Forward { delay: bool },
    Hold,
    Drop { reply: Option<Inject>, error: bool },
}

pub(super) enum Blocked {
    NeedMore,
    Held,
    Until(Instant),
}

/// The protocol-specific half of the client pump.
pub(super) trait ClientDialect: Send {
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
pub(super) trait ServerDialect: Send {
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
pub(super) struct HeldSlot<'a> {
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

pub(super) fn sample_latency(latency: Duration, jitter: Duration) -> Duration {
    if jitter.is_zero() {
        return latency;
    }
    let j = jitter.as_secs_f64();
    let d = latency.as_secs_f64() + rand::random_range(-j..=j);
    Duration::from_secs_f64(d.max(0.0))
}

pub(super) async fn client_to_server<D: ClientDialect>(
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

pub(super) async fn server_to_client<D: ServerDialect>(
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
