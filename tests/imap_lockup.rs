//! The OpenSRS Cluster B incident against a real dovecot (package `dovecot-imapd`): the mail
//! store's file system locks up and IMAP hangs, rather than failing. The test starts dovecot with
//! its maildir on a file system relapse made (a scratch ext4, or an fs_gate mount), checks it with
//! relapse's IMAP probe, injects relapse's own file-system faults, and checks again.
//!
//! A lockup shows where the mail is touched: the greeting and LOGIN answer, SELECT does not
//! (dovecot moves a newly delivered message from `new/` to `cur/` and writes its index and
//! uidlist). Each test ends everything it started whatever happens, in this order: revert the
//! fault, stop dovecot, unmount, remove the scratch file system; locals drop in reverse order of
//! declaration, so they are declared the other way round. Needs root (FIFREEZE, loop devices,
//! FUSE mounts), as in CI.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::{Group, Pid, User};
use relapse_core::fault::Fault;
use relapse_core::sense::{Outcome, Probe};
use relapse_fs::{
    FreezeRecord, FsFreeze, FsGateFault, Gate, GateErrno, GateMode, HolderLauncher, Scope,
    ScratchFs,
};
use relapse_probe::{ImapProbe, ImapSession};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

/// Upper bound for anything the tests wait for; generous so a loaded CI machine does not flake.
const WAIT: Duration = Duration::from_secs(10);

/// The probe timeout where a check is expected to fail.
const SHORT: Duration = Duration::from_secs(1);

/// How late past its timeout a timed-out check may return.
const TOLERANCE: Duration = Duration::from_millis(500);

const USER: &str = "alice";
const PASSWORD: &str = "secret";

fn helper(kind: &str) -> HolderLauncher {
    HolderLauncher {
        program: env!("CARGO_BIN_EXE_relapse").into(),
        args: vec!["__helper".into(), kind.into()],
    }
}

// ---------------------------------------------------------------------------------------------
// A dovecot of the test's own

/// A dovecot master process the test started. Its configuration, sockets, state and logs are in
/// `dir` (never on the file system under test); the mail is under `mail_root`.
struct Dovecot {
    dir: PathBuf,
    mail_root: PathBuf,
    /// The master; taken by `drop`.
    child: Option<Child>,
    port: u16,
    /// Whom the mail processes run as; the mail the test writes must belong to them.
    mail_user: User,
}

impl Dovecot {
    /// Makes `USER`'s maildir at `mail_root/USER`, writes a configuration into `dir` (which must
    /// not exist yet) and starts dovecot, waiting until it greets. A port taken between choosing
    /// and binding it makes dovecot exit at once; then it is tried again on another port.
    async fn start(dir: &Path, mail_root: &Path) -> Dovecot {
        let version = Command::new(dovecot_binary())
            .arg("--version")
            .output()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot run dovecot ({error}): install it with apt-get install dovecot-imapd"
                )
            });
        assert!(version.status.success(), "dovecot --version failed");

        let mail_user = mail_user();
        make_maildir(mail_root, &mail_user);
        let mut last_log = String::new();
        for attempt in 0..3 {
            let dir = dir.join(format!("attempt-{attempt}"));
            let port = free_port();
            write_config(&dir, mail_root, port, &mail_user);
            let output = fs::File::create(dir.join("log/stdout")).unwrap();
            let mut child = Command::new(dovecot_binary())
                .arg("-F")
                .arg("-c")
                .arg(dir.join("dovecot.conf"))
                .stdin(Stdio::null())
                .stdout(output.try_clone().unwrap())
                .stderr(output)
                .spawn()
                .unwrap();
            match wait_for_greeting(port, &mut child).await {
                Ok(()) => {
                    return Dovecot {
                        dir,
                        mail_root: mail_root.to_owned(),
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
                        fs::read_to_string(dir.join("log/stdout")).unwrap_or_default(),
                        fs::read_to_string(dir.join("log/dovecot.log")).unwrap_or_default()
                    );
                }
            }
        }
        panic!("dovecot did not start:\n{last_log}");
    }

    fn probe(&self, timeout: Duration) -> ImapProbe {
        ImapProbe::new(
            &format!("127.0.0.1:{}", self.port),
            USER,
            PASSWORD,
            "INBOX",
            None,
            timeout,
        )
        .unwrap()
    }

    /// Delivers a message to the INBOX the way a local delivery agent does: written in `tmp/`,
    /// owned by the mail user, then renamed into `new/`.
    fn deliver(&self, name: &str) {
        let maildir = self.mail_root.join(USER);
        let tmp = maildir.join("tmp").join(name);
        fs::write(
            &tmp,
            format!(
                "From: relapse <relapse@example.org>\r\n\
                 To: {USER} <{USER}@example.org>\r\n\
                 Subject: {name}\r\n\
                 \r\n\
                 Hello.\r\n"
            ),
        )
        .unwrap();
        chown_to(&tmp, &self.mail_user);
        fs::rename(&tmp, maildir.join("new").join(name)).unwrap();
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("log/dovecot.log")).unwrap_or_default()
    }
}

impl Drop for Dovecot {
    /// SIGTERM to the master, which ends its children; SIGKILL if it is not gone within the wait.
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = Pid::from_raw(child.id() as i32);
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

fn by_name(name: &str) -> User {
    User::from_name(name)
        .unwrap()
        .unwrap_or_else(|| panic!("no user {name}: is dovecot-core installed?"))
}

/// As root, dovecot runs the mail processes as `dovenull` (the Debian package's unprivileged
/// user); the tests need root for the file systems anyway.
fn mail_user() -> User {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests need root: they freeze and mount file systems"
    );
    by_name("dovenull")
}

fn chown_to(path: &Path, user: &User) {
    std::os::unix::fs::chown(path, Some(user.uid.as_raw()), Some(user.gid.as_raw())).unwrap();
}

/// `mail_root` (created if missing, world-traversable) and `mail_root/USER/{cur,new,tmp}` owned
/// by the mail user.
fn make_maildir(mail_root: &Path, mail_user: &User) {
    fs::create_dir_all(mail_root).unwrap();
    fs::set_permissions(mail_root, fs::Permissions::from_mode(0o755)).unwrap();
    let home = mail_root.join(USER);
    fs::create_dir(&home).unwrap();
    chown_to(&home, mail_user);
    for sub in ["cur", "new", "tmp"] {
        fs::create_dir(home.join(sub)).unwrap();
        chown_to(&home.join(sub), mail_user);
    }
}

/// Writes the configuration and the password file under `dir` (a new directory), the mail under
/// `mail_root`. The login processes run as `dovenull`, the internal ones as `dovecot`, so `dir`
/// is 0755 and the password file 0644.
fn write_config(dir: &Path, mail_root: &Path, port: u16, mail_user: &User) {
    let login_user = by_name("dovenull");
    let internal_user = by_name("dovecot");
    // The group of the internal sockets: dovecot chowns them to it.
    let internal_group = Group::from_gid(internal_user.gid).unwrap().unwrap();

    fs::create_dir_all(dir).unwrap();
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    for sub in ["run", "state", "log"] {
        fs::create_dir(dir.join(sub)).unwrap();
    }
    fs::write(
        dir.join("passwd"),
        format!("{USER}:{{PLAIN}}{PASSWORD}::::::\n"),
    )
    .unwrap();
    fs::set_permissions(dir.join("passwd"), fs::Permissions::from_mode(0o644)).unwrap();

    let d = dir.display();
    let m = mail_root.display();
    let config = format!(
        "# Written by relapse's tests/imap_lockup.rs; dovecot 2.3 syntax.
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/log/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
auth_failure_delay = 0
default_internal_user = {internal}
default_internal_group = {internal_group}
default_login_user = {login}
mail_uid = {mail}
mail_gid = {mail_gid}
first_valid_uid = {mail_uid}
first_valid_gid = {mail_gid}
mail_location = maildir:{m}/%u
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {d}/passwd
}}
userdb {{
  driver = passwd-file
  args = {d}/passwd
  default_fields = home={m}/%u
}}
service imap-login {{
  inet_listener imap {{
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
        login = login_user.name,
        mail = mail_user.name,
        mail_uid = mail_user.uid,
        mail_gid = mail_user.gid,
    );
    fs::write(dir.join("dovecot.conf"), config).unwrap();
}

/// Connects until a greeting arrives, or the master exits, or the wait runs out.
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

// ---------------------------------------------------------------------------------------------
// Checks and cleanup

/// Runs a check, bounded so that a probe ignoring its timeout fails the test instead of hanging
/// it; returns its error (or `None` for a success) and how long it took.
async fn timed_check(probe: &ImapProbe) -> (Option<String>, Duration) {
    let start = Instant::now();
    let outcome = timeout(WAIT + WAIT, probe.check())
        .await
        .expect("the check ends within its own timeout");
    let took = start.elapsed();
    match outcome {
        Outcome::Success { .. } => (None, took),
        Outcome::Failure { status, error } => {
            assert_eq!(status, None);
            (Some(error), took)
        }
    }
}

/// A check that must succeed, and see `messages` messages.
async fn assert_healthy(dovecot: &Dovecot, messages: u32, when: &str) -> Duration {
    let probe = dovecot.probe(WAIT);
    let (error, took) = timed_check(&probe).await;
    assert_eq!(error, None, "{when}; log:\n{}", dovecot.log());
    assert_eq!(
        probe.session().await,
        Ok(ImapSession {
            messages,
            header: None
        }),
        "{when}; log:\n{}",
        dovecot.log()
    );
    took
}

/// Thaws a file system by its record when dropped: the last resort should the fault's own guard
/// not have (it is idempotent, and harmless on a file system that is not frozen).
struct ThawGuard(FreezeRecord);

impl Drop for ThawGuard {
    fn drop(&mut self) {
        let _ = relapse_fs::revert_record(&self.0);
    }
}

/// Nothing mounted under `dir`, and no loop device left on `image`.
fn assert_nothing_mounted_under(dir: &Path, image: Option<&Path>) {
    let dir = fs::canonicalize(dir).unwrap();
    let mounts = fs::read_to_string("/proc/mounts").unwrap();
    let under: Vec<&str> = mounts
        .lines()
        .filter(|line| line.contains(dir.to_str().unwrap()))
        .collect();
    assert!(under.is_empty(), "mounts left: {under:?}");
    if let Some(image) = image {
        let out = Command::new("losetup")
            .arg("-j")
            .arg(image)
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "",
            "loop devices left"
        );
    }
}

/// A tempdir dovecot's unprivileged users may traverse.
fn test_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

// ---------------------------------------------------------------------------------------------
// fs_freeze

#[tokio::test]
async fn a_frozen_mail_store_hangs_select_not_login_and_the_thaw_recovers_it() {
    let dir = test_dir();
    let scratch = ScratchFs::create(dir.path(), "mail", 64 << 20, &mut |_, _| Ok(()))
        .expect("a scratch file system");
    let image = scratch.image().to_owned();
    let mountpoint = scratch.mountpoint().to_owned();
    let dovecot = Dovecot::start(&dir.path().join("dovecot"), &mountpoint.join("mail")).await;
    let _thaw = ThawGuard(FreezeRecord {
        mountpoint: mountpoint.clone(),
        st_dev: scratch.st_dev(),
    });
    let mut freeze = FsFreeze::new(&mountpoint, helper("fs_freeze"), &[]).unwrap();

    // Healthy: one message delivered and indexed.
    dovecot.deliver("1700000001.M1P1.relapse");
    let healthy = assert_healthy(&dovecot, 1, "before the freeze").await;

    // A new message right before the freeze: the next SELECT must move it to cur/ and write the
    // index and the uidlist, none of which a frozen file system lets through.
    dovecot.deliver("1700000002.M2P2.relapse");
    let effective = freeze.inject().await.expect("frozen");
    let (error, during) = timed_check(&dovecot.probe(SHORT)).await;
    // The greeting and LOGIN answered; the SELECT hung until the probe gave up.
    assert_eq!(
        error.as_deref(),
        Some("select: timeout"),
        "log:\n{}",
        dovecot.log()
    );
    assert!(
        during >= SHORT && during < SHORT + TOLERANCE,
        "took {during:?}"
    );

    let thaw_started = Instant::now();
    let reverted = freeze.revert().await.expect("thawed");
    let thawed = thaw_started.elapsed();
    let after = assert_healthy(&dovecot, 2, "after the thaw").await;
    eprintln!(
        "fs_freeze: healthy check {healthy:?}; frozen ({}): check failed after {during:?}; \
         thaw {thawed:?} ({}); first check after it {after:?}",
        effective.detail, reverted.detail
    );

    // Cleanup in order, asserting each step: fault, dovecot, file system.
    drop(freeze);
    drop(dovecot);
    let said = scratch.remove().expect("removed");
    assert!(said.contains("unmounted"), "{said}");
    assert_nothing_mounted_under(dir.path(), Some(&image));
    assert!(!image.exists(), "{} left", image.display());
}

// ---------------------------------------------------------------------------------------------
// fs_gate

/// A gate mirroring a directory of the test's tempdir, and dovecot's mail on the gate's mount.
async fn gated_dovecot(dir: &Path) -> (Gate, Dovecot) {
    let source = dir.join("gate-source");
    let mnt = dir.join("gate.mnt");
    fs::create_dir(&source).unwrap();
    fs::set_permissions(&source, fs::Permissions::from_mode(0o755)).unwrap();
    fs::create_dir(&mnt).unwrap();
    let gate = Gate::start(&source, &mnt, helper("fs_gate"), &mut |_| Ok(()))
        .await
        .expect("a gate");
    let mail_root = gate.mountpoint().join("mail");
    let dovecot = Dovecot::start(&dir.join("dovecot"), &mail_root).await;
    (gate, dovecot)
}

async fn finish_gate(dir: &Path, fault: FsGateFault, dovecot: Dovecot, gate: Gate) {
    drop(fault);
    drop(dovecot);
    gate.stop().await.expect("the gate stopped");
    assert_nothing_mounted_under(dir, None);
}

#[tokio::test]
async fn a_write_stall_through_the_gate_hangs_select_and_the_release_recovers_it() {
    let dir = test_dir();
    let (gate, dovecot) = gated_dovecot(dir.path()).await;
    let mut fault = FsGateFault::new(gate.handle(), GateMode::Stall(Scope::Writes)).unwrap();

    dovecot.deliver("1700000001.M1P1.relapse");
    let healthy = assert_healthy(&dovecot, 1, "before the stall").await;

    dovecot.deliver("1700000002.M2P2.relapse");
    let effective = fault.inject().await.expect("stalled");
    let (error, during) = timed_check(&dovecot.probe(SHORT)).await;
    assert_eq!(
        error.as_deref(),
        Some("select: timeout"),
        "log:\n{}",
        dovecot.log()
    );
    assert!(
        during >= SHORT && during < SHORT + TOLERANCE,
        "took {during:?}"
    );

    let release_started = Instant::now();
    let reverted = fault.revert().await.expect("released");
    let released = release_started.elapsed();
    let after = assert_healthy(&dovecot, 2, "after the release").await;
    eprintln!(
        "fs_gate stall writes: healthy check {healthy:?}; stalled ({}): check failed after \
         {during:?}; release {released:?} ({}); first check after it {after:?}",
        effective.detail, reverted.detail
    );

    finish_gate(dir.path(), fault, dovecot, gate).await;
}

#[tokio::test]
async fn an_io_error_through_the_gate_fails_imap_at_once_and_passing_recovers_it() {
    let dir = test_dir();
    let (gate, dovecot) = gated_dovecot(dir.path()).await;
    let mut fault = FsGateFault::new(
        gate.handle(),
        GateMode::Error {
            scope: Scope::All,
            errno: GateErrno::Eio,
        },
    )
    .unwrap();

    dovecot.deliver("1700000001.M1P1.relapse");
    let healthy = assert_healthy(&dovecot, 1, "before the errors").await;

    dovecot.deliver("1700000002.M2P2.relapse");
    let effective = fault.inject().await.expect("failing");
    let (error, during) = timed_check(&dovecot.probe(SHORT)).await;
    // An error, not a hang: dovecot answers NO, long before the probe would give up.
    let error = error.unwrap_or_else(|| panic!("the check succeeded; log:\n{}", dovecot.log()));
    assert!(
        error.starts_with("select: NO") || error.starts_with("login: NO"),
        "{error}; log:\n{}",
        dovecot.log()
    );
    assert!(during < SHORT / 2, "took {during:?}: {error}");

    let revert_started = Instant::now();
    let reverted = fault.revert().await.expect("passing");
    let passing = revert_started.elapsed();
    let after = assert_healthy(&dovecot, 2, "after the errors").await;
    eprintln!(
        "fs_gate error all EIO: healthy check {healthy:?}; failing ({}): {error:?} after \
         {during:?}; revert {passing:?} ({}); first check after it {after:?}",
        effective.detail, reverted.detail
    );

    finish_gate(dir.path(), fault, dovecot, gate).await;
}
