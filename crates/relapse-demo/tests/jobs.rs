//! The FLG incident's background work on real processes: jobs queue up on the frontend while
//! the backend is frozen and drain, one at a time, after it is thawed.

mod common;

use std::time::Duration;

use hyper::StatusCode;
use relapse_demo::{Demo, DemoOptions, FailoverOptions, JobOptions};
use tokio::time::Instant;

use common::{eventually, options, Frozen, Http, Metrics};

const WORK: Duration = Duration::from_millis(20);

async fn start(jobs: JobOptions, failover: Option<FailoverOptions>) -> Demo {
    Demo::start(DemoOptions {
        jobs: Some(jobs),
        failover,
        ..options()
    })
    .await
    .unwrap()
}

/// (queued, done, dropped)
fn jobs(metrics: &Metrics) -> (u64, u64, u64) {
    (
        metrics.get("relapse_demo_jobs_queued"),
        metrics.get("relapse_demo_jobs_done_total"),
        metrics.get("relapse_demo_jobs_dropped_total"),
    )
}

/// Makes `count` inbox requests, one after the other; returns their statuses.
async fn inbox_requests(http: &Http, demo: &Demo, count: usize) -> Vec<StatusCode> {
    let url = format!("{}/", demo.frontend_url());
    let mut statuses = Vec::new();
    for _ in 0..count {
        statuses.push(http.get(&url).await.0);
    }
    statuses
}

async fn wait_for_jobs(http: &Http, demo: &Demo, want: (u64, u64, u64)) -> Instant {
    let (_, at) = eventually(
        &format!("jobs (queued, done, dropped) = {want:?}"),
        || async { (jobs(&http.metrics(demo.frontend_url()).await) == want).then_some(()) },
    )
    .await;
    at
}

#[tokio::test]
async fn jobs_queue_up_while_the_backend_is_frozen_and_drain_one_at_a_time_after() {
    let demo = start(
        JobOptions {
            per_request: 2,
            work: WORK,
            max_queue: 100_000,
        },
        None,
    )
    .await;
    let http = Http::new();
    let metrics = http.metrics(demo.frontend_url()).await;
    assert_eq!(jobs(&metrics), (0, 0, 0));
    assert!(
        !metrics.text.contains("relapse_demo_backend_up"),
        "{}",
        metrics.text
    );

    let backend = Frozen::new(demo.backend_pid());
    let statuses = inbox_requests(&http, &demo, 5).await;
    // The pages failed, but the work they set off was queued.
    assert!(
        statuses.iter().all(|s| *s == StatusCode::GATEWAY_TIMEOUT),
        "{statuses:?}"
    );
    assert_eq!(jobs(&http.metrics(demo.frontend_url()).await), (10, 0, 0));

    backend.thaw();
    let thawed_at = Instant::now();
    let drained_at = wait_for_jobs(&http, &demo, (0, 10, 0)).await;
    // One worker, one job at a time: the backlog takes at least its jobs' work to drain.
    let took = drained_at - thawed_at;
    assert!(took >= WORK * 10, "10 jobs of {WORK:?} drained in {took:?}");
    demo.shutdown().await;
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_the_jobs_beyond_it() {
    let demo = start(
        JobOptions {
            per_request: 2,
            work: WORK,
            max_queue: 3,
        },
        None,
    )
    .await;
    let http = Http::new();
    let backend = Frozen::new(demo.backend_pid());
    for _ in 0..3 {
        let (status, _) = http.get(&format!("{}/", demo.frontend_url())).await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    }
    // 2 queued, then 1 of 2, then none of 2.
    assert_eq!(jobs(&http.metrics(demo.frontend_url()).await), (3, 0, 3));
    backend.thaw();
    wait_for_jobs(&http, &demo, (0, 3, 3)).await;
    demo.shutdown().await;
}

#[tokio::test]
async fn with_a_standby_the_jobs_drain_while_the_primary_is_still_frozen() {
    let demo = start(
        JobOptions {
            per_request: 1,
            work: WORK,
            max_queue: 100_000,
        },
        Some(FailoverOptions {
            inter: Duration::from_millis(100),
            timeout: Duration::from_millis(100),
            ..FailoverOptions::default()
        }),
    )
    .await;
    let http = Http::new();
    let primary = Frozen::new(demo.primary_pid());
    // Whether these pages get the primary (504) or already the standby, each queues a job.
    inbox_requests(&http, &demo, 4).await;
    wait_for_jobs(&http, &demo, (0, 4, 0)).await;
    let metrics = http.metrics(demo.frontend_url()).await;
    assert_eq!(metrics.active(), "standby");
    assert!(!metrics.up("primary"));
    // Before the shutdown reaps it: a SIGCONT afterwards could hit a reused pid.
    primary.thaw();
    demo.shutdown().await;
}
