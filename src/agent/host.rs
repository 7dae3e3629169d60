//! What an agent does with a coordinator's fault: the same as a local run. The fault's table is
//! read by the scenario format's own loader, its injector built from the kind table, its revert
//! journaled before it is injected (so the agent's guardian reverts it should the agent die), and
//! its effect confirmed by the injector.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use relapse_agent::wire::{Applied, ApplyRequest, Checked, HeldFault, ProbeRequest};
use relapse_agent::{BoxFuture, FaultHost, Reverted};
use relapse_core::fault::{Fault, RevertLog};
use relapse_core::scenario::{parse_fault_table, Vars};
use tokio::time::Instant;

use super::probes::Probes;
use crate::kinds::{self, BuildContext};
use crate::safety::JournalLog;

/// The kinds an agent accepts and the hosts their targets may be, fixed when it starts.
#[derive(Debug, Clone)]
pub struct Allowlist {
    pub kinds: Vec<String>,
    /// Hosts besides loopback that a fault's target may be.
    pub hosts: Vec<String>,
}

struct AppliedFault {
    run: String,
    id: u64,
    name: String,
    kind: String,
    describe: String,
    fault: Box<dyn Fault>,
    journal_id: u64,
    /// Built and journaled, waiting for `go` (a shard of a spread flood).
    prepared: bool,
}

/// Runs faults through the kind table, with the agent's journal.
pub struct KindTableHost {
    allow: Allowlist,
    program: PathBuf,
    protected: Vec<PathBuf>,
    journal: JournalLog,
    applied: Mutex<Vec<AppliedFault>>,
    next: AtomicU64,
    probes: Probes,
}

/// A coordinator's template variables, as the loader takes them.
pub(super) fn vars(sent: &BTreeMap<String, String>) -> Vars {
    let mut vars = Vars::default();
    for (name, value) in sent {
        vars.set(name, value.clone());
    }
    vars
}

impl KindTableHost {
    pub fn new(
        allow: Allowlist,
        program: PathBuf,
        protected: Vec<PathBuf>,
        journal: JournalLog,
    ) -> KindTableHost {
        KindTableHost {
            allow,
            program,
            protected,
            journal,
            applied: Mutex::new(Vec::new()),
            next: AtomicU64::new(1),
            probes: Probes::default(),
        }
    }

    fn applied(&self) -> std::sync::MutexGuard<'_, Vec<AppliedFault>> {
        self.applied.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn apply_fault(&self, run: &str, request: &ApplyRequest) -> Result<Applied, String> {
        if !self.allow.kinds.iter().any(|k| k == &request.kind) {
            return Err(format!(
                "fault kind {} is not in this agent's allowlist (started with --allow-kind {})",
                request.kind,
                self.allow.kinds.join(" --allow-kind ")
            ));
        }
        let entry = kinds::fault_kind(&request.kind)
            .ok_or_else(|| format!("unknown fault kind {}", request.kind))?;
        let duration = Duration::from_millis(request.duration_ms.max(1));
        // A JSON string is a valid TOML basic string: the same quotes and escapes.
        let name = serde_json::to_string(&request.name).map_err(|e| e.to_string())?;
        let text = format!(
            "[[fault]]\nname = {}\nstart = \"0s\"\nduration = \"{}ms\"\n{}\n",
            name,
            duration.as_millis(),
            request.table
        );
        let vars = vars(&request.vars);
        let spec = parse_fault_table(
            Path::new("the fault's table"),
            &text,
            &self.allow.hosts,
            &vars,
        )
        .map_err(|e| e.to_string())?;
        if spec.kind.name() != request.kind {
            return Err(format!(
                "the table is a {} fault, not the {} it was sent as",
                spec.kind.name(),
                request.kind
            ));
        }
        let cx = BuildContext {
            vars: &vars,
            allowed: &self.allow.hosts,
            demo: None,
            host: None,
            proxies: &[],
            program: &self.program,
            duration,
            scratch_mounts: &[],
            gates: &[],
            protected: &self.protected,
        };
        let fault = (entry.build)(&spec.kind, &cx).await?;
        let describe = fault.describe();
        let mut journal = self.journal.clone();
        let journal_id = journal
            .record(&request.name, &describe, &fault.revert_instructions())
            .map_err(|e| format!("cannot journal the revert, so nothing was injected: {e}"))?;
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut applied = AppliedFault {
            run: run.to_string(),
            id,
            name: request.name.clone(),
            kind: request.kind.clone(),
            describe,
            fault,
            journal_id,
            prepared: request.prepare,
        };
        if request.prepare {
            let detail = format!("ready: {}", applied.describe);
            self.applied().push(applied);
            return Ok(Applied {
                fault: id,
                effective_ns: relapse_agent::clock::now_ns(),
                detail,
            });
        }
        let effective = self.inject(&mut applied).await?;
        self.applied().push(applied);
        Ok(effective)
    }

    /// Injects a built fault, confirmed; on an error, whatever part of it took effect is undone
    /// and its journal entry struck before the error goes back.
    async fn inject(&self, applied: &mut AppliedFault) -> Result<Applied, String> {
        match applied.fault.inject().await {
            Ok(effective) => Ok(Applied {
                fault: applied.id,
                effective_ns: relapse_agent::clock::instant_ns(effective.at),
                detail: effective.detail,
            }),
            Err(error) => {
                applied.fault.revert_now();
                let _ = self.journal.clone().remove(applied.journal_id);
                Err(format!("{}: {error}", applied.name))
            }
        }
    }

    /// Injects a prepared fault at `at`; should `at` have passed already, at once, and the
    /// detail says how late.
    async fn go_at(&self, run: &str, id: u64, at: Instant) -> Result<Applied, String> {
        let Some(mut applied) = self.take(run, Some(id)).pop() else {
            return Err(format!("run {run} has no fault {id} here"));
        };
        if !applied.prepared {
            let error = format!("fault {id} of run {run} is applied already");
            self.applied().push(applied);
            return Err(error);
        }
        let late = Instant::now().saturating_duration_since(at);
        tokio::time::sleep_until(at).await;
        let mut effective = self.inject(&mut applied).await?;
        if !late.is_zero() {
            effective.detail = format!("{} ({late:?} after the go instant)", effective.detail);
        }
        applied.prepared = false;
        self.applied().push(applied);
        Ok(effective)
    }

    /// Reverts one applied fault, confirmed, and strikes it from the journal; a failed revert
    /// keeps it applied (and journaled) for another try.
    async fn revert_applied(&self, mut applied: AppliedFault) -> Result<Reverted, String> {
        match applied.fault.revert().await {
            Ok(reverted) => {
                let mut journal = self.journal.clone();
                if let Err(error) = journal.remove(applied.journal_id) {
                    tracing::warn!(%error, "a confirmed revert is still in the journal (its revert is idempotent)");
                }
                let figures = applied
                    .fault
                    .flood_outcome()
                    .and_then(|outcome| outcome.figures)
                    .and_then(|figures| serde_json::to_value(figures).ok());
                Ok(Reverted {
                    detail: format!("{} ({}): {}", applied.name, applied.kind, reverted.detail),
                    figures,
                })
            }
            Err(error) => {
                let message = format!("{} ({}): {error}", applied.name, applied.kind);
                self.applied().push(applied);
                Err(message)
            }
        }
    }

    fn take(&self, run: &str, id: Option<u64>) -> Vec<AppliedFault> {
        let mut applied = self.applied();
        let mut taken = Vec::new();
        let mut index = applied.len();
        // Newest first: undo in the reverse order of doing.
        while index > 0 {
            index -= 1;
            let matches = applied[index].run == run && id.is_none_or(|id| applied[index].id == id);
            if matches {
                taken.push(applied.remove(index));
            }
        }
        taken
    }
}

impl FaultHost for KindTableHost {
    fn apply<'a>(
        &'a self,
        run: &'a str,
        request: &'a ApplyRequest,
    ) -> BoxFuture<'a, Result<Applied, String>> {
        Box::pin(self.apply_fault(run, request))
    }

    fn go<'a>(
        &'a self,
        run: &'a str,
        fault: u64,
        at: Instant,
    ) -> BoxFuture<'a, Result<Applied, String>> {
        Box::pin(self.go_at(run, fault, at))
    }

    fn revert<'a>(&'a self, run: &'a str, fault: u64) -> BoxFuture<'a, Result<Reverted, String>> {
        Box::pin(async move {
            let Some(applied) = self.take(run, Some(fault)).pop() else {
                return Err(format!("run {run} has no fault {fault} applied here"));
            };
            self.revert_applied(applied).await
        })
    }

    fn revert_run<'a>(&'a self, run: &'a str) -> BoxFuture<'a, Vec<Result<String, String>>> {
        Box::pin(async move {
            let mut outcomes = Vec::new();
            for applied in self.take(run, None) {
                outcomes.push(self.revert_applied(applied).await.map(|r| r.detail));
            }
            outcomes
        })
    }

    fn open_probe<'a>(
        &'a self,
        run: &'a str,
        request: &'a ProbeRequest,
    ) -> BoxFuture<'a, Result<u64, String>> {
        Box::pin(async move { self.probes.open(run, request, &self.allow.hosts) })
    }

    fn check_probe<'a>(
        &'a self,
        run: &'a str,
        probe: u64,
    ) -> BoxFuture<'a, Result<Checked, String>> {
        Box::pin(self.probes.check(run, probe))
    }

    fn end_probes(&self, run: &str) {
        self.probes.end(run);
    }

    fn held(&self) -> Vec<HeldFault> {
        self.applied()
            .iter()
            .map(|a| HeldFault {
                run: a.run.clone(),
                fault: a.id,
                name: a.name.clone(),
                kind: a.kind.clone(),
                describe: a.describe.clone(),
            })
            .collect()
    }
}
