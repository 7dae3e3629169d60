//! The processes of the HAProxy failover test: two nginx backends and HAProxy in front of them,
//! configured from the test's constants, each a child of the test ended by its pid.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use super::*;

/// The processes the test started, ended by their pid (SIGKILL, which also ends a stopped one)
/// and reaped on every path, a panic included.
#[derive(Default)]
pub(crate) struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A server the test started and saw serving.
pub(crate) struct Server {
    pub(crate) pid: u32,
    pub(crate) port: u16,
}

/// `name` from PATH, or from `/usr/sbin` where Debian puts both servers (not on every PATH).
/// Missing is a failure, not a skip: CI installs them.
pub(crate) fn program(name: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("{name} is not installed: .ci/run installs it (apt-get install -y {package})")
        })
}

/// Starts `attempt(port)` on a fresh port and polls `ready(port)` until it holds, for at most
/// READY_WITHIN; again on another port if the server exits (a port taken between choosing and
/// binding it makes it exit at once), three times at most.
pub(crate) fn start(
    what: &str,
    children: &mut Children,
    mut attempt: impl FnMut(u16) -> (Child, PathBuf),
    ready: impl Fn(u16) -> bool,
) -> Server {
    let mut failures = String::new();
    for _ in 0..3 {
        // A loopback port that was free a moment ago: bound, read, released.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let (child, log) = attempt(port);
        children.0.push(child);
        let child = children.0.last_mut().unwrap();
        let deadline = Instant::now() + READY_WITHIN;
        let why = loop {
            if ready(port) {
                let pid = child.id();
                return Server { pid, port };
            }
            if let Some(status) = child.try_wait().unwrap() {
                break format!("exited ({status})");
            }
            if Instant::now() >= deadline {
                break format!("not ready within {READY_WITHIN:?}");
            }
            std::thread::sleep(READY_POLL);
        };
        let _ = child.kill();
        let _ = child.wait();
        let log = fs::read_to_string(log).unwrap_or_default();
        failures.push_str(&format!("{why}:\n{log}\n"));
    }
    panic!("{what} did not start:\n{failures}");
}

/// One nginx in the foreground as a single process (`master_process off`), so freezing its pid
/// freezes the server, with everything it writes under `dir`. It answers `body` on `/` and 200
/// on `/health`.
pub(crate) fn start_nginx(dir: &Path, body: &str, children: &mut Children) -> Server {
    let nginx = program("nginx", "nginx-light");
    fs::create_dir_all(dir.join("tmp")).unwrap();
    let config = dir.join("nginx.conf");
    let log = dir.join("error.log");
    let attempt = |port: u16| {
        fs::write(&config, nginx_config(dir, port, body)).unwrap();
        let output = File::create(dir.join("output")).unwrap();
        let child = Command::new(&nginx)
            // `-e`: the error log before the configuration is read (by default under /var/log).
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&config)
            // The error log before the configuration is read (by default under /var/log).
            .arg("-e")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(output.try_clone().unwrap())
            .stderr(output)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot run {}: {error}", nginx.display()));
        (child, log.clone())
    };
    let expected = format!("{body}\n");
    start("nginx", children, attempt, |port| {
        http_get(port, "/health").is_ok_and(|(status, _)| status == 200)
            && http_get(port, "/").is_ok_and(|(_, answer)| answer == expected)
    })
}

pub(crate) fn nginx_config(dir: &Path, port: u16, body: &str) -> String {
    let dir = dir.display();
    format!(
        r#"daemon off;
master_process off;
pid {dir}/nginx.pid;
error_log {dir}/error.log notice;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    server {{
        listen 127.0.0.1:{port} backlog={BACKLOG};
        location = /health {{ return 200 "ok\n"; }}
        location / {{ return 200 "{body}\n"; }}
    }}
}}
"#
    )
}

/// HAProxy in the foreground (`-db`), its log (`format iso`: microsecond timestamps) on stdout,
/// appended to `log`. Ready once it serves the primary and has logged a good check of each
/// server: a server starts UP with the health of `rise`, one failure from DOWN, and is fully up
/// (the health the derivation starts from) only after its first good check.
pub(crate) fn start_haproxy(
    dir: &Path,
    log: &Path,
    backends: (u16, u16),
    children: &mut Children,
) -> Server {
    let haproxy = program("haproxy", "haproxy");
    let config = dir.join("haproxy.cfg");
    let stderr = dir.join("haproxy.stderr");
    let attempt = |port: u16| {
        fs::write(&config, haproxy_config(port, backends)).unwrap();
        let output = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(&haproxy)
            .args([Path::new("-f"), &config, Path::new("-db")])
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(File::create(&stderr).unwrap())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot run {}: {error}", haproxy.display()));
        (child, stderr.clone())
    };
    start("haproxy", children, attempt, |port| {
        let logged = fs::read_to_string(log).unwrap_or_default();
        logged.contains("Health check for server web/primary succeeded")
            && logged.contains("Health check for backup server web/standby succeeded")
            && http_get(port, "/").is_ok_and(|(_, answer)| answer == "primary\n")
    })
}

pub(crate) fn haproxy_config(port: u16, (primary, standby): (u16, u16)) -> String {
    let check = format!(
        "check inter {}ms fall {FALL} rise {RISE}",
        INTER.as_millis()
    );
    format!(
        r#"global
    log stdout format iso local0
defaults
    mode http
    timeout connect {connect}ms
    timeout check {check_timeout}ms
    timeout server {server}ms
    timeout client 30s
    timeout http-keep-alive 30s
frontend www
    bind 127.0.0.1:{port}
    default_backend web
backend web
    log global
    # Every check's result and reason in the log, not only the state changes.
    option log-health-checks
    option httpchk GET /health
    # A request that failed on the primary is not retried: no retry may land on the standby
    # after the DOWN and turn a request sent before it into a success.
    retries 0
    server primary 127.0.0.1:{primary} {check}
    server standby 127.0.0.1:{standby} {check} backup
"#,
        connect = TIMEOUT_CONNECT.as_millis(),
        check_timeout = TIMEOUT_CHECK.as_millis(),
        server = TIMEOUT_SERVER.as_millis(),
    )
}

/// One HTTP/1.0 GET on loopback: the status and the body.
pub(crate) fn http_get(port: u16, path: &str) -> io::Result<(u16, String)> {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| io::Error::other(format!("not an HTTP response: {response:?}")))?;
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    Ok((status, body.to_owned()))
}

/// The state letter of `/proc/PID/stat` (`R`, `S`, `T`, …), after the command name's ')'.
pub(crate) fn process_state(pid: u32) -> char {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 1..];
    after_name.trim_start().chars().next().unwrap()
}
