//! A flood spread over agents (`on = ["a1", "a2", …]`): one shard per agent, each with its
//! share of the flood (the loader's `spread::shard_tables`). The shards start behind a barrier:
//! every agent builds its shard and says it is ready, then one instant on this host's clock is
//! sent to all, each mapped to its agent's clock by the offset, and every shard starts then. At
//! the revert each agent sends back its shard's figures, which merge into the whole flood's.
//!
//! A shard that is lost (its agent failed or could not be reached, or an http_flood's shard
//! sent no figures back) is named in the report, and the requests due of its share count as due
//! and not sent. A slowloris or connection_flood counts no requests: its shards are reported
//! without figures, and lost ones all the same.

use std::time::Duration;

use relapse_core::fault::{
    BoxFuture, Effective, Fault, FaultError, RevertError, RevertInstructions, RevertRecord,
    Reverted,
};
use relapse_core::report::{FloodFigures, FloodOutcome, ShardOutcome};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{AgentRunRecord, RemoteFault};

/// The journal kind of a spread flood (a [`SpreadRecord`]).
pub const SPREAD_KIND: &str = "agent_spread";

/// How far ahead of now the go instant is set: time for the go to reach every agent.
const GO_AHEAD: Duration = Duration::from_millis(150);

/// How to stop a spread flood from another process: release the run on each of its agents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpreadRecord {
    pub shards: Vec<AgentRunRecord>,
}

impl RevertRecord for SpreadRecord {
    const KIND: &'static str = SPREAD_KIND;
}

/// Releases the run on each agent of a journaled spread flood; every agent is tried, and the
/// first that could not be reached is the error (its lease lapses there all the same).
pub fn revert_spread_record(record: &SpreadRecord) -> Result<String, RevertError> {
    let mut done = Vec::new();
    let mut failed = None;
    for shard in &record.shards {
        match super::revert_record(shard) {
            Ok(detail) => done.push(detail),
            Err(error) => {
                failed.get_or_insert(error);
            }
        }
    }
    match failed {
        Some(error) => Err(error),
        None => Ok(done.join("; ")),
    }
}

/// One shard: the agent's fault, its asked rate (to count what a lost shard did not send),
/// and what became of it.
struct Shard {
    fault: RemoteFault,
    rate: Option<f64>,
    lost: Option<String>,
}

/// A flood whose shards run on several agents.
pub struct SpreadFault {
    describe: String,
    shards: Vec<Shard>,
    record: SpreadRecord,
    /// An http_flood: each shard sends its figures back, and one that sends none is lost.
    counts_requests: bool,
    /// The instant the shards were told to start; `None` until they were.
    went: Option<Instant>,
    started: bool,
    outcome: Option<FloodOutcome>,
}

impl SpreadFault {
    /// `shards` in the order of the fault's `on`, each with its asked rate in the open model;
    /// `counts_requests` for an http_flood, whose shards send back figures.
    pub fn new(
        describe: String,
        shards: Vec<(RemoteFault, Option<f64>)>,
        counts_requests: bool,
    ) -> SpreadFault {
        let record = SpreadRecord {
            shards: shards.iter().map(|(f, _)| f.record.clone()).collect(),
        };
        SpreadFault {
            describe,
            shards: shards
                .into_iter()
                .map(|(fault, rate)| Shard {
                    fault,
                    rate,
                    lost: None,
                })
                .collect(),
            record,
            counts_requests,
            went: None,
            started: false,
            outcome: None,
        }
    }

    /// Runs `step` on every shard at once, and gives the shards back in order with each
    /// one's result.
    async fn each<T, F>(&mut self, step: F) -> Vec<Result<T, FaultError>>
    where
        T: Send + 'static,
        F: Fn(RemoteFault) -> BoxFuture<'static, (RemoteFault, Result<T, FaultError>)>,
    {
        let mut set = JoinSet::new();
        let shards = std::mem::take(&mut self.shards);
        let mut meta = Vec::with_capacity(shards.len());
        for (index, shard) in shards.into_iter().enumerate() {
            meta.push((shard.rate, shard.lost));
            let running = step(shard.fault);
            set.spawn(async move { (index, running.await) });
        }
        let mut back: Vec<Option<(RemoteFault, Result<T, FaultError>)>> =
            (0..meta.len()).map(|_| None).collect();
        while let Some(joined) = set.join_next().await {
            // A shard's call does not panic; should one all the same, its fault is gone and
            // its lease reverts it.
            if let Ok((index, pair)) = joined {
                back[index] = Some(pair);
            }
        }
        let mut results = Vec::with_capacity(back.len());
        for (pair, (rate, lost)) in back.into_iter().zip(meta) {
            if let Some((fault, result)) = pair {
                self.shards.push(Shard { fault, rate, lost });
                results.push(result);
            }
        }
        results
    }

    /// Stops every shard, gathers their figures and merges them. A shard whose agent cannot be
    /// reached is lost, not an error: its lease lapses there and the agent stops it then (and
    /// its flood stops by itself at its duration).
    async fn stop_all(&mut self) -> Result<Reverted, FaultError> {
        let results = self
            .each(|mut fault| {
                Box::pin(async move {
                    let result = fault.revert().await;
                    (fault, result)
                })
            })
            .await;
        let mut at = None::<Instant>;
        let mut details = Vec::new();
        let counts_requests = self.counts_requests;
        for (shard, result) in self.shards.iter_mut().zip(results) {
            match result {
                Ok(reverted) => {
                    at = Some(at.map_or(reverted.at, |a| a.max(reverted.at)));
                    if let Some(ended) = shard.fault.ended() {
                        shard.lost.get_or_insert_with(|| ended.to_string());
                    }
                    if counts_requests && shard.fault.figures().is_none() {
                        shard.lost.get_or_insert_with(|| {
                            "its agent sent no readable figures back".to_string()
                        });
                    }
                    details.push(reverted.detail);
                }
                Err(error) => {
                    details.push(format!("on agent {}: {error}", shard.fault.agent()));
                    shard.lost.get_or_insert_with(|| error.to_string());
                }
            }
        }
        let stopped = at.unwrap_or_else(Instant::now);
        self.outcome = Some(self.merged(stopped));
        Ok(Reverted {
            at: stopped,
            detail: format!(
                "spread flood stopped on {} agents: {}",
                self.shards.len(),
                details.join("; ")
            ),
        })
    }

    /// The whole flood from the shards that reported; a lost shard's share of the requests
    /// due over the flood's duration counts as due and not sent. The flood's duration is its
    /// longest reported shard's, or from the go to `stopped` when none reported.
    fn merged(&self, stopped: Instant) -> FloodOutcome {
        let figures = self.counts_requests.then(|| {
            let reported: Vec<FloodFigures> = self
                .shards
                .iter()
                .filter(|s| s.lost.is_none())
                .filter_map(|s| s.fault.figures().cloned())
                .collect();
            let mut whole = FloodFigures::merge(&reported).unwrap_or_else(|error| {
                // Empty when no shard reported; any other error is a histogram that would
                // not add up, which figures of one flood's settings never are.
                match error {
                    relapse_core::report::FiguresError::Empty => {
                        tracing::debug!("no shard of the spread flood reported")
                    }
                    error => tracing::error!(%error, "the shards' figures do not merge"),
                }
                let ran = self.went.map_or(Duration::ZERO, |went| {
                    stopped.saturating_duration_since(went)
                });
                FloodFigures::nothing_sent(ran)
            });
            for shard in self.shards.iter().filter(|s| s.lost.is_some()) {
                if let Some(rate) = shard.rate {
                    let due = (rate * whole.duration.as_secs_f64()).round() as u64;
                    *whole.intended.get_or_insert(0) += due;
                    *whole.intended_rate.get_or_insert(0.0) += rate;
                }
            }
            whole
        });
        FloodOutcome {
            figures,
            shards: self
                .shards
                .iter()
                .map(|s| ShardOutcome {
                    agent: s.fault.agent().to_string(),
                    figures: s
                        .lost
                        .is_none()
                        .then(|| s.fault.figures().cloned())
                        .flatten(),
                    lost: s.lost.clone(),
                })
                .collect(),
        }
    }
}

impl Fault for SpreadFault {
    fn describe(&self) -> String {
        let agents: Vec<&str> = self.shards.iter().map(|s| s.fault.agent()).collect();
        format!("{} spread over agents {}", self.describe, agents.join(", "))
    }

    fn revert_instructions(&self) -> RevertInstructions {
        RevertInstructions::new(&self.record)
    }

    /// Every shard gets ready, then all start at one instant; effective once the last has
    /// confirmed its first request.
    fn inject(&mut self) -> BoxFuture<'_, Result<Effective, FaultError>> {
        Box::pin(async move {
            self.started = true;
            let ready = self
                .each(|mut fault| {
                    Box::pin(async move {
                        let result = fault.prepare().await;
                        (fault, result)
                    })
                })
                .await;
            if let Some((shard, error)) = first_error(&self.shards, ready) {
                return Err(FaultError::Injector(format!(
                    "shard on agent {shard} could not get ready: {error}"
                )));
            }
            let go = Instant::now() + GO_AHEAD;
            self.went = Some(go);
            let went = self
                .each(move |mut fault| {
                    Box::pin(async move {
                        let result = fault.go(go).await;
                        (fault, result)
                    })
                })
                .await;
            let mut last = go;
            let mut first = None::<Instant>;
            let mut failed = None;
            for (shard, result) in self.shards.iter().zip(went) {
                match result {
                    Ok(effective) => {
                        last = last.max(effective.at);
                        first = Some(first.map_or(effective.at, |f| f.min(effective.at)));
                    }
                    Err(error) => {
                        failed.get_or_insert((shard.fault.agent().to_string(), error));
                    }
                }
            }
            if let Some((agent, error)) = failed {
                return Err(FaultError::Injector(format!(
                    "shard on agent {agent} did not start: {error}"
                )));
            }
            let spread = last.saturating_duration_since(first.unwrap_or(last));
            Ok(Effective {
                at: last,
                detail: format!(
                    "{}: all {} shards started; first requests {:.3}ms apart",
                    self.describe(),
                    self.shards.len(),
                    spread.as_secs_f64() * 1e3
                ),
            })
        })
    }

    fn revert(&mut self) -> BoxFuture<'_, Result<Reverted, FaultError>> {
        Box::pin(async move {
            if !self.started {
                return Ok(Reverted {
                    at: Instant::now(),
                    detail: "spread flood not started".into(),
                });
            }
            self.started = false;
            self.stop_all().await
        })
    }

    fn revert_now(&mut self) {
        for shard in &mut self.shards {
            shard.fault.revert_now();
        }
    }

    fn flood_outcome(&self) -> Option<FloodOutcome> {
        self.outcome.clone()
    }
}

/// The agent of the first shard whose step failed, and why.
fn first_error<T>(
    shards: &[Shard],
    results: Vec<Result<T, FaultError>>,
) -> Option<(String, FaultError)> {
    shards
        .iter()
        .zip(results)
        .find_map(|(shard, result)| result.err().map(|e| (shard.fault.agent().to_string(), e)))
}
