//! The IMAP probe against a real dovecot the test starts (package `dovecot-imapd`), and against
//! scripted servers for what dovecot will not do on demand (hang, send traps in a literal).
//!
//! Each dovecot runs in the foreground as a child of the test, with its configuration, sockets,
//! state, logs and mail in a temporary directory, listening on 127.0.0.1 on a free port; the test
//! ends it by its pid. Every wait is bounded; nothing sleeps in place of synchronisation.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::{Group, Pid, User};
use relapse_core::sense::{Outcome, Probe};
use relapse_probe::{ImapProbe, ImapSession};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{timeout, Instant};

/// Upper bound for anything the tests wait for; generous so a loaded CI machine does not flake.
const WAIT: Duration = Duration::from_secs(10);

/// The probe timeout where a check is expected to time out.
const SHORT: Duration = Duration::from_secs(1);

/// How late past its timeout a timed-out check may return.
const TOLERANCE: Duration = Duration::from_millis(500);

/// The users the test dovecot knows: a plain password, one that must be quoted with escapes, and
/// one that only a literal can carry.
const USERS: &[(&str, &str)] = &[
    ("alice", "secret"),
    ("bob", r#"q"uo\te"#),
    ("carol", "pässwörd"),
];

// ---------------------------------------------------------------------------------------------
// A dovecot of the test's own

/// A dovecot master process the test started, and the directory holding everything it uses.
struct Dovecot {
    dir: tempfile::TempDir,
    /// The master; taken by `drop`.
    child: Option<Child>,
    port: u16,
    /// Whom the mail processes run as; the mail the test writes must belong to them.
    mail_user: User,
}

impl Dovecot {
    /// Starts dovecot and waits until it greets. A port taken between choosing and binding it
    /// makes dovecot exit at once; then it is tried again on another port.
    async fn start() -> Dovecot {
        let version = Command::new(dovecot_binary())
            .arg("--version")
            .output()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot run dovecot ({error}): install it with apt-get install dovecot-imapd"
                )
            });
        assert!(version.status.success(), "dovecot --version failed");

        let mut last_log = String::new();
        for _attempt in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let port = free_port();
            let mail_user = write_config(dir.path(), port);
            let output = fs::File::create(dir.path().join("log/stdout")).unwrap();
            let mut child = Command::new(dovecot_binary())
                .arg("-F")
                .arg("-c")
                .arg(dir.path().join("dovecot.conf"))
                .stdin(Stdio::null())
                .stdout(output.try_clone().unwrap())
                .stderr(output)
                .spawn()
                .unwrap();
            match wait_for_greeting(port, &mut child).await {
                Ok(()) => {
                    return Dovecot {
                        dir,
                        child: Some(child),
                        port,
                        mail_user,
                    }
                }
                Err(why) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_log = format!(
                        "{why}\n{}{}",
                        fs::read_to_string(dir.path().join("log/stdout")).unwrap_or_default(),
                        fs::read_to_string(dir.path().join("log/dovecot.log")).unwrap_or_default()
                    );
                }
            }
        }
        panic!("dovecot did not start:\n{last_log}");
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn probe(&self, user: &str, password: &str, mailbox: &str, header: Option<&str>) -> ImapProbe {
        ImapProbe::new(
            &self.address(),
            user,
            password,
            mailbox,
            header.map(str::to_owned),
            WAIT,
        )
        .unwrap()
    }

    /// Delivers a message to `user`'s INBOX the way a local delivery agent does: a file in the
    /// maildir's `new/`, owned by the mail user.
    fn deliver(&self, user: &str, name: &str, message: &[u8]) {
        let path = self
            .dir
            .path()
            .join("mail")
            .join(user)
            .join("new")
            .join(name);
        fs::write(&path, message).unwrap();
        chown_to(&path, &self.mail_user);
    }

    /// The master's pid and those of all its descendants, the master first.
    fn processes(&self) -> Vec<Pid> {
        let master = self.child.as_ref().unwrap().id() as i32;
        let parents: Vec<(i32, i32)> = fs::read_dir("/proc")
            .unwrap()
            .filter_map(|entry| {
                let pid: i32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
                let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
                let after = &stat[stat.rfind(')')? + 1..];
                let ppid = after.split_whitespace().nth(1)?.parse().ok()?;
                Some((pid, ppid))
            })
            .collect();
        let mut tree = vec![master];
        let mut at = 0;
        while at < tree.len() {
            let parent = tree[at];
            tree.extend(
                parents
                    .iter()
                    .filter(|(_, p)| *p == parent)
                    .map(|(c, _)| *c),
            );
            at += 1;
        }
        tree.into_iter().map(Pid::from_raw).collect()
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("log/dovecot.log")).unwrap_or_default()
    }
}

impl Drop for Dovecot {
    /// SIGTERM to the master, which ends its children; SIGKILL if it is not gone within the wait.
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(pid, Signal::SIGCONT);
        let _ = kill(pid, Signal::SIGTERM);
        let (done, exited) = mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let _ = child.wait();
            let _ = done.send(());
        });
        if exited.recv_timeout(WAIT).is_err() {
            let _ = kill(pid, Signal::SIGKILL);
        }
        let _ = waiter.join();
    }
}

/// `dovecot` from PATH, or where Debian puts it (`/usr/sbin` is not on every user's PATH).
fn dovecot_binary() -> PathBuf {
    let sbin = Path::new("/usr/sbin/dovecot");
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join("dovecot").is_file()))
        .unwrap_or(false);
    if !on_path && sbin.is_file() {
        sbin.to_owned()
    } else {
        PathBuf::from("dovecot")
    }
}

/// A port free a moment ago: bound, read, released.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn chown_to(path: &Path, user: &User) {
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::chown(path, Some(user.uid.as_raw()), Some(user.gid.as_raw())).unwrap();
    }
}

/// Writes the configuration, the password file and the users' maildirs under `dir`, and returns
/// the user the mail processes will run as.
///
/// As root, dovecot runs its login and internal processes as the users the Debian package
/// creates (`dovenull`, `dovecot`) and the mail processes as `dovenull`, so everything they read
/// is made readable to them: the directory itself 0755, the password file 0644, the maildirs
/// owned by `dovenull`. As another user, everything runs as that user and its group.
fn write_config(dir: &Path, port: u16) -> User {
    let root = nix::unistd::geteuid().is_root();
    let by_name = |name: &str| {
        User::from_name(name)
            .unwrap()
            .unwrap_or_else(|| panic!("no user {name}: is dovecot-core installed?"))
    };
    let (login_user, internal_user, mail_user) = if root {
        (by_name("dovenull"), by_name("dovecot"), by_name("dovenull"))
    } else {
        let me = User::from_uid(nix::unistd::geteuid()).unwrap().unwrap();
        (me.clone(), me.clone(), me)
    };
    // The group of the internal sockets: dovecot chowns them to it, which only root may do for a
    // group it is not in.
    let internal_group = Group::from_gid(internal_user.gid).unwrap().unwrap();

    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    for sub in ["run", "state", "log", "mail"] {
        fs::create_dir(dir.join(sub)).unwrap();
    }
    chown_to(&dir.join("mail"), &mail_user);
    let mut passwd = String::new();
    for (user, password) in USERS {
        passwd.push_str(&format!("{user}:{{PLAIN}}{password}::::::\n"));
        let home = dir.join("mail").join(user);
        fs::create_dir(&home).unwrap();
        chown_to(&home, &mail_user);
        for sub in ["cur", "new", "tmp"] {
            fs::create_dir(home.join(sub)).unwrap();
            chown_to(&home.join(sub), &mail_user);
        }
    }
    fs::write(dir.join("passwd"), passwd).unwrap();
    fs::set_permissions(dir.join("passwd"), fs::Permissions::from_mode(0o644)).unwrap();

    let d = dir.display();
    let config = format!(
        "# Written by relapse-probe's tests/imap.rs; dovecot 2.3 syntax.
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/log/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
# A wrong password is answered at once rather than after the default 2 s.
auth_failure_delay = 0
default_internal_user = {internal}
default_internal_group = {internal_group}
default_login_user = {login}
mail_uid = {mail}
mail_gid = {mail_gid}
first_valid_uid = {mail_uid}
first_valid_gid = {mail_gid}
mail_location = maildir:{d}/mail/%u
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {d}/passwd
}}
userdb {{
  driver = passwd-file
  args = {d}/passwd
  default_fields = home={d}/mail/%u
}}
{unprivileged}service imap-login {{
{login_chroot}  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
",
        internal = internal_user.name,
        internal_group = internal_group.name,
        // Only root may chroot, which dovecot does by default for the login and anvil processes.
        unprivileged = if root {
            ""
        } else {
            "service anvil {\n  chroot =\n}\n"
        },
        login_chroot = if root { "" } else { "  chroot =\n" },
        login = login_user.name,
        mail = mail_user.name,
        mail_uid = mail_user.uid,
        mail_gid = mail_user.gid,
    );
    fs::write(dir.join("dovecot.conf"), config).unwrap();
    mail_user
}

/// Connects until a greeting arrives, or the master exits (the port was taken, or the
/// configuration is refused), or the wait runs out.
async fn wait_for_greeting(port: u16, child: &mut Child) -> Result<(), String> {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Err(format!("dovecot exited: {status}"));
        }
        if let Ok(Ok(stream)) = timeout(
            Duration::from_secs(1),
            TcpStream::connect(("127.0.0.1", port)),
        )
        .await
        {
            let mut line = String::new();
            let mut reader = BufReader::new(stream);
            if let Ok(Ok(_)) = timeout(Duration::from_secs(2), reader.read_line(&mut line)).await {
                if line.starts_with("* OK") {
                    return Ok(());
                }
            }
        }
        // Nothing to await until the master has bound its port: poll, briefly.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err("no greeting within the wait".to_owned())
}

/// Stops processes with SIGSTOP; SIGCONT when dropped, whatever happened in between.
struct Stopped(Vec<Pid>);

impl Stopped {
    fn stop(pids: Vec<Pid>) -> Stopped {
        let mut stopped = Stopped(Vec::new());
        for pid in pids {
            // Record first, so that the guard continues it even if the assert below fails.
            stopped.0.push(pid);
            // A process may have exited since it was listed; that is fine.
            let _ = kill(pid, Signal::SIGSTOP);
        }
        stopped
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        for &pid in &self.0 {
            let _ = kill(pid, Signal::SIGCONT);
        }
    }
}

/// Awaits a check that is meant to end by its own timeout, so that a probe ignoring its timeout
/// fails the test instead of hanging it.
async fn bounded(check: impl std::future::Future<Output = Outcome>) -> Outcome {
    timeout(WAIT, check)
        .await
        .expect("the check ends within its own timeout")
}

fn error_of(outcome: Outcome) -> String {
    match outcome {
        Outcome::Failure { status, error } => {
            assert_eq!(status, None);
            error
        }
        Outcome::Success { .. } => panic!("expected a failure"),
    }
}

// ---------------------------------------------------------------------------------------------
// Against dovecot

#[tokio::test]
async fn a_good_login_and_mailbox_succeed() {
    let dovecot = Dovecot::start().await;
    let probe = dovecot.probe("alice", "secret", "INBOX", None);
    let mut took = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        let outcome = probe.check().await;
        took.push(start.elapsed());
        assert_eq!(
            outcome,
            Outcome::Success { status: None },
            "log:\n{}",
            dovecot.log()
        );
    }
    took.sort();
    eprintln!(
        "imap check against dovecot: median {:?}, all {took:?}",
        took[2]
    );
    assert_eq!(
        probe.session().await,
        Ok(ImapSession {
            messages: 0,
            header: None
        })
    );
}

#[tokio::test]
async fn passwords_go_quoted_or_as_literals() {
    let dovecot = Dovecot::start().await;
    for (user, password) in USERS {
        let outcome = dovecot.probe(user, password, "INBOX", None).check().await;
        assert_eq!(outcome, Outcome::Success { status: None }, "user {user}");
    }
    // The literal's continuation works for a wrong password too: the answer is the NO.
    let error = error_of(
        dovecot
            .probe("carol", "pässwort", "INBOX", None)
            .check()
            .await,
    );
    assert_eq!(
        error,
        "login: NO [AUTHENTICATIONFAILED] Authentication failed."
    );
}

#[tokio::test]
async fn a_wrong_password_fails_the_login() {
    let dovecot = Dovecot::start().await;
    let error = error_of(dovecot.probe("alice", "wrong", "INBOX", None).check().await);
    assert_eq!(
        error,
        "login: NO [AUTHENTICATIONFAILED] Authentication failed."
    );
    let error = error_of(
        dovecot
            .probe("nobody", "secret", "INBOX", None)
            .check()
            .await,
    );
    assert!(error.starts_with("login: NO "), "{error}");
}

#[tokio::test]
async fn a_missing_mailbox_fails_the_select() {
    let dovecot = Dovecot::start().await;
    let error = error_of(dovecot.probe("alice", "secret", "Nope", None).check().await);
    assert!(
        error.starts_with("select: NO Mailbox doesn't exist: Nope"),
        "{error}"
    );
}

#[tokio::test]
async fn a_header_of_a_delivered_message_is_fetched_as_a_literal() {
    let dovecot = Dovecot::start().await;
    // An empty mailbox: no FETCH is sent, and the check succeeds.
    let probe = dovecot.probe("alice", "secret", "INBOX", Some("Subject"));
    assert_eq!(
        probe.session().await,
        Ok(ImapSession {
            messages: 0,
            header: None
        })
    );

    // The subject holds what a line-based reader would take for the answer to the FETCH.
    dovecot.deliver(
        "alice",
        "1700000000.M1P1.relapse",
        b"From: relapse <relapse@example.org>\r\n\
          To: alice <alice@example.org>\r\n\
          Subject: a3 NO {5}\r\n\
          \x20a3 OK folded\r\n\
          \r\n\
          Hello.\r\n",
    );
    assert_eq!(probe.check().await, Outcome::Success { status: None });
    assert_eq!(
        probe.session().await,
        Ok(ImapSession {
            messages: 1,
            header: Some(b"Subject: a3 NO {5}\r\n a3 OK folded\r\n\r\n".to_vec()),
        }),
        "log:\n{}",
        dovecot.log()
    );
    // A header the message lacks is still an answer: the blank line alone.
    let probe = dovecot.probe("alice", "secret", "INBOX", Some("X-Missing"));
    assert_eq!(
        probe.session().await.map(|session| session.header),
        Ok(Some(b"\r\n".to_vec()))
    );
}

#[tokio::test]
async fn a_stopped_dovecot_times_out_and_recovers_when_continued() {
    let dovecot = Dovecot::start().await;
    let probe = dovecot.probe("alice", "secret", "INBOX", Some("Subject"));
    assert_eq!(probe.check().await, Outcome::Success { status: None });

    let short =
        ImapProbe::new(&dovecot.address(), "alice", "secret", "INBOX", None, SHORT).unwrap();
    {
        let processes = dovecot.processes();
        assert!(
            processes.len() > 1,
            "the master has children: {processes:?}"
        );
        let _stopped = Stopped::stop(processes);
        // The kernel still completes the handshake on the master's listening socket, but no
        // process is left to greet.
        let start = Instant::now();
        let error = error_of(bounded(short.check()).await);
        let took = start.elapsed();
        assert_eq!(error, "greeting: timeout");
        assert!(took >= SHORT && took < SHORT + TOLERANCE, "took {took:?}");
    }
    let outcome = probe.check().await;
    assert_eq!(
        outcome,
        Outcome::Success { status: None },
        "log:\n{}",
        dovecot.log()
    );
}

// ---------------------------------------------------------------------------------------------
// Against scripted servers

/// Accepts connections and says nothing on them, holding them open.
async fn silent_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            held.push(stream);
        }
    });
    address
}

/// Greets, then answers each command line with what `answer` gives for it (nothing: hang).
async fn scripted_server(answer: fn(&str) -> Option<Vec<u8>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                write.write_all(b"* OK scripted ready\r\n").await.unwrap();
                while let Ok(Some(line)) = lines.next_line().await {
                    match answer(&line) {
                        Some(reply) => write.write_all(&reply).await.unwrap(),
                        None => std::future::pending::<()>().await,
                    }
                }
            });
        }
    });
    address
}

fn probe_at(address: &str, header: Option<&str>, timeout: Duration) -> ImapProbe {
    ImapProbe::new(
        address,
        "alice",
        "secret",
        "INBOX",
        header.map(str::to_owned),
        timeout,
    )
    .unwrap()
}

#[tokio::test]
async fn a_silent_server_times_out_at_the_greeting() {
    let address = silent_server().await;
    let start = Instant::now();
    let error = error_of(bounded(probe_at(&address, None, SHORT).check()).await);
    let took = start.elapsed();
    assert_eq!(error, "greeting: timeout");
    assert!(took >= SHORT && took < SHORT + TOLERANCE, "took {took:?}");
}

#[tokio::test]
async fn a_hang_after_login_names_the_select() {
    let address = scripted_server(|line| {
        line.starts_with("a1 LOGIN")
            .then(|| b"a1 OK Logged in\r\n".to_vec())
    })
    .await;
    let start = Instant::now();
    let error = error_of(bounded(probe_at(&address, None, SHORT).check()).await);
    let took = start.elapsed();
    assert_eq!(error, "select: timeout");
    assert!(took >= SHORT && took < SHORT + TOLERANCE, "took {took:?}");
}

#[tokio::test]
async fn a_refused_port_fails_the_connect() {
    let address = format!("127.0.0.1:{}", free_port());
    let error = error_of(probe_at(&address, None, WAIT).check().await);
    assert_eq!(error, "connect: refused");
}

#[tokio::test]
async fn a_literal_is_read_by_length_even_when_it_looks_like_answers() {
    let address = scripted_server(|line| {
        let tag = line.split(' ').next().unwrap_or_default();
        Some(match tag {
            "a2" => {
                b"* 3 EXISTS\r\n* 0 RECENT\r\na2 OK [READ-WRITE] Select completed.\r\n".to_vec()
            }
            "a3" => {
                let trap = b"Subject: x\r\na3 NO trap\r\n* BYE trap {5}\r\n\r\n";
                let mut reply = format!(
                    "* 1 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {{{}}}\r\n",
                    trap.len()
                )
                .into_bytes();
                reply.extend_from_slice(trap);
                reply.extend_from_slice(b")\r\na3 OK Fetch completed.\r\n");
                reply
            }
            "a4" => b"* BYE Logging out\r\na4 OK Logout completed.\r\n".to_vec(),
            tag => format!("{tag} OK done\r\n").into_bytes(),
        })
    })
    .await;
    let session = probe_at(&address, Some("Subject"), WAIT).session().await;
    assert_eq!(
        session,
        Ok(ImapSession {
            messages: 3,
            header: Some(b"Subject: x\r\na3 NO trap\r\n* BYE trap {5}\r\n\r\n".to_vec()),
        })
    );
}

#[tokio::test]
async fn a_server_closing_after_bye_says_so() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        stream.write_all(b"* OK ready\r\n").await.unwrap();
        let mut command = [0; 256];
        let _ = stream.read(&mut command).await.unwrap();
        // Refuses the login with a BYE and hangs up, as a server shutting down does.
        stream
            .write_all(b"* BYE [UNAVAILABLE] Server shutting down.\r\n")
            .await
            .unwrap();
        // Dropping the stream closes the connection.
    });
    let error = error_of(probe_at(&address, None, WAIT).check().await);
    assert_eq!(error, "login: BYE [UNAVAILABLE] Server shutting down.");
}

#[tokio::test]
async fn an_overlong_response_is_an_error_not_memory() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        // A greeting line that never ends; the probe must stop reading it past its limit.
        let junk = vec![b'x'; 64 * 1024];
        loop {
            if stream.write_all(&junk).await.is_err() {
                break;
            }
        }
    });
    let error = error_of(probe_at(&address, None, WAIT).check().await);
    assert_eq!(error, "greeting: response longer than 1048576 bytes");
}
