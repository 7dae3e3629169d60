//! The monitoring the pulled detection sources are tested against, for real: Debian's
//! `prometheus`, `prometheus-alertmanager` and `prometheus-blackbox-exporter` (`.ci/run` installs
//! them), and a target of the test's own whose health the test switches.
//!
//! Each server runs as a child of the test in a process group of its own, on 127.0.0.1 on a port
//! that was free a moment before, with its configuration, data and output (stdout and stderr) in
//! the stack's temporary directory. Dropping the stack kills each group by its id and reaps the
//! child, a panic included; after a panic it first prints each server's output.

use std::convert::Infallible;
use std::fs::{self, File};
use std::net::TcpListener as StdTcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

/// How long a server may take to answer its readiness endpoint; generous, for a loaded machine.
const READY_WITHIN: Duration = Duration::from_secs(20);
/// How often readiness is asked again.
const READY_POLL: Duration = Duration::from_millis(20);
/// How long one request of the test's own (readiness, a check) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How much of a server's output a failed test shows.
const LOG_TAIL_LINES: usize = 40;

/// The three servers' programs, as Debian's packages name them, and the packages.
pub(crate) const PROMETHEUS: (&str, &str) = ("prometheus", "prometheus");
pub(crate) const ALERTMANAGER: (&str, &str) =
    ("prometheus-alertmanager", "prometheus-alertmanager");
pub(crate) const BLACKBOX: (&str, &str) = (
    "prometheus-blackbox-exporter",
    "prometheus-blackbox-exporter",
);

/// The program from PATH, or from `/usr/bin` where Debian puts it. Missing is a failure, not a
/// skip: CI installs it.
fn program((name, package): (&str, &str)) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("{name} is not installed: .ci/run installs it (apt-get install -y {package})")
        })
}

/// A loopback port that was free a moment ago: bound, read, released.
pub(crate) fn free_port() -> u16 {
    StdTcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One GET over HTTP/1.0 (so the server closes when done): the status and the body.
pub(crate) async fn http_get(port: u16, path: &str) -> Result<(u16, String), String> {
    let exchange = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| e.to_string())?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        stream
            .read_to_end(&mut answer)
            .await
            .map_err(|e| e.to_string())?;
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let status = answer
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| format!("no status line in {answer:?}"))?;
        let body = answer
            .split_once("\r\n\r\n")
            .map_or("", |(_, body)| body)
            .to_owned();
        Ok((status, body))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| Err("timeout".to_owned()))
}

/// A server the test started: its process group is its pid (`process_group(0)`).
struct Server {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Server {
    fn kill(&mut self) {
        // The group we made for it, by its id: nothing else is in it.
        let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// The servers of one test and the directory holding everything they use.
pub(crate) struct Stack {
    // Declared before `dir`, so the servers are gone before their directory is removed.
    servers: Vec<Server>,
    dir: tempfile::TempDir,
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for server in &self.servers {
                let log = fs::read_to_string(&server.log).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
                eprintln!(
                    "--- {} ({}), last {} lines:\n{}",
                    server.name,
                    server.log.display(),
                    tail.len(),
                    tail.join("\n")
                );
            }
        }
        for server in self.servers.iter_mut().rev() {
            server.kill();
        }
    }
}

impl Stack {
    pub(crate) fn new() -> Stack {
        Stack {
            servers: Vec::new(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// The pids of the servers still in the stack, for the test's check that none outlives it.
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.servers
            .iter()
            .map(|server| server.child.id())
            .collect()
    }

    /// Starts `program` with `args(port)` and waits until `GET ready_path` answers 200. On a
    /// port of its own choosing (`port` None) it is tried again on another port if it exits (a
    /// port taken between choosing and binding it makes it exit at once), three times at most.
    async fn start(
        &mut self,
        name: &'static str,
        program: &Path,
        port: Option<u16>,
        args: impl Fn(u16) -> Vec<String>,
        ready_path: &str,
    ) -> u16 {
        let log = self
            .dir
            .path()
            .join(format!("{}.log", name.replace(' ', "-")));
        let mut failures = String::new();
        let attempts = if port.is_some() { 1 } else { 3 };
        for _ in 0..attempts {
            let port = port.unwrap_or_else(free_port);
            let output = File::create(&log).unwrap();
            let child = Command::new(program)
                .args(args(port))
                .current_dir(self.dir.path())
                .process_group(0)
                .stdin(Stdio::null())
                .stdout(output.try_clone().unwrap())
                .stderr(output)
                .spawn()
                .unwrap_or_else(|error| panic!("cannot run {}: {error}", program.display()));
            self.servers.push(Server {
                name,
                child,
                log: log.clone(),
            });
            let deadline = Instant::now() + READY_WITHIN;
            let why = loop {
                if http_get(port, ready_path)
                    .await
                    .is_ok_and(|(status, _)| status == 200)
                {
                    return port;
                }
                let server = self.servers.last_mut().unwrap();
                if let Some(status) = server.child.try_wait().unwrap() {
                    break format!("exited ({status})");
                }
                if Instant::now() >= deadline {
                    break format!("not ready within {READY_WITHIN:?}");
                }
                tokio::time::sleep(READY_POLL).await;
            };
            let mut server = self.servers.pop().unwrap();
            server.kill();
            failures.push_str(&format!(
                "{why}:\n{}\n",
                fs::read_to_string(&log).unwrap_or_default()
            ));
        }
        panic!("{name} did not start:\n{failures}");
    }

    /// A blackbox exporter with one module, `http_2xx`: a GET that succeeds on a 2xx within
    /// `probe_timeout`. It has no `/-/ready`; `/-/healthy` answers once it serves.
    pub(crate) async fn start_blackbox(&mut self, probe_timeout: Duration) -> u16 {
        let config = self.dir.path().join("blackbox.yml");
        fs::write(
            &config,
            format!(
                "modules:\n  http_2xx:\n    prober: http\n    timeout: {}ms\n    http:\n      preferred_ip_protocol: ip4\n",
                probe_timeout.as_millis()
            ),
        )
        .unwrap();
        let args = |port: u16| {
            vec![
                format!("--config.file={}", config.display()),
                format!("--web.listen-address=127.0.0.1:{port}"),
            ]
        };
        self.start(
            "blackbox exporter",
            &program(BLACKBOX),
            None,
            args,
            "/-/healthy",
        )
        .await
    }

    /// An Alertmanager routing every alert to a receiver that sends nothing.
    pub(crate) async fn start_alertmanager(&mut self) -> u16 {
        let config = self.dir.path().join("alertmanager.yml");
        fs::write(
            &config,
            "route:\n  receiver: nowhere\nreceivers:\n  - name: nowhere\n",
        )
        .unwrap();
        let data = self.dir.path().join("alertmanager-data");
        let args = |port: u16| {
            vec![
                format!("--config.file={}", config.display()),
                format!("--storage.path={}", data.display()),
                format!("--web.listen-address=127.0.0.1:{port}"),
                // No clustering: it would listen on 0.0.0.0:9094, a fixed port off loopback.
                "--cluster.listen-address=".to_owned(),
            ]
        };
        self.start(
            "alertmanager",
            &program(ALERTMANAGER),
            None,
            args,
            "/-/ready",
        )
        .await
    }

    /// A Prometheus with this configuration (and rule file, if any), on `port` if given.
    pub(crate) async fn start_prometheus(
        &mut self,
        config: &str,
        rules: Option<&str>,
        port: Option<u16>,
    ) -> u16 {
        let config_file = self.dir.path().join("prometheus.yml");
        fs::write(&config_file, config).unwrap();
        if let Some(rules) = rules {
            fs::write(self.dir.path().join("rules.yml"), rules).unwrap();
        }
        let data = self.dir.path().join("prometheus-data");
        let args = |port: u16| {
            vec![
                format!("--config.file={}", config_file.display()),
                format!("--storage.tsdb.path={}", data.display()),
                format!("--web.listen-address=127.0.0.1:{port}"),
                // Links in alerts name loopback, not the machine's host name.
                format!("--web.external-url=http://127.0.0.1:{port}/"),
            ]
        };
        self.start("prometheus", &program(PROMETHEUS), port, args, "/-/ready")
            .await
    }
}

/// An HTTP endpoint of the test's own on 127.0.0.1, answering 200 while healthy and 500 when the
/// test says it is failing; served until dropped.
pub(crate) struct Target {
    pub(crate) port: u16,
    healthy: Arc<AtomicBool>,
    _serving: DropGuard,
}

impl Target {
    pub(crate) async fn start() -> Target {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let healthy = Arc::new(AtomicBool::new(true));
        let cancel = CancellationToken::new();
        let serving = healthy.clone();
        let stop = cancel.clone();
        tokio::spawn(async move {
            while let Some(Ok((stream, _))) = stop.run_until_cancelled(listener.accept()).await {
                let healthy = serving.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |_request| {
                        let (status, body) = if healthy.load(Ordering::SeqCst) {
                            (StatusCode::OK, "ok\n")
                        } else {
                            (StatusCode::INTERNAL_SERVER_ERROR, "failing\n")
                        };
                        let mut response =
                            Response::new(Full::new(Bytes::from_static(body.as_bytes())));
                        *response.status_mut() = status;
                        async move { Ok::<_, Infallible>(response) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Target {
            port,
            healthy,
            _serving: cancel.drop_guard(),
        }
    }

    /// Switches the health and returns the instant taken just before: every answer after it
    /// has the new health.
    pub(crate) fn set_healthy(&self, healthy: bool) -> Instant {
        let at = Instant::now();
        self.healthy.store(healthy, Ordering::SeqCst);
        at
    }
}
