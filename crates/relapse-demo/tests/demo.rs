//! End-to-end tests of the demo stack: real child processes, real sockets.

use std::convert::Infallible;
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::header::CONTENT_LENGTH;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use relapse_demo::{Demo, DemoError, DemoOptions, Launcher, MonitorOptions};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const UPSTREAM_TIMEOUT: Duration = Duration::from_millis(100);
/// Upper bound on anything a test waits for; only reached when a test fails.
const BOUND: Duration = Duration::from_secs(10);

fn launcher() -> Launcher {
    Launcher {
        program: env!("CARGO_BIN_EXE_relapse-demo-child").into(),
        args: Vec::new(),
    }
}

fn options() -> DemoOptions {
    DemoOptions {
        upstream_timeout: UPSTREAM_TIMEOUT,
        monitor: None,
        launcher: launcher(),
        host: None,
        database: None,
        auth: None,
        mailstore: None,
        failover: None,
        jobs: None,
        event_log: None,
    }
}

struct Reply {
    status: StatusCode,
    content_length: Option<usize>,
    body: String,
}

/// GETs `url` on a fresh connection, bounded so a broken server fails the
/// test instead of hanging it.
async fn get(url: &str) -> Reply {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let call = async {
        let response = client.get(url.parse().unwrap()).await.unwrap();
        let status = response.status();
        let content_length = response
            .headers()
            .get(CONTENT_LENGTH)
            .map(|value| value.to_str().unwrap().parse().unwrap());
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            content_length,
            body: String::from_utf8(body.to_vec()).unwrap(),
        }
    };
    tokio::time::timeout(BOUND, call)
        .await
        .unwrap_or_else(|_| panic!("GET {url} did not finish within {BOUND:?}"))
}

fn signal(pid: u32, signal: Signal) {
    kill(Pid::from_raw(pid as i32), signal).unwrap();
}

#[tokio::test]
async fn serves_the_inbox_and_health() {
    let demo = Demo::start(options()).await.unwrap();
    assert!(demo.frontend_url().starts_with("http://127.0.0.1:"));
    assert!(!demo.frontend_url().ends_with('/'));
    assert_ne!(demo.frontend_url(), demo.backend_url());

    let inbox = get(&format!("{}/", demo.frontend_url())).await;
    assert_eq!(inbox.status, StatusCode::OK, "{}", inbox.body);
    assert_eq!(inbox.content_length, Some(inbox.body.len()));
    assert!(inbox.body.contains("<h1>Inbox</h1>"), "{}", inbox.body);
    assert!(inbox.body.contains("Lunch on Thursday?"), "{}", inbox.body);

    let health = get(&format!("{}/health", demo.frontend_url())).await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.body, "ok");
    assert_eq!(health.content_length, Some(2));

    let mailbox = get(&format!("{}/mailbox", demo.backend_url())).await;
    assert_eq!(mailbox.status, StatusCode::OK);
    let json: Value = serde_json::from_str(&mailbox.body).unwrap();
    assert!(!json["messages"].as_array().unwrap().is_empty());
    assert_eq!(json["messages"][0]["id"], 1);

    for url in [demo.frontend_url(), demo.backend_url()] {
        let missing = get(&format!("{url}/nope")).await;
        assert_eq!(missing.status, StatusCode::NOT_FOUND);
        assert_eq!(missing.content_length, Some(missing.body.len()));
    }

    demo.shutdown().await;
}

#[tokio::test]
async fn frozen_backend_makes_the_frontend_fail_fast() {
    let demo = Demo::start(options()).await.unwrap();
    let inbox_url = format!("{}/", demo.frontend_url());
    let health_url = format!("{}/health", demo.frontend_url());
    // Warm up so the frontend has a pooled connection to the backend, as it
    // would in production when the freeze hits.
    assert_eq!(get(&inbox_url).await.status, StatusCode::OK);

    signal(demo.backend_pid(), Signal::SIGSTOP);

    let started = Instant::now();
    let inbox = get(&inbox_url).await;
    let elapsed = started.elapsed();
    assert_eq!(inbox.status, StatusCode::GATEWAY_TIMEOUT, "{}", inbox.body);
    assert_eq!(inbox.content_length, Some(inbox.body.len()));
    assert!(
        elapsed < UPSTREAM_TIMEOUT + Duration::from_millis(500),
        "504 took {elapsed:?}"
    );

    let health = get(&health_url).await;
    assert_eq!(health.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(!health.body.is_empty());

    signal(demo.backend_pid(), Signal::SIGCONT);

    assert_eq!(get(&inbox_url).await.status, StatusCode::OK);
    assert_eq!(get(&health_url).await.status, StatusCode::OK);

    demo.shutdown().await;
}

/// A webhook sink on 127.0.0.1:0 that forwards every POSTed JSON body.
async fn start_sink() -> (String, mpsc::UnboundedReceiver<Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/alerts", listener.local_addr().unwrap());
    let (sender, receiver) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let sender = sender.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let sender = sender.clone();
                    async move {
                        assert_eq!(request.method(), hyper::Method::POST);
                        assert_eq!(request.headers()["content-type"], "application/json");
                        let body = request.into_body().collect().await.unwrap().to_bytes();
                        let _ = sender.send(serde_json::from_slice::<Value>(&body).unwrap());
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (url, receiver)
}

async fn next_alert(alerts: &mut mpsc::UnboundedReceiver<Value>) -> Value {
    tokio::time::timeout(BOUND, alerts.recv())
        .await
        .expect("no alert within the bound")
        .expect("sink closed")
}

#[tokio::test]
async fn monitor_pages_when_the_backend_freezes_and_resolves_after() {
    let (sink_url, mut alerts) = start_sink().await;
    let demo = Demo::start(DemoOptions {
        monitor: Some(MonitorOptions {
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(200),
            fall: 2,
            rise: 1,
            alertname: "FrontendDown".to_owned(),
            sink_url: Some(sink_url),
        }),
        ..options()
    })
    .await
    .unwrap();

    signal(demo.backend_pid(), Signal::SIGSTOP);
    let firing = next_alert(&mut alerts).await;
    assert_eq!(firing["version"], "4");
    assert_eq!(firing["status"], "firing");
    assert_eq!(firing["groupLabels"]["alertname"], "FrontendDown");
    let alert = &firing["alerts"][0];
    assert_eq!(alert["status"], "firing");
    assert_eq!(alert["labels"]["alertname"], "FrontendDown");
    assert_eq!(
        alert["labels"]["instance"],
        demo.frontend_url().trim_start_matches("http://")
    );
    assert_eq!(alert["endsAt"], "0001-01-01T00:00:00Z");

    signal(demo.backend_pid(), Signal::SIGCONT);
    let resolved = next_alert(&mut alerts).await;
    assert_eq!(resolved["version"], "4");
    assert_eq!(resolved["status"], "resolved");
    assert_eq!(resolved["alerts"][0]["status"], "resolved");
    assert_eq!(resolved["alerts"][0]["startsAt"], alert["startsAt"]);
    assert_eq!(resolved["alerts"][0]["fingerprint"], alert["fingerprint"]);
    assert_ne!(resolved["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");

    demo.shutdown().await;
}

#[tokio::test]
async fn two_demos_run_side_by_side() {
    let (first, second) = tokio::join!(Demo::start(options()), Demo::start(options()));
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_ne!(first.frontend_url(), second.frontend_url());
    assert_ne!(first.backend_url(), second.backend_url());
    assert_ne!(first.frontend_pid(), second.frontend_pid());
    assert_ne!(first.backend_pid(), second.backend_pid());
    for demo in [&first, &second] {
        let inbox = get(&format!("{}/", demo.frontend_url())).await;
        assert_eq!(inbox.status, StatusCode::OK);
    }
    first.shutdown().await;
    second.shutdown().await;
}

#[tokio::test]
async fn shutdown_kills_and_reaps_both_children() {
    let demo = Demo::start(options()).await.unwrap();
    let pids = [demo.frontend_pid(), demo.backend_pid()];
    // A frozen child must be killed too.
    signal(demo.backend_pid(), Signal::SIGSTOP);
    demo.shutdown().await;
    for pid in pids {
        assert_eq!(kill(Pid::from_raw(pid as i32), None), Err(Errno::ESRCH));
    }
}

#[tokio::test]
async fn child_exits_cleanly_on_sigterm() {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_relapse-demo-child"))
        .args(["backend", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    tokio::time::timeout(BOUND, stdout.read_line(&mut line))
        .await
        .unwrap()
        .unwrap();
    assert!(
        line.starts_with("relapse-demo listening on 127.0.0.1:"),
        "{line:?}"
    );
    signal(child.id().unwrap(), Signal::SIGTERM);
    let status = tokio::time::timeout(BOUND, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn start_reports_a_child_that_exits_or_misbehaves() {
    let exits = DemoOptions {
        launcher: Launcher {
            program: "false".into(),
            args: Vec::new(),
        },
        ..options()
    };
    let error = Demo::start(exits).await.unwrap_err();
    assert!(matches!(error, DemoError::ExitedEarly { .. }), "{error:?}");
    assert!(error.to_string().contains("backend"), "{error}");

    // `echo` prints its arguments: a line, but not the readiness line.
    let chatty = DemoOptions {
        launcher: Launcher {
            program: "echo".into(),
            args: Vec::new(),
        },
        ..options()
    };
    let error = Demo::start(chatty).await.unwrap_err();
    assert!(matches!(error, DemoError::BadReadyLine { .. }), "{error:?}");
}
