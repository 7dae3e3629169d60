//! The load engine: HTTP/1.1 requests at a target, in an open model (a constant arrival rate,
//! latency measured from the intended send time) or a closed model (N connections, each sending
//! the next request when the previous one is answered).
//!
//! Hot path: each worker owns its connection, its random generator, its request and receive
//! buffers, one timer and its statistics (histogram included); the only shared writes per
//! request are one atomic ticket counter. Statistics are merged once, at the end. Requests go
//! through the lean client in `http1.rs`, not hyper's: see there why.
//!
//! Here: the workers, their schedule and the run. What a run is asked is in `spec`, what it
//! did in `report`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{sleep_until, Instant, Sleep};
use tokio_util::sync::CancellationToken;

use crate::http1::{self, RecvBuf};
use crate::source::{connect_from, SourcePicker};
use crate::template::{Prepared, RenderCtx, Scratch};
use crate::{FloodError, Sources, SourcesExt};

mod report;
mod spec;

pub use report::{LoadReport, SourceStats};
pub use spec::{LoadSpec, Model};

/// Sleeps shorter than this are not raced against cancellation: registering with the
/// cancellation token takes its lock, which every worker would contend for at high rates.
/// Stopping is still noticed right after the sleep.
const CANCEL_RACE_ABOVE: Duration = Duration::from_millis(5);

/// Watches a running load from outside: when the first request went out, how many connections
/// are open. Shared with [`run_load_with_probe`].
#[derive(Debug)]
pub struct LoadProbe {
    first_sent: watch::Sender<Option<Instant>>,
    open: watch::Sender<usize>,
}

impl Default for LoadProbe {
    fn default() -> Self {
        LoadProbe {
            first_sent: watch::Sender::new(None),
            open: watch::Sender::new(0),
        }
    }
}

impl LoadProbe {
    pub fn new() -> LoadProbe {
        LoadProbe::default()
    }

    /// Waits until the first request has been written; returns when it was.
    ///
    /// Cancel safety: cancel safe.
    pub async fn first_sent(&self) -> Instant {
        let mut rx = self.first_sent.subscribe();
        let at = rx
            .wait_for(Option::is_some)
            .await
            .expect("the sender is self");
        at.expect("waited for Some")
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        *self.open.borrow()
    }

    /// Waits until no connection is open.
    ///
    /// Cancel safety: cancel safe.
    pub async fn all_closed(&self) {
        let mut rx = self.open.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    fn mark_sent(&self) {
        self.first_sent.send_if_modified(|at| {
            if at.is_none() {
                *at = Some(Instant::now());
                true
            } else {
                false
            }
        });
    }

    fn opened(self: &Arc<Self>) -> OpenGuard {
        self.open.send_modify(|n| *n += 1);
        OpenGuard(self.clone())
    }
}

/// Counts a connection as open until dropped.
struct OpenGuard(Arc<LoadProbe>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.send_modify(|n| *n -= 1);
    }
}

/// When request `i` is due, relative to the start.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schedule {
    rate: f64,
    ramp: f64,
}

impl Schedule {
    pub(crate) fn new(rate: f64, ramp_up: Duration) -> Schedule {
        Schedule {
            rate,
            ramp: ramp_up.as_secs_f64(),
        }
    }

    /// Requests due during the ramp-up: the integral of the rising rate.
    fn ramp_requests(&self) -> f64 {
        self.rate * self.ramp / 2.0
    }

    /// The intended send time of request `i`, from 0. During the ramp-up the rate is
    /// `rate·t/ramp`, so `i` requests are due by `t = sqrt(2·i·ramp/rate)`.
    pub(crate) fn offset(&self, i: u64) -> Duration {
        let i = i as f64;
        let ramp_n = self.ramp_requests();
        let secs = if i < ramp_n {
            (2.0 * i * self.ramp / self.rate).sqrt()
        } else {
            self.ramp + (i - ramp_n) / self.rate
        };
        Duration::from_secs_f64(secs)
    }

    /// How many requests are due strictly before `t`.
    pub(crate) fn due_before(&self, t: Duration) -> u64 {
        let t = t.as_secs_f64();
        let n = if t < self.ramp {
            self.rate * t * t / (2.0 * self.ramp)
        } else {
            self.ramp_requests() + self.rate * (t - self.ramp)
        };
        n.ceil() as u64
    }
}

/// What every worker of one run shares.
struct Shared {
    target: SocketAddr,
    request: Prepared,
    keep_alive: bool,
    sources: SourcePicker,
    start: Instant,
    deadline: Instant,
    timeout: Duration,
    max_requests: u64,
    schedule: Option<Schedule>,
    per_source: bool,
    /// The ticket counter: request numbers are handed out from here.
    next: AtomicU64,
    stopping: AtomicBool,
    stop: CancellationToken,
    probe: Arc<LoadProbe>,
}

impl Shared {
    fn stopped(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }
}

/// One worker's counts, merged at the end.
struct Stats {
    sent: u64,
    /// Tickets that were due and tried (sent, or failed to connect).
    attempted: u64,
    completed: u64,
    errors: BTreeMap<&'static str, u64>,
    /// Few distinct statuses per run: a linear scan beats a map.
    statuses: Vec<(u16, u64)>,
    latency: Histogram<u64>,
    per_source: BTreeMap<IpAddr, SourceStats>,
}

pub(crate) fn new_histogram() -> Histogram<u64> {
    // Two significant digits keep a worker's histogram around 10 KB (there may be thousands of
    // workers); it grows to the largest latency seen.
    Histogram::new(relapse_core::report::LATENCY_SIGNIFICANT_DIGITS)
        .expect("2 significant digits are valid")
}

impl Stats {
    fn new() -> Stats {
        Stats {
            sent: 0,
            attempted: 0,
            completed: 0,
            errors: BTreeMap::new(),
            statuses: Vec::new(),
            latency: new_histogram(),
            per_source: BTreeMap::new(),
        }
    }

    fn error(&mut self, kind: &'static str, source: Option<IpAddr>, per_source: bool) {
        *self.errors.entry(kind).or_default() += 1;
        if let (true, Some(ip)) = (per_source, source) {
            let s = self.per_source.entry(ip).or_default();
            s.requests += 1;
            s.errors += 1;
        }
    }

    fn status(&mut self, status: u16, source: IpAddr, per_source: bool) {
        self.completed += 1;
        match self.statuses.iter_mut().find(|(s, _)| *s == status) {
            Some((_, n)) => *n += 1,
            None => self.statuses.push((status, 1)),
        }
        if per_source {
            let s = self.per_source.entry(source).or_default();
            s.requests += 1;
            *s.statuses.entry(status).or_default() += 1;
        }
    }
}

/// A worker's connection. Fields drop in order: the socket closes before the open count drops.
struct Conn {
    stream: TcpStream,
    source: IpAddr,
    /// The last response allows another request on this connection.
    reusable: bool,
    _open: OpenGuard,
}

/// Connects from the next source address, within the deadline `sleep` was reset to.
async fn connect(
    shared: &Shared,
    sleep: Pin<&mut Sleep>,
) -> Result<Conn, (&'static str, Option<IpAddr>)> {
    let source = shared.sources.next();
    let stream = tokio::select! {
        biased;
        r = connect_from(source, shared.target) => r.map_err(|_| ("connect", source))?,
        _ = sleep => return Err(("connect timeout", source)),
    };
    let source = match source {
        Some(ip) => ip,
        None => stream.local_addr().map_err(|_| ("connect", None))?.ip(),
    };
    let open = shared.probe.opened();
    Ok(Conn {
        stream,
        source,
        reusable: true,
        _open: open,
    })
}

async fn worker(shared: Arc<Shared>, seed: u64) -> Stats {
    let mut stats = Stats::new();
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut scratch = Scratch::default();
    let mut recv = RecvBuf::default();
    let head_request = shared.request.head_request();
    let mut conn: Option<Conn> = None;
    let mut first = true;
    // One timer for the worker's whole life, reset for each wait (pacing, connect, response):
    // a fresh `timeout` per request would register and cancel a timer entry each time.
    let sleep = tokio::time::sleep_until(shared.deadline);
    tokio::pin!(sleep);
    loop {
        if shared.stopped() {
            break;
        }
        let seq = shared.next.fetch_add(1, Ordering::Relaxed);
        if seq >= shared.max_requests {
            break;
        }
        let intended = match shared.schedule {
            Some(schedule) => {
                let at = shared.start + schedule.offset(seq);
                if at >= shared.deadline {
                    break;
                }
                let now = Instant::now();
                if at > now {
                    sleep.as_mut().reset(at);
                    if at - now > CANCEL_RACE_ABOVE {
                        tokio::select! {
                            _ = sleep.as_mut() => {}
                            _ = shared.stop.cancelled() => break,
                        }
                    } else {
                        sleep.as_mut().await;
                    }
                }
                Some(at)
            }
            None => None,
        };
        // A request due before the stop but not sent by then is backlogged, not sent late.
        let mut now = Instant::now();
        if shared.stopped() || now >= shared.deadline {
            break;
        }
        stats.attempted += 1;
        let mut c = match conn.take() {
            Some(c) if c.reusable => c,
            _ => {
                sleep.as_mut().reset(now + shared.timeout);
                match connect(&shared, sleep.as_mut()).await {
                    Ok(c) => {
                        now = Instant::now();
                        c
                    }
                    Err((kind, source)) => {
                        stats.error(kind, source, shared.per_source);
                        continue;
                    }
                }
            }
        };
        let mut ctx = RenderCtx {
            seq,
            source: c.source,
            rng: &mut rng,
        };
        let Ok(request) = shared.request.build(&mut ctx, &mut scratch) else {
            stats.error("template", Some(c.source), shared.per_source);
            conn = Some(c);
            continue;
        };
        let sent_at = now;
        stats.sent += 1;
        if first {
            shared.probe.mark_sent();
            first = false;
        }
        sleep.as_mut().reset(sent_at + shared.timeout);
        let result = tokio::select! {
            biased;
            r = http1::exchange(&mut c.stream, request, head_request, &mut recv) => r,
            _ = sleep.as_mut() => Err("timeout"),
        };
        match result {
            Ok((status, reusable)) => {
                let done = Instant::now();
                let latency = done - intended.unwrap_or(sent_at);
                // The histogram grows to fit (auto-resize); recording cannot fail short of u64 overflow.
                let _ = stats.latency.record(latency.as_micros() as u64);
                stats.status(status, c.source, shared.per_source);
                if shared.keep_alive {
                    c.reusable = reusable;
                    conn = Some(c);
                }
            }
            // The connection is dropped: after a failure its framing cannot be trusted.
            Err(kind) => stats.error(kind, Some(c.source), shared.per_source),
        }
    }
    stats
}

/// Runs a load until `max_requests` were attempted, `max_duration` passed, or `cancel` fired,
/// whichever comes first; then waits for requests in flight (at most `timeout`), closes every
/// connection, and reports. Workers are spawned on the current runtime; a multi-thread runtime
/// spreads them over its threads.
///
/// Cancel safety: dropping the future aborts the workers, whose connections then close, and
/// loses the report. To stop early and keep the report, cancel `cancel` and await the future.
pub async fn run_load(spec: LoadSpec, cancel: CancellationToken) -> Result<LoadReport, FloodError> {
    run_load_with_probe(spec, cancel, Arc::new(LoadProbe::new())).await
}

/// [`run_load`], reporting progress to `probe` (first request sent, connections open).
///
/// Cancel safety: as [`run_load`].
pub async fn run_load_with_probe(
    spec: LoadSpec,
    cancel: CancellationToken,
    probe: Arc<LoadProbe>,
) -> Result<LoadReport, FloodError> {
    spec.validate()?;
    let sources = spec.sources.expand(spec.target.ip())?;
    let request = Prepared::new(&spec.request, &spec.target.to_string(), spec.keep_alive)?;
    let (workers, schedule, rate) = match spec.model {
        Model::Open {
            rate,
            max_in_flight,
        } => (
            max_in_flight,
            Some(Schedule::new(rate, spec.ramp_up)),
            Some(rate),
        ),
        Model::Closed { connections } => (connections, None, None),
    };
    let start = Instant::now();
    let deadline = start + spec.max_duration;
    let stop = cancel.child_token();
    let shared = Arc::new(Shared {
        target: spec.target,
        request,
        keep_alive: spec.keep_alive,
        sources: SourcePicker::new(sources),
        start,
        deadline,
        timeout: spec.timeout,
        max_requests: spec.max_requests,
        schedule,
        per_source: spec.per_source,
        next: AtomicU64::new(0),
        stopping: AtomicBool::new(false),
        stop: stop.clone(),
        probe,
    });
    let mut set = JoinSet::new();
    let seed: u64 = rand::random();
    for i in 0..workers {
        set.spawn(worker(shared.clone(), seed.wrapping_add(i as u64)));
    }

    let mut total = Stats::new();
    let mut stopped_at: Option<Instant> = None;
    let mut aborted = 0u64;
    // Requests in flight get `timeout` to finish once the run stops; connecting and sending
    // are each bounded by it, so this is a backstop.
    let grace = spec.timeout + Duration::from_millis(500);
    let stop_now = |stopped_at: &mut Option<Instant>| {
        if stopped_at.is_none() {
            *stopped_at = Some(Instant::now());
            shared.stopping.store(true, Ordering::Relaxed);
            stop.cancel();
        }
    };
    loop {
        let abort_at = stopped_at.map(|t| t + grace);
        tokio::select! {
            joined = set.join_next() => match joined {
                Some(Ok(stats)) => merge(&mut total, stats),
                Some(Err(_)) => aborted += 1,
                None => break,
            },
            _ = stop.cancelled(), if stopped_at.is_none() => stop_now(&mut stopped_at),
            _ = sleep_until(deadline), if stopped_at.is_none() => stop_now(&mut stopped_at),
            _ = sleep_until(abort_at.unwrap_or(deadline)), if abort_at.is_some() => set.abort_all(),
        }
    }
    // Each worker owns its connections: once all have returned (or were aborted), every
    // socket of the run is closed.
    let end = Instant::now();

    let mut errors_by_kind: BTreeMap<String, u64> = total
        .errors
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
    if aborted > 0 {
        errors_by_kind.insert("aborted".into(), aborted);
    }
    let intended = schedule.map(|s| {
        let until = stopped_at.unwrap_or(end).min(deadline) - start;
        s.due_before(until).min(spec.max_requests)
    });
    if let Some(intended) = intended {
        let backlogged = intended.saturating_sub(total.attempted);
        if backlogged > 0 {
            errors_by_kind.insert("backlogged".into(), backlogged);
        }
    }
    let duration = end - start;
    Ok(LoadReport {
        sent: total.sent,
        completed: total.completed,
        errors_by_kind,
        statuses: total.statuses.into_iter().collect(),
        duration,
        achieved_rps: total.completed as f64 / duration.as_secs_f64().max(1e-9),
        latency: total.latency,
        per_source: spec.per_source.then_some(total.per_source),
        intended_rate: rate,
        intended,
    })
}

/// [`run_load`] on `threads` OS threads, each with its own single-threaded runtime and its
/// share of the connections, requests and rate (as wrk does): no work stealing, no cross-thread
/// wake-ups. Blocks until the run ends; for a CLI, not for code already inside a runtime.
pub fn run_load_on_threads(
    spec: LoadSpec,
    threads: usize,
    cancel: CancellationToken,
) -> Result<LoadReport, FloodError> {
    spec.validate()?;
    let width = match spec.model {
        Model::Open { max_in_flight, .. } => max_in_flight,
        Model::Closed { connections } => connections,
    };
    let threads = threads
        .clamp(1, width)
        .min(spec.max_requests.min(usize::MAX as u64) as usize);
    let addrs = spec.sources.expand(spec.target.ip())?;
    let share = |total: u64, k: usize| {
        total / threads as u64 + u64::from((k as u64) < total % threads as u64)
    };
    let handles: Vec<_> = (0..threads)
        .map(|k| {
            let mut part = spec.clone();
            part.max_requests = share(spec.max_requests, k);
            part.model = match spec.model {
                Model::Open {
                    rate,
                    max_in_flight,
                } => Model::Open {
                    rate: rate / threads as f64,
                    max_in_flight: share(max_in_flight as u64, k) as usize,
                },
                Model::Closed { connections } => Model::Closed {
                    connections: share(connections as u64, k) as usize,
                },
            };
            if !addrs.is_empty() {
                // Each thread starts at a different place in the list, so a short run still
                // covers every address.
                let mut mine = addrs.clone();
                mine.rotate_left(k * addrs.len() / threads);
                part.sources = Sources::List(mine);
            }
            let cancel = cancel.clone();
            std::thread::Builder::new()
                .name(format!("flood-{k}"))
                .spawn(move || {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| FloodError::Runtime(e.to_string()))?
                        .block_on(run_load(part, cancel))
                })
                .map_err(|e| FloodError::Runtime(e.to_string()))
        })
        .collect::<Result<_, _>>()?;
    let mut total: Option<LoadReport> = None;
    for handle in handles {
        let report = handle
            .join()
            .map_err(|_| FloodError::Runtime("a flood thread panicked".into()))??;
        match &mut total {
            Some(t) => t.merge(report),
            None => total = Some(report),
        }
    }
    Ok(total.expect("at least one thread"))
}

fn merge(total: &mut Stats, stats: Stats) {
    total.sent += stats.sent;
    total.attempted += stats.attempted;
    total.completed += stats.completed;
    for (k, v) in stats.errors {
        *total.errors.entry(k).or_default() += v;
    }
    for (status, n) in stats.statuses {
        match total.statuses.iter_mut().find(|(s, _)| *s == status) {
            Some((_, m)) => *m += n,
            None => total.statuses.push((status, n)),
        }
    }
    total
        .latency
        .add(&stats.latency)
        .expect("histograms of the same precision merge");
    for (ip, s) in stats.per_source {
        let t = total.per_source.entry(ip).or_default();
        t.requests += s.requests;
        t.errors += s.errors;
        for (status, n) in s.statuses {
            *t.statuses.entry(status).or_default() += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_without_ramp_is_evenly_spaced() {
        let s = Schedule::new(200.0, Duration::ZERO);
        assert_eq!(s.offset(0), Duration::ZERO);
        assert_eq!(s.offset(200), Duration::from_secs(1));
        assert_eq!(s.due_before(Duration::from_secs(1)), 200);
        assert_eq!(s.due_before(Duration::ZERO), 0);
        assert_eq!(s.due_before(Duration::from_micros(1)), 1);
    }

    #[test]
    fn schedule_ramps_linearly() {
        // 100/s after a 2 s ramp: 100 requests are due during the ramp, 50 in its first half
        // would be wrong (the rate rises), 25 is right: 100·1²/(2·2).
        let s = Schedule::new(100.0, Duration::from_secs(2));
        assert_eq!(s.due_before(Duration::from_secs(1)), 25);
        assert_eq!(s.due_before(Duration::from_secs(2)), 100);
        assert_eq!(s.due_before(Duration::from_secs(3)), 200);
        assert_eq!(s.offset(25).as_millis(), 1000);
        assert_eq!(s.offset(100).as_millis(), 2000);
        assert_eq!(s.offset(150).as_millis(), 2500);
    }

    #[test]
    fn urls_parse() {
        let (t, p) = LoadSpec::parse_url("http://127.0.0.1:8080/a?b=1").unwrap();
        assert_eq!(
            (t.to_string().as_str(), p.as_str()),
            ("127.0.0.1:8080", "/a?b=1")
        );
        let (t, p) = LoadSpec::parse_url("http://localhost").unwrap();
        assert_eq!((t.to_string().as_str(), p.as_str()), ("127.0.0.1:80", "/"));
        let (t, _) = LoadSpec::parse_url("http://[::1]:81/").unwrap();
        assert_eq!(t.to_string(), "[::1]:81");
        assert!(LoadSpec::parse_url("https://127.0.0.1/").is_err());
        assert!(LoadSpec::parse_url("http://example.com/").is_err());
    }
}
