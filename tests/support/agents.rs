//! What the agent tests share: a real `relapse agent serve` on loopback or on a test host (a
//! network namespace the test makes, joined by a veth pair), a target process the test starts,
//! `relapse run` as the coordinator, and looking at /proc and the journal afterwards.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use relapse_agent::client::AgentClient;
use relapse_agent::tls::client_config;
use relapse_agent::wire::{ApplyRequest, RunId};
use relapse_ports::netns::Host;
use tokio::time::Instant;

/// A process the test started, ended by its pid when dropped.
pub struct Started(pub Child);

impl Started {
    /// Waits for the process to end by itself: its exit status, stdout and stderr (each read
    /// whole, stderr on a thread so neither pipe can fill while the other is read).
    pub fn finish(&mut self) -> (std::process::ExitStatus, String, String) {
        use std::io::Read;
        let stderr = self.0.stderr.take().map(|mut pipe| {
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = pipe.read_to_string(&mut text);
                text
            })
        });
        let mut stdout = String::new();
        if let Some(mut pipe) = self.0.stdout.take() {
            let _ = pipe.read_to_string(&mut stdout);
        }
        let status = self.0.wait().unwrap();
        let stderr = stderr.map(|t| t.join().unwrap()).unwrap_or_default();
        (status, stdout, stderr)
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `sleep` whose argument no other process has.
pub fn target() -> (Started, String) {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    let seconds = format!(
        "3600.{}0{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let child = Command::new("sleep").arg(&seconds).spawn().unwrap();
    // Until it has exec'd, a child shows its parent's command line; there is no event for
    // that, so /proc is polled (at most 5 s).
    let path = format!("/proc/{}/cmdline", child.id());
    let wanted = format!("sleep\0{seconds}\0");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::fs::read(&path).ok().as_deref() != Some(wanted.as_bytes()) {
        assert!(
            std::time::Instant::now() < deadline,
            "sleep {seconds} never exec'd"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    (Started(child), format!("sleep {seconds}"))
}

pub fn state(pid: u32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat[stat.rfind(')').unwrap() + 2..].chars().next().unwrap()
}

/// Waits for a process's state, polling /proc (another process's stop has no event to await),
/// for at most `within`; returns how long it took.
pub async fn wait_state(pid: u32, wanted: impl Fn(char) -> bool, within: Duration) -> Duration {
    let start = Instant::now();
    while !wanted(state(pid)) {
        assert!(
            start.elapsed() < within,
            "pid {pid} still in state {} after {within:?}",
            state(pid)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    start.elapsed()
}

pub struct Agent {
    pub process: Started,
    pub url: String,
    pub dir: tempfile::TempDir,
}

pub fn start_agent(kinds: &[&str]) -> Agent {
    start_agent_on(kinds, None)
}

/// An agent on loopback, or inside `host` at its own address.
pub fn start_agent_on(kinds: &[&str], host: Option<&Host>) -> Agent {
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    let address = host.map_or("127.0.0.1".to_string(), |h| h.inside.to_string());
    let made = Command::new(env!("CARGO_BIN_EXE_relapse"))
        .args(["agent", "certs", "--out"])
        .arg(&tls)
        .arg(format!("a1={address}"))
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    // `ip netns exec` enters the namespace and execs the agent: the pid is the agent's.
    let mut command = match host {
        Some(host) => {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", host.name(), env!("CARGO_BIN_EXE_relapse")]);
            command
        }
        None => Command::new(env!("CARGO_BIN_EXE_relapse")),
    };
    command
        .args([
            "agent",
            "serve",
            "--listen",
            &format!("{address}:0"),
            "--cert",
        ])
        .arg(tls.join("a1.pem"))
        .arg("--key")
        .arg(tls.join("a1-key.pem"))
        .arg("--token-file")
        .arg(tls.join("token"))
        .arg("--state-dir")
        .arg(dir.path().join("state"));
    for kind in kinds {
        command.args(["--allow-kind", kind]);
    }
    // Its log goes to a file: a pipe nobody reads would fill, and block the agent's writes.
    let log = std::fs::File::create(dir.path().join("agent.log")).unwrap();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let address = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    Agent {
        process: Started(child),
        url: format!("https://{address}"),
        dir,
    }
}

pub async fn connect(agent: &Agent) -> AgentClient {
    let tls = agent.dir.path().join("tls");
    let token = std::fs::read_to_string(tls.join("token")).unwrap();
    AgentClient::connect(
        &agent.url,
        client_config(&tls.join("ca.pem")).unwrap(),
        token.trim(),
    )
    .await
    .unwrap()
}

pub fn freeze(id: &RunId, command: &str) -> ApplyRequest {
    ApplyRequest {
        id: id.clone(),
        name: "target-hangs".into(),
        kind: "process_freeze".into(),
        table: format!("process_freeze = {{ command = \"{command}\" }}"),
        duration_ms: 10_000,
        vars: Default::default(),
        prepare: false,
    }
}

pub fn run_id(run: &str) -> RunId {
    RunId {
        run: run.into(),
        holder: format!("{run}-secret"),
    }
}

/// A test host: a network namespace with a veth pair to this one, removed when dropped.
pub fn test_host(tag: u32) -> Host {
    let name = format!("rlx-agent-{}-{tag}", std::process::id());
    Host::create(&name, std::process::id().wrapping_mul(31).wrapping_add(tag)).unwrap()
}

pub fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().unwrap();
    assert!(status.success(), "ip {args:?}");
}

/// Runs a scenario with `relapse run`; returns the run's JSON and the process's output.
pub fn relapse_run(scenario: &str) -> (serde_json::Value, std::process::Output) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.toml");
    std::fs::write(&file, scenario).unwrap();
    let json = dir.path().join("report.json");
    let output = Command::new(env!("CARGO_BIN_EXE_relapse"))
        .arg("run")
        .arg(&file)
        .arg("--json")
        .arg(&json)
        .env("RELAPSE_STATE_DIR", dir.path().join("state"))
        .output()
        .unwrap();
    let text = std::fs::read_to_string(&json).unwrap_or_else(|_| {
        panic!(
            "no report: {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    let journal = dir.path().join("state");
    let left: Vec<_> = walk(&journal);
    assert!(left.is_empty(), "the journal still holds {left:?}");
    (report["runs"][0].clone(), output)
}

/// The files under `dir` (none when it does not exist).
pub fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|e| {
            let path = e.path();
            if path.is_dir() {
                walk(&path)
            } else {
                vec![path]
            }
        })
        .collect()
}

/// A scenario whose one fault freezes `command` on agent a1 for a minute, with a TCP probe of
/// the agent's own port as its SLI (so it needs no demo): the coordinator is killed long
/// before the fault would end.
pub fn freeze_scenario(agent: &Agent, command: &str, lease: &str, renew_every: &str) -> String {
    remote_scenario(
        agent,
        &format!("process_freeze = {{ command = \"{command}\" }}"),
        "1m",
        lease,
        renew_every,
    )
}

/// A scenario whose one fault, `table`, runs on agent a1 for `duration`.
pub fn remote_scenario(
    agent: &Agent,
    table: &str,
    duration: &str,
    lease: &str,
    renew_every: &str,
) -> String {
    scenario_on_agents(
        ("dead-man", "hang"),
        &[agent],
        table,
        duration,
        (lease, renew_every),
    )
}

/// A scenario named `name` whose one fault, `fault` (`table`), runs on `agents` (a1, a2, … in
/// order; `on = "a1"` for one, a list for more) for `duration`, each agent with the same
/// `(lease, renew_every)`; its probe watches the first agent's port.
fn scenario_on_agents(
    (name, fault): (&str, &str),
    agents: &[&Agent],
    table: &str,
    duration: &str,
    (lease, renew_every): (&str, &str),
) -> String {
    let names: Vec<String> = (1..=agents.len()).map(|i| format!("\"a{i}\"")).collect();
    let on = match names.as_slice() {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    };
    let sections: String = agents
        .iter()
        .enumerate()
        .map(|(i, agent)| named_agent_section(agent, &format!("a{}", i + 1), lease, renew_every))
        .collect::<Vec<_>>()
        .join("\n");
    let authority = agents[0].url.trim_start_matches("https://");
    let host = authority.rsplit_once(':').unwrap().0;
    format!(
        r#"[scenario]
name = "{name}"
allow_targets = ["{host}"]

[[probe]]
name = "agent-port"
every = "50ms"
tcp = {{ address = "{authority}" }}

[steady_state]
probe = "agent-port"
window = "200ms"
min_success = 0.5

{sections}
[[fault]]
name = "{fault}"
on = {on}
{table}
start = "0s"
duration = "{duration}"

[limits]
observe_after = "1s"
"#
    )
}

/// The `[[agent]]` table of agent a1: its URL, CA and token, and the lease.
pub fn agent_section(agent: &Agent, lease: &str, renew_every: &str) -> String {
    named_agent_section(agent, "a1", lease, renew_every)
}

/// The `[[agent]]` table of `agent` under `name`.
pub fn named_agent_section(agent: &Agent, name: &str, lease: &str, renew_every: &str) -> String {
    let tls = agent.dir.path().join("tls");
    format!(
        "[[agent]]\nname = \"{name}\"\nurl = \"{}\"\nca = \"{}\"\ntoken_file = \"{}\"\nlease = \"{lease}\"\nrenew_every = \"{renew_every}\"\n",
        agent.url,
        tls.join("ca.pem").display(),
        tls.join("token").display()
    )
}

/// A `relapse run` in the background, and its guardian (its child `relapse __guardian`).
pub struct Coordinator {
    pub run: Started,
    pub guardian: u32,
}

pub fn start_coordinator(scenario: &std::path::Path, state: &std::path::Path) -> Coordinator {
    let run = Command::new(env!("CARGO_BIN_EXE_relapse"))
        .arg("run")
        .arg(scenario)
        .env("RELAPSE_STATE_DIR", state)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = run.id();
    // The guardian is started before anything else, as the run's first child.
    let children = format!("/proc/{pid}/task/{pid}/children");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let guardian = loop {
        let listed = std::fs::read_to_string(&children).unwrap_or_default();
        let found = listed
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
            .find(|p| {
                std::fs::read(format!("/proc/{p}/cmdline"))
                    .is_ok_and(|c| c.windows(10).any(|w| w == b"__guardian"))
            });
        if let Some(guardian) = found {
            break guardian;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no guardian of relapse run {pid}"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    Coordinator {
        run: Started(run),
        guardian,
    }
}

pub fn kill_9(pid: u32) {
    let status = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -9 {pid}");
}

/// The soft limit on open files of `pid`, from /proc.
pub fn soft_nofile(pid: u32) -> String {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .to_string();
    line.split_whitespace().nth(3).unwrap().to_string()
}

/// `relapse run` of `scenario` in the background, with `--json`: `during` is polled (every
/// 10 ms; a fault's effect on another process has no event to await) until it holds, at most
/// 30 s and only while the run goes on; then the run is awaited. Returns the run's report and
/// the process's output; the run's journal must be empty by then.
pub fn run_while(
    scenario: &str,
    during: impl FnMut() -> bool,
) -> (serde_json::Value, std::process::Output) {
    let (report, output, left) = run_in_background(scenario, during);
    assert!(left.is_empty(), "the journal still holds {left:?}");
    (report, output)
}

/// As [`run_while`], and returns what the run's journal still holds (the files' contents)
/// rather than requiring it empty.
pub fn run_in_background(
    scenario: &str,
    mut during: impl FnMut() -> bool,
) -> (serde_json::Value, std::process::Output, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.toml");
    std::fs::write(&file, scenario).unwrap();
    let state = dir.path().join("state");
    let json = dir.path().join("report.json");
    let mut run = Command::new(env!("CARGO_BIN_EXE_relapse"))
        .arg("run")
        .arg(&file)
        .arg("--json")
        .arg(&json)
        .env("RELAPSE_STATE_DIR", &state)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while !during() {
        assert!(
            start.elapsed() < Duration::from_secs(30) && run.try_wait().unwrap().is_none(),
            "the fault's effect was never seen: {:?}",
            run.wait_with_output()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let output = run.wait_with_output().unwrap();
    let text = std::fs::read_to_string(&json).unwrap_or_else(|_| {
        panic!(
            "no report: {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let left = walk(&state)
        .iter()
        .map(|file| std::fs::read_to_string(file).unwrap_or_default())
        .collect();
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    (report["runs"][0].clone(), output, left)
}

/// The detail of the run's first timeline event named `event`.
pub fn event_detail(run: &serde_json::Value, event: &str) -> String {
    run["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["event"] == event)
        .unwrap_or_else(|| panic!("no {event} event: {run}"))["detail"]
        .as_str()
        .unwrap()
        .to_string()
}

/// What an implicit-bind `connect()` inside `host` gets: Ok, or the errno. The listener is on
/// the namespace's own loopback, below the ephemeral range (a port-0 bind would need one of
/// the ports under test).
pub fn connect_inside(host: &Host) -> Result<(), i32> {
    relapse_ports::netns::within(&host.path(), || {
        let listener = std::net::TcpListener::bind("127.0.0.1:2000").unwrap();
        std::net::TcpStream::connect_timeout(
            &listener.local_addr().unwrap(),
            Duration::from_secs(1),
        )
        .map(drop)
        .map_err(|e| e.raw_os_error().unwrap_or(-1))
    })
    .unwrap()
}

/// Whether an agent holds nothing: no fault, no lease.
pub async fn holds_nothing(agent: &Agent) -> bool {
    let held = connect(agent).await.held().await.unwrap();
    held.faults.is_empty() && held.run.is_none()
}

/// An HTTP server (Python's) inside `host`, on port 8080 of all its addresses, serving a
/// directory of its own; it logs each request it answers to `requests.log` there.
pub fn server_in(host: &relapse_ports::netns::Host) -> (Started, tempfile::TempDir) {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("index.html"), "ok\n").unwrap();
    let log = std::fs::File::create(root.path().join("requests.log")).unwrap();
    // `ip netns exec` enters the namespace and execs the server: the pid is the server's.
    let server = Started(
        Command::new("ip")
            .args(["netns", "exec", host.name(), "python3", "-m", "http.server"])
            .args(["--bind", "0.0.0.0", "--directory"])
            .arg(root.path())
            .arg("8080")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    (server, root)
}

/// How many requests a [`server_in`] has answered.
pub fn requests_answered(root: &tempfile::TempDir) -> usize {
    std::fs::read_to_string(root.path().join("requests.log"))
        .unwrap_or_default()
        .lines()
        .filter(|line| line.contains("\"GET "))
        .count()
}

/// nginx inside `host`, on port 8080 of its loopback, as one process in the foreground
/// (`master_process off`) with everything it writes under a directory of its own; answers 200
/// "ok" to every request. Waits until it accepts a connection (at most 10 s).
pub fn nginx_in(host: &Host) -> (Started, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().display().to_string();
    std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
    let config = format!(
        r#"daemon off;
master_process off;
pid {root}/nginx.pid;
error_log {root}/error.log notice;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {root}/tmp/body;
    proxy_temp_path {root}/tmp/proxy;
    fastcgi_temp_path {root}/tmp/fastcgi;
    uwsgi_temp_path {root}/tmp/uwsgi;
    scgi_temp_path {root}/tmp/scgi;
    server {{
        listen 127.0.0.1:8080;
        location / {{ return 200 "ok\n"; }}
    }}
}}
"#
    );
    std::fs::write(dir.path().join("nginx.conf"), config).unwrap();
    // `ip netns exec` enters the namespace and execs nginx: the pid is nginx's.
    let server = Started(
        Command::new("ip")
            .args(["netns", "exec", host.name(), "nginx", "-p", &root, "-c"])
            .arg(dir.path().join("nginx.conf"))
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let start = std::time::Instant::now();
    let listening = || {
        relapse_ports::netns::within(&host.path(), || {
            std::net::TcpStream::connect(("127.0.0.1", 8080)).is_ok()
        })
        .unwrap()
    };
    // nginx says nothing when it listens; its port is polled.
    while !listening() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "nginx in {} never listened: {}",
            host.name(),
            std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    (server, dir)
}

/// A scenario whose one fault, `table`, is a flood spread over `agents` (named a1, a2, …) for
/// `duration`, with the first agent's port as its SLI. Leases of 1 s, renewed every 250 ms.
pub fn spread_scenario(agents: &[&Agent], table: &str, duration: &str) -> String {
    scenario_on_agents(
        ("spread", "flood"),
        agents,
        table,
        duration,
        ("1s", "250ms"),
    )
}
