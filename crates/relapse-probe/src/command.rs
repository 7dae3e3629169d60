//! A check command as a detection source, like a Nagios plugin or a `systemctl is-active`.

use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use relapse_core::fault::BoxFuture;
use relapse_core::sense::{Detector, DetectorError, SignalSender};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

/// Enough output to find a first line in; the rest is drained and dropped so that a chatty
/// command never blocks on a full pipe.
const OUTPUT_KEEP_BYTES: usize = 64 * 1024;

/// Runs a command every period and signals changes of state: fires when it turns unhealthy
/// (non-zero exit, killed by a signal, failed to start, or outlived its timeout), clears when it
/// succeeds again.
pub struct CommandDetector {
    run: Vec<String>,
    every: Duration,
    timeout: Duration,
}

impl CommandDetector {
    /// `run` is the program and its arguments, run directly (no shell; use `sh -c` for one).
    /// An empty `run` makes [`Detector::watch`] return an error.
    pub fn new(run: Vec<String>, every: Duration, timeout: Duration) -> Self {
        CommandDetector {
            run,
            every,
            timeout,
        }
    }
}

impl Detector for CommandDetector {
    fn watch(
        self: Box<Self>,
        signals: SignalSender,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, Result<(), DetectorError>> {
        Box::pin(async move {
            if self.run.is_empty() {
                return Err(DetectorError::Config(
                    "empty command: expected a program and its arguments".to_owned(),
                ));
            }
            let mut ticks = tokio::time::interval(crate::poll_period(self.every));
            // Delay: runs never overlap, and a slow run is not followed by a burst.
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            let mut edge = crate::HealthEdge::new();
            loop {
                // Cancelling drops a running child, and kill_on_drop kills it.
                let Some((now_healthy, detail)) = cancel
                    .run_until_cancelled(async {
                        ticks.tick().await;
                        run_once(&self.run, self.timeout).await
                    })
                    .await
                else {
                    return Ok(());
                };
                tracing::trace!(healthy = now_healthy, %detail, "check command");
                edge.observe(now_healthy, detail, &signals);
            }
        })
    }
}

/// Runs the command once; returns whether it was healthy and a short detail.
async fn run_once(run: &[String], timeout: Duration) -> (bool, String) {
    let Some((program, args)) = run.split_first() else {
        return (false, "empty command".to_owned());
    };
    let deadline = Instant::now() + timeout;
    let spawned = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(error) => return (false, format!("spawn: {}", error.kind())),
    };
    // Read both pipes while the child runs: waiting first could deadlock on a full pipe.
    let stdout = child.stdout.take().map(read_head);
    let stderr = child.stderr.take().map(read_head);

    let status = match tokio::time::timeout_at(deadline, child.wait()).await {
        Ok(Ok(status)) => status,
        Ok(Err(error)) => return (false, format!("wait: {}", error.kind())),
        Err(_elapsed) => {
            // Our own child, killed through its handle (and reaped by `kill`).
            if let Err(error) = child.kill().await {
                tracing::warn!(%error, "could not kill a check command that timed out");
            }
            return (false, format!("timeout after {timeout:?}"));
        }
    };

    // A background grandchild may hold the pipes open after the child exits; the output is
    // only a detail, so stop waiting for it at the deadline.
    let mut output = Vec::new();
    for reader in [stdout, stderr].into_iter().flatten() {
        if let Ok(Ok(Ok(bytes))) = tokio::time::timeout_at(deadline, reader).await {
            output.push(bytes);
        }
    }
    let first_line = output.iter().find_map(|bytes| {
        String::from_utf8_lossy(bytes)
            .lines()
            .map(str::trim)
            .find(|line| !line.is_empty())
            .map(crate::short_detail)
    });
    let status_text = describe(status);
    let detail = match first_line {
        Some(line) => format!("{status_text}: {line}"),
        None => status_text,
    };
    (status.success(), detail)
}

/// `exit 1`, or `signal 9` for a child killed by a signal.
fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        (None, None) => status.to_string(),
    }
}

/// Reads the start of a pipe on its own task, then drains the rest. Aborted when dropped, so a
/// pipe held open by a stray grandchild does not keep a task alive.
fn read_head(
    mut pipe: impl AsyncRead + Unpin + Send + 'static,
) -> AbortOnDropHandle<std::io::Result<Vec<u8>>> {
    AbortOnDropHandle::new(tokio::spawn(async move {
        let mut head = Vec::new();
        (&mut pipe)
            .take(OUTPUT_KEEP_BYTES as u64)
            .read_to_end(&mut head)
            .await?;
        tokio::io::copy(&mut pipe, &mut tokio::io::sink()).await?;
        Ok(head)
    }))
}
