//! fs_freeze against real loop-mounted ext4 file systems this test makes under a tempdir: a
//! writer blocks while frozen, reads do not, and every way out — revert, a journaled revert, the
//! injector's death — thaws it.

mod common;

use std::time::{Duration, Instant};

use common::{assert_nothing_left, blocked_within, exits_within, gone_within, holder, TestFs};
use relapse_core::fault::{Fault, RevertInstructions};
use relapse_fs::{revert_record, FreezeRecord, FsError, FsFreeze, CANARY_PREFIX};

/// How long a blocked writer may take to finish once thawed (measured: under 1 ms).
const AFTER_THAW: Duration = Duration::from_secs(1);

fn canaries_left(fs: &TestFs) -> Vec<String> {
    std::fs::read_dir(fs.mountpoint())
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(CANARY_PREFIX))
        .collect()
}

#[tokio::test]
async fn a_freeze_blocks_writers_but_not_reads_until_reverted_and_again() {
    let mut fs = TestFs::new();
    let mp = fs.mountpoint();
    std::fs::write(mp.join("before"), "read me").unwrap();
    let mut fault = FsFreeze::new(&mp, holder(), &[fs.dir.path().to_path_buf()]).unwrap();
    assert_eq!(
        fault.record(),
        FreezeRecord {
            mountpoint: mp.clone(),
            st_dev: fs.st_dev()
        }
    );

    for round in 1..=2 {
        let effective = fault.inject().await.unwrap();
        assert!(
            effective.detail.contains("blocked in state D"),
            "{}",
            effective.detail
        );
        assert!(fault.holder_pid().is_some());
        // A second inject while frozen is a no-op, not an EBUSY.
        let again = fault.inject().await.unwrap();
        assert!(
            again.detail.contains("already frozen by this fault"),
            "{}",
            again.detail
        );

        let file = mp.join(format!("written-{round}"));
        let writer = common::start_writer(&file);
        let pid = writer.id().unwrap();
        fs.children.push(writer);
        assert!(
            blocked_within(pid, Duration::from_secs(2)).await,
            "the writer was not blocked (state {:?})",
            common::state(pid)
        );
        // Reads and stat answer while frozen (on a thread, so a regression fails rather than
        // hangs the test).
        let read = mp.join("before");
        let reading = tokio::task::spawn_blocking(move || {
            (
                std::fs::read_to_string(&read),
                std::fs::metadata(&read).map(|m| m.len()),
            )
        });
        let (content, len) = tokio::time::timeout(Duration::from_secs(2), reading)
            .await
            .expect("a read on the frozen fs returned")
            .unwrap();
        assert_eq!(content.unwrap(), "read me");
        assert_eq!(len.unwrap(), 7);
        let writer = fs.children.last_mut().unwrap();
        assert!(
            writer.try_wait().unwrap().is_none(),
            "the writer finished while frozen"
        );

        let started = Instant::now();
        let reverted = fault.revert().await.unwrap();
        let status = exits_within(writer, AFTER_THAW)
            .await
            .expect("the writer finished");
        let writer_done = started.elapsed();
        assert!(status.success());
        assert!(reverted.at >= effective.at);
        assert!(reverted.detail.contains("thawed"), "{}", reverted.detail);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "written\n");
        assert_eq!(fault.holder_pid(), None);
        assert_eq!(fault.canary_pid(), None);
        assert_eq!(canaries_left(&fs), Vec::<String>::new());
        eprintln!(
            "round {round}: freeze {:?}, thaw {:?}, blocked writer done {writer_done:?} after revert began",
            fault.freeze_took().unwrap(),
            fault.thaw_took().unwrap()
        );
        // Idempotent.
        let twice = fault.revert().await.unwrap();
        assert!(
            twice.detail.contains("not frozen by this fault"),
            "{}",
            twice.detail
        );
    }
    drop(fault);
    fs.finish();
}

#[tokio::test]
async fn a_killed_injector_is_thawed_by_its_holder_within_a_second() {
    let mut fs = TestFs::new();
    let mp = fs.mountpoint();
    let mut freezer = tokio::process::Command::new(env!("CARGO_BIN_EXE_relapse-fs-freezer"))
        .arg(env!("CARGO_BIN_EXE_relapse-fs-holder"))
        .arg(&mp)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let freezer_pid = freezer.id().unwrap();
    let mut line = String::new();
    let stdout = freezer.stdout.take().unwrap();
    tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncBufReadExt::read_line(&mut tokio::io::BufReader::new(stdout), &mut line),
    )
    .await
    .expect("the freezer reported")
    .unwrap();
    fs.children.push(freezer);
    let pids: Vec<u32> = line
        .trim()
        .strip_prefix("frozen ")
        .unwrap_or_else(|| panic!("the freezer said {line:?}"))
        .split(' ')
        .map(|p| p.parse().unwrap())
        .collect();
    let (holder_pid, canary_pid) = (pids[0], pids[1]);

    let writer = common::start_writer(&mp.join("after-crash"));
    let writer_pid = writer.id().unwrap();
    fs.children.push(writer);
    assert!(blocked_within(writer_pid, Duration::from_secs(2)).await);
    assert_eq!(common::state(canary_pid), Some('D'));

    // SIGKILL: nothing of the freezer runs any more; only the kernel closing its pipe remains.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(freezer_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let killed = Instant::now();
    let freezer = &mut fs.children[0];
    assert!(exits_within(freezer, Duration::from_secs(1))
        .await
        .is_some());
    let writer = fs.children.last_mut().unwrap();
    let status = exits_within(writer, Duration::from_secs(1))
        .await
        .expect("the holder thawed the file system within 1 s of the kill");
    assert!(status.success());
    eprintln!(
        "thawed by the holder: the blocked writer finished {:?} after the SIGKILL",
        killed.elapsed()
    );
    assert!(
        gone_within(holder_pid, Duration::from_secs(1)).await,
        "the holder is still there"
    );
    assert!(
        gone_within(canary_pid, Duration::from_secs(1)).await,
        "the canary is still there"
    );
    assert_eq!(canaries_left(&fs), Vec::<String>::new());
    fs.finish();
}

#[tokio::test]
async fn revert_record_alone_thaws_a_frozen_fs_and_is_idempotent() {
    let mut fs = TestFs::new();
    let mp = fs.mountpoint();
    let mut fault = FsFreeze::new(&mp, holder(), &[]).unwrap();
    // What the journal would hold, written before the inject and read back.
    let journaled = fault.revert_instructions();
    assert_eq!(journaled.kind, "fs_freeze");
    let record: FreezeRecord = journaled.decode().unwrap();
    assert_eq!(RevertInstructions::new(&record), journaled);
    fault.inject().await.unwrap();
    let writer = common::start_writer(&mp.join("journaled"));
    let pid = writer.id().unwrap();
    fs.children.push(writer);
    assert!(blocked_within(pid, Duration::from_secs(2)).await);

    let said = revert_record(&record).unwrap();
    assert_eq!(said, format!("thawed {} (FITHAW)", mp.display()));
    let writer = fs.children.last_mut().unwrap();
    assert!(exits_within(writer, AFTER_THAW).await.unwrap().success());
    assert_eq!(
        revert_record(&record).unwrap(),
        format!("{} was not frozen", mp.display())
    );
    // The fault finds it thawed: still a success, and its canary completed.
    let reverted = fault.revert().await.unwrap();
    assert!(
        reverted.detail.contains("found thawed already"),
        "{}",
        reverted.detail
    );
    drop(fault);
    let image = fs.record.image.clone();
    let dir = fs.dir.path().to_path_buf();
    fs.finish();
    // The file system is gone: nothing to thaw, and nothing else touched.
    let gone = revert_record(&record).unwrap();
    assert!(gone.starts_with("no mount of device"), "{gone}");
    assert_nothing_left(&dir, &[image]);
}

#[tokio::test]
async fn refuses_the_root_a_directory_that_is_no_mount_and_a_protected_file_system() {
    let fs = TestFs::new();
    let mp = fs.mountpoint();
    assert!(matches!(
        FsFreeze::new("/".as_ref(), holder(), &[]),
        Err(FsError::Root(p)) if p == std::path::Path::new("/")
    ));
    std::fs::create_dir(mp.join("sub")).unwrap();
    let err = FsFreeze::new(&mp.join("sub"), holder(), &[]).err().unwrap();
    assert!(matches!(err, FsError::NotMountRoot(_)), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "refusing to freeze {}/sub: it is not the root of a mount",
            mp.display()
        )
    );
    // A directory on the root file system that is not a mount: /etc, /usr, …
    assert!(FsFreeze::new("/etc".as_ref(), holder(), &[]).is_err());

    std::fs::create_dir(mp.join("state")).unwrap();
    let protected = mp.join("state");
    let err = FsFreeze::new(&mp, holder(), &[fs.dir.path().into(), protected.clone()])
        .err()
        .unwrap();
    assert_eq!(
        err.to_string(),
        format!(
            "refusing to freeze {}: {} is on that file system and must stay writable",
            mp.display(),
            protected.display()
        )
    );
    // One that does not exist yet counts where it would be created.
    let future = mp.join("not/yet/there");
    assert!(matches!(
        FsFreeze::new(&mp, holder(), &[future]),
        Err(FsError::Protected { .. })
    ));
    // Paths elsewhere do not stop it.
    assert!(FsFreeze::new(
        &mp,
        holder(),
        &[fs.dir.path().into(), std::env::current_exe().unwrap()]
    )
    .is_ok());
    fs.finish();
}

#[tokio::test]
async fn a_freeze_made_by_someone_else_is_refused_and_left_frozen() {
    let mut fs = TestFs::new();
    let mp = fs.mountpoint();
    let mut first = FsFreeze::new(&mp, holder(), &[]).unwrap();
    let mut second = FsFreeze::new(&mp, holder(), &[]).unwrap();
    first.inject().await.unwrap();
    let err = second.inject().await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "target: {} is already frozen, not by this fault",
            mp.display()
        )
    );
    assert_eq!(second.holder_pid(), None);
    // Its revert (the engine's guard runs it after a failed inject) must not thaw the other's.
    let reverted = second.revert().await.unwrap();
    assert!(
        reverted.detail.contains("not frozen by this fault"),
        "{}",
        reverted.detail
    );
    let writer = common::start_writer(&mp.join("still-frozen"));
    let pid = writer.id().unwrap();
    fs.children.push(writer);
    assert!(blocked_within(pid, Duration::from_secs(2)).await);
    first.revert().await.unwrap();
    let writer = fs.children.last_mut().unwrap();
    assert!(exits_within(writer, AFTER_THAW).await.unwrap().success());
    drop((first, second));
    fs.finish();
}

#[tokio::test]
async fn removing_a_frozen_scratch_fs_thaws_it_first_and_the_fault_still_reverts() {
    let mut fs = TestFs::new();
    let mp = fs.mountpoint();
    let mut fault = FsFreeze::new(&mp, holder(), &[]).unwrap();
    fault.inject().await.unwrap();
    let writer = common::start_writer(&mp.join("during-removal"));
    let pid = writer.id().unwrap();
    fs.children.push(writer);
    assert!(blocked_within(pid, Duration::from_secs(2)).await);

    // The guardian's order after a crash: the scratch file system's record, while the fault's
    // descriptors (its own, its holder's) still hold the file system.
    let record = fs.record.clone();
    let said = tokio::task::spawn_blocking(move || relapse_fs::remove_record(&record))
        .await
        .unwrap()
        .unwrap();
    assert!(
        said.starts_with(&format!("thawed {}", mp.display())),
        "{said}"
    );
    assert!(said.contains("lazily"), "{said}");
    let writer = fs.children.last_mut().unwrap();
    assert!(exits_within(writer, AFTER_THAW).await.unwrap().success());
    assert!(!common::in_proc_mounts(&mp));
    // FITHAW through the fault's descriptor still works after the lazy unmount: EINVAL, thawed.
    let reverted = fault.revert().await.unwrap();
    assert!(
        reverted.detail.contains("found thawed already"),
        "{}",
        reverted.detail
    );
    drop(fault);
    // With the last descriptor closed the loop device detaches itself (autoclear); no event.
    let image = fs.record.image.clone();
    let deadline = Instant::now() + Duration::from_secs(3);
    while loop_attached(&image) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The ScratchFs itself finds nothing left to remove.
    let again = fs.fs.take().unwrap().remove().unwrap();
    assert!(again.starts_with("nothing was left"), "{again}");
    assert_nothing_left(fs.dir.path(), &[image]);
}

fn loop_attached(image: &std::path::Path) -> bool {
    let out = std::process::Command::new("losetup")
        .arg("-j")
        .arg(image)
        .output()
        .unwrap();
    !out.stdout.is_empty()
}
