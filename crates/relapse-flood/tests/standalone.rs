//! The `relapse-flood` binary's exit codes, against servers started here on 127.0.0.1:0: 0 when
//! the flood ran to its bounds, 2 on bad input, 3 when interrupted (the report still printed) or
//! failed at run time. `relapse flood` shares the runner; tests/flood.rs checks it the same way.
//! One flood at a time, each bounded by -d and -n.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;

static FLOODS: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    FLOODS.lock().unwrap_or_else(|e| e.into_inner())
}

fn flood() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_relapse-flood"));
    command.stdin(Stdio::null());
    command
}

fn show(output: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// An HTTP/1.1 server answering every request 200 over keep-alive; counts requests. Serves
/// until the test process ends.
fn server() -> (u16, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests = Arc::new(AtomicU64::new(0));
    let seen = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                        buffer.drain(..end + 4);
                        seen.fetch_add(1, Ordering::SeqCst);
                        let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if stream.write_all(reply).is_err() {
                            return;
                        }
                    }
                    match stream.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    (port, requests)
}

/// Waits for `child` to exit within `within`; kills it (by its own handle) if it does not.
fn wait_within(mut child: Child, within: Duration) -> Output {
    let deadline = Instant::now() + within;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!("still running after {within:?}\n{}", show(&output));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn bad_input_exits_2_and_sends_nothing() {
    let (port, requests) = server();
    let url = format!("http://127.0.0.1:{port}");
    for args in [
        vec!["http://10.1.2.3/".to_string()],
        vec![format!("{url}/"), "-d".into(), "2h".into()],
        vec![
            format!("{url}/"),
            "--source-cidr".into(),
            "127.0.0.0/8".into(),
        ],
        vec!["https://127.0.0.1/".into()],
        // Caught when the request is prepared, before any traffic: still bad input.
        vec![format!("{url}/a b")],
        vec![format!("{url}/"), "-H".into(), "x-bad: a\u{1}b".into()],
    ] {
        // Bounded all the same, should one be taken: -n here, -d unless the case sets it.
        let mut command = flood();
        command.args(&args).args(["-n", "10"]);
        if !args.iter().any(|a| a == "-d") {
            command.args(["-d", "2s"]);
        }
        let output = command.output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}\n{}", show(&output));
        assert!(
            String::from_utf8_lossy(&output.stderr).starts_with("relapse-flood: "),
            "{args:?}\n{}",
            show(&output)
        );
        assert!(output.stdout.is_empty(), "{args:?}\n{}", show(&output));
    }
    assert_eq!(requests.load(Ordering::SeqCst), 0);
}

#[test]
fn a_flood_that_ran_to_its_bounds_exits_0() {
    let _flood = one_at_a_time();
    let (port, requests) = server();
    let output = flood()
        .arg(format!("http://127.0.0.1:{port}/"))
        .args(["-c", "4", "-t", "1", "-n", "200", "-d", "20s", "--json"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["completed"], 200, "{report}");
    assert_eq!(requests.load(Ordering::SeqCst), 200);
}

/// A refused connection is what the target answered, not a failure of the flood: every request
/// is counted as a connect error, and the flood ran to its bounds.
#[test]
fn a_target_where_nothing_listens_is_a_finding_not_a_failure() {
    let _flood = one_at_a_time();
    // Bound but not listening: the port stays ours, and every connect is refused.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    let port = socket.local_addr().unwrap().as_socket().unwrap().port();
    let output = flood()
        .arg(format!("http://127.0.0.1:{port}/"))
        .args(["-c", "2", "-t", "1", "-n", "50", "-d", "10s", "--json"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["errors"]["connect"], 50, "{report}");
    assert_eq!(report["completed"], 0, "{report}");
}

/// With 4 file descriptors the process can load and start, but no runtime can (each needs an
/// epoll and an eventfd): the load fails at run time.
#[test]
fn a_load_that_cannot_start_its_runtime_exits_3() {
    let _flood = one_at_a_time();
    let (port, requests) = server();
    let output = Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -n 4 && exec "$0" "$@""#)
        .arg(env!("CARGO_BIN_EXE_relapse-flood"))
        .arg(format!("http://127.0.0.1:{port}/"))
        .args(["-c", "1", "-t", "1", "-n", "10", "-d", "5s"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3), "{}", show(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("relapse-flood: runtime: "),
        "{}",
        show(&output)
    );
    assert!(output.stdout.is_empty(), "{}", show(&output));
    assert_eq!(requests.load(Ordering::SeqCst), 0);
}

#[test]
fn sigterm_or_sigint_mid_flood_exits_3_with_the_report_of_what_was_sent() {
    let _flood = one_at_a_time();
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        let (port, requests) = server();
        // An open model at 50/s for at most 20s: the signal comes long before either bound.
        let child = flood()
            .arg(format!("http://127.0.0.1:{port}/"))
            .args([
                "--rate", "50", "-c", "4", "-t", "1", "-n", "1000", "-d", "20s",
            ])
            .arg("--json")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The handlers are installed before the first request goes out.
        let deadline = Instant::now() + Duration::from_secs(10);
        while requests.load(Ordering::SeqCst) < 5 {
            assert!(Instant::now() < deadline, "no request arrived");
            std::thread::sleep(Duration::from_millis(10));
        }
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
        let output = wait_within(child, Duration::from_secs(10));
        assert_eq!(output.status.code(), Some(3), "{signal}\n{}", show(&output));
        let report: Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("{signal}: {e}\n{}", show(&output)));
        let completed = report["completed"].as_u64().unwrap();
        assert!((5..1000).contains(&completed), "{signal}: {report}");
    }
}
