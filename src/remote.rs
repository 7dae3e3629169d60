//! The coordinator's end of agents: for each `[[agent]]` of a run, a TLS connection, the clock
//! offset, the run's lease and its renewals; the fault that an agent applies ([`RemoteFault`])
//! and the probe it checks ([`RemoteProbe`]). The harness connects the agents and releases them; the plan builder
//! makes a `RemoteFault` for each fault with `on`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use relapse_agent::client::{AgentClient, AgentError};
use relapse_agent::clock::{ns_instant, Offset};
use relapse_agent::wire::{ApplyRequest, ProbeRequest, RunId};
use relapse_core::fault::{
    BoxFuture, Effective, Fault, FaultError, RevertError, RevertInstructions, RevertRecord,
    Reverted,
};
use relapse_core::report::{FloodFigures, FloodOutcome, Placed};
use relapse_core::scenario::{AgentSpec, FaultSpec, OnAgent, ProbeSpec, Vars};
use relapse_core::sense::{Outcome, Probe, Timed};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

mod spread;
pub use spread::{revert_spread_record, SpreadFault, SpreadRecord, SPREAD_KIND};

/// The journal kind of a run's lease on an agent (an [`AgentRunRecord`]).
pub const KIND: &str = "agent_run";

/// How many clock exchanges the offset is estimated from: the quickest wins.
const CLOCK_ROUNDS: usize = 16;

/// A remote check's call may take this much longer than the probe's own timeout.
const CHECK_MARGIN: Duration = Duration::from_secs(1);

/// How to end a run on an agent from another process (the guardian, `relapse cleanup`): the
/// agent and the run's secret. Releasing the run reverts what the agent still holds for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRunRecord {
    pub agent: String,
    pub url: String,
    pub ca: PathBuf,
    pub token_file: PathBuf,
    pub run: String,
    pub holder: String,
}

impl RevertRecord for AgentRunRecord {
    const KIND: &'static str = KIND;
}

/// One agent, connected for a run: the lease is held and renewed until [`Connected::release`].
pub struct Connected {
    pub name: String,
    pub url: String,
    client: AgentClient,
    pub offset: Offset,
    id: RunId,
    record: AgentRunRecord,
    renewals: Option<(
        CancellationToken,
        tokio::task::JoinHandle<Option<tokio::time::Instant>>,
    )>,
}

fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

/// A connection to the agent `spec` names, trusting only its CA, with its token.
async fn client(
    spec_url: &str,
    ca: &std::path::Path,
    token_file: &std::path::Path,
) -> Result<AgentClient, String> {
    let tls = relapse_agent::tls::client_config(ca).map_err(|e| e.to_string())?;
    let token = std::fs::read_to_string(token_file)
        .map_err(|e| format!("{}: {e}", token_file.display()))?;
    AgentClient::connect(spec_url, tls, token.trim())
        .await
        .map_err(|e| e.to_string())
}

impl Connected {
    /// Connects, estimates the clock offset and takes the run's lease; `journal` writes the
    /// lease's record down before the lease is taken (an error there takes nothing). Should the
    /// lease be lost later (the agent ended the run, or no renewal reached it for a lease),
    /// why goes to `lost`.
    pub async fn connect(
        spec: &AgentSpec,
        journal: impl FnOnce(&AgentRunRecord) -> Result<(), String>,
        lost: tokio::sync::mpsc::UnboundedSender<String>,
    ) -> Result<Connected, String> {
        let client = client(&spec.url, &spec.ca, &spec.token_file).await?;
        let offset = client
            .offset(CLOCK_ROUNDS)
            .await
            .map_err(|e| e.to_string())?;
        let id = RunId {
            run: random_hex(8),
            holder: random_hex(16),
        };
        let record = AgentRunRecord {
            agent: spec.name.clone(),
            url: spec.url.clone(),
            ca: absolute(&spec.ca),
            token_file: absolute(&spec.token_file),
            run: id.run.clone(),
            holder: id.holder.clone(),
        };
        journal(&record)?;
        let taken = tokio::time::Instant::now();
        client
            .lease(&id, spec.lease, spec.renew_every)
            .await
            .map_err(|e| e.to_string())?;
        let stop = CancellationToken::new();
        let name = spec.name.clone();
        let (why, mut lost_here) = tokio::sync::mpsc::unbounded_channel();
        // The agent's name goes in front of why: the run may have several.
        tokio::spawn(async move {
            if let Some(why) = lost_here.recv().await {
                let _ = lost.send(format!("agent \"{name}\": lease lost: {why}"));
            }
        });
        let renewals = client.keep_lease(
            id.clone(),
            spec.lease,
            spec.renew_every,
            taken,
            stop.clone(),
            why,
        );
        tracing::info!(
            agent = %spec.name,
            run = %id.run,
            offset_ns = offset.offset as i64,
            uncertainty_ns = offset.uncertainty as i64,
            "agent connected, lease taken"
        );
        Ok(Connected {
            name: spec.name.clone(),
            url: spec.url.clone(),
            client,
            offset,
            id,
            record,
            renewals: Some((stop, renewals)),
        })
    }

    /// Where `what` runs, for the report: this agent, and its clock's uncertainty.
    pub fn placement(&self, what: Placed) -> relapse_core::report::Placement {
        relapse_core::report::Placement {
            what,
            agent: self.name.clone(),
            url: self.url.clone(),
            clock_uncertainty: Duration::from_nanos(self.offset.uncertainty.max(0) as u64),
        }
    }

    /// The injector of a fault this agent applies.
    pub fn fault(&self, spec: &FaultSpec, remote: &OnAgent, vars: &Vars) -> Box<dyn Fault> {
        Box::new(self.remote_fault(spec, remote, vars, false))
    }

    /// The injector of a fault this agent applies; with `prepare`, one shard of a spread flood,
    /// which [`RemoteFault::prepare`] gets ready and [`RemoteFault::go`] starts.
    pub fn remote_fault(
        &self,
        spec: &FaultSpec,
        remote: &OnAgent,
        vars: &Vars,
        prepare: bool,
    ) -> RemoteFault {
        RemoteFault {
            agent: self.name.clone(),
            client: self.client.clone(),
            offset: self.offset,
            record: self.record.clone(),
            request: ApplyRequest {
                id: self.id.clone(),
                name: spec.name.clone(),
                kind: spec.kind.name().to_string(),
                table: remote.table.clone(),
                duration_ms: spec.duration.as_millis() as u64,
                vars: wire_vars(vars),
                prepare,
            },
            applied: None,
            figures: None,
            ended: None,
        }
    }

    /// The record that releases this run on the agent, for a spread flood's journal entry.
    pub fn record(&self) -> &AgentRunRecord {
        &self.record
    }

    /// Opens a probe on the agent, whose checks then go out from the agent's host.
    pub async fn probe(
        &self,
        spec: &ProbeSpec,
        remote: &OnAgent,
        vars: &Vars,
    ) -> Result<Arc<dyn Probe>, String> {
        let probe = self
            .client
            .open_probe(&ProbeRequest {
                id: self.id.clone(),
                name: spec.name.clone(),
                table: remote.table.clone(),
                vars: wire_vars(vars),
            })
            .await
            .map_err(|e| format!("agent \"{}\": {e}", self.name))?;
        Ok(Arc::new(RemoteProbe {
            agent: self.name.clone(),
            client: self.client.clone(),
            offset: self.offset,
            id: self.id.clone(),
            probe,
            within: spec.kind.timeout() + CHECK_MARGIN,
        }))
    }

    /// Stops renewing and ends the run on the agent, which reverts what it still holds. A run
    /// the agent had already ended (its lease lapsed) needs no release: it reverted then.
    pub async fn release(&mut self) -> Result<(), String> {
        if let Some((stop, renewals)) = self.renewals.take() {
            stop.cancel();
            let _ = renewals.await;
        }
        match self.client.release(&self.id).await {
            Ok(()) => Ok(()),
            Err(error) if ended_there(&error) => {
                tracing::info!(agent = %self.name, %error, "the run had already ended on the agent, which reverted its faults then");
                Ok(())
            }
            Err(error) => Err(format!("agent \"{}\": {error}", self.name)),
        }
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        // Not released: the renewals stop, and the lease lapses on the agent.
        if let Some((stop, _)) = self.renewals.take() {
            stop.cancel();
        }
    }
}

fn wire_vars(vars: &Vars) -> BTreeMap<String, String> {
    vars.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn absolute(path: &std::path::Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// A fault applied by an agent: `inject` is the agent's apply, confirmed by its injector there;
/// the instant it took effect is the agent's, mapped to this host's clock by the offset.
pub struct RemoteFault {
    agent: String,
    client: AgentClient,
    offset: Offset,
    record: AgentRunRecord,
    request: ApplyRequest,
    /// The agent's handle on the applied fault.
    applied: Option<u64>,
    /// What the flood did, as its revert's answer said.
    figures: Option<FloodFigures>,
    /// Why the agent had reverted the fault before we asked: the run's lease had ended there.
    ended: Option<String>,
}

impl RemoteFault {
    fn uncertainty(&self) -> Duration {
        Duration::from_nanos(self.offset.uncertainty.max(0) as u64)
    }

    pub fn agent(&self) -> &str {
        &self.agent
    }

    /// A prepared shard: built and journaled on the agent, not started; returns when it was
    /// ready, on this host's clock.
    pub async fn prepare(&mut self) -> Result<tokio::time::Instant, FaultError> {
        let ready = self
            .client
            .apply(&self.request)
            .await
            .map_err(remote_error)?;
        self.applied = Some(ready.fault);
        Ok(ns_instant(self.offset.to_coordinator(ready.effective_ns)))
    }

    /// Starts a prepared shard at `at` on this host's clock, which the agent reads through the
    /// offset.
    pub async fn go(&mut self, at: tokio::time::Instant) -> Result<Effective, FaultError> {
        let fault = self
            .applied
            .ok_or_else(|| FaultError::Injector("the shard was not prepared".into()))?;
        let at_ns = self.offset.to_agent(relapse_agent::clock::instant_ns(at));
        let applied = self
            .client
            .go(&self.request.id, fault, at_ns)
            .await
            .map_err(remote_error)?;
        Ok(Effective {
            at: ns_instant(self.offset.to_coordinator(applied.effective_ns)),
            detail: applied.detail,
        })
    }

    /// The flood's figures its revert brought back, if it was a flood.
    pub fn figures(&self) -> Option<&FloodFigures> {
        self.figures.as_ref()
    }

    /// Why the agent had already reverted the fault when it was asked to.
    pub fn ended(&self) -> Option<&str> {
        self.ended.as_deref()
    }
}

/// The agent refused because the run no longer holds its lease: the lease lapsed or was ended
/// there, and the agent reverted the run's faults at that moment (or keeps a failed revert for
/// `relapse cleanup`, and logs it).
fn ended_there(error: &AgentError) -> bool {
    matches!(error, AgentError::Refused { status, .. } if *status == hyper::StatusCode::CONFLICT)
}

fn remote_error(error: AgentError) -> FaultError {
    match error {
        AgentError::Refused { error, .. } => FaultError::Target(error),
        other => FaultError::Injector(other.to_string()),
    }
}

impl Fault for RemoteFault {
    fn describe(&self) -> String {
        format!(
            "on agent {} ({}): {}",
            self.agent,
            self.client.url(),
            self.request.table
        )
    }

    fn revert_instructions(&self) -> RevertInstructions {
        RevertInstructions::new(&self.record)
    }

    fn inject(&mut self) -> BoxFuture<'_, Result<Effective, FaultError>> {
        Box::pin(async move {
            let applied = self
                .client
                .apply(&self.request)
                .await
                .map_err(remote_error)?;
            self.applied = Some(applied.fault);
            Ok(Effective {
                at: ns_instant(self.offset.to_coordinator(applied.effective_ns)),
                detail: format!(
                    "on agent {}: {} (its clock mapped to ours ± {:.3}ms)",
                    self.agent,
                    applied.detail,
                    self.uncertainty().as_secs_f64() * 1e3
                ),
            })
        })
    }

    fn revert(&mut self) -> BoxFuture<'_, Result<Reverted, FaultError>> {
        Box::pin(async move {
            let Some(fault) = self.applied else {
                return Ok(Reverted {
                    at: tokio::time::Instant::now(),
                    detail: "nothing was applied".into(),
                });
            };
            let answer = match self.client.revert(&self.request.id, fault).await {
                Ok(answer) => answer,
                Err(error) if ended_there(&error) => {
                    self.applied = None;
                    self.ended = Some(error.to_string());
                    return Ok(Reverted {
                        at: tokio::time::Instant::now(),
                        detail: format!(
                            "on agent {}: the run's lease had ended there, and the agent reverted it then ({error})",
                            self.agent
                        ),
                    });
                }
                Err(error) => return Err(remote_error(error)),
            };
            self.applied = None;
            if let Some(figures) = answer.figures {
                match serde_json::from_value(figures) {
                    Ok(figures) => self.figures = Some(figures),
                    Err(error) => {
                        tracing::warn!(agent = %self.agent, %error, "the flood's figures from the agent are unreadable")
                    }
                }
            }
            Ok(Reverted {
                at: ns_instant(self.offset.to_coordinator(answer.reverted_ns)),
                detail: format!("on agent {}: {}", self.agent, answer.detail),
            })
        })
    }

    fn flood_outcome(&self) -> Option<FloodOutcome> {
        self.figures.clone().map(|figures| FloodOutcome {
            figures: Some(figures),
            shards: Vec::new(),
        })
    }

    fn revert_now(&mut self) {
        // A drop path cannot wait for the agent: the revert goes out on the runtime, and should
        // it not arrive, the run's release or the lease's lapse reverts the fault.
        let Some(fault) = self.applied.take() else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let client = self.client.clone();
            let id = self.request.id.clone();
            runtime.spawn(async move {
                if let Err(error) = client.revert(&id, fault).await {
                    tracing::warn!(%error, "remote revert on drop failed; the lease reverts it");
                }
            });
        }
    }
}

/// A probe an agent checks from its host: each check is one call, and its instants are the
/// agent's, mapped to this host's clock by the offset.
pub struct RemoteProbe {
    agent: String,
    client: AgentClient,
    offset: Offset,
    id: RunId,
    probe: u64,
    /// The probe's own timeout and the way there and back.
    within: Duration,
}

impl Probe for RemoteProbe {
    fn check(&self) -> BoxFuture<'_, Outcome> {
        Box::pin(async move { self.timed_check().await.outcome })
    }

    fn timed_check(&self) -> BoxFuture<'_, Timed> {
        Box::pin(async move {
            let sent = tokio::time::Instant::now();
            match self
                .client
                .check_probe(&self.id, self.probe, self.within)
                .await
            {
                Ok(checked) => Timed {
                    at: ns_instant(self.offset.to_coordinator(checked.started_ns)),
                    latency: Duration::from_nanos(checked.latency_ns),
                    outcome: match checked.error {
                        None => Outcome::Success {
                            status: checked.status,
                        },
                        Some(error) => Outcome::Failure {
                            status: checked.status,
                            error,
                        },
                    },
                },
                // No check was made: the SLI is not known, and the report counts it apart.
                Err(error) => {
                    tracing::debug!(agent = %self.agent, %error, "a remote check did not reach its agent");
                    Timed {
                        at: sent,
                        latency: sent.elapsed(),
                        outcome: Outcome::Failure {
                            status: None,
                            error: AGENT_UNREACHABLE.to_string(),
                        },
                    }
                }
            }
        })
    }
}

/// The error of a remote check that did not reach its agent or got no answer.
pub const AGENT_UNREACHABLE: &str = "agent unreachable";

/// Ends a journaled run on an agent (the guardian, `relapse cleanup`): releases it, which
/// reverts what the agent holds for it. A run the agent no longer holds was already reverted
/// there (its lease lapsed, or it was released).
pub fn revert_record(record: &AgentRunRecord) -> Result<String, RevertError> {
    let record = record.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| RevertError::failed("starting a runtime", e))?;
        runtime.block_on(async {
            let client = client(&record.url, &record.ca, &record.token_file)
                .await
                .map_err(|e| {
                    RevertError::NotConfirmed(format!("agent \"{}\": {e}", record.agent))
                })?;
            let id = RunId {
                run: record.run.clone(),
                holder: record.holder.clone(),
            };
            match client.release(&id).await {
                Ok(()) => Ok(format!(
                    "agent \"{}\": run {} released, its faults reverted",
                    record.agent, record.run
                )),
                Err(error) if ended_there(&error) => Ok(format!(
                    "agent \"{}\": run {} no longer held there ({error})",
                    record.agent, record.run
                )),
                Err(error) => Err(RevertError::NotConfirmed(format!(
                    "agent \"{}\": {error}",
                    record.agent
                ))),
            }
        })
    })
    .join()
    .unwrap_or_else(|_| {
        Err(RevertError::NotConfirmed(
            "the agent release panicked".into(),
        ))
    })
}

/// The connected agents of a run, by name.
pub fn find<'a>(
    mut agents: impl Iterator<Item = &'a Connected>,
    name: &str,
) -> Option<&'a Connected> {
    agents.find(|a| a.name == name)
}

/// `relapse cleanup --agent`: asks the agent to revert what it still holds.
pub async fn cleanup(
    spec: &AgentSpec,
    force: bool,
) -> Result<relapse_agent::wire::CleanupAnswer, String> {
    check_files(spec)?;
    let client = client(&spec.url, &spec.ca, &spec.token_file).await?;
    client.cleanup(force).await.map_err(|e| e.to_string())
}

/// The agent's CA certificate and token file are there and readable, before anything starts.
pub fn check_files(spec: &AgentSpec) -> Result<(), String> {
    relapse_agent::tls::client_config(&spec.ca).map_err(|e| e.to_string())?;
    let token = std::fs::read_to_string(&spec.token_file)
        .map_err(|e| format!("token_file {}: {e}", spec.token_file.display()))?;
    if token.trim().len() < 16 {
        return Err(format!(
            "token_file {}: a token is at least 16 characters",
            spec.token_file.display()
        ));
    }
    Ok(())
}
