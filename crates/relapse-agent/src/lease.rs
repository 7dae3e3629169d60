//! The dead-man lease: an agent applies faults for one run only while that run's coordinator
//! keeps renewing its lease. The agent watches the lease's expiry; when it passes without a
//! renewal, the run is over for the agent and it reverts what it applied for it.
//!
//! Who holds the lease is the coordinator that took it: a run id and a holder secret, which
//! the coordinator made and sends with every renewal. Another coordinator, or the same one
//! restarted without the secret, cannot renew it or apply faults under it: a lapsed run is not
//! taken over, it is reverted.

use std::time::Duration;

use tokio::time::Instant;

/// The default time between renewals.
pub const DEFAULT_RENEW_EVERY: Duration = Duration::from_secs(1);
/// The default lease: how long after the last renewal the agent reverts.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(5);

/// Why a lease was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    #[error("the agent holds a lease for run {held}; run {asked} cannot take it until that run ends or lapses")]
    Busy { held: String, asked: String },
    #[error("run {0} does not hold this agent's lease (it lapsed, ended, or was never taken)")]
    NotHeld(String),
    #[error("run {0}'s lease is held by another coordinator: a run is renewed only by the coordinator that started it")]
    WrongHolder(String),
    #[error("a lease of {0:?} is shorter than its renewal interval of {1:?}: it would lapse between renewals")]
    TooShort(Duration, Duration),
    #[error(
        "run {0} has ended on this agent (its lease lapsed or was released): a run is not resumed"
    )]
    Ended(String),
}

/// How many ended runs an agent remembers, to refuse their return.
const REMEMBERED_RUNS: usize = 64;

/// The one lease an agent grants at a time.
#[derive(Debug)]
struct Held {
    run: String,
    holder: String,
    lease: Duration,
    expires: Instant,
}

/// The agent's lease: none, or one run's.
#[derive(Debug, Default)]
pub struct Lease {
    held: Option<Held>,
    /// The latest runs that ended here, newest last.
    ended: std::collections::VecDeque<String>,
}

/// What [`Lease::check`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lapse {
    /// No lease is held.
    Free,
    /// The lease is held and runs until this instant.
    Until(Instant),
    /// The lease of this run lapsed: revert what was applied for it. The lease is free again.
    Lapsed { run: String, overdue: Duration },
}

impl Lease {
    /// Takes the lease for `run`, or renews it if the same holder has it already. `renew_every`
    /// is the coordinator's announced interval, which the lease must outlast.
    pub fn take(
        &mut self,
        run: &str,
        holder: &str,
        lease: Duration,
        renew_every: Duration,
        now: Instant,
    ) -> Result<Instant, LeaseError> {
        if lease <= renew_every {
            return Err(LeaseError::TooShort(lease, renew_every));
        }
        if self.ended.iter().any(|r| r == run) {
            return Err(LeaseError::Ended(run.to_string()));
        }
        // A lapsed lease that nobody has checked yet is still reverted first: the caller must
        // have called `check`, which frees it; here it still blocks another run.
        match &mut self.held {
            Some(held) if held.run != run => Err(LeaseError::Busy {
                held: held.run.clone(),
                asked: run.to_string(),
            }),
            Some(held) if held.holder != holder => Err(LeaseError::WrongHolder(run.to_string())),
            Some(held) if now >= held.expires => Err(LeaseError::NotHeld(run.to_string())),
            Some(held) => {
                held.lease = lease;
                held.expires = now + lease;
                Ok(held.expires)
            }
            None => {
                let expires = now + lease;
                self.held = Some(Held {
                    run: run.to_string(),
                    holder: holder.to_string(),
                    lease,
                    expires,
                });
                Ok(expires)
            }
        }
    }

    /// Renews the lease `run` holds, for the lease's own length from `now`.
    pub fn renew(&mut self, run: &str, holder: &str, now: Instant) -> Result<Instant, LeaseError> {
        let held = self.held_by(run, holder, now)?;
        held.expires = now + held.lease;
        Ok(held.expires)
    }

    /// Whether `run`'s holder may act under the lease now (apply or revert a fault).
    pub fn authorize(&mut self, run: &str, holder: &str, now: Instant) -> Result<(), LeaseError> {
        self.held_by(run, holder, now).map(drop)
    }

    fn held_by(&mut self, run: &str, holder: &str, now: Instant) -> Result<&mut Held, LeaseError> {
        match &mut self.held {
            Some(held) if held.run == run && held.holder != holder => {
                Err(LeaseError::WrongHolder(run.to_string()))
            }
            Some(held) if held.run == run && now < held.expires => Ok(held),
            _ => Err(LeaseError::NotHeld(run.to_string())),
        }
    }

    /// Ends the lease when its run ends normally (the coordinator reverted everything itself).
    pub fn release(&mut self, run: &str, holder: &str, now: Instant) -> Result<(), LeaseError> {
        self.authorize(run, holder, now)?;
        self.end();
        Ok(())
    }

    /// Ends whatever lease is held, at an operator's order (`relapse cleanup --agent --force`).
    pub fn end_now(&mut self) {
        self.end();
    }

    /// Frees the lease and remembers its run as ended.
    fn end(&mut self) {
        if let Some(held) = self.held.take() {
            if self.ended.len() == REMEMBERED_RUNS {
                self.ended.pop_front();
            }
            self.ended.push_back(held.run);
        }
    }

    /// Looks at the lease at `now`: free, running, or lapsed (then freed, and the caller
    /// reverts the run's faults).
    pub fn check(&mut self, now: Instant) -> Lapse {
        match &self.held {
            None => Lapse::Free,
            Some(held) if now < held.expires => Lapse::Until(held.expires),
            Some(held) => {
                let lapsed = Lapse::Lapsed {
                    run: held.run.clone(),
                    overdue: now - held.expires,
                };
                self.end();
                lapsed
            }
        }
    }

    /// The run holding the lease, if any (for `relapse cleanup --agent` and the agent's log).
    pub fn run(&self) -> Option<&str> {
        self.held.as_ref().map(|h| h.run.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn taken(now: Instant) -> Lease {
        let mut lease = Lease::default();
        lease
            .take("run-1", "secret-1", DEFAULT_LEASE, DEFAULT_RENEW_EVERY, now)
            .unwrap();
        lease
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewed_lease_holds_and_an_unrenewed_one_lapses_at_its_length() {
        let start = Instant::now();
        let mut lease = taken(start);
        for second in 1..=10 {
            tokio::time::advance(ms(1000)).await;
            assert_eq!(
                lease.renew("run-1", "secret-1", Instant::now()).unwrap(),
                start + ms(1000 * second) + DEFAULT_LEASE
            );
            assert_eq!(
                lease.check(Instant::now()),
                Lapse::Until(Instant::now() + DEFAULT_LEASE)
            );
        }
        // The coordinator stops renewing: one instant before the lease's end it still holds,
        // at its end it lapses, and is free afterwards.
        let last = Instant::now();
        tokio::time::advance(DEFAULT_LEASE - ms(1)).await;
        assert_eq!(
            lease.check(Instant::now()),
            Lapse::Until(last + DEFAULT_LEASE)
        );
        tokio::time::advance(ms(1)).await;
        assert_eq!(
            lease.check(Instant::now()),
            Lapse::Lapsed {
                run: "run-1".into(),
                overdue: Duration::ZERO
            }
        );
        assert_eq!(lease.check(Instant::now()), Lapse::Free);
        assert_eq!(
            lease.renew("run-1", "secret-1", Instant::now()),
            Err(LeaseError::NotHeld("run-1".into()))
        );
        // A lapsed run is over: its coordinator, come back, cannot take the lease again.
        assert_eq!(
            lease.take(
                "run-1",
                "secret-1",
                DEFAULT_LEASE,
                DEFAULT_RENEW_EVERY,
                Instant::now()
            ),
            Err(LeaseError::Ended("run-1".into()))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn another_coordinator_cannot_take_renew_or_act_under_a_lease() {
        let now = Instant::now();
        let mut lease = taken(now);
        assert_eq!(
            lease.take("run-2", "secret-2", DEFAULT_LEASE, DEFAULT_RENEW_EVERY, now),
            Err(LeaseError::Busy {
                held: "run-1".into(),
                asked: "run-2".into()
            })
        );
        // The same run id without its holder's secret: a second coordinator claiming the run.
        assert_eq!(
            lease.take("run-1", "guess", DEFAULT_LEASE, DEFAULT_RENEW_EVERY, now),
            Err(LeaseError::WrongHolder("run-1".into()))
        );
        assert_eq!(
            lease.renew("run-1", "guess", now),
            Err(LeaseError::WrongHolder("run-1".into()))
        );
        assert!(lease.authorize("run-1", "guess", now).is_err());
        assert!(lease.release("run-1", "guess", now).is_err());
        assert_eq!(lease.run(), Some("run-1"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_released_lease_is_free_for_the_next_run() {
        let now = Instant::now();
        let mut lease = taken(now);
        lease.release("run-1", "secret-1", now).unwrap();
        assert_eq!(lease.check(now), Lapse::Free);
        lease
            .take("run-2", "secret-2", DEFAULT_LEASE, DEFAULT_RENEW_EVERY, now)
            .unwrap();
        assert_eq!(lease.run(), Some("run-2"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_lapse_found_late_says_by_how_much() {
        let now = Instant::now();
        let mut lease = taken(now);
        tokio::time::advance(DEFAULT_LEASE + ms(250)).await;
        assert_eq!(
            lease.check(Instant::now()),
            Lapse::Lapsed {
                run: "run-1".into(),
                overdue: ms(250)
            }
        );
    }

    #[test]
    fn a_lease_must_outlast_its_renewal_interval() {
        let mut lease = Lease::default();
        assert_eq!(
            lease.take("r", "s", ms(1000), ms(1000), Instant::now()),
            Err(LeaseError::TooShort(ms(1000), ms(1000)))
        );
    }
}
