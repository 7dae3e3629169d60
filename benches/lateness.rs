//! Probe lateness: how much later than scheduled the engine sends its SLI checks, idle and while
//! a 64-connection `http_flood` of the same process saturates the cores.
//!
//! Each round runs the real engine (an HTTP SLI probe every 50 ms against
//! `relapse-bench-server`, started here as a process of its own) through one fault of
//! `DURATION_S` seconds, in five modes, alternating:
//! - `idle·ms`: a fault that does nothing, checks paced on the runtime's millisecond timer
//!   (`RuntimePacer`, as the engine paced them before it had a kernel timer);
//! - `idle`: the same, paced on a kernel timer (`relapse_probe::KernelPacer`, as a run is);
//! - `shared`: the flood's load spawned on the engine's own runtime, as `http_flood` did before
//!   it got threads of its own;
//! - `flood·ms`: `http_flood` as it is (`relapse_flood::HttpFlood`), on the millisecond timer;
//! - `flood`: `http_flood` as it is, on the kernel timer: what a run does.
//!
//! Prints each round's lateness (p50 / p99 / max of the run's SLI checks) and the flood's rate.
//! Run: `cargo build --release -p relapse-flood --bin relapse-bench-server && cargo bench
//! --bench lateness` (ROUNDS, DURATION_S to override). Traffic stays on loopback; every load is
//! bounded by its duration and a request count.

#![allow(clippy::print_stdout, clippy::print_stderr)]

#[path = "support/bench_server.rs"]
mod bench_server;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bench_server::Server;
use relapse_core::engine::{self, Plan, PlannedFault, PlannedProbe};
use relapse_core::fault::{BoxFuture, Effective, Fault, FaultError, RevertInstructions, Reverted};
use relapse_core::measure::SteadyRule;
use relapse_core::report::RunReport;
use relapse_core::scenario::{Gates, Limits};
use relapse_core::sense::{Pacer, RuntimePacer};
use relapse_flood::{run_load_with_probe, HttpFlood, LoadProbe, LoadReport, LoadSpec};
use relapse_probe::{HttpProbe, KernelPacer};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const EVERY: Duration = Duration::from_millis(50);
const CONNECTIONS: usize = 64;

/// A fault that changes nothing: the idle baseline, through the same schedule.
struct Nothing;

impl Fault for Nothing {
    fn describe(&self) -> String {
        "nothing".into()
    }
    fn revert_instructions(&self) -> RevertInstructions {
        RevertInstructions::for_kind("nothing", &())
    }
    fn inject(&mut self) -> BoxFuture<'_, Result<Effective, FaultError>> {
        Box::pin(async {
            Ok(Effective {
                at: Instant::now(),
                detail: "nothing".into(),
            })
        })
    }
    fn revert(&mut self) -> BoxFuture<'_, Result<Reverted, FaultError>> {
        Box::pin(async {
            Ok(Reverted {
                at: Instant::now(),
                detail: "nothing".into(),
            })
        })
    }
    fn revert_now(&mut self) {}
}

/// The flood's load on the engine's own runtime: what `http_flood` did before.
struct SharedRuntimeFlood {
    spec: LoadSpec,
    running: Option<(
        CancellationToken,
        JoinHandle<Result<LoadReport, relapse_flood::FloodError>>,
    )>,
    last: Arc<Mutex<Option<LoadReport>>>,
}

impl Fault for SharedRuntimeFlood {
    fn describe(&self) -> String {
        "flood on the engine's runtime".into()
    }
    fn revert_instructions(&self) -> RevertInstructions {
        RevertInstructions::for_kind("shared_flood", &())
    }
    fn inject(&mut self) -> BoxFuture<'_, Result<Effective, FaultError>> {
        Box::pin(async {
            let cancel = CancellationToken::new();
            let probe = Arc::new(LoadProbe::new());
            let task = tokio::spawn(run_load_with_probe(
                self.spec.clone(),
                cancel.clone(),
                probe.clone(),
            ));
            let at = probe.first_sent().await;
            self.running = Some((cancel, task));
            Ok(Effective {
                at,
                detail: "first request sent".into(),
            })
        })
    }
    fn revert(&mut self) -> BoxFuture<'_, Result<Reverted, FaultError>> {
        Box::pin(async {
            if let Some((cancel, task)) = self.running.take() {
                cancel.cancel();
                let report = task
                    .await
                    .map_err(|e| FaultError::Injector(e.to_string()))?
                    .map_err(|e| FaultError::Injector(e.to_string()))?;
                *self.last.lock().unwrap() = Some(report);
            }
            Ok(Reverted {
                at: Instant::now(),
                detail: "stopped".into(),
            })
        })
    }
    fn revert_now(&mut self) {
        if let Some((cancel, _)) = self.running.take() {
            cancel.cancel();
        }
    }
}

fn plan(
    server: SocketAddr,
    fault: Box<dyn Fault>,
    duration: Duration,
    pacer: Arc<dyn Pacer>,
) -> Plan {
    let url = format!("http://{server}/");
    let probe = HttpProbe::new(&url, "GET", Duration::from_millis(500), vec![200]).expect("probe");
    Plan {
        scenario: "lateness".into(),
        probes: vec![PlannedProbe {
            name: "sli".into(),
            every: EVERY,
            timeout: Duration::from_millis(500),
            probe: Arc::new(probe),
            placement: None,
        }],
        sli: 0,
        steady: SteadyRule {
            window: Duration::from_millis(500),
            min_success: 0.5,
            max_p99: None,
            probe_every: EVERY,
        },
        steady_timeout: Duration::from_secs(10),
        detectors: Vec::new(),
        faults: vec![PlannedFault {
            placements: Vec::new(),
            name: "load".into(),
            start: Duration::ZERO,
            duration,
            fault,
            gates: Gates::default(),
        }],
        gates: Gates::default(),
        mitigation: None,
        expect: Default::default(),
        limits: Limits {
            max_run: duration + Duration::from_secs(30),
            observe_after: Duration::from_secs(1),
            inject_timeout: Duration::from_secs(5),
        },
        stops: Vec::new(),
        backlog: None,
        journal: None,
        aborts: None,
        pacer,
    }
}

fn flood_spec(server: SocketAddr, duration: Duration) -> LoadSpec {
    LoadSpec::new(server)
        .closed(CONNECTIONS)
        .max_requests(100_000_000)
        .max_duration(duration + Duration::from_secs(5))
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn line(mode: &str, round: u64, report: &RunReport, rate: Option<f64>) {
    let sli = report.probes.iter().find(|p| p.sli).expect("an SLI probe");
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{mode:<8} round {round}: {:>4} checks, lateness p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms; resolution {:.3} ms{}",
        sli.samples,
        ms(sli.lateness.p50),
        ms(sli.lateness.p99),
        ms(sli.lateness.max),
        ms(report.resolution),
        rate.map_or(String::new(), |r| format!("; flood {r:.0} req/s"))
    );
}

fn main() {
    let rounds = env("ROUNDS", 2);
    let duration = Duration::from_secs(env("DURATION_S", 20));
    let server = Server::start(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "SLI every {EVERY:?}, {CONNECTIONS}-connection closed-model flood, {}s per run, {rounds} rounds",
        duration.as_secs()
    );
    let kernel: Arc<dyn Pacer> = Arc::new(KernelPacer);
    let runtime_timer: Arc<dyn Pacer> = Arc::new(RuntimePacer);
    for round in 1..=rounds {
        runtime.block_on(async {
            for (mode, pacer) in [("idle·ms", &runtime_timer), ("idle", &kernel)] {
                let idle = engine::run(
                    plan(server.addr, Box::new(Nothing), duration, pacer.clone()),
                    CancellationToken::new(),
                    None,
                )
                .await;
                line(mode, round, &idle, None);
            }

            let last = Arc::new(Mutex::new(None));
            let shared = SharedRuntimeFlood {
                spec: flood_spec(server.addr, duration),
                running: None,
                last: last.clone(),
            };
            let report = engine::run(
                plan(server.addr, Box::new(shared), duration, kernel.clone()),
                CancellationToken::new(),
                None,
            )
            .await;
            let rate = last.lock().unwrap().as_ref().map(|r| r.achieved_rps);
            line("shared", round, &report, rate);

            for (mode, pacer) in [("flood·ms", &runtime_timer), ("flood", &kernel)] {
                let flood = HttpFlood::new(flood_spec(server.addr, duration)).expect("flood");
                let handle = FloodHandle::new(flood);
                let report = engine::run(
                    plan(
                        server.addr,
                        Box::new(handle.clone()),
                        duration,
                        pacer.clone(),
                    ),
                    CancellationToken::new(),
                    None,
                )
                .await;
                let rate = handle.last_rate();
                line(mode, round, &report, rate);
            }
        });
    }
}

/// `HttpFlood` as the engine's fault, with its last report still readable after the run.
#[derive(Clone)]
struct FloodHandle(Arc<tokio::sync::Mutex<HttpFlood>>);

impl FloodHandle {
    fn new(flood: HttpFlood) -> FloodHandle {
        FloodHandle(Arc::new(tokio::sync::Mutex::new(flood)))
    }
    fn last_rate(&self) -> Option<f64> {
        self.0
            .try_lock()
            .ok()
            .and_then(|f| f.last_report())
            .map(|r| r.achieved_rps)
    }
}

impl Fault for FloodHandle {
    fn describe(&self) -> String {
        "http flood".into()
    }
    fn revert_instructions(&self) -> RevertInstructions {
        RevertInstructions::for_kind(relapse_flood::HTTP_FLOOD, &())
    }
    fn inject(&mut self) -> BoxFuture<'_, Result<Effective, FaultError>> {
        Box::pin(async { self.0.lock().await.inject().await })
    }
    fn revert(&mut self) -> BoxFuture<'_, Result<Reverted, FaultError>> {
        Box::pin(async { self.0.lock().await.revert().await })
    }
    fn revert_now(&mut self) {
        if let Ok(mut flood) = self.0.try_lock() {
            flood.revert_now();
        }
    }
}
