//! fs_gate against real processes: a daemon mirroring a tempdir at a mountpoint the test makes,
//! writers and readers as child processes. Every test's guard unmounts and ends the daemon even
//! when the test fails, and each test checks /proc/mounts at its end.

mod common;

use std::io::{Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{exits_within, gone_within, holder, in_proc_mounts};
use relapse_core::fault::{Fault, RevertInstructions};
use relapse_fs::gate::revert_record;
use relapse_fs::{FsGateFault, Gate, GateErrno, GateMode, GateRecord, Scope, GATE_KIND};
use tokio::io::AsyncBufReadExt;

/// A source directory and a mountpoint under one tempdir, and the gate between them.
struct TestGate {
    dir: tempfile::TempDir,
    gate: Option<Gate>,
    record: Option<GateRecord>,
    children: Vec<tokio::process::Child>,
}

impl TestGate {
    async fn new() -> TestGate {
        let dir = tempfile::tempdir().unwrap();
        // Others may traverse it: one test writes as another user.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir(dir.path().join("source")).unwrap();
        std::fs::create_dir(dir.path().join("mnt")).unwrap();
        let mut t = TestGate {
            dir,
            gate: None,
            record: None,
            children: Vec::new(),
        };
        let mut journaled = None;
        let gate = Gate::start(&t.source(), &t.mnt(), holder(), &mut |record| {
            // Journaled before the mount exists.
            assert!(!in_proc_mounts(&record.mountpoint));
            journaled = Some(record.clone());
            Ok(())
        })
        .await
        .expect("a gate");
        assert_eq!(journaled.as_ref(), Some(gate.record()));
        t.record = journaled;
        t.gate = Some(gate);
        t
    }

    fn source(&self) -> PathBuf {
        std::fs::canonicalize(self.dir.path())
            .unwrap()
            .join("source")
    }

    fn mnt(&self) -> PathBuf {
        std::fs::canonicalize(self.dir.path()).unwrap().join("mnt")
    }

    fn gate(&self) -> &Gate {
        self.gate.as_ref().unwrap()
    }

    /// Stops the gate and checks nothing is left mounted and the daemon is gone.
    async fn finish(mut self) {
        let pid = self.gate().daemon_pid();
        let said = self.gate.take().unwrap().stop().await.unwrap();
        assert!(said.contains("unmounted"), "{said}");
        assert!(!in_proc_mounts(&self.mnt()));
        assert!(gone_within(pid, Duration::from_secs(2)).await);
    }
}

impl Drop for TestGate {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.start_kill();
        }
        drop(self.gate.take());
        if let Some(record) = &self.record {
            let _ = revert_record(record);
        }
        let mnt = self.dir.path().join("mnt");
        if in_proc_mounts(&mnt) {
            let _ = nix::mount::umount2(&mnt, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// The same maildir-like sequence of operations; what each returned, as text.
fn maildir_round_trip(root: &Path) -> Vec<String> {
    let mut seen = Vec::new();
    let mut note = |what: &str, r: std::io::Result<String>| {
        seen.push(format!(
            "{what}: {}",
            r.unwrap_or_else(|e| format!("error {:?}", e.raw_os_error()))
        ))
    };
    for d in ["tmp", "new", "cur"] {
        note(
            "mkdir",
            std::fs::create_dir(root.join(d)).map(|()| d.into()),
        );
    }
    note(
        "mkdir again",
        std::fs::create_dir(root.join("tmp")).map(|()| String::new()),
    );
    let tmp = root.join("tmp/1.msg");
    note(
        "create+write+fsync",
        (|| {
            let mut f = std::fs::File::create_new(&tmp)?;
            f.write_all(b"Subject: hi\n\nbody\n")?;
            f.sync_all()?;
            Ok("done".into())
        })(),
    );
    note(
        "rename",
        std::fs::rename(&tmp, root.join("new/1.msg")).map(|()| "done".into()),
    );
    let list = |dir: &str| -> std::io::Result<String> {
        let mut names: Vec<String> = std::fs::read_dir(root.join(dir))?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()?;
        names.sort();
        Ok(names.join(","))
    };
    note("list new", list("new"));
    note("list tmp", list("tmp"));
    note("read", std::fs::read_to_string(root.join("new/1.msg")));
    note(
        "stat",
        std::fs::metadata(root.join("new/1.msg"))
            .map(|m| format!("{} {:o}", m.len(), m.mode() & 0o777)),
    );
    note(
        "chmod",
        std::fs::set_permissions(
            root.join("new/1.msg"),
            std::fs::Permissions::from_mode(0o600),
        )
        .and_then(|()| std::fs::metadata(root.join("new/1.msg")))
        .map(|m| format!("{:o}", m.mode() & 0o777)),
    );
    note(
        "append+truncate",
        (|| {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(root.join("new/1.msg"))?;
            f.write_all(b"more\n")?;
            drop(f);
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(root.join("new/1.msg"))?;
            f.set_len(7)?;
            let mut s = String::new();
            std::fs::File::open(root.join("new/1.msg"))?.read_to_string(&mut s)?;
            Ok(s)
        })(),
    );
    note(
        "read+seek",
        (|| {
            let mut f = std::fs::File::open(root.join("new/1.msg"))?;
            f.seek(std::io::SeekFrom::Start(2))?;
            let mut s = String::new();
            f.read_to_string(&mut s)?;
            Ok(s)
        })(),
    );
    note(
        "rename into cur",
        std::fs::rename(root.join("new/1.msg"), root.join("cur/1.msg:2,S")).map(|()| "done".into()),
    );
    note("list cur", list("cur"));
    note("missing", std::fs::read_to_string(root.join("new/1.msg")));
    note(
        "unlink",
        std::fs::remove_file(root.join("cur/1.msg:2,S")).map(|()| "done".into()),
    );
    note(
        "rmdir nonempty",
        std::fs::create_dir(root.join("cur/x"))
            .and_then(|()| std::fs::remove_dir(root.join("cur")))
            .map(|()| String::new()),
    );
    note(
        "rmdir",
        std::fs::remove_dir(root.join("cur/x")).map(|()| "done".into()),
    );
    note("list root", list("."));
    seen
}

#[tokio::test]
async fn a_maildir_round_trip_through_the_gate_gives_what_the_bare_directory_gives() {
    let t = TestGate::new().await;
    let bare = tempfile::tempdir().unwrap();
    let mnt = t.mnt();
    let through = tokio::task::spawn_blocking(move || maildir_round_trip(&mnt))
        .await
        .unwrap();
    let direct = maildir_round_trip(bare.path());
    assert_eq!(through, direct);
    assert!(
        through.contains(&"list root: cur,new,tmp".to_string()),
        "{through:?}"
    );
    // It happened on the source.
    assert!(t.source().join("new").is_dir());
    assert_eq!(
        std::fs::read_dir(t.source().join("cur")).unwrap().count(),
        0
    );

    // A file another user creates through the root daemon is that user's.
    std::fs::set_permissions(
        t.source().join("tmp"),
        std::fs::Permissions::from_mode(0o777),
    )
    .unwrap();
    let status = tokio::process::Command::new("setpriv")
        .args(["--reuid=4242", "--regid=4343", "--clear-groups", "sh", "-c"])
        .arg("echo x > \"$1\" && mkdir \"$2\"")
        .arg("sh")
        .arg(t.mnt().join("tmp/by-4242"))
        .arg(t.mnt().join("tmp/dir-4242"))
        .status()
        .await
        .unwrap();
    assert!(status.success());
    for name in ["tmp/by-4242", "tmp/dir-4242"] {
        let md = std::fs::metadata(t.source().join(name)).unwrap();
        assert_eq!((md.uid(), md.gid()), (4242, 4343), "{name}");
    }
    // And the kernel checks permissions against the mirrored modes.
    let denied = tokio::process::Command::new("setpriv")
        .args(["--reuid=4242", "--regid=4343", "--clear-groups", "sh", "-c"])
        .arg("echo x > \"$1\"")
        .arg("sh")
        .arg(t.mnt().join("new/not-yours"))
        .stderr(Stdio::null())
        .status()
        .await
        .unwrap();
    assert!(!denied.success());
    assert!(!t.source().join("new/not-yours").exists());
    t.finish().await;
}

/// A writer that does what a mail delivery does: create, write, fsync.
fn start_writer(file: &Path) -> tokio::process::Child {
    tokio::process::Command::new("sh")
        .args(["-c", "echo written > \"$1\" && sync \"$1\"", "sh"])
        .arg(file)
        .kill_on_drop(true)
        .spawn()
        .expect("sh")
}

#[tokio::test]
async fn a_write_stall_parks_a_writer_but_not_reads_and_releases_it_on_revert() {
    let mut t = TestGate::new().await;
    let mnt = t.mnt();
    std::fs::write(mnt.join("before"), "read me").unwrap();
    // The writer works in a subdirectory: a parked create holds its directory's lock in the
    // kernel, so a second create beside the canary's would wait in the VFS, not in the gate.
    std::fs::create_dir(mnt.join("tmp")).unwrap();
    let handle = t.gate().handle();
    let mut fault = FsGateFault::new(handle.clone(), GateMode::Stall(Scope::Writes)).unwrap();
    assert_eq!(
        fault.revert_instructions(),
        RevertInstructions::new(t.gate().record())
    );
    assert_eq!(fault.revert_instructions().kind, GATE_KIND);

    for round in 1..=2 {
        let effective = fault.inject().await.unwrap();
        assert!(
            effective.detail.contains("parked=1"),
            "{}",
            effective.detail
        );
        // The canary's write, on a file it created before the stall.
        let canary = fault.canary_pid().unwrap();
        assert!(
            effective.detail.contains(&format!("pid={canary} write")),
            "{}",
            effective.detail
        );

        let writer = start_writer(&mnt.join(format!("tmp/written-{round}")));
        let pid = writer.id().unwrap();
        t.children.push(writer);
        let parked = handle
            .wait_parked(Some(pid), Duration::from_secs(5))
            .await
            .unwrap();
        assert!(
            parked.contains(&format!("pid={pid} create written-{round}")),
            "{parked}"
        );
        let writer = t.children.last_mut().unwrap();
        assert!(
            writer.try_wait().unwrap().is_none(),
            "the writer finished while stalled"
        );

        // Reads, stat and listing go on (on a thread, so a regression fails, not hangs).
        let dir = mnt.clone();
        let reading = tokio::task::spawn_blocking(move || {
            (
                std::fs::read_to_string(dir.join("before")).unwrap(),
                std::fs::metadata(dir.join("before")).unwrap().len(),
                std::fs::read_dir(&dir).unwrap().count(),
            )
        });
        let (content, len, _) = tokio::time::timeout(Duration::from_secs(2), reading)
            .await
            .expect("reads answered while writes are stalled")
            .unwrap();
        assert_eq!((content.as_str(), len), ("read me", 7));
        let status = handle.status().await.unwrap();
        assert_eq!(status.mode, "stall writes");
        assert_eq!(status.parked, 2, "the canary's create and the writer's");

        let reverting = Instant::now();
        let reverted = fault.revert().await.unwrap();
        assert!(
            reverted.detail.contains("released=2"),
            "{}",
            reverted.detail
        );
        let writer = t.children.last_mut().unwrap();
        let status = exits_within(writer, Duration::from_secs(1)).await.unwrap();
        let released_in = reverting.elapsed();
        assert!(status.success());
        assert!(
            released_in < Duration::from_millis(100),
            "the writer finished {released_in:?} after the revert began"
        );
        assert_eq!(
            std::fs::read_to_string(t.source().join(format!("tmp/written-{round}"))).unwrap(),
            "written\n"
        );
        eprintln!("round {round}: parked writer finished {released_in:?} after revert began");
    }
    // No canary is left behind.
    let left: Vec<_> = std::fs::read_dir(t.source())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".relapse"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    drop(fault);
    t.finish().await;
}

#[tokio::test]
async fn a_stall_of_all_parks_a_stat_too() {
    let t = TestGate::new().await;
    std::fs::write(t.mnt().join("f"), "x").unwrap();
    let handle = t.gate().handle();
    let mut fault = FsGateFault::new(handle.clone(), GateMode::Stall(Scope::All)).unwrap();
    fault.inject().await.unwrap();
    let mut stat = tokio::process::Command::new("stat")
        .arg(t.mnt().join("f"))
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = stat.id().unwrap();
    let parked = handle
        .wait_parked(Some(pid), Duration::from_secs(5))
        .await
        .unwrap();
    assert!(parked.contains(&format!("pid={pid} ")), "{parked}");
    assert!(stat.try_wait().unwrap().is_none());
    fault.revert().await.unwrap();
    assert!(exits_within(&mut stat, Duration::from_secs(1))
        .await
        .unwrap()
        .success());
    t.finish().await;
}

fn fsync_took(file: &Path) -> Duration {
    let f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    let started = Instant::now();
    f.sync_all().unwrap();
    started.elapsed()
}

#[tokio::test]
async fn latency_on_fsync_adds_at_least_the_latency_to_an_fsync_and_only_there() {
    let t = TestGate::new().await;
    let file = t.mnt().join("f");
    std::fs::write(&file, "x").unwrap();
    let delay = Duration::from_millis(200);
    let mut fault = FsGateFault::new(
        t.gate().handle(),
        GateMode::Latency {
            scope: Scope::Fsync,
            delay,
            jitter: Duration::from_millis(20),
        },
    )
    .unwrap();
    let effective = fault.inject().await.unwrap();
    assert!(
        effective
            .detail
            .contains("acked latency fsync 200000 20000"),
        "{}",
        effective.detail
    );
    let f = file.clone();
    let (write_took, delayed) = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        std::fs::write(&f, "y").unwrap();
        (started.elapsed(), fsync_took(&f))
    })
    .await
    .unwrap();
    assert!(delayed >= delay, "fsync took {delayed:?}");
    assert!(
        delayed < delay + Duration::from_secs(1),
        "fsync took {delayed:?}"
    );
    assert!(
        write_took < delay,
        "a write (not in scope) took {write_took:?}"
    );
    fault.revert().await.unwrap();
    let f = file.clone();
    let after = tokio::task::spawn_blocking(move || fsync_took(&f))
        .await
        .unwrap();
    assert!(after < delay, "fsync after the revert took {after:?}");
    eprintln!("fsync under latency 200ms+20ms jitter: {delayed:?}; after revert: {after:?}");
    t.finish().await;
}

#[tokio::test]
async fn error_modes_fail_writes_with_their_errno_until_reverted() {
    let t = TestGate::new().await;
    let file = t.mnt().join("f");
    std::fs::write(&file, "x").unwrap();
    for (errno, raw) in [
        (GateErrno::Eio, nix::libc::EIO),
        (GateErrno::Enospc, nix::libc::ENOSPC),
        (GateErrno::Erofs, nix::libc::EROFS),
    ] {
        let mut open = std::fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .unwrap();
        let mut fault = FsGateFault::new(
            t.gate().handle(),
            GateMode::Error {
                scope: Scope::Writes,
                errno,
            },
        )
        .unwrap();
        fault.inject().await.unwrap();
        let f = file.clone();
        let (write, create, read) = tokio::task::spawn_blocking(move || {
            (
                open.write_all(b"more").map(|()| open),
                std::fs::File::create(f.with_extension("new")).map(drop),
                std::fs::read_to_string(&f),
            )
        })
        .await
        .unwrap();
        assert_eq!(
            write.err().and_then(|e| e.raw_os_error()),
            Some(raw),
            "{errno:?}"
        );
        assert_eq!(
            create.err().and_then(|e| e.raw_os_error()),
            Some(raw),
            "{errno:?}"
        );
        assert_eq!(read.unwrap(), "x", "reads are not in scope");
        let reverted = fault.revert().await.unwrap();
        assert!(reverted.detail.contains("canary"), "{}", reverted.detail);
        let f = file.clone();
        let after = tokio::task::spawn_blocking(move || {
            std::fs::OpenOptions::new()
                .append(true)
                .open(&f)?
                .write_all(b"")
        })
        .await
        .unwrap();
        assert!(after.is_ok(), "{after:?}");
    }
    assert_eq!(std::fs::read_to_string(t.source().join("f")).unwrap(), "x");
    assert!(!t.source().join("f.new").exists());
    t.finish().await;
}

/// Waits until `pid` waits on a FUSE answer (/proc has no event for it).
async fn waits_on_fuse(pid: u32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if std::fs::read_to_string(format!("/proc/{pid}/wchan"))
            .is_ok_and(|w| w.contains("request_wait_answer"))
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    false
}

#[tokio::test]
async fn killing_the_process_that_holds_the_control_channel_fails_the_gate_open() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let (source, mnt) = (root.join("source"), root.join("mnt"));
    std::fs::create_dir(&source).unwrap();
    std::fs::create_dir(&mnt).unwrap();
    std::fs::create_dir(source.join("tmp")).unwrap();
    let mut t = TestGate {
        dir,
        gate: None,
        record: None,
        children: Vec::new(),
    };
    let mut gater = tokio::process::Command::new(env!("CARGO_BIN_EXE_relapse-fs-gater"))
        .arg(env!("CARGO_BIN_EXE_relapse-fs-holder"))
        .arg(&source)
        .arg(&mnt)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let gater_pid = gater.id().unwrap();
    let mut lines = tokio::io::BufReader::new(gater.stdout.take().unwrap()).lines();
    let mut gater_stdin = gater.stdin.take().unwrap();
    t.children.push(gater);
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let record: GateRecord =
        serde_json::from_str(line.strip_prefix("record ").expect("a record line")).unwrap();
    t.record = Some(record.clone());
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(line.as_deref(), Some("stalled"));

    let writer = start_writer(&mnt.join("tmp/during"));
    let writer_pid = writer.id().unwrap();
    t.children.push(writer);
    use tokio::io::AsyncWriteExt;
    gater_stdin
        .write_all(format!("wait-parked {writer_pid}\n").as_bytes())
        .await
        .unwrap();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        line.contains(&format!("pid={writer_pid} create during")),
        "{line}"
    );
    assert!(waits_on_fuse(writer_pid, Duration::from_secs(2)).await);

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(gater_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let killed = Instant::now();
    let gater = &mut t.children[0];
    assert!(exits_within(gater, Duration::from_secs(2)).await.is_some());
    let writer = &mut t.children[1];
    let status = exits_within(writer, Duration::from_secs(2)).await.unwrap();
    assert!(status.success());
    eprintln!(
        "parked writer finished {:?} after SIGKILL of the controller",
        killed.elapsed()
    );
    assert_eq!(
        std::fs::read_to_string(source.join("tmp/during")).unwrap(),
        "written\n"
    );
    // The daemon lives on and passes everything, writes included.
    assert!(relapse_fs::gate::proc_start_time(record.daemon_pid).is_some());
    let m = mnt.clone();
    let new_ops = tokio::task::spawn_blocking(move || {
        let mut f = std::fs::File::create(m.join("after"))?;
        f.write_all(b"passes")?;
        f.sync_all()?;
        std::fs::rename(m.join("after"), m.join("after2"))?;
        std::fs::read_to_string(m.join("after2"))
    });
    let read = tokio::time::timeout(Duration::from_secs(2), new_ops)
        .await
        .expect("operations pass after the fail-open")
        .unwrap()
        .unwrap();
    assert_eq!(read, "passes");

    // The guardian's part.
    let said = revert_record(&record).unwrap();
    assert!(
        said.contains(&format!("unmounted {}", mnt.display())),
        "{said}"
    );
    assert!(!in_proc_mounts(&mnt));
    assert!(gone_within(record.daemon_pid, Duration::from_secs(2)).await);
}

#[tokio::test]
async fn revert_record_unmounts_a_stalled_gate_ends_its_daemon_and_then_finds_nothing() {
    let mut t = TestGate::new().await;
    let record = t.gate().record().clone();
    let journaled: GateRecord = RevertInstructions::new(&record).decode().unwrap();
    assert_eq!(journaled, record);
    assert_eq!(
        record.fsname(),
        format!(
            "relapse-gate:{}:{}",
            record.daemon_pid, record.daemon_start_time
        )
    );

    // A record of another daemon (a reused pid) touches neither this mount nor this daemon.
    let forged = GateRecord {
        daemon_start_time: record.daemon_start_time + 1,
        ..record.clone()
    };
    let said = revert_record(&forged).unwrap();
    assert!(said.contains("left the mount"), "{said}");
    assert!(in_proc_mounts(&t.mnt()));
    assert!(relapse_fs::gate::proc_start_time(record.daemon_pid).is_some());

    std::fs::create_dir(t.mnt().join("tmp")).unwrap();
    let mut fault = FsGateFault::new(t.gate().handle(), GateMode::Stall(Scope::Writes)).unwrap();
    fault.inject().await.unwrap();
    let writer = start_writer(&t.mnt().join("tmp/stuck"));
    let pid = writer.id().unwrap();
    t.children.push(writer);
    t.gate()
        .handle()
        .wait_parked(Some(pid), Duration::from_secs(5))
        .await
        .unwrap();
    let r = record.clone();
    let said = tokio::task::spawn_blocking(move || revert_record(&r))
        .await
        .unwrap()
        .unwrap();
    assert!(said.contains("unmounted"), "{said}");
    assert!(!in_proc_mounts(&t.mnt()));
    assert!(gone_within(record.daemon_pid, Duration::from_secs(2)).await);
    // Its parked writer is answered (with an error: the file system is gone), not left hanging.
    let writer = t.children.last_mut().unwrap();
    assert!(exits_within(writer, Duration::from_secs(2)).await.is_some());
    let again = revert_record(&record).unwrap();
    assert!(again.starts_with("nothing was left"), "{again}");
    // The fault's own revert now fails (the daemon is gone) rather than pretending.
    assert!(fault.revert().await.is_err());
    drop(fault);
    // And so the gate's stop finds nothing left.
    let said = t.gate.take().unwrap().stop().await.unwrap();
    assert!(said.starts_with("nothing was left"), "{said}");
}

/// create + write + fsync + unlink, `n` times; operations per second.
fn churn(dir: &Path, n: u32) -> f64 {
    let started = Instant::now();
    for i in 0..n {
        let path = dir.join(format!("churn-{i}"));
        let mut f = std::fs::File::create_new(&path).unwrap();
        f.write_all(&[b'x'; 4096]).unwrap();
        f.sync_all().unwrap();
        drop(f);
        std::fs::remove_file(&path).unwrap();
    }
    f64::from(n) / started.elapsed().as_secs_f64()
}

#[tokio::test]
async fn pass_through_cost_of_create_write_fsync_unlink() {
    let t = TestGate::new().await;
    let (mnt, source) = (t.mnt(), t.source());
    let (bare, gated) = tokio::task::spawn_blocking(move || {
        std::fs::create_dir(source.join("bare")).unwrap();
        // Interleaved, so a neighbour's load hits both alike.
        let (mut bare, mut gated) = (0.0, 0.0);
        for _ in 0..3 {
            bare += churn(&source.join("bare"), 100);
            gated += churn(&mnt, 100);
        }
        (bare / 3.0, gated / 3.0)
    })
    .await
    .unwrap();
    eprintln!(
        "create+write 4 KiB+fsync+unlink: bare {bare:.0}/s, through the gate {gated:.0}/s ({:.2}x)",
        bare / gated
    );
    assert!(gated > 0.0 && bare > 0.0);
    assert_eq!(
        std::fs::read_dir(t.mnt()).unwrap().count(),
        1,
        "only bare/ is left"
    );
    t.finish().await;
}
