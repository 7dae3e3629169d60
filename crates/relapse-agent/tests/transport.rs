//! The agent's transport end to end on loopback: real TLS (certificates made by `make_certs`),
//! real HTTP/2, the token, the lease and its lapse. The fault host here is a record of what was
//! applied, standing in for relapse's kind table (which the CLI's own tests drive through an
//! agent); what is tested is what reaches it, and when.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use relapse_agent::client::{AgentClient, AgentError};
use relapse_agent::server::Agent;
use relapse_agent::tls::{client_config, make_certs, server_config};
use relapse_agent::wire::{Applied, ApplyRequest, Checked, HeldFault, ProbeRequest, RunId};
use relapse_agent::{BoxFuture, FaultHost, Token};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "0123456789abcdef-test-token";

/// Applied faults by (run, id); every revert is also sent on `reverted`, so a test can await it.
/// Its probes are (run, name) and every check succeeds at once.
struct RecordingHost {
    applied: Mutex<Vec<HeldFault>>,
    probes: Mutex<Vec<(String, String)>>,
    reverted: mpsc::UnboundedSender<(String, u64, Instant)>,
}

impl FaultHost for RecordingHost {
    fn apply<'a>(
        &'a self,
        run: &'a str,
        request: &'a ApplyRequest,
    ) -> BoxFuture<'a, Result<Applied, String>> {
        Box::pin(async move {
            let mut applied = self.applied.lock().unwrap();
            let fault = applied.len() as u64 + 1;
            applied.push(HeldFault {
                run: run.to_string(),
                fault,
                name: request.name.clone(),
                kind: request.kind.clone(),
                describe: request.table.clone(),
            });
            Ok(Applied {
                fault,
                effective_ns: relapse_agent::clock::now_ns(),
                detail: format!("{} applied", request.name),
            })
        })
    }

    /// A prepared fault takes effect at the instant asked.
    fn go<'a>(
        &'a self,
        run: &'a str,
        fault: u64,
        at: Instant,
    ) -> BoxFuture<'a, Result<Applied, String>> {
        Box::pin(async move {
            if !self
                .applied
                .lock()
                .unwrap()
                .iter()
                .any(|f| f.run == run && f.fault == fault)
            {
                return Err(format!("no fault {fault} of run {run}"));
            }
            tokio::time::sleep_until(at).await;
            Ok(Applied {
                fault,
                effective_ns: relapse_agent::clock::now_ns(),
                detail: format!("fault {fault} went"),
            })
        })
    }

    fn revert<'a>(
        &'a self,
        run: &'a str,
        fault: u64,
    ) -> BoxFuture<'a, Result<relapse_agent::Reverted, String>> {
        Box::pin(async move {
            let mut applied = self.applied.lock().unwrap();
            let before = applied.len();
            applied.retain(|f| !(f.run == run && f.fault == fault));
            if applied.len() == before {
                return Err(format!("no fault {fault} of run {run}"));
            }
            let _ = self.reverted.send((run.to_string(), fault, Instant::now()));
            Ok(relapse_agent::Reverted {
                detail: format!("fault {fault} reverted"),
                figures: None,
            })
        })
    }

    fn revert_run<'a>(&'a self, run: &'a str) -> BoxFuture<'a, Vec<Result<String, String>>> {
        Box::pin(async move {
            let mut applied = self.applied.lock().unwrap();
            let (of_run, rest): (Vec<_>, Vec<_>) = applied.drain(..).partition(|f| f.run == run);
            *applied = rest;
            of_run
                .into_iter()
                .map(|f| {
                    let _ = self.reverted.send((f.run, f.fault, Instant::now()));
                    Ok(format!("fault {} reverted", f.fault))
                })
                .collect()
        })
    }

    fn held(&self) -> Vec<HeldFault> {
        self.applied.lock().unwrap().clone()
    }

    fn open_probe<'a>(
        &'a self,
        run: &'a str,
        request: &'a ProbeRequest,
    ) -> BoxFuture<'a, Result<u64, String>> {
        Box::pin(async move {
            let mut probes = self.probes.lock().unwrap();
            probes.push((run.to_string(), request.name.clone()));
            Ok(probes.len() as u64)
        })
    }

    fn check_probe<'a>(
        &'a self,
        run: &'a str,
        probe: u64,
    ) -> BoxFuture<'a, Result<Checked, String>> {
        Box::pin(async move {
            let probes = self.probes.lock().unwrap();
            match probes.get(probe as usize - 1) {
                Some((of, _)) if of == run => Ok(Checked {
                    started_ns: relapse_agent::clock::now_ns(),
                    latency_ns: 0,
                    status: Some(200),
                    error: None,
                }),
                _ => Err(format!("run {run} has no probe {probe}")),
            }
        })
    }

    fn end_probes(&self, run: &str) {
        self.probes.lock().unwrap().retain(|(of, _)| of != run);
    }
}

struct Running {
    addr: SocketAddr,
    host: Arc<RecordingHost>,
    reverted: mpsc::UnboundedReceiver<(String, u64, Instant)>,
    stop: CancellationToken,
    dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start_agent() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let files = make_certs(dir.path(), &[("a1".into(), "127.0.0.1".into())]).unwrap();
    let (_, cert, key) = &files.agents[0];
    let tls = server_config(cert, key).unwrap();
    let (tx, reverted) = mpsc::unbounded_channel();
    let host = Arc::new(RecordingHost {
        applied: Mutex::new(Vec::new()),
        probes: Mutex::new(Vec::new()),
        reverted: tx,
    });
    let agent = Agent::new(Token::new(TOKEN).unwrap(), host.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(agent.serve(listener, tls, stop.clone()));
    Running {
        addr,
        host,
        reverted,
        stop,
        dir,
    }
}

async fn client(running: &Running, token: &str) -> AgentClient {
    client_with_ca(running, &running.dir.path().join("ca.pem"), token)
        .await
        .unwrap()
}

async fn client_with_ca(
    running: &Running,
    ca: &Path,
    token: &str,
) -> Result<AgentClient, AgentError> {
    let url = format!("https://{}", running.addr);
    AgentClient::connect(&url, client_config(ca).unwrap(), token).await
}

fn run_id(run: &str, holder: &str) -> RunId {
    RunId {
        run: run.into(),
        holder: holder.into(),
    }
}

fn freeze(id: &RunId) -> ApplyRequest {
    ApplyRequest {
        id: id.clone(),
        name: "db-hangs".into(),
        kind: "process_freeze".into(),
        table: r#"process_freeze = { command = "postgres: checkpointer" }"#.into(),
        duration_ms: 1000,
        vars: Default::default(),
        prepare: false,
    }
}

const LEASE: Duration = Duration::from_secs(5);
const EVERY: Duration = Duration::from_secs(1);

#[tokio::test]
async fn a_run_takes_the_lease_applies_reverts_and_releases() {
    let mut running = start_agent().await;
    let agent = client(&running, TOKEN).await;
    let id = run_id("run-1", "holder-1");
    agent.lease(&id, LEASE, EVERY).await.unwrap();
    let applied = agent.apply(&freeze(&id)).await.unwrap();
    let held = agent.held().await.unwrap();
    assert_eq!(held.run.as_deref(), Some("run-1"));
    assert_eq!(held.faults.len(), 1);
    assert_eq!(held.faults[0].kind, "process_freeze");
    agent.revert(&id, applied.fault).await.unwrap();
    let (run, fault, _) = running.reverted.recv().await.unwrap();
    assert_eq!((run.as_str(), fault), ("run-1", applied.fault));
    agent.release(&id).await.unwrap();
    assert_eq!(agent.held().await.unwrap().run, None);
    assert!(running.host.held().is_empty());
}

#[tokio::test]
async fn a_probe_is_checked_for_the_run_that_holds_the_lease_and_ends_with_it() {
    let running = start_agent().await;
    let agent = client(&running, TOKEN).await;
    let id = run_id("run-1", "holder-1");
    agent.lease(&id, LEASE, EVERY).await.unwrap();
    let probe = agent
        .open_probe(&ProbeRequest {
            id: id.clone(),
            name: "sli".into(),
            table: r#"http = { url = "http://127.0.0.1:8080/" }"#.into(),
            vars: Default::default(),
        })
        .await
        .unwrap();
    let before = relapse_agent::clock::now_ns();
    let checked = agent
        .check_probe(&id, probe, Duration::from_secs(2))
        .await
        .unwrap();
    assert!(checked.started_ns >= before, "{checked:?}");
    assert_eq!((checked.status, checked.error), (Some(200), None));
    // Another coordinator cannot check under the run's name.
    let other = agent
        .check_probe(
            &run_id("run-1", "not-the-holder"),
            probe,
            Duration::from_secs(2),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(other, AgentError::Refused { status, .. } if status == 409),
        "{other}"
    );
    agent.release(&id).await.unwrap();
    assert!(running.host.probes.lock().unwrap().is_empty());
    let after = agent
        .check_probe(&id, probe, Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(
        matches!(after, AgentError::Refused { status, .. } if status == 409),
        "{after}"
    );
}

#[tokio::test]
async fn the_clock_offset_on_one_host_is_within_its_uncertainty_of_the_truth() {
    let running = start_agent().await;
    let agent = client(&running, TOKEN).await;
    // Agent and test share this process, hence one clock: the true offset is 0.
    let offset = agent.offset(8).await.unwrap();
    assert!(offset.uncertainty > 0, "{offset:?}");
    assert!(
        offset.offset.abs() <= offset.uncertainty,
        "offset {} ns beyond its uncertainty {} ns",
        offset.offset,
        offset.uncertainty
    );
}

#[tokio::test]
async fn a_wrong_token_is_refused_and_nothing_applied() {
    let running = start_agent().await;
    let agent = client(&running, "not-the-token-at-all").await;
    let id = run_id("run-1", "holder-1");
    let refused = agent.lease(&id, LEASE, EVERY).await.unwrap_err();
    assert!(
        matches!(refused, AgentError::Refused { status, .. } if status == 401),
        "{refused}"
    );
    let refused = agent.apply(&freeze(&id)).await.unwrap_err();
    assert!(matches!(refused, AgentError::Refused { status, .. } if status == 401));
    assert!(running.host.held().is_empty());
}

#[tokio::test]
async fn an_agent_whose_certificate_the_client_does_not_trust_is_refused() {
    let running = start_agent().await;
    let other = tempfile::tempdir().unwrap();
    make_certs(other.path(), &[]).unwrap();
    let refused = client_with_ca(&running, &other.path().join("ca.pem"), TOKEN)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("TLS"), "{refused}");
    assert!(running.host.held().is_empty());
}

#[tokio::test]
async fn a_plain_text_client_gets_no_answer_and_applies_nothing() {
    let running = start_agent().await;
    let mut tcp = TcpStream::connect(running.addr).await.unwrap();
    let body = serde_json::to_string(&freeze(&run_id("run-1", "h"))).unwrap();
    let request = format!(
        "POST /v1/apply HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    // The agent ends the connection; what it sent, if anything, is a TLS alert, not HTTP.
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer)).await;
    assert!(!answer.starts_with(b"HTTP/"), "{answer:?}");
    assert!(running.host.held().is_empty());
}

#[tokio::test]
async fn another_coordinator_cannot_renew_or_act_under_a_run_it_did_not_start() {
    let running = start_agent().await;
    let first = client(&running, TOKEN).await;
    let second = client(&running, TOKEN).await;
    first
        .lease(&run_id("run-1", "holder-1"), LEASE, EVERY)
        .await
        .unwrap();
    for refused in [
        second
            .lease(&run_id("run-1", "holder-2"), LEASE, EVERY)
            .await
            .unwrap_err(),
        second
            .lease(&run_id("run-2", "holder-2"), LEASE, EVERY)
            .await
            .unwrap_err(),
        second
            .apply(&freeze(&run_id("run-1", "holder-2")))
            .await
            .unwrap_err(),
    ] {
        assert!(
            matches!(refused, AgentError::Refused { status, .. } if status == 409),
            "{refused}"
        );
    }
    assert!(running.host.held().is_empty());
}

/// The dead-man switch: renewals stop, and within the lease + 1 s of the last one the agent has
/// reverted what the run applied. A short lease keeps the test short; the bound is the same.
#[tokio::test]
async fn when_renewals_stop_the_agent_reverts_within_the_lease_and_a_second() {
    let lease = Duration::from_millis(600);
    let every = Duration::from_millis(200);
    let mut running = start_agent().await;
    let agent = client(&running, TOKEN).await;
    let id = run_id("run-1", "holder-1");
    let taken = Instant::now();
    agent.lease(&id, lease, every).await.unwrap();
    let renewing = CancellationToken::new();
    let (lost, mut lost_rx) = mpsc::unbounded_channel();
    let renewals = agent.keep_lease(id.clone(), lease, every, taken, renewing.clone(), lost);
    agent.apply(&freeze(&id)).await.unwrap();
    agent.apply(&freeze(&id)).await.unwrap();
    // Held across several renewals: nothing is reverted while they come.
    tokio::time::sleep(lease * 2).await;
    assert_eq!(
        running.host.held().len(),
        2,
        "reverted while the lease was renewed"
    );
    // The coordinator dies. The agent counts its lease from the last renewal it received,
    // which is after the instant that renewal was sent: the bound is measured from the send.
    renewing.cancel();
    let last_renewal = renewals.await.unwrap().expect("renewals were accepted");
    assert!(
        lost_rx.try_recv().is_err(),
        "stopped renewals are not a lost lease"
    );
    let bound = lease + Duration::from_secs(1);
    for _ in 0..2 {
        let (run, _, at) = tokio::time::timeout_at(last_renewal + bound, running.reverted.recv())
            .await
            .expect("reverted within the lease + 1 s of the last renewal")
            .unwrap();
        assert_eq!(run, "run-1");
        assert!(
            at - last_renewal >= lease,
            "reverted before the lease could have lapsed"
        );
    }
    assert!(running.host.held().is_empty());
    // The lapsed run is over: it cannot come back and apply again.
    assert!(agent.apply(&freeze(&id)).await.is_err());
    assert!(agent.lease(&id, lease, every).await.is_err());
}

/// The renewals say so when the agent ends the run under them (here an operator's forced
/// cleanup): the next renewal is refused, the lease is reported lost with the agent's reason,
/// and the renewals stop.
#[tokio::test]
async fn renewals_report_a_run_the_agent_ended_as_a_lost_lease() {
    let lease = Duration::from_secs(5);
    let every = Duration::from_millis(100);
    let running = start_agent().await;
    let agent = client(&running, TOKEN).await;
    let id = run_id("run-1", "holder-1");
    let taken = Instant::now();
    agent.lease(&id, lease, every).await.unwrap();
    let (lost, mut lost_rx) = mpsc::unbounded_channel();
    let renewals = agent.keep_lease(
        id.clone(),
        lease,
        every,
        taken,
        CancellationToken::new(),
        lost,
    );
    agent.cleanup(true).await.unwrap();
    let why = lost_rx.recv().await.expect("the loss is reported");
    assert!(
        why.contains("ended the run") && why.contains("has ended"),
        "{why}"
    );
    // The task ends by itself: nobody cancels it here.
    tokio::time::timeout(Duration::from_secs(5), renewals)
        .await
        .expect("the renewals stopped")
        .unwrap();
}
