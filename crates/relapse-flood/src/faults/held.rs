//! Slowloris and connection_flood: connections opened to the target, at most a bounded number
//! connecting at once, and held (slowloris trickling a header byte now and then) until the fault
//! is reverted or its time is up. Both count what they hold, and report no request figures.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use relapse_core::fault::{BoxFuture, Effective, Fault, FaultError, RevertInstructions, Reverted};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};
use tokio::time::{sleep, timeout, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{instructions, CLOSE_WITHIN, CONNECTS_AT_ONCE, CONNECT_TIMEOUT, EFFECTIVE_SHARE};
use crate::source::{connect_from, SourcePicker};
use crate::{check_connections, check_positive, check_target, FloodError, Sources, SourcesExt};

/// What a held connection does once open.
#[derive(Debug, Clone, Copy)]
enum Hold {
    /// Nothing: an idle connection.
    Idle,
    /// A request line, then one header line every interval, never ending the headers.
    Slowloris { interval: Duration },
}

/// The connections-holding engine shared by [`Slowloris`] and [`ConnectionFlood`].
struct Holder {
    kind: &'static str,
    target: SocketAddr,
    connections: usize,
    sources: Arc<SourcePicker>,
    hold: Hold,
    max_duration: Duration,
    running: Option<Holding>,
}

struct Holding {
    cancel: CancellationToken,
    tracker: TaskTracker,
    open: watch::Receiver<usize>,
}

/// Counts a connection as open while alive; the stream is a field before it, so it is closed
/// before the count drops.
struct Held {
    stream: TcpStream,
    _open: OpenCount,
}

struct OpenCount(Arc<watch::Sender<usize>>);

impl OpenCount {
    fn new(open: &Arc<watch::Sender<usize>>) -> OpenCount {
        open.send_modify(|n| *n += 1);
        OpenCount(open.clone())
    }
}

impl Drop for OpenCount {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

impl Holder {
    #[allow(clippy::too_many_arguments)]
    fn new(
        kind: &'static str,
        target: SocketAddr,
        connections: usize,
        sources: &Sources,
        hold: Hold,
        max_duration: Duration,
        allow: &[IpAddr],
    ) -> Result<Holder, FloodError> {
        check_target(target.ip(), allow)?;
        check_connections(connections)?;
        check_positive("max_duration", max_duration)?;
        if let Hold::Slowloris { interval } = hold {
            check_positive("header_interval", interval)?;
        }
        Ok(Holder {
            kind,
            target,
            connections,
            sources: Arc::new(SourcePicker::new(sources.expand(target.ip())?)),
            hold,
            max_duration,
            running: None,
        })
    }

    /// How long a closed connection waits before it is re-opened: at most one re-open per
    /// connection per interval, so a server that closes at once does not make us churn.
    fn reopen_pause(&self) -> Duration {
        match self.hold {
            Hold::Idle => Duration::from_secs(1),
            Hold::Slowloris { interval } => interval,
        }
    }

    async fn inject(&mut self) -> Result<Effective, FaultError> {
        if self.running.is_some() {
            return Err(FaultError::Injector(format!(
                "{} already running",
                self.kind
            )));
        }
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let (tx, open) = watch::channel(0usize);
        let tx = Arc::new(tx);
        let connecting = Arc::new(Semaphore::new(CONNECTS_AT_ONCE));
        for _ in 0..self.connections {
            tracker.spawn(hold_one(
                self.target,
                self.sources.clone(),
                self.hold,
                self.reopen_pause(),
                tx.clone(),
                connecting.clone(),
                cancel.clone(),
            ));
        }
        // Bounded by max_duration even if revert never comes.
        let auto_stop = cancel.clone();
        let max_duration = self.max_duration;
        tracker.spawn(async move {
            tokio::select! {
                _ = sleep(max_duration) => auto_stop.cancel(),
                _ = auto_stop.cancelled() => {}
            }
        });
        tracker.close();
        self.running = Some(Holding {
            cancel,
            tracker,
            open: open.clone(),
        });
        let want = self.connections;
        let within = CONNECT_TIMEOUT + Duration::from_micros(500 * want as u64);
        let mut rx = open;
        let all = timeout(within, rx.wait_for(|n| *n >= want)).await.is_ok();
        let reached = *rx.borrow();
        let at = Instant::now();
        if all || reached as f64 >= want as f64 * EFFECTIVE_SHARE {
            return Ok(Effective {
                at,
                detail: format!(
                    "{}: {reached} of {want} connections open to {}",
                    self.kind, self.target
                ),
            });
        }
        let _ = self.revert().await;
        Err(FaultError::NotConfirmed(format!(
            "only {reached} of {want} connections opened within {within:?}"
        )))
    }

    async fn revert(&mut self) -> Result<Reverted, FaultError> {
        let Some(running) = self.running.take() else {
            return Ok(Reverted {
                at: Instant::now(),
                detail: format!("{} not running", self.kind),
            });
        };
        running.cancel.cancel();
        let mut open = running.open;
        let closed = timeout(CLOSE_WITHIN, async {
            running.tracker.wait().await;
            let _ = open.wait_for(|n| *n == 0).await;
        })
        .await;
        let left = *open.borrow();
        if closed.is_err() || left != 0 {
            return Err(FaultError::NotConfirmed(format!(
                "{left} connections still open"
            )));
        }
        Ok(Reverted {
            at: Instant::now(),
            detail: format!("{}: 0 connections open to {}", self.kind, self.target),
        })
    }

    fn revert_now(&mut self) {
        if let Some(running) = self.running.take() {
            running.cancel.cancel();
        }
    }
}

/// One held connection, re-opened when the server closes it, until cancelled.
async fn hold_one(
    target: SocketAddr,
    sources: Arc<SourcePicker>,
    hold: Hold,
    reopen_pause: Duration,
    open: Arc<watch::Sender<usize>>,
    connecting: Arc<Semaphore>,
    cancel: CancellationToken,
) {
    let mut first = true;
    let mut buf = [0u8; 512];
    loop {
        if !first {
            tokio::select! {
                _ = sleep(reopen_pause) => {}
                _ = cancel.cancelled() => return,
            }
        }
        first = false;
        let source = sources.next();
        let stream = tokio::select! {
            r = async {
                let _permit = connecting.acquire().await;
                timeout(CONNECT_TIMEOUT, connect_from(source, target)).await
            } => r,
            _ = cancel.cancelled() => return,
        };
        let Ok(Ok(stream)) = stream else { continue };
        let mut held = Held {
            stream,
            _open: OpenCount::new(&open),
        };
        if let Hold::Slowloris { .. } = hold {
            let line = format!(
                "GET /?{} HTTP/1.1\r\nHost: {target}\r\n",
                rand::random::<u32>()
            );
            if held.stream.write_all(line.as_bytes()).await.is_err() {
                continue;
            }
        }
        let interval = match hold {
            Hold::Slowloris { interval } => interval,
            // Never ticks in practice: an idle connection only waits for close or cancel.
            Hold::Idle => Duration::from_secs(3600),
        };
        let mut tick = tokio::time::interval_at(Instant::now() + interval, interval);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                read = held.stream.read(&mut buf) => match read {
                    // The server closed (or answered, e.g. 408, and will close): re-open.
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                },
                _ = tick.tick(), if matches!(hold, Hold::Slowloris { .. }) => {
                    if held.stream.write_all(b"X-a: b\r\n").await.is_err() {
                        break;
                    }
                }
            }
        }
    }
}

/// Slowloris: many connections, each sending a request whose headers never end, one header line
/// per interval, so each holds a server worker or slot.
pub struct Slowloris {
    holder: Holder,
}

impl Slowloris {
    /// Checks the target and bounds now. Refuses more than [`crate::MAX_CONNECTIONS`].
    pub fn new(
        target: SocketAddr,
        connections: usize,
        sources: Sources,
        header_interval: Duration,
        max_duration: Duration,
        allow_targets: &[IpAddr],
    ) -> Result<Slowloris, FloodError> {
        Ok(Slowloris {
            holder: Holder::new(
                crate::SLOWLORIS,
                target,
                connections,
                &sources,
                Hold::Slowloris {
                    interval: header_interval,
                },
                max_duration,
                allow_targets,
            )?,
        })
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.holder.running.as_ref().map_or(0, |r| *r.open.borrow())
    }
}

/// Holds many idle connections open, filling the server's accept queue, connection table or
/// worker pool.
pub struct ConnectionFlood {
    holder: Holder,
}

impl ConnectionFlood {
    /// Checks the target and bounds now. Refuses more than [`crate::MAX_CONNECTIONS`].
    pub fn new(
        target: SocketAddr,
        connections: usize,
        sources: Sources,
        max_duration: Duration,
        allow_targets: &[IpAddr],
    ) -> Result<ConnectionFlood, FloodError> {
        Ok(ConnectionFlood {
            holder: Holder::new(
                crate::CONNECTION_FLOOD,
                target,
                connections,
                &sources,
                Hold::Idle,
                max_duration,
                allow_targets,
            )?,
        })
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.holder.running.as_ref().map_or(0, |r| *r.open.borrow())
    }
}

macro_rules! holder_fault {
    ($ty:ty, $what:literal) => {
        impl Fault for $ty {
            fn describe(&self) -> String {
                format!(
                    concat!($what, " {} with {} connections"),
                    self.holder.target, self.holder.connections
                )
            }

            fn revert_instructions(&self) -> RevertInstructions {
                instructions(self.holder.kind, self.holder.target)
            }

            /// Effective once every connection is open (or at least 90% of them within a
            /// bounded time; the detail says how many).
            fn inject(&mut self) -> BoxFuture<'_, Result<Effective, FaultError>> {
                Box::pin(self.holder.inject())
            }

            /// Confirmed once every connection is closed.
            fn revert(&mut self) -> BoxFuture<'_, Result<Reverted, FaultError>> {
                Box::pin(self.holder.revert())
            }

            fn revert_now(&mut self) {
                self.holder.revert_now();
            }
        }

        impl Drop for $ty {
            fn drop(&mut self) {
                self.holder.revert_now();
            }
        }
    };
}

holder_fault!(Slowloris, "slowloris");
holder_fault!(ConnectionFlood, "connection flood");
