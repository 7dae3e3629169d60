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
