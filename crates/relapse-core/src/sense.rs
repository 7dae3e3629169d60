//! The contract between the engine and the probe crate: SLI probes and detection sources.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::fault::{BoxError, BoxFuture};

/// The result of one probe check. The engine times it (or the probe, with
/// [`Probe::timed_check`]); the probe enforces its own timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The check met expectations; `status` is the HTTP status where there is one.
    Success { status: Option<u16> },
    /// The check failed: an unexpected status, or an error such as `timeout` or `refused`.
    Failure { status: Option<u16>, error: String },
}

impl Outcome {
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Success { .. })
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            Outcome::Success { status } | Outcome::Failure { status, .. } => *status,
        }
    }
}

/// An SLI probe: one check of what users feel.
pub trait Probe: Send + Sync {
    /// Runs one check.
    ///
    /// Cancel safety: cancel safe; a dropped check records nothing.
    fn check(&self) -> BoxFuture<'_, Outcome>;

    /// Runs one check and says when it went out and how long it took. A probe whose checks go
    /// out from another host (an agent) reads those instants there; by default they are read
    /// here, around [`Probe::check`].
    ///
    /// Cancel safety: as [`Probe::check`].
    fn timed_check(&self) -> BoxFuture<'_, Timed> {
        Box::pin(async move {
            let at = Instant::now();
            let outcome = self.check().await;
            Timed {
                at,
                latency: Instant::now() - at,
                outcome,
            }
        })
    }
}

/// One check's outcome and timing: sent at `at`, answered `latency` later.
#[derive(Debug, Clone, PartialEq)]
pub struct Timed {
    pub at: Instant,
    pub latency: Duration,
    pub outcome: Outcome,
}

/// A gauge read over time, such as the depth of a queue that a fault lets build up: recovery then
/// also waits for it to drain.
pub trait Gauge: Send + Sync {
    /// Reads the current value.
    ///
    /// Cancel safety: cancel safe; a dropped read records nothing.
    fn read(&self) -> BoxFuture<'_, Result<f64, GaugeError>>;
}

/// Why a gauge gave no value this time; the engine logs it and reads again on the next tick.
#[derive(Debug, thiserror::Error)]
pub enum GaugeError {
    /// The gauge's source could not be reached or did not answer (a refused connection, a
    /// timeout, a status other than 2xx, a failed query).
    #[error("{context}: {source}")]
    Unreachable {
        context: String,
        #[source]
        source: BoxError,
    },
    /// It answered, but not with a number (no sample of the metric, no row, NULL, text).
    #[error("{0}")]
    NoValue(String),
}

impl GaugeError {
    pub fn unreachable(context: impl Into<String>, source: impl Into<BoxError>) -> GaugeError {
        GaugeError::Unreachable {
            context: context.into(),
            source: source.into(),
        }
    }
}

/// Why a detection source stopped watching before it was cancelled.
#[derive(Debug, thiserror::Error)]
pub enum DetectorError {
    /// The source cannot work as configured (an empty command).
    #[error("{0}")]
    Config(String),
    /// What the source watches went away (the webhook sink stopped, the log file unreadable).
    #[error("{context}: {source}")]
    Lost {
        context: String,
        #[source]
        source: BoxError,
    },
}

impl DetectorError {
    pub fn lost(context: impl Into<String>, source: impl Into<BoxError>) -> DetectorError {
        DetectorError::Lost {
            context: context.into(),
            source: source.into(),
        }
    }
}

/// A detection event, stamped when the harness received it.
#[derive(Debug, Clone)]
pub struct Signal {
    /// Index of the detection source in the scenario.
    pub source: usize,
    pub at: Instant,
    /// `true` when the system says it noticed a problem (an alert firing, health turning bad);
    /// `false` when it says the problem is over.
    pub firing: bool,
    pub detail: String,
}

/// Hands a detection source's signals to the engine, stamping them on the way.
#[derive(Debug, Clone)]
pub struct SignalSender {
    source: usize,
    tx: mpsc::UnboundedSender<Signal>,
}

impl SignalSender {
    pub fn new(source: usize, tx: mpsc::UnboundedSender<Signal>) -> SignalSender {
        SignalSender { source, tx }
    }

    pub fn fire(&self, detail: impl Into<String>) {
        self.send(true, detail.into());
    }

    pub fn clear(&self, detail: impl Into<String>) {
        self.send(false, detail.into());
    }

    fn send(&self, firing: bool, detail: String) {
        // The engine may already have stopped listening at the end of a run; nothing to do then.
        let _ = self.tx.send(Signal {
            source: self.source,
            at: Instant::now(),
            firing,
            detail,
        });
    }
}

/// A source of detection signals: a webhook sink, a health endpoint, a command, a log file.
pub trait Detector: Send {
    /// Watches until `cancel` fires, sending signals as they happen. Sources that see state
    /// (health, command) send a signal on each change of state, not on every observation.
    fn watch(
        self: Box<Self>,
        signals: SignalSender,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, Result<(), DetectorError>>;
}

/// What paces a probe's checks: each tick is the instant a check is meant to go out.
///
/// The pacing is a trait because a precise clock is a syscall (a kernel timer, in
/// `relapse_probe::KernelPacer`), and because the engine's tests pace on the runtime's clock,
/// which `tokio::time::pause()` controls.
pub trait Pacer: Send + Sync {
    /// Starts a schedule of one tick every `every`. The first tick is due at once.
    fn start(&self, every: std::time::Duration) -> Box<dyn Ticks>;
}

/// A running schedule of ticks.
pub trait Ticks: Send {
    /// Waits for the next tick and returns the instant it was due. Ticks that were missed (the
    /// caller came back late) are skipped, not delivered in a burst.
    ///
    /// Cancel safety: cancel safe; a dropped wait loses no tick.
    fn tick(&mut self) -> BoxFuture<'_, Instant>;
}

/// Paces on the runtime's timer (`tokio::time::interval`): whole milliseconds, so a check goes
/// out up to about a millisecond and a half late on an idle machine; it follows a paused clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct RuntimePacer;

impl Pacer for RuntimePacer {
    fn start(&self, every: std::time::Duration) -> Box<dyn Ticks> {
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        Box::new(RuntimeTicks(interval))
    }
}

struct RuntimeTicks(tokio::time::Interval);

impl Ticks for RuntimeTicks {
    fn tick(&mut self) -> BoxFuture<'_, Instant> {
        Box::pin(self.0.tick())
    }
}
