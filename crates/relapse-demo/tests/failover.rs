//! The FLG incident on real processes: the primary backend frozen with SIGSTOP, the frontend's
//! own health checks failing over to the standby, and the evening's second hang that left
//! nothing to fail over to.

mod common;

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper::StatusCode;
use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use relapse_demo::{Demo, DemoError, DemoOptions, FailoverOptions, JobOptions, Launcher};
use tokio::time::Instant;

use common::{eventually, log_line, options, read_log, Frozen, Http, Metrics};

/// Short settings, so that a failover takes a fraction of a second.
fn failover(failback: bool) -> FailoverOptions {
    FailoverOptions {
        inter: Duration::from_millis(100),
        timeout: Duration::from_millis(100),
        fall: 2,
        rise: 2,
        failback,
    }
}

/// A demo with a standby and an event log in `dir`.
async fn start(failover: FailoverOptions, dir: &Path) -> (Demo, PathBuf) {
    let log = dir.join("events.log");
    let demo = Demo::start(DemoOptions {
        failover: Some(failover),
        event_log: Some(log.clone()),
        ..options()
    })
    .await
    .unwrap();
    assert_eq!(demo.event_log(), Some(log.as_path()));
    (demo, log)
}

async fn active_is(http: &Http, demo: &Demo, backend: &str) -> Option<Metrics> {
    let metrics = http.metrics(demo.frontend_url()).await;
    (metrics.active() == backend).then_some(metrics)
}

/// Every line is `TIMESTAMP EVENT`, the timestamp RFC 3339 UTC with milliseconds.
fn assert_timestamped(log: &str) {
    for line in log.lines() {
        let (timestamp, _) = line.split_once(' ').unwrap();
        assert_eq!(timestamp.len(), "2026-12-01T22:00:00.123Z".len(), "{line}");
        assert!(timestamp.ends_with('Z'), "{line}");
        humantime::parse_rfc3339(timestamp).unwrap_or_else(|error| panic!("{line}: {error}"));
    }
}

#[tokio::test]
async fn a_frozen_primary_fails_over_to_the_standby_within_the_window_and_stays_without_failback() {
    let dir = tempfile::tempdir().unwrap();
    let settings = failover(false);
    let (demo, log) = start(settings.clone(), dir.path()).await;
    let http = Http::new();
    assert_ne!(demo.primary_url(), demo.standby_url().unwrap());
    assert_eq!(demo.primary_url(), demo.backend_url());
    assert_eq!(demo.primary_pid(), demo.backend_pid());
    let metrics = http.metrics(demo.frontend_url()).await;
    assert_eq!(metrics.active(), "primary");
    assert!(metrics.up("primary") && metrics.up("standby"));
    assert_eq!(metrics.switches(), 0);
    assert!(
        !metrics.text.contains("relapse_demo_jobs_queued"),
        "{}",
        metrics.text
    );

    // Rounds start when the frontend does, so freezing at once would always land at the same
    // phase of them; an offset that differs from run to run samples the whole window. (Not a
    // wait for anything: any offset is right.)
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let phase =
        Duration::from_nanos(u64::from(clock.subsec_nanos()) % settings.inter.as_nanos() as u64);
    tokio::time::sleep(phase).await;
    let primary = Frozen::new(demo.primary_pid());
    let frozen_at = Instant::now();
    let (metrics, switched_at) = eventually("the switch to the standby", || {
        active_is(&http, &demo, "standby")
    })
    .await;
    let took = switched_at - frozen_at;
    // The window: the first check to fail starts within one `inter` after the freeze (rounds
    // start every `inter`) and fails `timeout` after it starts; the fall-th failure, the one
    // that switches, is (fall - 1) rounds later. So [(fall-1)*inter + timeout,
    // fall*inter + timeout] = [200 ms, 300 ms]. Slack: below, 20 ms, for a check already in
    // flight at the freeze (it started up to its loopback round trip before); above, 150 ms,
    // for the poll period (5 ms), the /metrics round trip and the scheduling of three processes
    // and this test on two cores busy with other tests (a late round also delays the next).
    let fall = settings.fall - 1;
    let earliest = settings.inter * fall + settings.timeout;
    let latest = settings.inter * settings.fall + settings.timeout;
    let (below, above) = (Duration::from_millis(20), Duration::from_millis(150));
    eprintln!(
        "switched to the standby {took:?} after the freeze (phase offset {phase:?}); \
         window [{earliest:?}, {latest:?}]"
    );
    assert!(
        took + below >= earliest && took <= latest + above,
        "switched after {took:?}, outside [{earliest:?}, {latest:?}] with slack -{below:?}/+{above:?}"
    );
    assert_eq!(metrics.switches(), 1);
    assert!(!metrics.up("primary") && metrics.up("standby"));
    let text = read_log(&log);
    assert!(
        text.contains(
            "backend primary is DOWN after 2 failed checks (backend did not answer within 100ms)\n"
        ),
        "{text}"
    );
    assert!(
        text.contains(" switched from primary to standby (failover)\n"),
        "{text}"
    );

    // The service is back while the primary is still frozen.
    let (status, body) = http.get(&format!("{}/", demo.frontend_url())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("Lunch on Thursday?"), "{body}");
    let (status, _) = http.get(&format!("{}/health", demo.frontend_url())).await;
    assert_eq!(status, StatusCode::OK);

    // Thawed, the primary comes back UP, but without failback the standby keeps the traffic.
    primary.thaw();
    let text = log_line(&log, "backend primary is UP after 2 passed checks").await;
    // The state is published before its events are logged.
    let metrics = http.metrics(demo.frontend_url()).await;
    assert_eq!(metrics.active(), "standby");
    assert!(metrics.up("primary") && metrics.up("standby"));
    assert_eq!(metrics.switches(), 1);
    assert!(!text.contains("failback"), "{text}");
    assert_timestamped(&text);
    demo.shutdown().await;
}

#[tokio::test]
async fn with_failback_the_primary_gets_the_traffic_back_after_rise_passed_checks() {
    let dir = tempfile::tempdir().unwrap();
    let (demo, log) = start(failover(true), dir.path()).await;
    let http = Http::new();
    let primary = Frozen::new(demo.primary_pid());
    eventually("the failover", || active_is(&http, &demo, "standby")).await;

    primary.thaw();
    let (metrics, _) = eventually("the failback", || active_is(&http, &demo, "primary")).await;
    assert_eq!(metrics.switches(), 2);
    let text = read_log(&log);
    let events: Vec<&str> = text
        .lines()
        .map(|line| line.split_once(' ').unwrap().1)
        .collect();
    assert_eq!(
        events,
        [
            "backend primary is DOWN after 2 failed checks (backend did not answer within 100ms)",
            "switched from primary to standby (failover)",
            "backend primary is UP after 2 passed checks",
            "switched from standby to primary (failback)",
        ]
    );
    let (status, _) = http.get(&format!("{}/", demo.frontend_url())).await;
    assert_eq!(status, StatusCode::OK);
    demo.shutdown().await;
}

#[tokio::test]
async fn with_both_backends_frozen_there_is_nothing_to_fail_over_to() {
    let dir = tempfile::tempdir().unwrap();
    let (demo, log) = start(failover(false), dir.path()).await;
    let http = Http::new();
    let inbox = format!("{}/", demo.frontend_url());

    // The morning: the primary hangs and the standby takes over.
    let primary = Frozen::new(demo.primary_pid());
    eventually("the failover", || active_is(&http, &demo, "standby")).await;
    // The evening: the new main one hangs too.
    let standby = Frozen::new(demo.standby_pid().unwrap());
    log_line(&log, "no backend is UP: staying on standby").await;
    let metrics = http.metrics(demo.frontend_url()).await;
    assert_eq!(metrics.active(), "standby");
    assert_eq!(metrics.switches(), 1);
    assert!(!metrics.up("primary") && !metrics.up("standby"));
    let (status, body) = http.get(&inbox).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    let text = read_log(&log);
    assert!(
        text.contains(" backend standby is DOWN after 2 failed checks ("),
        "{text}"
    );
    assert_eq!(text.matches("switched from").count(), 1, "{text}");
    assert_eq!(text.matches("no backend is UP").count(), 1, "{text}");

    primary.thaw();
    standby.thaw();
    eventually("the inbox served again", || async {
        (http.get(&inbox).await.0 == StatusCode::OK).then_some(())
    })
    .await;
    log_line(&log, "backend standby is UP after 2 passed checks").await;
    log_line(&log, "backend primary is UP after 2 passed checks").await;
    let metrics = http.metrics(demo.frontend_url()).await;
    assert_eq!(metrics.active(), "standby");
    assert_eq!(metrics.switches(), 1);
    demo.shutdown().await;
}

#[tokio::test]
async fn shutdown_reaps_the_standby_too_even_frozen() {
    let dir = tempfile::tempdir().unwrap();
    let (demo, _log) = start(failover(false), dir.path()).await;
    let pids = [
        demo.frontend_pid(),
        demo.primary_pid(),
        demo.standby_pid().unwrap(),
    ];
    // Stopped, they ignore SIGTERM until the grace runs out and SIGKILL comes; no guard, as
    // shutdown reaps them (SIGCONT afterwards could hit a reused pid).
    for pid in &pids[1..] {
        kill(
            Pid::from_raw(*pid as i32),
            nix::sys::signal::Signal::SIGSTOP,
        )
        .unwrap();
    }
    let started = Instant::now();
    demo.shutdown().await;
    let took = started.elapsed();
    for pid in pids {
        assert_eq!(kill(Pid::from_raw(pid as i32), None), Err(Errno::ESRCH));
    }
    // Both backends wait out one grace period together, not one each.
    assert!(
        took < relapse_demo::SHUTDOWN_GRACE * 2,
        "shutdown took {took:?}"
    );
}

#[tokio::test]
async fn start_refuses_bad_failover_job_and_event_log_settings_before_spawning_anything() {
    // Nothing can be spawned from here: a spawned child would be a Spawn error instead.
    let nowhere = || DemoOptions {
        launcher: Launcher {
            program: "/nonexistent/relapse-demo-child".into(),
            args: Vec::new(),
        },
        ..options()
    };
    let error = Demo::start(nowhere()).await.unwrap_err();
    assert!(matches!(error, DemoError::Spawn { .. }), "{error:?}");

    let zero = Duration::ZERO;
    for bad in [
        FailoverOptions {
            inter: zero,
            ..FailoverOptions::default()
        },
        FailoverOptions {
            timeout: zero,
            ..FailoverOptions::default()
        },
        FailoverOptions {
            fall: 0,
            ..FailoverOptions::default()
        },
        FailoverOptions {
            rise: 0,
            ..FailoverOptions::default()
        },
    ] {
        let options = DemoOptions {
            failover: Some(bad.clone()),
            ..nowhere()
        };
        let error = Demo::start(options).await.unwrap_err();
        assert!(
            matches!(error, DemoError::InvalidFailover(_)),
            "{bad:?}: {error:?}"
        );
    }

    let upstream = common::UPSTREAM_TIMEOUT;
    for bad in [
        JobOptions {
            per_request: 0,
            ..JobOptions::default()
        },
        JobOptions {
            work: zero,
            ..JobOptions::default()
        },
        JobOptions {
            work: upstream,
            ..JobOptions::default()
        },
        JobOptions {
            max_queue: 0,
            ..JobOptions::default()
        },
    ] {
        let options = DemoOptions {
            jobs: Some(bad.clone()),
            ..nowhere()
        };
        let error = Demo::start(options).await.unwrap_err();
        assert!(
            matches!(error, DemoError::InvalidJobs(_)),
            "{bad:?}: {error:?}"
        );
    }
    let too_long = DemoOptions {
        upstream_timeout: Duration::from_secs(60),
        jobs: Some(JobOptions {
            work: Duration::from_secs(11),
            ..JobOptions::default()
        }),
        ..nowhere()
    };
    let error = Demo::start(too_long).await.unwrap_err();
    assert!(matches!(error, DemoError::InvalidJobs(_)), "{error:?}");

    for bad in [
        PathBuf::new(),
        PathBuf::from(std::ffi::OsStr::from_bytes(b"/tmp/\xff.log")),
    ] {
        let options = DemoOptions {
            event_log: Some(bad.clone()),
            ..nowhere()
        };
        let error = Demo::start(options).await.unwrap_err();
        assert!(
            matches!(error, DemoError::InvalidEventLog(_)),
            "{bad:?}: {error:?}"
        );
    }
}

#[tokio::test]
async fn an_event_log_the_frontend_cannot_open_fails_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let options = DemoOptions {
        failover: Some(failover(false)),
        // A directory that does not exist: the frontend cannot create the file.
        event_log: Some(dir.path().join("missing").join("events.log")),
        ..options()
    };
    let error = Demo::start(options).await.unwrap_err();
    assert!(
        matches!(
            error,
            DemoError::ExitedEarly {
                role: relapse_demo::ChildRole::Frontend,
                ..
            }
        ),
        "{error:?}"
    );
}
