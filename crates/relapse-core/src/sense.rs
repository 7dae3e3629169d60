//! The contract between the engine and the probe crate: SLI probes and detection sources.

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::fault::BoxFuture;

/// The result of one probe check. The engine times it; the probe enforces its own timeout.
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
}

/// A gauge read over time, such as the depth of a queue that a fault lets build up: recovery then
/// also waits for it to drain.
pub trait Gauge: Send + Sync {
    /// Reads the current value.
    ///
    /// Cancel safety: cancel safe; a dropped read records nothing.
    fn read(&self) -> BoxFuture<'_, Result<f64, String>>;
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
    ) -> BoxFuture<'static, Result<(), String>>;
}
