//! The floods as relapse faults: an HTTP request flood, slowloris, and a flood of idle
//! connections. All run inside the relapse process: they stop when reverted, when their
//! `max_duration` passes, or when the process dies.
//!
//! An HTTP flood saturates the cores by design, and it runs beside the engine that measures
//! its effect: on the engine's runtime its 64 busy connections delayed the SLI probe's checks
//! by a p99 of 4.3 ms (benches/RESULTS.md). So its load runs on a runtime of its own, whose
//! threads run under `SCHED_IDLE`: whenever the probe or the engine has work, the kernel runs
//! them at once, preempting the flood, and the flood gets every cycle left over. (At nice 19 a
//! flood thread still kept its core for up to a time slice after the probe woke: a p99 of 3 ms.)
//!
//! Here: the journal record, the flood's own runtime, and the HTTP flood. Slowloris and
//! connection_flood, which hold connections rather than send requests, are in `held`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use relapse_core::fault::{
    BoxFuture, Effective, Fault, FaultError, RevertError, RevertInstructions, Reverted,
};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, Instant};
use tokio_util::sync::CancellationToken;

use crate::load::{run_load_with_probe, LoadProbe, LoadReport, LoadSpec};
use crate::FloodError;

mod held;

pub use held::{ConnectionFlood, Slowloris};

/// How long a revert may take to see every connection closed: closing is a syscall per socket.
const CLOSE_WITHIN: Duration = Duration::from_secs(5);
/// A connection attempt of slowloris or a connection flood gives up after this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Connection attempts in flight at once per flood: a burst of thousands of SYNs overflows
/// the target's listen queue, and with SYN cookies the final ACK of an overflowed handshake is
/// dropped, leaving a connection we think open and the server never saw.
const CONNECTS_AT_ONCE: usize = 64;
/// The share of connections that must be open for a partial flood to count as effective.
const EFFECTIVE_SHARE: f64 = 0.9;

/// The journal's record of a flood: nothing to undo from outside, the flood lives and dies with
/// the relapse process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FloodRecord {
    pub kind: String,
    pub target: String,
    pub in_process: bool,
    pub note: String,
}

fn instructions(kind: &'static str, target: SocketAddr) -> RevertInstructions {
    let record = FloodRecord {
        kind: kind.into(),
        target: target.to_string(),
        in_process: true,
        note: "the load runs inside the relapse process and dies with it".into(),
    };
    RevertInstructions::for_kind(kind, &record)
}

/// Validates a journaled flood record; there is nothing to undo, the flood ended with the
/// process that ran it.
pub fn revert_record(record: &FloodRecord) -> Result<String, RevertError> {
    if !record.in_process {
        return Err(RevertError::NotConfirmed(format!(
            "{} record is not in-process; unknown how to revert",
            record.kind
        )));
    }
    Ok("in-process; gone with its process".into())
}

fn injector(e: FloodError) -> FaultError {
    FaultError::Injector(e.to_string())
}

struct RunningFlood {
    cancel: CancellationToken,
    task: JoinHandle<Result<LoadReport, FloodError>>,
    probe: Arc<LoadProbe>,
    runtime: FloodRuntime,
}

/// The nice value of a flood's threads where `SCHED_IDLE` cannot be had.
pub const FLOOD_NICE: i32 = 19;

/// The runtime an HTTP flood's load runs on, its threads under `SCHED_IDLE`. Shut down without
/// blocking when dropped, since it is dropped inside the engine's runtime, where blocking on
/// another runtime's shutdown is not allowed.
struct FloodRuntime(Option<tokio::runtime::Runtime>);

impl FloodRuntime {
    fn start() -> Result<FloodRuntime, FaultError> {
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("relapse-flood")
            .on_thread_start(lower_this_threads_priority)
            .enable_all()
            .build()
            .map(|runtime| FloodRuntime(Some(runtime)))
            .map_err(|e| FaultError::Injector(format!("flood runtime: {e}")))
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        self.0.as_ref().expect("present until dropped").handle()
    }
}

impl Drop for FloodRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// Puts the calling thread (not the process) under `SCHED_IDLE`: it runs only when no normal
/// thread wants its core, and a waking normal thread preempts it at once. Any thread may lower
/// itself to it without privilege; should that fail all the same, it falls back to nice 19.
fn lower_this_threads_priority() {
    use thread_priority::{
        set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy,
        ThreadPriority, ThreadSchedulePolicy,
    };
    let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
    let Err(error) = set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, idle)
    else {
        return;
    };
    tracing::warn!(
        ?error,
        "flood thread: no SCHED_IDLE; lowering it to nice {FLOOD_NICE}"
    );
    // On Linux a thread id names one thread to `setpriority(PRIO_PROCESS, …)`.
    let tid = rustix::thread::gettid();
    if let Err(error) = rustix::process::setpriority_process(Some(tid), FLOOD_NICE) {
        // The flood still runs, only at the engine's priority.
        tracing::warn!(%error, "flood thread: cannot lower its priority");
    }
}

/// An HTTP request flood: [`crate::run_load`] as a fault.
pub struct HttpFlood {
    spec: LoadSpec,
    running: Option<RunningFlood>,
    last: Arc<Mutex<Option<LoadReport>>>,
}

impl HttpFlood {
    /// Checks the spec now, so a bad flood is refused before anything is injected.
    pub fn new(spec: LoadSpec) -> Result<HttpFlood, FloodError> {
        spec.validate()?;
        Ok(HttpFlood {
            spec,
            running: None,
            last: Arc::new(Mutex::new(None)),
        })
    }

    /// The report of the last flood that ended (after revert, or after it stopped by itself
    /// and was reverted).
    pub fn last_report(&self) -> Option<LoadReport> {
        self.last.lock().expect("not poisoned").clone()
    }

    /// Connections the running flood holds open now.
    pub fn open_connections(&self) -> usize {
        self.running
            .as_ref()
            .map_or(0, |r| r.probe.open_connections())
    }

    async fn stop(&mut self) -> Result<Reverted, FaultError> {
        let Some(running) = self.running.take() else {
            return Ok(Reverted {
                at: Instant::now(),
                detail: "http flood not running".into(),
            });
        };
        running.cancel.cancel();
        // run_load returns only after its connection tasks ended; its own grace bounds this.
        let report = match running.task.await {
            Ok(Ok(report)) => report,
            Ok(Err(e)) => return Err(injector(e)),
            Err(e) => return Err(FaultError::Injector(format!("flood task: {e}"))),
        };
        if timeout(CLOSE_WITHIN, running.probe.all_closed())
            .await
            .is_err()
        {
            return Err(FaultError::NotConfirmed(format!(
                "{} flood connections still open",
                running.probe.open_connections()
            )));
        }
        let detail = format!(
            "http flood stopped after {} requests ({} answered); 0 connections open",
            report.sent, report.completed
        );
        *self.last.lock().expect("not poisoned") = Some(report);
        Ok(Reverted {
            at: Instant::now(),
            detail,
        })
    }
}

impl Fault for HttpFlood {
    fn describe(&self) -> String {
        let model = match self.spec.model {
            crate::Model::Open { rate, .. } => format!("{rate} req/s"),
            crate::Model::Closed { connections } => format!("{connections} connections"),
        };
        format!(
            "http flood {} {} at {model}",
            self.spec.request.method, self.spec.target
        )
    }

    fn revert_instructions(&self) -> RevertInstructions {
        instructions(crate::HTTP_FLOOD, self.spec.target)
    }

    /// Effective once the first request has been sent.
    fn inject(&mut self) -> BoxFuture<'_, Result<Effective, FaultError>> {
        Box::pin(async move {
            if self.running.is_some() {
                return Err(FaultError::Injector("http flood already running".into()));
            }
            let cancel = CancellationToken::new();
            let probe = Arc::new(LoadProbe::new());
            let runtime = FloodRuntime::start()?;
            let mut task = runtime.handle().spawn(run_load_with_probe(
                self.spec.clone(),
                cancel.clone(),
                probe.clone(),
            ));
            // A first request needs a connect and a write, each bounded by the timeout.
            let within = self.spec.timeout * 2;
            let outcome = tokio::select! {
                at = probe.first_sent() => Ok(at),
                joined = &mut task => Err(match joined {
                    Ok(Ok(report)) => FaultError::NotConfirmed(format!(
                        "the flood ended without sending a request: {:?}",
                        report.errors_by_kind
                    )),
                    Ok(Err(e)) => injector(e),
                    Err(e) => FaultError::Injector(format!("flood task: {e}")),
                }),
                _ = sleep(within) => Err(FaultError::NotConfirmed(format!(
                    "no request sent within {within:?}"
                ))),
            };
            match outcome {
                Ok(at) => {
                    self.running = Some(RunningFlood {
                        cancel,
                        task,
                        probe,
                        runtime,
                    });
                    Ok(Effective {
                        at,
                        detail: format!("{}: first request sent", self.describe()),
                    })
                }
                Err(e) => {
                    cancel.cancel();
                    if !task.is_finished() {
                        let _ = task.await;
                    }
                    Err(e)
                }
            }
        })
    }

    fn revert(&mut self) -> BoxFuture<'_, Result<Reverted, FaultError>> {
        Box::pin(self.stop())
    }

    fn flood_outcome(&self) -> Option<relapse_core::report::FloodOutcome> {
        self.last_report()
            .map(|report| relapse_core::report::FloodOutcome {
                figures: Some(crate::shard::figures(&report)),
                shards: Vec::new(),
            })
    }

    fn revert_now(&mut self) {
        if let Some(running) = self.running.take() {
            running.cancel.cancel();
            // Keep the report if a runtime is there to wait for it; the flood stops either way
            // (its runtime, shut down when dropped, drops what is left of the load).
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                let last = self.last.clone();
                handle.spawn(async move {
                    let RunningFlood { task, runtime, .. } = running;
                    if let Ok(Ok(report)) = task.await {
                        *last.lock().expect("not poisoned") = Some(report);
                    }
                    drop(runtime);
                });
            }
        }
    }
}

impl Drop for HttpFlood {
    fn drop(&mut self) {
        self.revert_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journaled_floods_are_in_process() {
        let i = instructions("slowloris", "127.0.0.1:80".parse().unwrap());
        assert_eq!(i.kind, "slowloris");
        let record: FloodRecord = relapse_core::fault::decode_as(i.kind, i.record).unwrap();
        assert_eq!(
            revert_record(&record).unwrap(),
            "in-process; gone with its process"
        );
        let foreign = FloodRecord {
            in_process: false,
            ..record
        };
        assert!(revert_record(&foreign).is_err());
        assert!(
            relapse_core::fault::decode_as::<FloodRecord>("slowloris", serde_json::json!("{"))
                .is_err()
        );
    }
}
