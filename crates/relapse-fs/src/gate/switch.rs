//! The daemon's switch: every FUSE request passes through [`Switch::admit`], which runs it now,
//! parks it, delays it or fails it according to the mode. Requests are closures that either do
//! the operation and answer (`None`) or answer with an error without doing it (`Some(errno)`);
//! fuser's replies are plain values, so a parked request is just a closure kept in a list, and
//! the session thread that read it goes on reading others.

use std::collections::BinaryHeap;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::mode::{Class, GateMode};

/// One request's work: `None` does it and answers, `Some(errno)` answers with that error.
pub(crate) type Job = Box<dyn FnOnce(Option<i32>) + Send>;

/// How many threads run released and delayed requests. A released backlog is many small
/// syscalls; a few threads keep one slow fsync from holding up the rest.
const WORKERS: usize = 4;

struct Parked {
    class: Class,
    what: String,
    pid: u32,
    job: Job,
}

struct Delayed {
    due: Instant,
    seq: u64,
    job: Job,
}

impl PartialEq for Delayed {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for Delayed {}
impl PartialOrd for Delayed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Delayed {
    // Reversed: BinaryHeap is a max-heap and the earliest due must come out first.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}

struct State {
    mode: GateMode,
    parked: Vec<Parked>,
    delayed: BinaryHeap<Delayed>,
    seq: u64,
    /// xorshift state for the jitter: no need for a random crate's quality here.
    rng: u64,
    parked_total: u64,
    /// The control channel closed: the mode stays `pass` for good.
    failed_open: bool,
}

/// What `status` reports.
pub(crate) struct Snapshot {
    pub(crate) mode: GateMode,
    pub(crate) parked: Vec<(String, u32)>,
    pub(crate) delayed: usize,
    pub(crate) parked_total: u64,
    pub(crate) failed_open: bool,
}

pub(crate) struct Switch {
    state: Mutex<State>,
    /// Signalled when a request is parked (for `wait-parked`) and when a delayed one is added
    /// (for the timer thread).
    changed: Condvar,
    timer_wakes: Condvar,
    workers: Mutex<mpsc::Sender<Job>>,
}

impl Switch {
    pub(crate) fn start() -> Arc<Switch> {
        let (tx, rx) = mpsc::channel::<Job>();
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            | 1;
        let switch = Arc::new(Switch {
            state: Mutex::new(State {
                mode: GateMode::Pass,
                parked: Vec::new(),
                delayed: BinaryHeap::new(),
                seq: 0,
                rng: seed,
                parked_total: 0,
                failed_open: false,
            }),
            changed: Condvar::new(),
            timer_wakes: Condvar::new(),
            workers: Mutex::new(tx),
        });
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..WORKERS {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("gate-worker-{i}"))
                .spawn(move || loop {
                    let job = match rx.lock().unwrap_or_else(|p| p.into_inner()).recv() {
                        Ok(job) => job,
                        Err(_) => return,
                    };
                    job(None);
                })
                .expect("a worker thread");
        }
        let timer = switch.clone();
        std::thread::Builder::new()
            .name("gate-timer".into())
            .spawn(move || timer.run_timer())
            .expect("a timer thread");
        switch
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicked request must not wedge the gate: the state is a list and a mode.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn run_later(&self, job: Job) {
        let sent = self
            .workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(job);
        if let Err(mpsc::SendError(job)) = sent {
            job(None);
        }
    }

    /// Runs, parks, delays or fails one request. `what` describes it for `status`.
    pub(crate) fn admit(
        &self,
        class: Class,
        pid: u32,
        what: impl FnOnce() -> String,
        job: impl FnOnce(Option<i32>) + Send + 'static,
    ) {
        let mut state = self.lock();
        match state.mode {
            GateMode::Stall(scope) if scope.covers(class) => {
                state.parked.push(Parked {
                    class,
                    what: what(),
                    pid,
                    job: Box::new(job),
                });
                state.parked_total += 1;
                drop(state);
                self.changed.notify_all();
            }
            GateMode::Latency {
                scope,
                delay,
                jitter,
            } if scope.covers(class) => {
                let extra = if jitter.is_zero() {
                    Duration::ZERO
                } else {
                    let mut x = state.rng;
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    state.rng = x;
                    Duration::from_nanos(x % (jitter.as_nanos() as u64 + 1))
                };
                state.seq += 1;
                let seq = state.seq;
                state.delayed.push(Delayed {
                    due: Instant::now() + delay + extra,
                    seq,
                    job: Box::new(job),
                });
                drop(state);
                self.timer_wakes.notify_all();
            }
            GateMode::Error { scope, errno } if scope.covers(class) => {
                drop(state);
                job(Some(errno.raw()));
            }
            _ => {
                drop(state);
                job(None);
            }
        }
    }

    /// Switches the mode; returns how many parked requests were released. Requests parked
    /// under a stall that the new mode no longer stalls are released; leaving for `pass` also
    /// answers the delayed ones now.
    pub(crate) fn set_mode(&self, mode: GateMode) -> Result<usize, &'static str> {
        let mut state = self.lock();
        if state.failed_open && mode != GateMode::Pass {
            return Err("the control channel closed: the gate stays in pass");
        }
        state.mode = mode;
        let parked = std::mem::take(&mut state.parked);
        let (keep, release): (Vec<Parked>, Vec<Parked>) =
            parked.into_iter().partition(|p| match mode {
                GateMode::Stall(scope) => scope.covers(p.class),
                _ => false,
            });
        state.parked = keep;
        let mut jobs: Vec<Job> = release.into_iter().map(|p| p.job).collect();
        let released = jobs.len();
        if mode == GateMode::Pass {
            jobs.extend(
                std::mem::take(&mut state.delayed)
                    .into_iter()
                    .map(|d| d.job),
            );
        }
        drop(state);
        for job in jobs {
            self.run_later(job);
        }
        Ok(released)
    }

    /// The control channel is gone (relapse died): pass, release everything, for good.
    pub(crate) fn fail_open(&self) -> usize {
        let released = self.set_mode(GateMode::Pass).unwrap_or(0);
        self.lock().failed_open = true;
        released
    }

    /// Waits until a request is parked (by `pid`, if given); the parked count and the first
    /// matching request, or `None` after `within`.
    pub(crate) fn wait_parked(
        &self,
        pid: Option<u32>,
        within: Duration,
    ) -> Option<(usize, String, u32)> {
        let matching = |s: &State| {
            s.parked
                .iter()
                .find(|p| pid.is_none_or(|pid| p.pid == pid))
                .map(|p| (s.parked.len(), p.what.clone(), p.pid))
        };
        let state = self.lock();
        let (state, _) = self
            .changed
            .wait_timeout_while(state, within, |s| matching(s).is_none())
            .unwrap_or_else(|p| p.into_inner());
        matching(&state)
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let state = self.lock();
        Snapshot {
            mode: state.mode,
            parked: state
                .parked
                .iter()
                .map(|p| (p.what.clone(), p.pid))
                .collect(),
            delayed: state.delayed.len(),
            parked_total: state.parked_total,
            failed_open: state.failed_open,
        }
    }

    fn run_timer(&self) {
        let mut state = self.lock();
        loop {
            let now = Instant::now();
            let mut due = Vec::new();
            while state.delayed.peek().is_some_and(|d| d.due <= now) {
                due.push(state.delayed.pop().expect("peeked").job);
            }
            if !due.is_empty() {
                drop(state);
                for job in due {
                    self.run_later(job);
                }
                state = self.lock();
                continue;
            }
            state = match state.delayed.peek().map(|d| d.due) {
                Some(next) => {
                    self.timer_wakes
                        .wait_timeout(state, next.saturating_duration_since(now))
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
                None => self
                    .timer_wakes
                    .wait(state)
                    .unwrap_or_else(|p| p.into_inner()),
            };
        }
    }
}
