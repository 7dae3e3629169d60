//! What the failover and job tests share: starting a demo, HTTP, `/metrics`, freezing a child,
//! waiting for a condition.

// Each test binary uses its own part of this.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::StatusCode;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use relapse_demo::{DemoOptions, Launcher};
use tokio::time::Instant;

/// The frontend's upstream timeout in these tests.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_millis(100);
/// Upper bound on anything a test waits for; only reached when a test fails.
pub const BOUND: Duration = Duration::from_secs(10);
/// How often [`eventually`] looks again.
pub const POLL: Duration = Duration::from_millis(5);

pub fn options() -> DemoOptions {
    DemoOptions {
        upstream_timeout: UPSTREAM_TIMEOUT,
        ..DemoOptions::new(Launcher {
            program: env!("CARGO_BIN_EXE_relapse-demo-child").into(),
            args: Vec::new(),
        })
    }
}

/// A keep-alive client, so that polling `/metrics` every few milliseconds costs no connection
/// setup each time.
pub struct Http {
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl Http {
    pub fn new() -> Http {
        Http {
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// GETs `url`: status and body, bounded so a broken server fails the test instead of
    /// hanging it.
    pub async fn get(&self, url: &str) -> (StatusCode, String) {
        let call = async {
            let response = self.client.get(url.parse().unwrap()).await.unwrap();
            let status = response.status();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8(body.to_vec()).unwrap())
        };
        tokio::time::timeout(BOUND, call)
            .await
            .unwrap_or_else(|_| panic!("GET {url} did not finish within {BOUND:?}"))
    }

    /// The frontend's `/metrics`, each sample by its name and labels, e.g.
    /// `relapse_demo_active_backend{backend="standby"}`.
    pub async fn metrics(&self, frontend_url: &str) -> Metrics {
        let (status, body) = self.get(&format!("{frontend_url}/metrics")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        Metrics::parse(&body)
    }
}

#[derive(Debug)]
pub struct Metrics {
    pub samples: BTreeMap<String, u64>,
    pub text: String,
}

impl Metrics {
    fn parse(text: &str) -> Metrics {
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.is_empty())
            .map(|line| {
                let (name, value) = line.rsplit_once(' ').unwrap();
                (name.to_owned(), value.parse().unwrap())
            })
            .collect();
        Metrics {
            samples,
            text: text.to_owned(),
        }
    }

    /// The sample's value; the test fails if there is none.
    pub fn get(&self, sample: &str) -> u64 {
        *self
            .samples
            .get(sample)
            .unwrap_or_else(|| panic!("no {sample} in\n{}", self.text))
    }

    /// Which backend is active, by `relapse_demo_active_backend`; the test fails unless
    /// exactly one is.
    pub fn active(&self) -> &'static str {
        let primary = self.get("relapse_demo_active_backend{backend=\"primary\"}");
        let standby = self.get("relapse_demo_active_backend{backend=\"standby\"}");
        match (primary, standby) {
            (1, 0) => "primary",
            (0, 1) => "standby",
            _ => panic!("not one active backend in\n{}", self.text),
        }
    }

    pub fn up(&self, backend: &str) -> bool {
        self.get(&format!("relapse_demo_backend_up{{backend=\"{backend}\"}}")) == 1
    }

    pub fn switches(&self) -> u64 {
        self.get("relapse_demo_backend_switches_total")
    }
}

/// A child stopped with SIGSTOP, continued with SIGCONT when thawed or dropped, so that a
/// failing test leaves no stopped process behind (declare it after the `Demo`, so that it is
/// dropped first, while the pid is still the child's).
pub struct Frozen {
    pid: u32,
    thawed: bool,
}

impl Frozen {
    pub fn new(pid: u32) -> Frozen {
        kill(Pid::from_raw(pid as i32), Signal::SIGSTOP).unwrap();
        Frozen { pid, thawed: false }
    }

    pub fn thaw(mut self) {
        self.cont();
    }

    fn cont(&mut self) {
        if !std::mem::replace(&mut self.thawed, true) {
            // On the panic path too, so no unwrap: a second panic would abort the test run.
            let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGCONT);
        }
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        self.cont();
    }
}

/// Polls `probe` every [`POLL`] until it gives a value, which is returned with the instant the
/// probe that gave it finished; fails the test after [`BOUND`], saying `what` it waited for.
pub async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> (T, Instant)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + BOUND;
    loop {
        if let Some(value) = probe().await {
            return (value, Instant::now());
        }
        assert!(
            Instant::now() < deadline,
            "waited {BOUND:?} in vain for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The event log's text (empty until the first event).
pub fn read_log(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

/// Waits until the event log has a line containing `words`; returns the whole log.
pub async fn log_line(path: &std::path::Path, words: &str) -> String {
    let (log, _) = eventually(&format!("{words:?} in the event log"), || async {
        let log = read_log(path);
        log.lines().any(|line| line.contains(words)).then_some(log)
    })
    .await;
    log
}
