//! The frontend's background jobs, FLG's "workflows": work a request sets off but nobody waits
//! for. Each `GET /` queues some; one worker sends them to the active backend, one at a time and
//! in order, as `POST /job?ms=WORK`. While the backend is frozen nothing gets done and the queue
//! grows; afterwards the backlog takes `queued * WORK` to drain, which is the part of recovery
//! FLG's users waited up to 15 minutes for. `/metrics` shows the queue depth, so the harness can
//! measure that drain.
//!
//! All jobs are alike, so the queue is a count: the job at its head is the one being worked on
//! (and retried) and counts as queued until it is done. A job is done when the backend answered
//! 200 within the upstream timeout; one that timed out may still have been worked on by the
//! backend later, and is sent again (at least once, as most job queues promise).

use std::future::Future;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

use crate::JobOptions;

/// How long the worker waits before retrying a job that failed. A failure can come at once (a
/// refused connection): without a pause the worker would spin on it.
pub(crate) const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// The queue and its counters.
pub(crate) struct Jobs {
    options: JobOptions,
    counts: Mutex<Counts>,
    /// Wakes the worker when the queue stops being empty.
    queued_more: Notify,
}

/// What `/metrics` shows; under one lock so that a job is never seen both queued and done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) queued: u64,
    pub(crate) done: u64,
    pub(crate) dropped: u64,
}

impl Jobs {
    pub(crate) fn new(options: JobOptions) -> Jobs {
        Jobs {
            options,
            counts: Mutex::new(Counts::default()),
            queued_more: Notify::new(),
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        // Plain counters, consistent after every statement: a panic cannot leave them torn.
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The path of one job on the backend.
    pub(crate) fn path(&self) -> String {
        format!("/job?ms={}", crate::command_line_millis(self.options.work))
    }

    /// Queues the jobs of one request; those beyond `max_queue` are dropped and counted.
    pub(crate) fn enqueue(&self) {
        let wanted = u64::from(self.options.per_request);
        let accepted = {
            let mut counts = self.counts();
            let room = self.options.max_queue.saturating_sub(counts.queued);
            let accepted = wanted.min(room);
            counts.queued += accepted;
            counts.dropped += wanted - accepted;
            accepted
        };
        if accepted > 0 {
            // A permit is kept if the worker is busy, so this wakeup cannot be lost.
            self.queued_more.notify_one();
        }
    }

    pub(crate) fn snapshot(&self) -> Counts {
        *self.counts()
    }

    /// The worker: runs the job at the head of the queue with `run_one` until it succeeds,
    /// then the next, forever; sleeps while the queue is empty.
    pub(crate) async fn work<F, Fut>(&self, mut run_one: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        loop {
            while self.counts().queued == 0 {
                self.queued_more.notified().await;
            }
            match run_one().await {
                Ok(()) => {
                    let mut counts = self.counts();
                    counts.queued -= 1;
                    counts.done += 1;
                }
                Err(reason) => {
                    tracing::debug!(%reason, "job failed, retrying");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
    }

    /// The queue's gauge and counters in the Prometheus text format.
    pub(crate) fn metrics(&self) -> String {
        let counts = self.snapshot();
        format!(
            "# HELP relapse_demo_jobs_queued Background jobs queued and not yet done.\n\
             # TYPE relapse_demo_jobs_queued gauge\n\
             relapse_demo_jobs_queued {}\n\
             # HELP relapse_demo_jobs_done_total Background jobs the backend has done.\n\
             # TYPE relapse_demo_jobs_done_total counter\n\
             relapse_demo_jobs_done_total {}\n\
             # HELP relapse_demo_jobs_dropped_total Background jobs dropped because the queue was full.\n\
             # TYPE relapse_demo_jobs_dropped_total counter\n\
             relapse_demo_jobs_dropped_total {}\n",
            counts.queued, counts.done, counts.dropped
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use std::sync::Arc;

    use tokio::time::Instant;

    use super::*;

    fn jobs(per_request: u32, max_queue: u64) -> Arc<Jobs> {
        Arc::new(Jobs::new(JobOptions {
            per_request,
            work: Duration::from_millis(20),
            max_queue,
        }))
    }

    fn counts(queued: u64, done: u64, dropped: u64) -> Counts {
        Counts {
            queued,
            done,
            dropped,
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_what_does_not_fit() {
        let jobs = jobs(2, 3);
        jobs.enqueue();
        assert_eq!(jobs.snapshot(), counts(2, 0, 0));
        jobs.enqueue();
        assert_eq!(jobs.snapshot(), counts(3, 0, 1));
        jobs.enqueue();
        assert_eq!(jobs.snapshot(), counts(3, 0, 3));
        assert_eq!(jobs.path(), "/job?ms=20");
        assert!(jobs.metrics().contains("\nrelapse_demo_jobs_queued 3\n"));
        assert!(jobs
            .metrics()
            .contains("\nrelapse_demo_jobs_dropped_total 3\n"));
    }

    #[tokio::test(start_paused = true)]
    async fn the_worker_retries_the_head_after_a_pause_and_waits_for_work() {
        let jobs = jobs(1, 10);
        let failing = Arc::new(AtomicBool::new(true));
        let attempts = Arc::new(AtomicU32::new(0));
        let start = Instant::now();
        let worker = {
            let (jobs, failing, attempts) = (jobs.clone(), failing.clone(), attempts.clone());
            tokio::spawn(async move {
                jobs.work(|| {
                    attempts.fetch_add(1, Ordering::Relaxed);
                    let fails = failing.load(Ordering::Relaxed);
                    async move {
                        if fails {
                            Err("refused".to_owned())
                        } else {
                            Ok(())
                        }
                    }
                })
                .await
            })
        };
        // Nothing queued: no attempt however long we wait (the worker sleeps on the Notify).
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(attempts.load(Ordering::Relaxed), 0);

        jobs.enqueue();
        jobs.enqueue();
        // Failing at once, it tries at 5 s and then once per pause: 5.00, 5.05, 5.10, 5.15.
        tokio::time::sleep_until(start + Duration::from_millis(5_175)).await;
        assert_eq!(attempts.load(Ordering::Relaxed), 4);
        assert_eq!(jobs.snapshot(), counts(2, 0, 0));

        failing.store(false, Ordering::Relaxed);
        tokio::time::sleep_until(start + Duration::from_millis(5_201)).await;
        assert_eq!(attempts.load(Ordering::Relaxed), 6);
        assert_eq!(jobs.snapshot(), counts(0, 2, 0));
        worker.abort();
    }
}
