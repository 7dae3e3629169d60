//! The frontend's failover between the primary backend and a standby (the FLG incident, where
//! a hung healthcheck froze the main database server and the service failed over to standby
//! hardware; a second hang then took both down, leaving nothing to fail over to).
//!
//! The frontend checks its backends itself, as a load balancer would: rounds of checks start
//! every `inter` (a round that takes longer delays the next one, rounds never overlap), and a
//! round checks every backend at once, each with a `GET /health` on a new connection (a pooled
//! one could hide a dead peer) bounded by `timeout`. Every backend starts UP; `fall` consecutive
//! failed checks mark it DOWN, `rise` consecutive passed checks UP again. After each round the
//! frontend picks the backend it sends everything to ([`Health::round`]).
//!
//! Each decision is an [`Event`], logged with `tracing` and, with `--event-log`, appended to
//! that file as one line, an RFC 3339 UTC timestamp with milliseconds and the event:
//!
//! ```text
//! 2026-12-01T22:00:00.123Z backend primary is DOWN after 2 failed checks (backend did not answer within 250ms)
//! 2026-12-01T22:00:00.123Z switched from primary to standby (failover)
//! 2026-12-01T22:00:05.456Z backend primary is UP after 2 passed checks
//! 2026-12-01T22:00:05.456Z switched from standby to primary (failback)
//! 2026-12-01T22:00:09.000Z no backend is UP: staying on standby
//! ```
//!
//! Scenarios match `is DOWN`, `is UP` and `switched from` with regular expressions: keep those
//! words as they are.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::Write;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, StatusCode, Uri};
use tokio::time::MissedTickBehavior;
use tokio_util::task::AbortOnDropHandle;

use crate::FailoverOptions;

/// The name of the backend the frontend starts on and, with failback, returns to.
pub(crate) const PRIMARY: &str = "primary";
/// The name of the other one.
pub(crate) const STANDBY: &str = "standby";
/// The primary's place in [`Upstream`] and [`Health`].
const PRIMARY_INDEX: usize = 0;

/// What one check found: passed, or why not.
pub(crate) type CheckResult = Result<(), String>;

/// The backends the frontend can send its requests to, and which one it does send them to.
pub(crate) struct Upstream {
    /// Name and base URL (without a trailing slash) of each backend, the primary first.
    backends: Vec<(&'static str, String)>,
    /// What the last round of checks concluded. One lock for all of it, so that `/metrics`
    /// never shows, say, a switch counted but not yet made.
    status: Mutex<Status>,
}

/// The part of [`Health`] the rest of the frontend sees.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Status {
    up: Vec<bool>,
    active: usize,
    switches: u64,
}

impl Upstream {
    /// The primary alone (no checks, it is always the one), or the primary and a standby.
    pub(crate) fn new(primary: &str, standby: Option<&str>) -> Upstream {
        let base = |url: &str| url.trim_end_matches('/').to_owned();
        let mut backends = vec![(PRIMARY, base(primary))];
        if let Some(standby) = standby {
            backends.push((STANDBY, base(standby)));
        }
        Upstream {
            status: Mutex::new(Status {
                up: vec![true; backends.len()],
                active: PRIMARY_INDEX,
                switches: 0,
            }),
            backends,
        }
    }

    fn status(&self) -> std::sync::MutexGuard<'_, Status> {
        // The lock only guards plain values that are always consistent: a panic elsewhere
        // cannot have left them half-written.
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The base URL of the backend to send a request to now.
    pub(crate) fn active_url(&self) -> &str {
        let active = self.status().active;
        &self.backends[active].1
    }

    fn names(&self) -> Vec<&'static str> {
        self.backends.iter().map(|(name, _)| *name).collect()
    }

    fn publish(&self, health: &Health) {
        *self.status() = Status {
            up: health.backends.iter().map(|tally| tally.up).collect(),
            active: health.active,
            switches: health.switches,
        };
    }

    /// The failover's gauges and counter in the Prometheus text format; nothing without a
    /// standby.
    pub(crate) fn metrics(&self) -> String {
        if self.backends.len() < 2 {
            return String::new();
        }
        let status = self.status().clone();
        let mut up = String::from(
            "# HELP relapse_demo_backend_up 1 if the frontend's health checks have the backend UP.\n\
             # TYPE relapse_demo_backend_up gauge\n",
        );
        let mut active = String::from(
            "# HELP relapse_demo_active_backend 1 for the backend the frontend sends its requests to.\n\
             # TYPE relapse_demo_active_backend gauge\n",
        );
        for (index, (name, _)) in self.backends.iter().enumerate() {
            let is_up = u8::from(status.up[index]);
            let is_active = u8::from(status.active == index);
            up.push_str(&format!(
                "relapse_demo_backend_up{{backend=\"{name}\"}} {is_up}\n"
            ));
            active.push_str(&format!(
                "relapse_demo_active_backend{{backend=\"{name}\"}} {is_active}\n"
            ));
        }
        format!(
            "{up}{active}\
             # HELP relapse_demo_backend_switches_total Switches of the active backend (failovers and failbacks).\n\
             # TYPE relapse_demo_backend_switches_total counter\n\
             relapse_demo_backend_switches_total {}\n",
            status.switches
        )
    }
}

/// One decision of the failover; its `Display` is the event log's line (after the timestamp).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    /// `fall` consecutive checks failed; `reason` is the last one's.
    Down {
        backend: &'static str,
        failures: u32,
        reason: String,
    },
    /// `rise` consecutive checks passed.
    Up { backend: &'static str, passes: u32 },
    /// The frontend now sends its requests to `to`.
    Switched {
        from: &'static str,
        to: &'static str,
        why: Switch,
    },
    /// The active backend is DOWN and so is every other: nothing to fail over to.
    NoneUp { staying_on: &'static str },
}

/// Why the active backend changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Switch {
    /// The active backend went DOWN.
    Failover,
    /// The primary is UP again and failback is on.
    Failback,
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let checks = |n: u32| if n == 1 { "check" } else { "checks" };
        match self {
            Self::Down {
                backend,
                failures,
                reason,
            } => write!(
                f,
                "backend {backend} is DOWN after {failures} failed {} ({reason})",
                checks(*failures)
            ),
            Self::Up { backend, passes } => write!(
                f,
                "backend {backend} is UP after {passes} passed {}",
                checks(*passes)
            ),
            Self::Switched { from, to, why } => {
                let why = match why {
                    Switch::Failover => "failover",
                    Switch::Failback => "failback",
                };
                write!(f, "switched from {from} to {to} ({why})")
            }
            Self::NoneUp { staying_on } => write!(f, "no backend is UP: staying on {staying_on}"),
        }
    }
}

/// The failover's state machine, without I/O or clock: fed the results of one round of checks
/// at a time, it says what changed.
#[derive(Debug)]
pub(crate) struct Health {
    names: Vec<&'static str>,
    backends: Vec<Tally>,
    active: usize,
    switches: u64,
    fall: u32,
    rise: u32,
    failback: bool,
    /// "No backend is UP" has been said for the current outage; it is said once, not every
    /// round, until some backend is UP again.
    stranded: bool,
}

/// One backend's state, HAProxy-style.
#[derive(Debug, Clone, Copy)]
struct Tally {
    up: bool,
    /// Consecutive results that contradict `up`: failures while UP, passes while DOWN.
    streak: u32,
}

impl Health {
    /// Every backend UP, the first (the primary) active. `fall` and `rise` below 1 count as 1.
    pub(crate) fn new(names: Vec<&'static str>, options: &FailoverOptions) -> Health {
        Health {
            backends: vec![
                Tally {
                    up: true,
                    streak: 0
                };
                names.len()
            ],
            names,
            active: PRIMARY_INDEX,
            switches: 0,
            fall: options.fall.max(1),
            rise: options.rise.max(1),
            failback: options.failback,
            stranded: false,
        }
    }

    /// Takes one round's results, one per backend in order, and returns what changed: backends
    /// that went DOWN or UP, in order, then at most one decision about the active backend.
    pub(crate) fn round(&mut self, results: &[CheckResult]) -> Vec<Event> {
        debug_assert_eq!(results.len(), self.backends.len());
        let mut events = Vec::new();
        for ((tally, name), result) in self.backends.iter_mut().zip(&self.names).zip(results) {
            match (tally.up, result) {
                (true, Ok(())) | (false, Err(_)) => tally.streak = 0,
                (true, Err(reason)) => {
                    tally.streak += 1;
                    tracing::debug!(backend = name, %reason, failures = tally.streak, "check failed");
                    if tally.streak >= self.fall {
                        *tally = Tally {
                            up: false,
                            streak: 0,
                        };
                        events.push(Event::Down {
                            backend: name,
                            failures: self.fall,
                            reason: reason.clone(),
                        });
                    }
                }
                (false, Ok(())) => {
                    tally.streak += 1;
                    if tally.streak >= self.rise {
                        *tally = Tally {
                            up: true,
                            streak: 0,
                        };
                        events.push(Event::Up {
                            backend: name,
                            passes: self.rise,
                        });
                    }
                }
            }
        }
        events.extend(self.decide());
        events
    }

    fn decide(&mut self) -> Option<Event> {
        if self.backends[self.active].up {
            self.stranded = false;
            let primary_back = self.active != PRIMARY_INDEX && self.backends[PRIMARY_INDEX].up;
            return (self.failback && primary_back)
                .then(|| self.switch(PRIMARY_INDEX, Switch::Failback));
        }
        // The first UP backend in order, so the primary when it is one of them.
        match self.backends.iter().position(|tally| tally.up) {
            Some(to) => Some(self.switch(to, Switch::Failover)),
            None if self.stranded => None,
            None => {
                self.stranded = true;
                Some(Event::NoneUp {
                    staying_on: self.names[self.active],
                })
            }
        }
    }

    fn switch(&mut self, to: usize, why: Switch) -> Event {
        let from = std::mem::replace(&mut self.active, to);
        self.switches += 1;
        self.stranded = false;
        Event::Switched {
            from: self.names[from],
            to: self.names[to],
            why,
        }
    }
}

/// Where the failover's events go: `tracing`, and the event log when there is one.
pub(crate) struct EventLog {
    file: Option<File>,
}

impl EventLog {
    /// Opens (creating it if need be) `path` for appending; `None` logs with `tracing` only.
    pub(crate) fn open(path: Option<&Path>) -> std::io::Result<EventLog> {
        let file = match path {
            Some(path) => Some(OpenOptions::new().create(true).append(true).open(path)?),
            None => None,
        };
        Ok(EventLog { file })
    }

    /// Logs `event`. A line is a single unbuffered write (so on disk at once, and never mixed
    /// with another writer's line in append mode); a failed write is logged, not fatal: the
    /// failover matters more than its record.
    pub(crate) fn record(&mut self, event: &Event) {
        tracing::info!(%event, "failover");
        if let Some(file) = &mut self.file {
            let line = format!(
                "{} {event}\n",
                humantime::format_rfc3339_millis(SystemTime::now())
            );
            if let Err(error) = file.write_all(line.as_bytes()) {
                tracing::warn!(%error, "failed to write the failover event log");
            }
        }
    }
}

/// Checks the backends of `upstream` with [`check_health`] until cancelled, switching its
/// active backend and telling `log` what happened.
pub(crate) async fn supervise(
    options: FailoverOptions,
    upstream: Arc<Upstream>,
    mut log: EventLog,
) {
    let health_urls: Vec<String> = upstream
        .backends
        .iter()
        .map(|(_, base)| format!("{base}/health"))
        .collect();
    run(
        options,
        upstream,
        |index| check_health(health_urls[index].clone()),
        |event| log.record(event),
    )
    .await;
}

/// The failover loop, with the check injected (tests give it one that needs no backend): a
/// round every `inter`, never overlapping, each check bounded by `timeout`; after each round,
/// [`Health::round`] decides, the result is published to `upstream`, and then each event goes
/// to `on_event` (so whoever reads an event finds its state in `/metrics` already).
pub(crate) async fn run<C, F>(
    options: FailoverOptions,
    upstream: Arc<Upstream>,
    check: C,
    mut on_event: impl FnMut(&Event),
) where
    C: Fn(usize) -> F,
    F: Future<Output = CheckResult>,
{
    let mut health = Health::new(upstream.names(), &options);
    // `Demo::start` and the argument parser refuse a zero `inter`, on which tokio panics.
    let mut rounds = tokio::time::interval(options.inter.max(Duration::from_millis(1)));
    // Rounds are awaited one after the other, so they never overlap. Delay, not Burst: after a
    // round slower than `inter` (a check that timed out), the next starts as soon as it ends
    // and the schedule goes on from there, instead of a volley of back-to-back rounds to catch
    // up on the ticks it missed, which would shorten the time a backend takes to fall.
    rounds.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let timeout = options.timeout;
    loop {
        rounds.tick().await;
        let checks = (0..upstream.backends.len()).map(|index| {
            let check = check(index);
            async move {
                tokio::time::timeout(timeout, check)
                    .await
                    .unwrap_or_else(|_| {
                        Err(format!(
                            "backend did not answer within {}",
                            humantime::format_duration(timeout)
                        ))
                    })
            }
        });
        let results = join_all(checks.collect()).await;
        let events = health.round(&results);
        upstream.publish(&health);
        for event in &events {
            on_event(event);
        }
    }
}

/// Runs `futures` concurrently on this task until all are done; their outputs, in order.
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|context| {
        let mut all_done = true;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(context) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => all_done = false,
                }
            }
        }
        if all_done {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

/// One health check: `GET url` on a connection of its own, passed on a 200 whose body arrived.
/// The caller bounds it; dropping it closes the connection.
pub(crate) async fn check_health(url: String) -> CheckResult {
    let unreachable = |error: &dyn fmt::Display| format!("backend unreachable: {error}");
    let uri: Uri = url.parse().map_err(|error| unreachable(&error))?;
    let authority = uri
        .authority()
        .ok_or_else(|| unreachable(&"backend url without host"))?
        .clone();
    let stream = tokio::net::TcpStream::connect(authority.as_str())
        .await
        .map_err(|error| unreachable(&error))?;
    // Reset, not closed, when done: several checks a second must not pile up TIME_WAIT sockets.
    stream
        .set_zero_linger()
        .map_err(|error| unreachable(&error))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|error| unreachable(&error))?;
    // Aborted (and the socket with it) when this check ends, or is dropped at its timeout.
    let _connection = AbortOnDropHandle::new(tokio::spawn(connection));
    let request = Request::get(uri.path())
        .header(hyper::header::HOST, authority.as_str())
        .body(Empty::<Bytes>::new())
        .map_err(|error| unreachable(&error))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|error| unreachable(&error))?;
    let status = response.status();
    response
        .into_body()
        .collect()
        .await
        .map_err(|error| unreachable(&error))?;
    if status == StatusCode::OK {
        Ok(())
    } else {
        Err(format!("backend answered {status}"))
    }
}

#[cfg(test)]
mod tests;
