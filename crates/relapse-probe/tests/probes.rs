//! End-to-end tests of the probes and detection sources against real sockets, processes and
//! files. Every wait is bounded; nothing sleeps in place of synchronisation.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use regex::Regex;
use relapse_core::sense::{Detector, Outcome, Probe, Signal, SignalSender};
use relapse_probe::{
    CommandDetector, HttpHealthDetector, HttpProbe, LogDetector, TcpProbe, WebhookSink,
};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;

/// Upper bound for anything the tests wait for; generous so a loaded CI machine does not flake.
const WAIT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Helpers

/// Serves `handler` over HTTP/1.1 on 127.0.0.1:0 until the test's runtime ends.
async fn serve<F>(handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Response<Full<Bytes>> + Clone + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let response = handler(request);
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn reply(status: u16, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    response
}

/// Accepts connections and keeps them open, answering the first request with `preamble` (if
/// any) and then nothing more: a server that is hung.
async fn hung_server(preamble: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                if !preamble.is_empty() {
                    // Wait for the request: a response sent before it is not an answer.
                    let mut request = [0; 1024];
                    let _ = stream.read(&mut request).await;
                    let _ = stream.write_all(preamble).await;
                }
                // Hold the connection open, reading and ignoring, until the client leaves.
                let mut sink = [0; 1024];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

/// A port nothing listens on: bound, then released.
fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// Starts `detector` and returns where its signals arrive and the token that stops it.
fn watch_detector(
    detector: impl Detector + 'static,
) -> (mpsc::UnboundedReceiver<Signal>, CancellationToken) {
    let (tx, rx) = mpsc::unbounded_channel();
    let cancel = CancellationToken::new();
    let watching = Box::new(detector).watch(SignalSender::new(0, tx), cancel.clone());
    tokio::spawn(async move {
        if let Err(error) = watching.await {
            panic!("detector failed: {error}");
        }
    });
    (rx, cancel)
}

async fn next_signal(rx: &mut mpsc::UnboundedReceiver<Signal>) -> Signal {
    timeout(WAIT, rx.recv())
        .await
        .expect("no signal in time")
        .expect("signal channel closed")
}

/// Asserts that no signal arrives within `within`: absence can only be checked over a window.
async fn assert_quiet(rx: &mut mpsc::UnboundedReceiver<Signal>, within: Duration) {
    if let Ok(signal) = timeout(within, rx.recv()).await {
        panic!("unexpected signal: {signal:?}");
    }
}

async fn post(url: &str, body: impl Into<Bytes>) -> (u16, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(body.into()))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn alertmanager(status: &str, alertname: &str) -> String {
    json!({
        "version": "4",
        "groupKey": "{}:{alertname=\"x\"}",
        "status": status,
        "receiver": "relapse",
        "groupLabels": {"alertname": alertname},
        "commonLabels": {"alertname": alertname},
        "alerts": [{
            "status": status,
            "labels": {"alertname": alertname, "service": "webmail", "severity": "page"},
            "annotations": {"summary": "it broke"},
            "startsAt": "2024-01-01T00:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
        }],
    })
    .to_string()
}

// ---------------------------------------------------------------------------------------------
// HttpProbe

#[tokio::test]
async fn http_probe_succeeds_on_expected_status() {
    let addr = serve(|_| reply(200, "hello")).await;
    let probe = HttpProbe::new(
        &format!("http://{addr}/"),
        "GET",
        Duration::from_secs(2),
        vec![200, 204],
    )
    .unwrap();
    // Twice: the second check goes through the keep-alive pool.
    for _ in 0..2 {
        assert_eq!(probe.check().await, Outcome::Success { status: Some(200) });
    }
}

#[tokio::test]
async fn http_probe_fails_on_unexpected_status() {
    let addr = serve(|_| reply(500, "oops")).await;
    let probe = HttpProbe::new(
        &format!("http://{addr}/x"),
        "get",
        Duration::from_secs(2),
        vec![200],
    )
    .unwrap();
    assert_eq!(
        probe.check().await,
        Outcome::Failure {
            status: Some(500),
            error: "status 500".into()
        }
    );
}

#[tokio::test]
async fn http_probe_times_out_on_a_hung_server() {
    let addr = hung_server(b"").await;
    let limit = Duration::from_millis(200);
    let probe = HttpProbe::new(&format!("http://{addr}/"), "GET", limit, vec![200]).unwrap();
    let started = Instant::now();
    let outcome = timeout(WAIT, probe.check()).await.unwrap();
    let took = started.elapsed();
    assert_eq!(
        outcome,
        Outcome::Failure {
            status: None,
            error: "timeout".into()
        }
    );
    assert!(took >= limit, "returned early: {took:?}");
    assert!(took < limit + Duration::from_secs(1), "took {took:?}");
}

#[tokio::test]
async fn http_probe_timeout_covers_the_body() {
    // The head arrives, the body never completes.
    let addr = hung_server(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial").await;
    let probe = HttpProbe::new(
        &format!("http://{addr}/"),
        "GET",
        Duration::from_millis(200),
        vec![200],
    )
    .unwrap();
    assert_eq!(
        timeout(WAIT, probe.check()).await.unwrap(),
        Outcome::Failure {
            status: Some(200),
            error: "timeout".into()
        }
    );
}

#[tokio::test]
async fn http_probe_reports_refused() {
    let addr = closed_port();
    let probe = HttpProbe::new(
        &format!("http://{addr}/"),
        "GET",
        Duration::from_secs(2),
        vec![200],
    )
    .unwrap();
    assert_eq!(
        probe.check().await,
        Outcome::Failure {
            status: None,
            error: "refused".into()
        }
    );
}

#[tokio::test]
async fn http_probe_reports_a_closed_connection_briefly() {
    // Accepts and closes at once, before any response.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            drop(listener.accept().await.unwrap());
        }
    });
    let probe = HttpProbe::new(
        &format!("http://{addr}/"),
        "GET",
        Duration::from_secs(2),
        vec![200],
    )
    .unwrap();
    match probe.check().await {
        Outcome::Failure {
            status: None,
            error,
        } => assert_eq!(error, "http: incomplete response"),
        other => panic!("unexpected outcome {other:?}"),
    }
}

#[tokio::test]
async fn http_probe_refuses_other_schemes() {
    let error = HttpProbe::new("https://x", "GET", Duration::from_secs(1), vec![200])
        .err()
        .unwrap();
    assert_eq!(
        error.to_string(),
        r#"unsupported url "https://x": expected http://"#
    );
}

// ---------------------------------------------------------------------------------------------
// TcpProbe

#[tokio::test]
async fn tcp_probe_connects_or_is_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let open = TcpProbe::new(
        &listener.local_addr().unwrap().to_string(),
        Duration::from_secs(2),
    )
    .unwrap();
    assert_eq!(open.check().await, Outcome::Success { status: None });

    let closed = TcpProbe::new(&closed_port().to_string(), Duration::from_secs(2)).unwrap();
    assert_eq!(
        closed.check().await,
        Outcome::Failure {
            status: None,
            error: "refused".into()
        }
    );

    let by_name = TcpProbe::new(
        &format!("localhost:{}", listener.local_addr().unwrap().port()),
        Duration::from_secs(2),
    )
    .unwrap();
    assert!(by_name.check().await.is_success());
}

// ---------------------------------------------------------------------------------------------
// Webhook sink

async fn sink() -> (WebhookSink, CancellationToken) {
    let cancel = CancellationToken::new();
    let sink = WebhookSink::bind("127.0.0.1:0".parse().unwrap(), cancel.clone())
        .await
        .unwrap();
    (sink, cancel)
}

#[tokio::test]
async fn webhook_sink_routes_alertmanager_alerts_by_label() {
    let (sink, _stop) = sink().await;
    let url = sink.url();
    assert_eq!(
        url,
        format!("http://127.0.0.1:{}/alerts", sink.local_addr().port())
    );
    assert_ne!(sink.local_addr().port(), 0);

    let (mut frontend, _c1) =
        watch_detector(sink.detector(labels(&[("alertname", "FrontendDown")])));
    let (mut other, _c2) = watch_detector(sink.detector(labels(&[
        ("alertname", "BackendDown"),
        ("service", "webmail"),
    ])));
    let (mut everything, _c3) = watch_detector(sink.detector(BTreeMap::new()));

    assert_eq!(
        post(&url, alertmanager("firing", "FrontendDown")).await,
        (200, "ok\n".into())
    );
    let signal = next_signal(&mut frontend).await;
    assert!(signal.firing);
    assert_eq!(signal.detail, "alertname=FrontendDown firing");
    assert_eq!(signal.source, 0);

    // The non-matching detector ignored that one: the first thing it sees is its own alert.
    post(&url, alertmanager("firing", "BackendDown")).await;
    let signal = next_signal(&mut other).await;
    assert!(signal.firing);
    assert_eq!(signal.detail, "alertname=BackendDown firing");

    // And the frontend detector ignored the backend alert: next it sees the resolution.
    post(&url, alertmanager("resolved", "FrontendDown")).await;
    let signal = next_signal(&mut frontend).await;
    assert!(!signal.firing);
    assert_eq!(signal.detail, "alertname=FrontendDown resolved");

    // Empty matchers match everything, in order.
    let details: Vec<(bool, String)> = [
        next_signal(&mut everything).await,
        next_signal(&mut everything).await,
        next_signal(&mut everything).await,
    ]
    .into_iter()
    .map(|s| (s.firing, s.detail))
    .collect();
    assert_eq!(
        details,
        [
            (true, "alertname=FrontendDown firing".to_string()),
            (true, "alertname=BackendDown firing".to_string()),
            (false, "alertname=FrontendDown resolved".to_string()),
        ]
    );
    assert_eq!(sink.received(), 3);
}

#[tokio::test]
async fn webhook_sink_accepts_plain_json_on_any_path() {
    let (sink, _stop) = sink().await;
    let (mut rx, _cancel) = watch_detector(sink.detector(labels(&[("service", "webmail")])));
    let base = format!("http://{}", sink.local_addr());

    let (status, _) = post(
        &format!("{base}/hook"),
        json!({"service": "mail", "alertname": "Nope"}).to_string(),
    )
    .await;
    assert_eq!(status, 200);
    post(
        &format!("{base}/"),
        json!({"alertname": "Slow", "labels": {"service": "webmail"}}).to_string(),
    )
    .await;
    let signal = next_signal(&mut rx).await;
    assert!(signal.firing);
    assert_eq!(signal.detail, "alertname=Slow firing");

    post(
        &format!("{base}/x/y"),
        json!({"service": "webmail", "status": "resolved"}).to_string(),
    )
    .await;
    let signal = next_signal(&mut rx).await;
    assert!(!signal.firing);
    assert_eq!(signal.detail, "resolved");
}

#[tokio::test]
async fn webhook_sink_rejects_bad_requests() {
    let (sink, stop) = sink().await;
    let url = sink.url();
    let (status, body) = post(&url, "{not json").await;
    assert_eq!(status, 400);
    assert!(body.contains("json"), "{body}");
    assert_eq!(post(&url, "[1, 2]").await.0, 400);
    assert_eq!(post(&url, "\"text\"").await.0, 400);

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let response = client.get(url.parse().unwrap()).await.unwrap();
    assert_eq!(response.status(), 405);

    let (status, _) = post(&url, vec![b' '; 2 * 1024 * 1024]).await;
    assert_eq!(status, 413);
    assert_eq!(sink.received(), 0);

    // Stopping the sink closes its listener.
    stop.cancel();
    let refused = TcpProbe::new(&sink.local_addr().to_string(), Duration::from_secs(1)).unwrap();
    timeout(WAIT, async {
        while refused.check().await.is_success() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the sink kept listening after cancel");
}

// ---------------------------------------------------------------------------------------------
// HttpHealthDetector

#[tokio::test]
async fn http_health_signals_transitions_only() {
    let status = Arc::new(AtomicU16::new(200));
    let (served_tx, mut served) = watch::channel(0u64);
    let addr = serve({
        let status = status.clone();
        move |_| {
            served_tx.send_modify(|n| *n += 1);
            reply(status.load(Ordering::SeqCst), "")
        }
    })
    .await;
    let detector = HttpHealthDetector::new(
        &format!("http://{addr}/health"),
        Duration::from_millis(20),
        Duration::from_secs(1),
        vec![200],
    )
    .unwrap();
    let (mut rx, _cancel) = watch_detector(detector);
    let mut wait_served = async |more: u64| {
        let target = *served.borrow() + more;
        timeout(WAIT, served.wait_for(|n| *n >= target))
            .await
            .expect("health endpoint not polled")
            .unwrap();
    };

    // Healthy observations are not news.
    wait_served(2).await;
    status.store(503, Ordering::SeqCst);
    let signal = next_signal(&mut rx).await;
    assert!(signal.firing);
    assert_eq!(signal.detail, "status 503");

    status.store(200, Ordering::SeqCst);
    let signal = next_signal(&mut rx).await;
    assert!(!signal.firing);
    assert_eq!(signal.detail, "status 200");

    // Several more healthy polls, and still nothing more.
    wait_served(3).await;
    assert!(rx.try_recv().is_err(), "more than one fire and one clear");
}

#[tokio::test]
async fn http_health_fires_on_timeout_and_refused() {
    let hung = hung_server(b"").await;
    let detector = HttpHealthDetector::new(
        &format!("http://{hung}/health"),
        Duration::from_millis(20),
        Duration::from_millis(100),
        vec![200],
    )
    .unwrap();
    let (mut rx, _cancel) = watch_detector(detector);
    let signal = next_signal(&mut rx).await;
    assert!(signal.firing);
    assert_eq!(signal.detail, "timeout");

    let detector = HttpHealthDetector::new(
        &format!("http://{}/health", closed_port()),
        Duration::from_millis(20),
        Duration::from_secs(1),
        vec![200],
    )
    .unwrap();
    let (mut rx, _cancel) = watch_detector(detector);
    assert_eq!(next_signal(&mut rx).await.detail, "refused");
}

// ---------------------------------------------------------------------------------------------
// CommandDetector

fn argv(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn command_failure_fires_with_status_and_output() {
    let (mut rx, _cancel) = watch_detector(CommandDetector::new(
        argv(&["sh", "-c", "exit 1"]),
        Duration::from_millis(20),
        Duration::from_secs(2),
    ));
    let signal = next_signal(&mut rx).await;
    assert!(signal.firing);
    assert_eq!(signal.detail, "exit 1");

    let (mut rx, _cancel) = watch_detector(CommandDetector::new(
        argv(&[
            "sh",
            "-c",
            "echo; echo '  backend is down  '; echo more >&2; exit 2",
        ]),
        Duration::from_millis(20),
        Duration::from_secs(2),
    ));
    assert_eq!(next_signal(&mut rx).await.detail, "exit 2: backend is down");

    let (mut rx, _cancel) = watch_detector(CommandDetector::new(
        argv(&["/nonexistent/relapse-check"]),
        Duration::from_millis(20),
        Duration::from_secs(2),
    ));
    assert_eq!(next_signal(&mut rx).await.detail, "spawn: entity not found");
}

#[tokio::test]
async fn command_toggles_with_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("healthy");
    let (mut rx, _cancel) = watch_detector(CommandDetector::new(
        argv(&["test", "-e", flag.to_str().unwrap()]),
        Duration::from_millis(20),
        Duration::from_secs(2),
    ));

    let signal = next_signal(&mut rx).await;
    assert!(signal.firing);
    assert_eq!(signal.detail, "exit 1");

    std::fs::write(&flag, "").unwrap();
    let signal = next_signal(&mut rx).await;
    assert!(!signal.firing);
    assert_eq!(signal.detail, "exit 0");

    std::fs::remove_file(&flag).unwrap();
    assert!(next_signal(&mut rx).await.firing);
}

#[tokio::test]
async fn command_outliving_its_timeout_fires_quickly() {
    let started = Instant::now();
    let (mut rx, cancel) = watch_detector(CommandDetector::new(
        argv(&["sleep", "5"]),
        Duration::from_millis(20),
        Duration::from_millis(100),
    ));
    let signal = next_signal(&mut rx).await;
    assert!(signal.firing);
    assert!(signal.detail.starts_with("timeout"), "{}", signal.detail);
    assert!(started.elapsed() < Duration::from_secs(2));
    cancel.cancel();
}

// ---------------------------------------------------------------------------------------------
// LogDetector

fn append(path: &std::path::Path, text: &str) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

#[tokio::test]
async fn log_fires_per_new_matching_line() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, "ERROR from before the run\ninfo: starting\n");

    let every = Duration::from_millis(20);
    let (mut rx, _cancel) = watch_detector(LogDetector::new(
        log.clone(),
        Regex::new("ERROR|FATAL").unwrap(),
        every,
    ));

    append(&log, "ERROR one\ninfo: fine\nFATAL two\r\n");
    for expected in ["ERROR one", "FATAL two"] {
        let signal = next_signal(&mut rx).await;
        assert!(signal.firing);
        assert_eq!(signal.detail, expected);
    }

    // A partial line waits for its newline.
    append(&log, "ERROR par");
    assert_quiet(&mut rx, every * 8).await;
    append(&log, "tial\n");
    assert_eq!(next_signal(&mut rx).await.detail, "ERROR partial");

    // Truncated: read again from the start (the new content is shorter than the old offset).
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&log, "ERROR after truncation\n");
    assert_eq!(next_signal(&mut rx).await.detail, "ERROR after truncation");

    // Rotated: renamed away and replaced by a new file.
    std::fs::rename(&log, dir.path().join("app.log.1")).unwrap();
    append(&log, "ERROR rotated\n");
    assert_eq!(next_signal(&mut rx).await.detail, "ERROR rotated");

    append(&log, "info: all good\n");
    assert_quiet(&mut rx, every * 5).await;
}

#[tokio::test]
async fn log_waits_for_the_file_to_appear() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("later.log");
    let (mut rx, _cancel) = watch_detector(LogDetector::new(
        log.clone(),
        Regex::new("down").unwrap(),
        Duration::from_millis(20),
    ));
    append(&log, "backend down\n");
    let signal = next_signal(&mut rx).await;
    assert!(signal.firing);
    assert_eq!(signal.detail, "backend down");
}

#[tokio::test]
async fn http_probe_sends_its_headers_and_body() {
    // A server that answers 200 only to the login form it expects, 400 to anything else.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let service = service_fn(|request: Request<Incoming>| async move {
            let form = request
                .headers()
                .get("content-type")
                .is_some_and(|v| v == "application/x-www-form-urlencoded");
            let body = request.into_body().collect().await.unwrap().to_bytes();
            let status = if form && body == "user=demo&password=pw" {
                200
            } else {
                400
            };
            Ok::<_, Infallible>(reply(status, ""))
        });
        let _ = http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .await;
    });
    let probe = HttpProbe::new(
        &format!("http://{addr}/login"),
        "POST",
        Duration::from_secs(2),
        vec![200],
    )
    .unwrap()
    .with_request(
        &[(
            "content-type".to_string(),
            "application/x-www-form-urlencoded".to_string(),
        )],
        "user=demo&password=pw",
    )
    .unwrap();
    assert_eq!(probe.check().await, Outcome::Success { status: Some(200) });
    let bad = HttpProbe::new("http://127.0.0.1:1/", "POST", WAIT, vec![200])
        .unwrap()
        .with_request(&[("bad header".to_string(), "x".to_string())], "");
    assert!(bad.is_err());
}
