//! A log file as a detection source: the system wrote down that it noticed something.

use std::io::{self, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use regex::Regex;
use relapse_core::fault::BoxFuture;
use relapse_core::sense::{Detector, DetectorError, SignalSender};
use tokio::fs::File;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

/// How much is read at a time; a log that grew a lot between polls is processed in pieces.
const READ_CHUNK_BYTES: usize = 256 * 1024;

/// A line longer than this without a newline is matched as it stands and dropped, so a runaway
/// writer cannot make the detector buffer without bound.
const MAX_LINE_BYTES: usize = 64 * 1024;

/// Tails a log file and fires once for every new complete line matching a pattern.
///
/// Only lines appended after [`Detector::watch`] is called count. A file that does not exist
/// yet is waited for; a file that shrinks (truncated) or is replaced (rotated) is read again
/// from its start. Truncation is noticed by the size going down, so a file truncated and then
/// refilled past the old size between two polls is taken as having grown. Event-based: it never
/// clears.
pub struct LogDetector {
    path: PathBuf,
    pattern: Regex,
    every: Duration,
}

impl LogDetector {
    /// Watches `path` every `every` for lines matching `pattern`.
    pub fn new(path: PathBuf, pattern: Regex, every: Duration) -> Self {
        LogDetector {
            path,
            pattern,
            every,
        }
    }
}

impl Detector for LogDetector {
    fn watch(
        self: Box<Self>,
        signals: SignalSender,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, Result<(), DetectorError>> {
        // Stat now rather than inside the future: "lines appended after the start" must mean
        // after this call, not after whenever the spawned future first gets polled. One stat is
        // cheap enough to do synchronously.
        let mut tail = Tail::starting_at(std::fs::metadata(&self.path).ok());
        Box::pin(async move {
            let mut ticks = tokio::time::interval(crate::poll_period(self.every));
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            let mut last_error = None;
            loop {
                if cancel.run_until_cancelled(ticks.tick()).await.is_none() {
                    return Ok(());
                }
                let result = tail
                    .read_new_lines(&self.path, |line| {
                        if self.pattern.is_match(line) {
                            signals.fire(crate::short_detail(line));
                        }
                    })
                    .await;
                // Keep polling through errors (permissions may be fixed), but say so only
                // when the error changes, not on every poll.
                let error = result.err().map(|error| error.kind());
                if error != last_error {
                    if let Some(kind) = error {
                        tracing::warn!(path = %self.path.display(), error = %kind, "cannot read the log file");
                    }
                    last_error = error;
                }
            }
        })
    }
}

/// Where the detector is in the file.
#[derive(Debug)]
struct Tail {
    /// Bytes of the current file already consumed.
    offset: u64,
    /// The inode being read, to notice the file being replaced by rotation.
    inode: Option<u64>,
    /// The start of a line whose newline has not arrived yet.
    partial: Vec<u8>,
}

impl Tail {
    fn starting_at(metadata: Option<std::fs::Metadata>) -> Tail {
        Tail {
            offset: metadata.as_ref().map_or(0, |m| m.len()),
            inode: metadata.as_ref().map(|m| m.ino()),
            partial: Vec::new(),
        }
    }

    fn restart(&mut self) {
        self.offset = 0;
        self.partial.clear();
    }

    /// Reads what was appended since the last call and hands over each complete line.
    async fn read_new_lines(
        &mut self,
        path: &Path,
        mut on_line: impl FnMut(&str),
    ) -> io::Result<()> {
        let mut file = match File::open(path).await {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                // Gone (rotated away, or not created yet): whatever appears next is all new.
                self.restart();
                self.inode = None;
                return Ok(());
            }
            Err(error) => return Err(error),
        };
        // Metadata of the opened file, not of the path, so both describe the same file even if
        // it is rotated right now.
        let metadata = file.metadata().await?;
        let replaced = self.inode.is_some_and(|inode| inode != metadata.ino());
        if replaced || metadata.len() < self.offset {
            self.restart();
        }
        self.inode = Some(metadata.ino());
        if metadata.len() == self.offset {
            return Ok(());
        }
        file.seek(SeekFrom::Start(self.offset)).await?;
        let mut chunk = vec![0; READ_CHUNK_BYTES];
        loop {
            let read = file.read(&mut chunk).await?;
            if read == 0 {
                return Ok(());
            }
            self.offset += read as u64;
            self.split(&chunk[..read], &mut on_line);
        }
    }

    /// Appends bytes to the partial line and hands over every line they complete.
    fn split(&mut self, bytes: &[u8], on_line: &mut impl FnMut(&str)) {
        let mut rest = bytes;
        while let Some(newline) = rest.iter().position(|&b| b == b'\n') {
            self.partial.extend_from_slice(&rest[..newline]);
            rest = &rest[newline + 1..];
            let line = self.partial.strip_suffix(b"\r").unwrap_or(&self.partial);
            on_line(&String::from_utf8_lossy(line));
            self.partial.clear();
        }
        self.partial.extend_from_slice(rest);
        if self.partial.len() > MAX_LINE_BYTES {
            on_line(&String::from_utf8_lossy(&self.partial));
            self.partial.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_all(tail: &mut Tail, chunks: &[&str]) -> Vec<String> {
        let mut lines = Vec::new();
        for chunk in chunks {
            tail.split(chunk.as_bytes(), &mut |line: &str| {
                lines.push(line.to_owned())
            });
        }
        lines
    }

    #[test]
    fn splits_lines_across_chunks() {
        let mut tail = Tail::starting_at(None);
        let lines = split_all(&mut tail, &["a\nb", "c\r\n", "", "d"]);
        assert_eq!(lines, ["a", "bc"]);
        assert_eq!(tail.partial, b"d");
        assert_eq!(split_all(&mut tail, &["\n\n"]), ["d", ""]);
    }

    #[test]
    fn overlong_lines_are_cut() {
        let mut tail = Tail::starting_at(None);
        let long = "x".repeat(MAX_LINE_BYTES + 1);
        assert_eq!(split_all(&mut tail, &[&long]).len(), 1);
        assert!(tail.partial.is_empty());
    }
}
