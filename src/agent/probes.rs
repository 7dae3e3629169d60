//! The probes an agent checks for coordinators: each read by the scenario format's own loader
//! and built as a local run builds it, under the agent's allowlist of hosts; kept for the run
//! until its lease ends.

use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use relapse_agent::clock::instant_ns;
use relapse_agent::wire::{Checked, ProbeRequest};
use relapse_core::scenario::parse_probe_table;
use relapse_core::sense::{Outcome, Probe};

use super::host::vars;

/// More checks of one probe in flight than this are refused: a probe whose target hangs keeps
/// its checks open until their timeout, and a coordinator must not pile them up without bound.
const MAX_IN_FLIGHT: usize = 64;

struct OpenProbe {
    run: String,
    id: u64,
    probe: Arc<dyn Probe>,
    in_flight: Arc<AtomicUsize>,
}

/// The probes runs have opened here.
#[derive(Default)]
pub struct Probes {
    open: Mutex<Vec<OpenProbe>>,
    next: AtomicU64,
}

/// Counts a check in flight for as long as it lives.
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Probes {
    fn open_probes(&self) -> std::sync::MutexGuard<'_, Vec<OpenProbe>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads and checks the probe's table against `allowed` (hosts besides loopback), builds
    /// it, and keeps it for `run`.
    pub fn open(
        &self,
        run: &str,
        request: &ProbeRequest,
        allowed: &[String],
    ) -> Result<u64, String> {
        // A JSON string is a valid TOML basic string: the same quotes and escapes.
        let name = serde_json::to_string(&request.name).map_err(|e| e.to_string())?;
        let text = format!("[[probe]]\nname = {name}\n{}\n", request.table);
        let vars = vars(&request.vars);
        let spec = parse_probe_table(Path::new("the probe's table"), &text, allowed, &vars)
            .map_err(|e| e.to_string())?;
        let probe = crate::plan::build_probe(&spec.kind, &vars, allowed)?;
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.open_probes().push(OpenProbe {
            run: run.to_string(),
            id,
            probe,
            in_flight: Arc::default(),
        });
        Ok(id)
    }

    /// One check, timed on this host's clock.
    pub async fn check(&self, run: &str, id: u64) -> Result<Checked, String> {
        let (probe, in_flight) = self
            .open_probes()
            .iter()
            .find(|p| p.run == run && p.id == id)
            .map(|p| (p.probe.clone(), p.in_flight.clone()))
            .ok_or_else(|| format!("run {run} has no probe {id} here"))?;
        if in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_IN_FLIGHT {
            in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(format!(
                "probe {id} has {MAX_IN_FLIGHT} checks in flight already"
            ));
        }
        let _counted = InFlight(in_flight);
        let timed = probe.timed_check().await;
        let (status, error) = match timed.outcome {
            Outcome::Success { status } => (status, None),
            Outcome::Failure { status, error } => (status, Some(error)),
        };
        Ok(Checked {
            started_ns: instant_ns(timed.at),
            latency_ns: timed.latency.as_nanos() as u64,
            status,
            error,
        })
    }

    /// Forgets the run's probes.
    pub fn end(&self, run: &str) {
        self.open_probes().retain(|p| p.run != run);
    }
}
