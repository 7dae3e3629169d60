//! The `prometheus` and `alertmanager` detection sources against a real Prometheus, Alertmanager
//! and blackbox exporter (Debian's packages; `.ci/run` installs them). The test's own HTTP target
//! turns from 200 to 500 at a known instant t0; the exporter probes it, Prometheus scrapes the
//! exporter and evaluates an alerting rule on the result, and sends the alert to Alertmanager.
//! The test derives from those settings when each source must fire and clear, and checks that it
//! does, and that it never fires before t0.
//!
//! Every server is a child of the test, ended by its process group's id on every path (see
//! `prometheus/stack.rs`). Every wait is bounded; end-to-end timings use real time.

use std::collections::BTreeMap;
use std::time::Duration;

use relapse_core::sense::{Detector, DetectorError, Signal, SignalSender};
use relapse_probe::{AlertmanagerDetector, PrometheusDetector};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[path = "prometheus/stack.rs"]
mod stack;
use stack::{Stack, Target};

// ---------------------------------------------------------------------------------------------
// The settings: every number below goes into Prometheus's, the exporter's or a source's
// configuration, and the windows the test asserts are computed from the same constants.

/// Prometheus's `scrape_interval` (and `scrape_timeout`): how often it asks the exporter to probe
/// the target. Prometheus takes sub-second intervals.
const SCRAPE: Duration = Duration::from_millis(200);
/// Prometheus's `evaluation_interval`: how often it evaluates the alerting rule.
const EVALUATION: Duration = Duration::from_millis(200);
/// The rule's `for:`: how long its expression must hold before the alert fires. A multiple of
/// EVALUATION, so the alert fires exactly FOR after the evaluation that made it pending.
const FOR: Duration = Duration::from_secs(1);
/// The exporter's probe timeout: the longest a probe of the target takes.
const PROBE_TIMEOUT: Duration = Duration::from_millis(150);
/// The sources' `every` and `timeout`.
const EVERY: Duration = Duration::from_millis(100);
const POLL_TIMEOUT: Duration = Duration::from_secs(1);

/// What the derivations leave out, on a two-core machine shared with other builds: the poll's
/// own round trip on loopback (milliseconds), Prometheus appending the scraped sample and
/// evaluating (milliseconds), sending the alert to Alertmanager (one POST), and the timers,
/// goroutines and tasks that wake late under load or behind a garbage collection.
const LATE_SLACK: Duration = Duration::from_millis(500);
/// How much earlier than derived the alert may come: a scrape that began just before t0 can
/// still probe the target after it, and so carry the failure with a timestamp a moment before
/// t0; the rule's evaluation can likewise run a moment after its scheduled time.
const EARLY_SLACK: Duration = Duration::from_millis(100);

/// How long nothing may fire while the target is healthy and Prometheus has its data: five
/// scrapes, ten polls.
const STEADY: Duration = Duration::from_secs(1);
/// Upper bound for Prometheus's first scrape: it waits for its target discovery, which hands out
/// targets every 5 s, before the first one.
const FIRST_DATA_WITHIN: Duration = Duration::from_secs(30);
/// Upper bound for any other wait, well past every window.
const WAIT: Duration = Duration::from_secs(15);

/// The alerting rule: the exporter says the target is failing.
const ALERT: &str = "TargetDown";

/// The instants the settings allow for an event, as offsets from the switch that caused it.
#[derive(Debug, Clone, Copy)]
struct Window {
    lower: Duration,
    upper: Duration,
}

impl Window {
    /// Checks that `at` came after the switch at `from`, within the window.
    fn check(&self, what: &str, from: Instant, at: Instant) {
        assert!(at > from, "{what} before the switch that caused it");
        let measured = at - from;
        println!(
            "{what}: {} ms, window {}–{} ms",
            measured.as_millis(),
            self.lower.as_millis(),
            self.upper.as_millis()
        );
        assert!(
            measured >= self.lower && measured <= self.upper,
            "{what} after {measured:?}, outside the window {:?}..={:?}",
            self.lower,
            self.upper
        );
    }
}

/// When the query's result turns after the target does. The failure is in Prometheus once
/// the next scrape has ended: it starts within SCRAPE, and its probe of the target ends within
/// PROBE_TIMEOUT. The source's next poll comes within EVERY. Never before the switch: until
/// then every probe of the target succeeds.
fn query_window() -> Window {
    Window {
        lower: Duration::ZERO,
        upper: SCRAPE + PROBE_TIMEOUT + EVERY + LATE_SLACK,
    }
}

/// When Alertmanager holds the firing alert after the target fails. The failure is in
/// Prometheus within SCRAPE + PROBE_TIMEOUT (as for the query); the next evaluation, within
/// EVALUATION, sees it and makes the alert pending; the evaluation FOR later makes it firing,
/// and Prometheus sends a newly firing alert to Alertmanager right after that evaluation (a new
/// alert does not wait for `resend-delay`); Alertmanager lists an alert as soon as it has it
/// (`group_wait` delays notifications, not the API). The source's next poll comes within EVERY.
/// No earlier than FOR: the pending alert needs a failed probe, which comes after t0.
fn alert_fires_window() -> Window {
    Window {
        lower: FOR - EARLY_SLACK,
        upper: SCRAPE + PROBE_TIMEOUT + EVALUATION + FOR + EVERY + LATE_SLACK,
    }
}

/// When the alert is gone after the target is healthy again: the success is in Prometheus within
/// SCRAPE + PROBE_TIMEOUT, the next evaluation within EVALUATION resolves the alert (there is no
/// `for:` on the way back) and sends it with `endsAt` set to that evaluation, and Alertmanager's
/// API leaves out alerts whose end has passed. The source's next poll comes within EVERY.
fn alert_clears_window() -> Window {
    Window {
        lower: Duration::ZERO,
        upper: SCRAPE + PROBE_TIMEOUT + EVALUATION + EVERY + LATE_SLACK,
    }
}

fn prometheus_config(blackbox: u16, alertmanager: u16, target: u16) -> String {
    let scrape = SCRAPE.as_millis();
    format!(
        r#"global:
  scrape_interval: {scrape}ms
  scrape_timeout: {scrape}ms
  evaluation_interval: {evaluation}ms
rule_files: [rules.yml]
alerting:
  alertmanagers:
    - static_configs:
        - targets: ["127.0.0.1:{alertmanager}"]
scrape_configs:
  - job_name: target
    metrics_path: /probe
    params:
      module: [http_2xx]
      target: ["http://127.0.0.1:{target}/health"]
    static_configs:
      - targets: ["127.0.0.1:{blackbox}"]
"#,
        evaluation = EVALUATION.as_millis()
    )
}

fn rules() -> String {
    format!(
        r#"groups:
  - name: target
    rules:
      - alert: {ALERT}
        expr: probe_success == 0
        for: {for_ms}ms
        labels:
          severity: page
"#,
        for_ms = FOR.as_millis()
    )
}

// ---------------------------------------------------------------------------------------------
// Watching several sources at once

/// Detection sources watched on the test's runtime, their signals collected as they come.
struct Watching {
    names: Vec<&'static str>,
    signals: mpsc::UnboundedReceiver<Signal>,
    seen: Vec<Signal>,
    tasks: Vec<JoinHandle<Result<(), DetectorError>>>,
    cancel: CancellationToken,
}

impl Watching {
    fn start(detectors: Vec<(&'static str, Box<dyn Detector>)>) -> Watching {
        let (tx, signals) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        let mut names = Vec::new();
        let mut tasks = Vec::new();
        for (index, (name, detector)) in detectors.into_iter().enumerate() {
            names.push(name);
            tasks.push(tokio::spawn(
                detector.watch(SignalSender::new(index, tx.clone()), cancel.clone()),
            ));
        }
        Watching {
            names,
            signals,
            seen: Vec::new(),
            tasks,
            cancel,
        }
    }

    fn index(&self, name: &str) -> usize {
        self.names.iter().position(|n| *n == name).unwrap()
    }

    /// Waits at most `bound` for `name` to send a signal that is `firing` (or clearing), and
    /// returns it.
    async fn until(&mut self, name: &str, firing: bool, bound: Duration) -> Signal {
        let source = self.index(name);
        let wanted = |s: &Signal| s.source == source && s.firing == firing;
        if let Some(signal) = self.seen.iter().find(|s| wanted(s)) {
            return signal.clone();
        }
        let deadline = Instant::now() + bound;
        loop {
            match tokio::time::timeout_at(deadline, self.signals.recv()).await {
                Ok(Some(signal)) => {
                    self.seen.push(signal.clone());
                    if wanted(&signal) {
                        return signal;
                    }
                }
                Ok(None) => unreachable!("the test holds a sender"),
                Err(_) => panic!(
                    "{name} sent no {} signal within {bound:?}; signals so far: {}",
                    if firing { "firing" } else { "clearing" },
                    self.describe()
                ),
            }
        }
    }

    /// Takes every signal sent so far.
    fn drain(&mut self) {
        while let Ok(signal) = self.signals.try_recv() {
            self.seen.push(signal);
        }
    }

    /// The signals `name` sent so far.
    fn of(&mut self, name: &str) -> Vec<Signal> {
        self.drain();
        let source = self.index(name);
        self.seen
            .iter()
            .filter(|s| s.source == source)
            .cloned()
            .collect()
    }

    fn describe(&self) -> String {
        self.seen
            .iter()
            .map(|s| {
                format!(
                    "\n  {} {} {:?}",
                    self.names[s.source],
                    if s.firing { "fire" } else { "clear" },
                    s.detail
                )
            })
            .collect()
    }

    /// Waits at most `bound` for `name`'s watch to end by itself, and returns how it ended.
    async fn ended(&mut self, name: &str, bound: Duration) -> Result<(), DetectorError> {
        let index = self.index(name);
        let task = &mut self.tasks[index];
        tokio::time::timeout(bound, task)
            .await
            .unwrap_or_else(|_| panic!("{name} still watching after {bound:?}"))
            .unwrap()
    }

    /// Cancels every source still watching; each must end cleanly.
    async fn stop(self) {
        self.cancel.cancel();
        for (name, task) in self.names.iter().zip(self.tasks) {
            if task.is_finished() {
                continue;
            }
            let ended = tokio::time::timeout(WAIT, task)
                .await
                .unwrap_or_else(|_| panic!("{name} did not stop when cancelled"));
            assert!(ended.unwrap().is_ok(), "{name} stopped with an error");
        }
    }
}

fn query(port: u16, query: &str, above: Option<f64>) -> Box<dyn Detector> {
    let url = format!("http://127.0.0.1:{port}");
    Box::new(PrometheusDetector::new(&url, query, EVERY, POLL_TIMEOUT, above).unwrap())
}

fn alerts(port: u16, labels: &[(&str, &str)]) -> Box<dyn Detector> {
    let url = format!("http://127.0.0.1:{port}");
    let matchers: BTreeMap<String, String> = labels
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    Box::new(AlertmanagerDetector::new(&url, matchers, EVERY, POLL_TIMEOUT).unwrap())
}

/// Whether a process with this pid still exists (a reaped child's pid is gone).
fn alive(pid: u32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
}

// ---------------------------------------------------------------------------------------------
// The tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_target_fires_the_query_and_the_alert_within_their_windows_and_both_clear() {
    let target = Target::start().await;
    let mut stack = Stack::new();
    let blackbox = stack.start_blackbox(PROBE_TIMEOUT).await;
    let alertmanager = stack.start_alertmanager().await;
    let prometheus = stack
        .start_prometheus(
            &prometheus_config(blackbox, alertmanager, target.port),
            Some(&rules()),
            None,
        )
        .await;

    let mut watching = Watching::start(vec![
        // Fires while the exporter says the target fails.
        ("failing", query(prometheus, "probe_success == 0", None)),
        // 0 while the target is healthy, 1 while it fails: only the 1 is above 0.5.
        (
            "inverted",
            query(prometheus, "1 - probe_success", Some(0.5)),
        ),
        // A series whatever its value: fires as soon as Prometheus has the data, and never
        // clears. It tells the test that the others have real data to judge.
        ("any-value", query(prometheus, "probe_success", None)),
        ("paged", alerts(alertmanager, &[("alertname", ALERT)])),
        // The alert carries severity=page: a match on every pair never takes it.
        (
            "ticket",
            alerts(
                alertmanager,
                &[("alertname", ALERT), ("severity", "ticket")],
            ),
        ),
    ]);

    let first = watching.until("any-value", true, FIRST_DATA_WITHIN).await;
    assert!(
        first
            .detail
            .starts_with("query returned 1 series: probe_success{instance=")
            && first.detail.ends_with("job=\"target\"} = 1"),
        "{}",
        first.detail
    );
    // Prometheus scrapes, and knows where to send alerts, before the target fails: both come
    // from target discovery. Watch the healthy target for a while: nothing else may fire.
    wait_for_alertmanager_discovery(prometheus).await;
    tokio::time::sleep(STEADY).await;
    for name in ["failing", "inverted", "paged", "ticket"] {
        assert!(
            watching.of(name).is_empty(),
            "{name} signalled while the target was healthy: {}",
            watching.describe()
        );
    }

    let t0 = target.set_healthy(false);
    let failing = watching.until("failing", true, WAIT).await;
    let inverted = watching.until("inverted", true, WAIT).await;
    let paged = watching.until("paged", true, WAIT).await;
    query_window().check("prometheus `probe_success == 0` fired", t0, failing.at);
    query_window().check(
        "prometheus `1 - probe_success` above 0.5 fired",
        t0,
        inverted.at,
    );
    alert_fires_window().check("alertmanager TargetDown fired", t0, paged.at);
    assert!(
        failing
            .detail
            .starts_with("query returned 1 series: probe_success{instance=")
            && failing.detail.ends_with("} = 0"),
        "{}",
        failing.detail
    );
    assert!(
        inverted
            .detail
            .starts_with("query returned 1 series, 1 above 0.5: {instance=")
            && inverted.detail.ends_with("} = 1"),
        "{}",
        inverted.detail
    );
    assert!(
        paged
            .detail
            .starts_with("1 of 1 active alerts match: {alertname=\"TargetDown\"")
            && paged.detail.contains("severity=\"page\""),
        "{}",
        paged.detail
    );

    let t1 = target.set_healthy(true);
    let failing_clear = watching.until("failing", false, WAIT).await;
    let inverted_clear = watching.until("inverted", false, WAIT).await;
    let paged_clear = watching.until("paged", false, WAIT).await;
    query_window().check(
        "prometheus `probe_success == 0` cleared",
        t1,
        failing_clear.at,
    );
    query_window().check(
        "prometheus `1 - probe_success` above 0.5 cleared",
        t1,
        inverted_clear.at,
    );
    alert_clears_window().check("alertmanager TargetDown cleared", t1, paged_clear.at);
    assert_eq!(failing_clear.detail, "query returned no series");
    assert_eq!(
        inverted_clear.detail,
        "query returned 1 series, none above 0.5"
    );
    assert_eq!(paged_clear.detail, "no active alert matches (0 active)");

    // One change each way, nothing more: the edges, not every poll.
    for name in ["failing", "inverted", "paged"] {
        let firing: Vec<bool> = watching.of(name).iter().map(|s| s.firing).collect();
        assert_eq!(firing, [true, false], "{name}: {}", watching.describe());
    }
    let any_value: Vec<bool> = watching.of("any-value").iter().map(|s| s.firing).collect();
    assert_eq!(any_value, [true], "a series of value 0 is still a series");
    assert!(watching.of("ticket").is_empty(), "{}", watching.describe());
    watching.stop().await;

    let pids = stack.pids();
    assert_eq!(pids.len(), 3);
    drop(stack);
    for pid in pids {
        assert!(!alive(pid), "process {pid} outlived the stack");
    }
}

/// Waits until Prometheus lists the Alertmanager among its active ones: until then a firing
/// alert would have nowhere to go.
async fn wait_for_alertmanager_discovery(prometheus: u16) {
    let deadline = Instant::now() + FIRST_DATA_WITHIN;
    loop {
        if let Ok((200, body)) = stack::http_get(prometheus, "/api/v1/alertmanagers").await {
            let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
            let active = answer["data"]["activeAlertmanagers"].as_array();
            if active.is_some_and(|list| !list.is_empty()) {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus found no Alertmanager within {FIRST_DATA_WITHIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_polls_count_neither_way_and_a_query_prometheus_rejects_stops_the_source() {
    // Until Prometheus runs, its port is held by a listener that closes every connection it
    // accepts: each poll fails, and the test can count them.
    let port = stack::free_port();
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let (accepted_tx, mut accepted) = mpsc::unbounded_channel();
    let closer = tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            drop(stream);
            let _ = accepted_tx.send(());
        }
    });

    let mut watching = Watching::start(vec![
        ("constant", query(port, "vector(1)", None)),
        ("bad-promql", query(port, "probe_success ==", None)),
        ("range-vector", query(port, "up[1m]", None)),
    ]);
    // Nine polls failed between them; the three poll at the same rate, so about three each.
    for _ in 0..9 {
        tokio::time::timeout(WAIT, accepted.recv())
            .await
            .expect("the sources stopped polling")
            .unwrap();
    }
    assert!(
        watching.of("constant").is_empty(),
        "a failed poll signalled: {}",
        watching.describe()
    );
    closer.abort();
    let _ = closer.await;

    let mut stack = Stack::new();
    let config = format!(
        "global:\n  scrape_interval: {}ms\n  evaluation_interval: {}ms\n",
        SCRAPE.as_millis(),
        EVALUATION.as_millis()
    );
    stack.start_prometheus(&config, None, Some(port)).await;

    let constant = watching.until("constant", true, WAIT).await;
    println!("first answered poll: {}", constant.detail);
    assert!(
        constant
            .detail
            .starts_with("query returned 1 series: {} = 1 (")
            && constant
                .detail
                .contains(" failed polls since the last signal, the last: "),
        "the signal names the failed polls before it: {}",
        constant.detail
    );

    let bad = watching.ended("bad-promql", WAIT).await;
    let Err(DetectorError::Config(reason)) = &bad else {
        panic!("a rejected query is a configuration error: {bad:?}");
    };
    println!("rejected query: {reason}");
    assert!(
        reason.starts_with(&format!(
            "prometheus http://127.0.0.1:{port}: the server refused the query: bad_data: "
        )) && reason.contains("parse error"),
        "{reason}"
    );
    let range = watching.ended("range-vector", WAIT).await;
    let Err(DetectorError::Config(reason)) = &range else {
        panic!("a range vector is a configuration error: {range:?}");
    };
    assert!(
        reason.contains("the query returns a range vector"),
        "{reason}"
    );
    for name in ["bad-promql", "range-vector"] {
        assert!(watching.of(name).is_empty(), "{}", watching.describe());
    }
    watching.stop().await;

    let pids = stack.pids();
    assert_eq!(pids.len(), 1);
    drop(stack);
    assert!(!alive(pids[0]), "prometheus outlived the stack");
}
