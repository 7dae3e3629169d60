//! A kernel timer for the probes' schedule: `timerfd` on `CLOCK_MONOTONIC`, the clock
//! `std::time::Instant` and tokio's `Instant` read.
//!
//! The runtime's own timer works in whole milliseconds, and an idle runtime sleeps in
//! `epoll_wait` with a timeout rounded up to the next one, so its checks go out about a
//! millisecond and a half late. A timerfd is a high-resolution timer: the runtime's I/O driver
//! wakes when it expires, to the microsecond, whatever its own timer wheel says.

use std::io;
use std::os::fd::OwnedFd;
use std::time::Duration;

use relapse_core::fault::BoxFuture;
use relapse_core::sense::{Pacer, RuntimePacer, Ticks};
use rustix::time::{
    timerfd_create, timerfd_settime, Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags,
    Timespec,
};
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

/// Paces checks on a kernel timer. Where one cannot be made (no descriptor left, no runtime
/// with I/O), it says so in the log and paces on the runtime's timer instead.
#[derive(Debug, Clone, Copy, Default)]
pub struct KernelPacer;

impl Pacer for KernelPacer {
    fn start(&self, every: Duration) -> Box<dyn Ticks> {
        match KernelTicks::start(every) {
            Ok(ticks) => Box::new(ticks),
            Err(error) => {
                tracing::warn!(%error, "no kernel timer for the probe; pacing on the runtime's (to the millisecond)");
                RuntimePacer.start(every)
            }
        }
    }
}

struct KernelTicks {
    timer: AsyncFd<OwnedFd>,
    start: Instant,
    every: Duration,
    /// Expirations counted so far; tick `n` was due at `start + n × every`.
    expired: u64,
    /// The first tick is due at `start` and is delivered without waiting.
    first: bool,
}

impl KernelTicks {
    fn start(every: Duration) -> io::Result<KernelTicks> {
        if every.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a zero interval",
            ));
        }
        let fd = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )?;
        let period = Timespec::try_from(every)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interval out of range"))?;
        // Relative to now: the first expiration is one period after `start`. The instant is
        // read just before the timer is armed, so the computed due instants are at most the
        // syscall's microsecond early, never late.
        let start = Instant::now();
        timerfd_settime(
            &fd,
            TimerfdTimerFlags::empty(),
            &Itimerspec {
                it_interval: period,
                it_value: period,
            },
        )?;
        Ok(KernelTicks {
            timer: register(fd)?,
            start,
            every,
            expired: 0,
            first: true,
        })
    }

    fn due(&self) -> Instant {
        // Saturating: a run long enough to overflow u32 periods is centuries at 1 ms.
        self.start + self.every * u32::try_from(self.expired).unwrap_or(u32::MAX)
    }

    async fn next(&mut self) -> Instant {
        if std::mem::take(&mut self.first) {
            return self.start;
        }
        loop {
            let mut ready = match self.timer.readable().await {
                Ok(ready) => ready,
                Err(error) => {
                    // The I/O driver is gone (the runtime is shutting down): the run is over;
                    // fall back to the runtime's sleep so the loop still ends by its token.
                    tracing::debug!(%error, "probe timer: not readable");
                    self.expired += 1;
                    tokio::time::sleep_until(self.due()).await;
                    return self.due();
                }
            };
            let mut count = [0u8; 8];
            match ready
                .try_io(|fd| rustix::io::read(fd.get_ref(), &mut count).map_err(io::Error::from))
            {
                // One read gives the expirations since the last: more than one means the
                // caller came back late, and the missed ticks are skipped.
                Ok(Ok(8)) => {
                    self.expired += u64::from_ne_bytes(count);
                    return self.due();
                }
                Ok(Ok(n)) => tracing::debug!(bytes = n, "probe timer: short read"),
                Ok(Err(error)) => tracing::debug!(%error, "probe timer: read failed"),
                // Readiness was stale; wait again.
                Err(_would_block) => {}
            }
        }
    }
}

/// Hands the timer to the runtime's I/O driver.
#[allow(unsafe_code)]
fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: `register` asks that the descriptor stay open and be the same one for the
    // `AsyncFd`'s lifetime; an `OwnedFd` moved into it is closed only when it is dropped, and
    // its `as_raw_fd` always returns the descriptor it owns.
    unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)
}

impl Ticks for KernelTicks {
    fn tick(&mut self) -> BoxFuture<'_, Instant> {
        Box::pin(self.next())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each tick is due one period after the one before, and none is delivered before it is
    /// due: the kernel timer never fires early.
    #[tokio::test]
    async fn ticks_are_due_a_period_apart_and_never_early() {
        let every = Duration::from_millis(3);
        let mut ticks = KernelTicks::start(every).expect("a timerfd");
        let first = ticks.next().await;
        assert_eq!(first, ticks.start, "the first tick is due at once");
        let mut previous = first;
        for _ in 0..10 {
            let due = ticks.next().await;
            let now = Instant::now();
            assert!(now >= due, "delivered {:?} before it was due", due - now);
            let gap = due - previous;
            assert!(
                gap.as_nanos() % every.as_nanos() == 0 && !gap.is_zero(),
                "due instants lie on the schedule: {gap:?} is not a multiple of {every:?}"
            );
            previous = due;
        }
    }

    /// A caller that comes back late gets the latest due tick, not a burst of the missed ones.
    #[tokio::test]
    async fn missed_ticks_are_skipped() {
        let every = Duration::from_millis(2);
        let mut ticks = KernelTicks::start(every).expect("a timerfd");
        ticks.next().await;
        // Not a synchronisation: the test needs the caller to be late, by real time.
        std::thread::sleep(every * 5);
        let due = ticks.next().await;
        assert!(
            due - ticks.start >= every * 5,
            "the tick after a 5-period absence is due at least 5 periods in, not {:?}",
            due - ticks.start
        );
        let next = ticks.next().await;
        assert!(next > due, "and the next is due later, not at once");
    }

    #[tokio::test]
    async fn a_zero_interval_is_refused() {
        assert!(KernelTicks::start(Duration::ZERO).is_err());
    }
}
