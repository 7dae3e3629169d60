//! What the engine is given to run (a [`Plan`], built by the caller from a scenario) and what it
//! tells a live display while it runs ([`Progress`]).

use std::sync::Arc;
use std::time::Duration;

use crate::fault::{Fault, RevertLog};
use crate::measure::SteadyRule;
use crate::scenario::{Expectation, Gates, Limits, StopSpec};
use crate::sense::{Detector, Gauge, Pacer, Probe};

/// A probe ready to run.
pub struct PlannedProbe {
    pub name: String,
    pub every: Duration,
    /// The probe's own timeout: the longest a check can be in flight.
    pub timeout: Duration,
    pub probe: Arc<dyn Probe>,
    /// Where its checks go out from when that is not relapse's own host: an agent.
    pub placement: Option<Placement>,
}

/// A backlog gauge ready to read: recovery also waits for it to be at or under `max`.
pub struct PlannedBacklog {
    pub name: String,
    pub every: Duration,
    /// The longest a reading may take; a slower one counts as unreadable.
    pub timeout: Duration,
    pub max: f64,
    pub gauge: Arc<dyn Gauge>,
}

/// A detection source ready to run.
pub struct PlannedDetector {
    pub name: String,
    pub resolution: Duration,
    pub detector: Box<dyn Detector>,
}

/// A fault ready to inject.
pub struct PlannedFault {
    pub name: String,
    pub start: Duration,
    pub duration: Duration,
    pub fault: Box<dyn Fault>,
    /// Gates for this fault's episode, over the plan's; `Gates::default()` adds none.
    pub gates: Gates,
    /// Where it runs when that is not relapse's own host: an agent (or, for a spread flood,
    /// each of its agents), and how uncertain the mapping of the agent's instants to this
    /// host's clock is.
    pub placements: Vec<Placement>,
}

pub use crate::report::Placement;

/// Everything a run needs, built by the caller from a scenario.
pub struct Plan {
    pub scenario: String,
    pub probes: Vec<PlannedProbe>,
    /// Index of the SLI probe in `probes`.
    pub sli: usize,
    pub steady: SteadyRule,
    /// How long to wait for steady state before declaring the run inconclusive.
    pub steady_timeout: Duration,
    pub detectors: Vec<PlannedDetector>,
    pub faults: Vec<PlannedFault>,
    pub gates: Gates,
    /// What mitigates the fault (`"failover"`), named in the report beside the time to mitigate.
    pub mitigation: Option<String>,
    /// What the gates are expected to do; the report compares the verdict with it.
    pub expect: Expectation,
    pub limits: Limits,
    /// Conditions that abort the run when the target is hurt beyond a declared bound.
    pub stops: Vec<StopSpec>,
    /// A backlog that recovery must also wait out, if the scenario declares one.
    pub backlog: Option<PlannedBacklog>,
    /// Where reverts are written down before each injection; `None` runs without a journal.
    pub journal: Option<Box<dyn RevertLog>>,
    /// What paces the probes' checks: a kernel timer in a real run, the runtime's timer in
    /// tests on a paused clock.
    pub pacer: Arc<dyn Pacer>,
    /// Reasons to abort the run at once, from outside the engine: an agent's lease lost (the
    /// agent reverts the run's faults there, so what follows would not measure them).
    pub aborts: Option<tokio::sync::mpsc::UnboundedReceiver<String>>,
}

/// Where a run is, for a live display.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    pub phase: Phase,
    pub elapsed: Duration,
    pub sli_samples: u64,
    pub sli_failures: u64,
    pub faults_applied: usize,
    pub detected: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Phase {
    #[default]
    Starting,
    WaitingForSteadyState,
    Faulting,
    Observing,
    Reverting,
    Done,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::WaitingForSteadyState => "waiting for steady state",
            Phase::Faulting => "fault schedule running",
            Phase::Observing => "observing recovery",
            Phase::Reverting => "reverting",
            Phase::Done => "done",
        }
    }
}
