//! `relapse cleanup`: what was reverted, what failed, what was left alone.

use std::fmt::Write;
use std::path::Path;

use crate::safety::Cleaned;

use super::plural;

/// One line per run left alone and per fault reverted or not, then the closing count.
pub fn cleanup_report(cleaned: &[Cleaned], state_dir: &Path) -> String {
    let mut out = String::new();
    let mut failed = false;
    let mut reverted = 0;
    for run in cleaned {
        if let Some(pid) = run.skipped_live_owner {
            let _ = writeln!(
                out,
                "left alone: {} (its relapse, pid {pid}, is still running; --force reverts it anyway)",
                run.run.display()
            );
            continue;
        }
        for (fault, describe, result) in &run.reverts {
            match result {
                Ok(done) => {
                    reverted += 1;
                    let _ = writeln!(out, "reverted: \"{fault}\" ({describe}): {done}");
                }
                Err(e) => {
                    failed = true;
                    let _ = writeln!(
                        out,
                        "FAILED: \"{fault}\" ({describe}): {e}; the entry stays in {}",
                        run.run.display()
                    );
                }
            }
        }
    }
    let _ = writeln!(
        out,
        "cleanup: {reverted} fault{} reverted in {}; nothing else is applied by relapse{}",
        plural(reverted),
        state_dir.display(),
        if failed {
            " except the failures above"
        } else {
            ""
        }
    );
    out
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use expect_test::expect;

    use super::*;

    fn revert(
        fault: &str,
        describe: &str,
        result: Result<&str, &str>,
    ) -> (
        String,
        String,
        Result<String, relapse_core::fault::RevertError>,
    ) {
        (
            fault.into(),
            describe.into(),
            result
                .map(Into::into)
                .map_err(|e| relapse_core::fault::RevertError::NotConfirmed(e.into())),
        )
    }

    #[test]
    fn reverted_failed_and_left_alone() {
        let state = Path::new("/var/lib/relapse");
        let cleaned = [
            Cleaned {
                run: state.join("run-1"),
                reverts: vec![
                    revert("freeze", "SIGSTOP pid 4242", Ok("SIGCONT sent to pid 4242")),
                    revert(
                        "ports",
                        "reserve 28000 ports in netns relapse-7",
                        Err("netns relapse-7: permission denied"),
                    ),
                ],
                skipped_live_owner: None,
            },
            Cleaned {
                run: PathBuf::from("/var/lib/relapse/run-2"),
                reverts: Vec::new(),
                skipped_live_owner: Some(777),
            },
            Cleaned {
                run: state.join("run-3"),
                reverts: vec![revert(
                    "fds",
                    "RLIMIT_NOFILE of pid 99 to 12",
                    Ok("restored 1024"),
                )],
                skipped_live_owner: None,
            },
        ];
        expect![[r#"
            reverted: "freeze" (SIGSTOP pid 4242): SIGCONT sent to pid 4242
            FAILED: "ports" (reserve 28000 ports in netns relapse-7): netns relapse-7: permission denied; the entry stays in /var/lib/relapse/run-1
            left alone: /var/lib/relapse/run-2 (its relapse, pid 777, is still running; --force reverts it anyway)
            reverted: "fds" (RLIMIT_NOFILE of pid 99 to 12): restored 1024
            cleanup: 2 faults reverted in /var/lib/relapse; nothing else is applied by relapse except the failures above
        "#]].assert_eq(&cleanup_report(&cleaned, state));
    }

    #[test]
    fn nothing_to_clean() {
        expect![[r#"
            cleanup: 0 faults reverted in /tmp/state; nothing else is applied by relapse
        "#]]
        .assert_eq(&cleanup_report(&[], Path::new("/tmp/state")));
    }

    #[test]
    fn one_fault_is_singular() {
        let cleaned = [Cleaned {
            run: PathBuf::from("/tmp/state/run-1"),
            reverts: vec![revert(
                "freeze",
                "SIGSTOP pid 1",
                Ok("SIGCONT sent to pid 1"),
            )],
            skipped_live_owner: None,
        }];
        expect![[r#"
            reverted: "freeze" (SIGSTOP pid 1): SIGCONT sent to pid 1
            cleanup: 1 fault reverted in /tmp/state; nothing else is applied by relapse
        "#]]
        .assert_eq(&cleanup_report(&cleaned, Path::new("/tmp/state")));
    }
}
