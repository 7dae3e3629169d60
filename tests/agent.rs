//! `relapse agent serve` end to end: a real agent process (its own journal and guardian), a real
//! target process, real TLS, on loopback or on a test host (a network namespace the test makes,
//! joined by a veth pair, so calls cross a real network hop and the link can be cut). The test
//! is the coordinator, through the agent crate's client. Each fault is `process_freeze` by
//! command line, on a `sleep` the test starts.

mod support;

use std::process::Command;
use std::time::Duration;

use relapse_agent::client::AgentError;
use relapse_agent::wire::ApplyRequest;
use tokio_util::sync::CancellationToken;

use support::agents::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_freeze_is_applied_and_reverted_and_a_kind_not_allowed_is_refused() {
    let agent = start_agent(&["process_freeze"]);
    let client = connect(&agent).await;
    let (sleeper, command) = target();
    let pid = sleeper.0.id();
    let id = run_id("run-1");
    client
        .lease(&id, Duration::from_secs(5), Duration::from_secs(1))
        .await
        .unwrap();
    let applied = client.apply(&freeze(&id, &command)).await.unwrap();
    // Confirmed: the agent answers only once /proc shows the process stopped.
    assert_eq!(state(pid), 'T', "{applied:?}");
    let held = client.held().await.unwrap();
    assert_eq!(held.faults.len(), 1);
    client.revert(&id, applied.fault).await.unwrap();
    assert_ne!(state(pid), 'T');

    // The agent applies only the kinds it was started with, whatever the coordinator asks.
    let not_allowed = ApplyRequest {
        kind: "fd_exhaustion".into(),
        table: format!("fd_exhaustion = {{ pid = {pid} }}"),
        ..freeze(&id, &command)
    };
    let refused = client.apply(&not_allowed).await.unwrap_err();
    assert!(
        matches!(&refused, AgentError::Refused { error, .. } if error.contains("not in this agent's allowlist")),
        "{refused}"
    );
    // Two matches for a command line: refused, naming both, nothing frozen.
    let (_twin, _) = target();
    let refused = client.apply(&freeze(&id, "sleep 3600.")).await.unwrap_err();
    assert!(
        refused.to_string().contains("more than one process"),
        "{refused}"
    );
    assert_ne!(state(pid), 'T');
    client.release(&id).await.unwrap();
    assert!(client.held().await.unwrap().faults.is_empty());
}

/// The dead-man switch through the real agent: the coordinator stops renewing, and within the
/// lease + 1 s of its last renewal the process runs again. The lease is short to keep the test
/// short; the bound is the issue's, lease + 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lapsed_lease_thaws_the_remote_process() {
    let lease = Duration::from_millis(800);
    let every = Duration::from_millis(200);
    let agent = start_agent(&["process_freeze"]);
    let client = connect(&agent).await;
    let (sleeper, command) = target();
    let pid = sleeper.0.id();
    let id = run_id("run-lapse");
    let taken = tokio::time::Instant::now();
    client.lease(&id, lease, every).await.unwrap();
    let renewing = CancellationToken::new();
    let (lost, _) = tokio::sync::mpsc::unbounded_channel();
    let renewals = client.keep_lease(id.clone(), lease, every, taken, renewing.clone(), lost);
    client.apply(&freeze(&id, &command)).await.unwrap();
    assert_eq!(state(pid), 'T');
    renewing.cancel();
    let last = renewals.await.unwrap().expect("renewals were accepted");
    let bound = lease + Duration::from_secs(1);
    let left = bound.saturating_sub(last.elapsed());
    wait_state(pid, |s| s != 'T', left).await;
    assert!(
        last.elapsed() >= lease,
        "thawed before the lease could have lapsed"
    );
    assert!(client.held().await.unwrap().faults.is_empty());
}

/// `kill -9` of the agent itself: its guardian reverts what its journal holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_leaves_nothing_frozen() {
    let mut agent = start_agent(&["process_freeze"]);
    let client = connect(&agent).await;
    let (sleeper, command) = target();
    let pid = sleeper.0.id();
    let id = run_id("run-kill");
    client
        .lease(&id, Duration::from_secs(5), Duration::from_secs(1))
        .await
        .unwrap();
    client.apply(&freeze(&id, &command)).await.unwrap();
    assert_eq!(state(pid), 'T');
    agent.process.0.kill().unwrap();
    agent.process.0.wait().unwrap();
    // The guardian notices at once (its stdin closes) and reverts; 10 s bounds a slow machine.
    wait_state(pid, |s| s != 'T', Duration::from_secs(10)).await;
}

/// The clock across a real hop: the agent's host is a namespace of this machine, so it reads
/// the same CLOCK_MONOTONIC and the true offset is 0, to within the microsecond each process
/// takes to pair its clock with its runtime's instants (2 × 5 µs allowed). The estimate must
/// lie within its stated uncertainty of that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clock_offset_across_a_link_is_within_its_uncertainty() {
    let host = test_host(2);
    let agent = start_agent_on(&["process_freeze"], Some(&host));
    let client = connect(&agent).await;
    let offset = client.offset(16).await.unwrap();
    let pairing = 10_000;
    eprintln!(
        "clock offset across the veth link: {} ns ± {} ns",
        offset.offset, offset.uncertainty
    );
    assert!(offset.uncertainty > 0);
    assert!(
        offset.offset.abs() <= offset.uncertainty + pairing,
        "offset {} ns, stated uncertainty {} ns",
        offset.offset,
        offset.uncertainty
    );
}

/// The dead-man switch across a real link, 20 rounds: the coordinator is cut off from the
/// agent's host (the veth end on this side set down), the renewals stop reaching it, and
/// within the lease + 1 s of the cut the frozen process runs again. It cannot thaw sooner than
/// the lease less one renewal interval after the cut, since a renewal was received at most an
/// interval (and a call) before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutting_the_link_to_the_agents_host_thaws_its_process_within_the_lease_20_times() {
    const ROUNDS: usize = 20;
    let lease = Duration::from_millis(500);
    let every = Duration::from_millis(100);
    let host = test_host(1);
    let agent = start_agent_on(&["process_freeze"], Some(&host));
    let (sleeper, command) = target();
    let pid = sleeper.0.id();
    let mut slowest = Duration::ZERO;
    for round in 0..ROUNDS {
        // A new connection each round: the last one died with the link.
        let client = connect(&agent).await;
        let id = run_id(&format!("run-cut-{round}"));
        let taken = tokio::time::Instant::now();
        client.lease(&id, lease, every).await.unwrap();
        let renewing = CancellationToken::new();
        let (lost, mut lost_rx) = tokio::sync::mpsc::unbounded_channel();
        // Left to end by itself: its renewal in flight at the cut times out.
        drop(client.keep_lease(id.clone(), lease, every, taken, renewing.clone(), lost));
        client.apply(&freeze(&id, &command)).await.unwrap();
        assert_eq!(state(pid), 'T', "round {round}");
        ip(&["link", "set", host.outside_link(), "down"]);
        // Measured from the cut: `wait_state` starts its clock now.
        let thawed = wait_state(pid, |s| s != 'T', lease + Duration::from_secs(1)).await;
        assert!(
            thawed + every + Duration::from_millis(100) >= lease,
            "round {round}: thawed {thawed:?} after the cut, before the lease could lapse"
        );
        slowest = slowest.max(thawed);
        // The coordinator's side knows too: no renewal got through for a lease.
        let why = tokio::time::timeout(lease + Duration::from_secs(1), lost_rx.recv())
            .await
            .unwrap_or_else(|_| panic!("round {round}: the lost lease was not reported"))
            .unwrap();
        assert!(
            why.contains("no lease renewal reached"),
            "round {round}: {why}"
        );
        renewing.cancel();
        ip(&["link", "set", host.outside_link(), "up"]);
    }
    eprintln!(
        "{ROUNDS} link cuts: slowest thaw {slowest:?} after the cut (lease {lease:?}, bound {:?})",
        lease + Duration::from_secs(1)
    );
}

/// The dead-man switch against a killed coordinator, 20 rounds: `relapse run` freezes a process
/// through the agent, then it and its guardian are killed with SIGKILL (as when its host dies:
/// nothing of the coordinator's is left to revert), and within the lease + 1 s the agent has
/// thawed the process. Afterwards `relapse cleanup` finds the runs' journals, asks the agent,
/// hears that it holds none of them, and empties the journal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_coordinator_and_its_guardian_thaws_the_remote_process_20_times() {
    const ROUNDS: usize = 20;
    let lease = Duration::from_secs(1);
    let host = test_host(4);
    let agent = start_agent_on(&["process_freeze"], Some(&host));
    let (sleeper, command) = target();
    let pid = sleeper.0.id();
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("s.toml");
    std::fs::write(&scenario, freeze_scenario(&agent, &command, "1s", "250ms")).unwrap();
    let state = dir.path().join("state");
    let mut slowest = Duration::ZERO;
    for round in 0..ROUNDS {
        let coordinator = start_coordinator(&scenario, &state);
        // Steady state, then the agent freezes it: 30 s bounds a slow machine's start.
        wait_state(pid, |s| s == 'T', Duration::from_secs(30)).await;
        kill_9(coordinator.guardian);
        kill_9(coordinator.run.0.id());
        let thawed = wait_state(pid, |s| s != 'T', lease + Duration::from_secs(1)).await;
        // The lease did it: the last renewal reached the agent at most an interval (and a
        // call, 100 ms allowed) before the kill.
        assert!(
            thawed + Duration::from_millis(350) >= lease,
            "round {round}: thawed {thawed:?} after the kill, before the lease could lapse"
        );
        slowest = slowest.max(thawed);
        drop(coordinator);
        eprintln!("round {round}: thawed {thawed:?} after the kill");
    }
    eprintln!(
        "{ROUNDS} coordinator kills: slowest thaw {slowest:?} after the kill (lease {lease:?}, bound {:?})",
        lease + Duration::from_secs(1)
    );
    let cleanup = Command::new(env!("CARGO_BIN_EXE_relapse"))
        .args(["cleanup", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(
        cleanup.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&cleanup.stdout),
        String::from_utf8_lossy(&cleanup.stderr)
    );
    assert!(
        walk(&state).is_empty(),
        "the journal still holds {:?}",
        walk(&state)
    );
}

/// With its guardian alive, a killed coordinator's faults go at once: the guardian releases the
/// run on the agent, well before the lease (5 s here) could lapse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_coordinators_guardian_releases_the_run_before_the_lease_lapses() {
    let lease = Duration::from_secs(5);
    let host = test_host(5);
    let agent = start_agent_on(&["process_freeze"], Some(&host));
    let (sleeper, command) = target();
    let pid = sleeper.0.id();
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("s.toml");
    std::fs::write(&scenario, freeze_scenario(&agent, &command, "5s", "1s")).unwrap();
    let state = dir.path().join("state");
    let coordinator = start_coordinator(&scenario, &state);
    wait_state(pid, |s| s == 'T', Duration::from_secs(30)).await;
    kill_9(coordinator.run.0.id());
    let thawed = wait_state(pid, |s| s != 'T', lease).await;
    eprintln!("guardian release: thawed {thawed:?} after the kill (lease {lease:?})");
    // The guardian removes the run's journal once it has executed it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !walk(&state).is_empty() {
        assert!(std::time::Instant::now() < deadline, "{:?}", walk(&state));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `relapse cleanup --agent` keeps the faults of the run that holds the lease (its coordinator
/// may be alive) and says so; with `--force` it reverts them and ends the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_of_an_agent_keeps_a_live_run_unless_forced() {
    let agent = start_agent(&["process_freeze"]);
    let (sleeper, command) = target();
    let pid = sleeper.0.id();
    let client = connect(&agent).await;
    let id = run_id("run-live");
    client
        .lease(&id, Duration::from_secs(60), Duration::from_secs(1))
        .await
        .unwrap();
    client.apply(&freeze(&id, &command)).await.unwrap();
    let scenario = agent.dir.path().join("s.toml");
    std::fs::write(&scenario, freeze_scenario(&agent, &command, "5s", "1s")).unwrap();
    let cleanup = |force: bool| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_relapse"));
        command
            .args(["cleanup", "--agent", "a1", "--scenario"])
            .arg(&scenario);
        if force {
            command.arg("--force");
        }
        let output = command.output().unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let kept = cleanup(false);
    assert!(kept.contains("kept      run run-live"), "{kept}");
    assert_eq!(state(pid), 'T');
    let forced = cleanup(true);
    assert!(
        forced.contains("reverted  run run-live: target-hangs"),
        "{forced}"
    );
    assert_ne!(state(pid), 'T');
    // The lease ended with it: the run cannot go on.
    let renewed = client
        .lease(&id, Duration::from_secs(60), Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(renewed.to_string().contains("has ended"), "{renewed}");
    assert!(cleanup(false).contains("holds nothing"));
}

/// The dead-man switch across a cut link with `relapse run` as the coordinator, 20 rounds: the
/// run freezes a process through an agent on a test host, the link to that host is cut, and
/// within the lease + 1 s of the cut the agent has thawed it (no sooner than the lease less one
/// renewal interval and a call). The run learns it too, from its renewals, and aborts with the
/// reason (exit 3) instead of measuring a fault that is gone; its revert and release find the
/// run already ended on the agent, which then holds nothing, and its journal is empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutting_the_link_under_relapse_run_thaws_the_remote_process_20_times() {
    const ROUNDS: usize = 20;
    let lease = Duration::from_secs(1);
    let every = Duration::from_millis(250);
    let host = test_host(13);
    let agent = start_agent_on(&["process_freeze"], Some(&host));
    let (sleeper, command) = target();
    let pid = sleeper.0.id();
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("s.toml");
    // The fault would stay 30 s: only the lease can end it this soon.
    let table = format!("process_freeze = {{ command = \"{command}\" }}");
    let text = remote_scenario(&agent, &table, "30s", "1s", "250ms");
    std::fs::write(&scenario, text).unwrap();
    let state = dir.path().join("state");
    let mut slowest = Duration::ZERO;
    for round in 0..ROUNDS {
        let mut run = Started(
            Command::new(env!("CARGO_BIN_EXE_relapse"))
                .arg("run")
                .arg(&scenario)
                .env("RELAPSE_STATE_DIR", &state)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let start = std::time::Instant::now();
        while support::agents::state(pid) != 'T' {
            if start.elapsed() > Duration::from_secs(30) || run.0.try_wait().unwrap().is_some() {
                let (status, stdout, stderr) = run.finish();
                panic!("round {round}: never frozen: {status}\n{stdout}\n{stderr}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        ip(&["link", "set", host.outside_link(), "down"]);
        let thawed = wait_state(pid, |s| s != 'T', lease + Duration::from_secs(1)).await;
        ip(&["link", "set", host.outside_link(), "up"]);
        assert!(
            thawed + every + Duration::from_millis(100) >= lease,
            "round {round}: thawed {thawed:?} after the cut, before the lease could lapse"
        );
        slowest = slowest.max(thawed);
        let (status, stdout, stderr) = run.finish();
        assert_eq!(status.code(), Some(3), "round {round}: {stdout}\n{stderr}");
        assert!(
            stdout.contains("agent \"a1\": lease lost: no lease renewal reached agent")
                && stdout.contains("the agent reverted it then"),
            "round {round}: {stdout}"
        );
        assert!(
            walk(&state).is_empty(),
            "round {round}: {:?}\n{stdout}\n{stderr}",
            walk(&state)
        );
        assert!(holds_nothing(&agent).await, "round {round}");
    }
    eprintln!(
        "{ROUNDS} link cuts under relapse run: slowest thaw {slowest:?} after the cut (lease {lease:?}, bound {:?})",
        lease + Duration::from_secs(1)
    );
}

/// The agent's log, once it holds `wanted` `times` times (a log line has no event to await:
/// polled, 5 s).
fn log_with(agent: &Agent, wanted: &str, times: usize) -> String {
    let path = agent.dir.path().join("agent.log");
    let start = std::time::Instant::now();
    loop {
        let log = std::fs::read_to_string(&path).unwrap_or_default();
        if log.matches(wanted).count() >= times {
            return log;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the agent never logged {wanted:?}:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The real agent refuses a wrong token, a client that trusts another CA and a plain-text
/// client, logs each refusal, and applies nothing for any of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_refuses_and_logs_a_wrong_token_an_unknown_ca_and_plain_text() {
    let agent = start_agent(&["process_freeze"]);
    let (sleeper, command) = target();
    let tls = agent.dir.path().join("tls");
    let authority = agent.url.trim_start_matches("https://").to_string();

    let wrong = relapse_agent::client::AgentClient::connect(
        &agent.url,
        relapse_agent::tls::client_config(&tls.join("ca.pem")).unwrap(),
        "not-the-token-of-this-agent",
    )
    .await
    .unwrap();
    let id = run_id("run-wrong");
    let refused = wrong.apply(&freeze(&id, &command)).await.unwrap_err();
    assert!(
        matches!(&refused, AgentError::Refused { status, .. } if *status == 401),
        "{refused}"
    );
    log_with(&agent, "refused: missing or wrong token", 1);

    let other = agent.dir.path().join("other");
    let made = Command::new(env!("CARGO_BIN_EXE_relapse"))
        .args(["agent", "certs", "--out"])
        .arg(&other)
        .arg("a1=127.0.0.1")
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let untrusted = relapse_agent::client::AgentClient::connect(
        &agent.url,
        relapse_agent::tls::client_config(&other.join("ca.pem")).unwrap(),
        std::fs::read_to_string(tls.join("token")).unwrap().trim(),
    )
    .await;
    assert!(
        untrusted.is_err(),
        "a client trusting another CA got through"
    );
    log_with(&agent, "refused: TLS handshake failed", 1);

    let mut plain = std::net::TcpStream::connect(&authority).unwrap();
    std::io::Write::write_all(
        &mut plain,
        b"POST /v1/apply HTTP/1.1\r\nHost: agent\r\nContent-Length: 2\r\n\r\n{}",
    )
    .unwrap();
    let mut answer = Vec::new();
    let _ = std::io::Read::read_to_end(&mut plain, &mut answer);
    assert!(
        !String::from_utf8_lossy(&answer).contains("HTTP/1.1"),
        "a plain-text client got an HTTP answer"
    );
    log_with(&agent, "refused: TLS handshake failed", 2);
    assert_ne!(state(sleeper.0.id()), 'T');
    assert!(holds_nothing(&agent).await);
}
