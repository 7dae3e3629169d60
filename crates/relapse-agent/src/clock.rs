//! Mapping an agent's instants to the coordinator's clock.
//!
//! Each host reads its own monotonic clock (`CLOCK_MONOTONIC`), whose zero is its own boot: two hosts' readings are
//! not comparable until the offset between them is known. One exchange gives four readings,
//! the coordinator's send `t0` and receive `t3` on its clock, the agent's receive `t1` and send
//! `t2` on its own. If the two legs took equally long, the agent's clock is ahead by
//! `((t1 − t0) + (t2 − t3)) / 2`; since the legs may differ by up to the whole time on the wire,
//! `(t3 − t0) − (t2 − t1)`, the estimate is off by at most half of that. Of several exchanges the
//! one with the shortest time on the wire is the most certain (as NTP's clock filter chooses).

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// An instant and the host's `CLOCK_MONOTONIC` reading of it, taken back to back once per
/// process: readings are that clock's nanoseconds. Two processes on one host (or in two network
/// namespaces of one host, which share the clock) then read the same instant alike, to within
/// the microsecond between the two calls; on two hosts the offset is what [`estimate`] finds.
fn base() -> (Instant, i128) {
    static BASE: OnceLock<(Instant, i128)> = OnceLock::new();
    *BASE.get_or_init(|| {
        let instant = Instant::now();
        let clock = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        let ns = i128::from(clock.tv_sec) * 1_000_000_000 + i128::from(clock.tv_nsec);
        (instant, ns)
    })
}

/// This host's monotonic reading of `instant`, in nanoseconds.
pub fn instant_ns(instant: Instant) -> i128 {
    let (base, base_ns) = base();
    if instant >= base {
        base_ns + (instant - base).as_nanos() as i128
    } else {
        base_ns - (base - instant).as_nanos() as i128
    }
}

/// This process's reading of now.
pub fn now_ns() -> i128 {
    instant_ns(Instant::now())
}

/// The instant this host's monotonic clock read as `ns`.
pub fn ns_instant(ns: i128) -> Instant {
    let (base, base_ns) = base();
    let since = ns - base_ns;
    let magnitude =
        std::time::Duration::from_nanos(since.unsigned_abs().min(u64::MAX as u128) as u64);
    if since >= 0 {
        base + magnitude
    } else {
        base - magnitude
    }
}

/// One exchange's four readings, in nanoseconds of each side's own monotonic clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exchange {
    /// The coordinator sent the request (coordinator's clock).
    pub sent: i128,
    /// The agent received it (agent's clock).
    pub received: i128,
    /// The agent answered (agent's clock).
    pub answered: i128,
    /// The coordinator received the answer (coordinator's clock).
    pub back: i128,
}

impl Exchange {
    /// The time the exchange spent on the wire, both ways: its round trip less the agent's own
    /// time between receiving and answering.
    pub fn on_the_wire(&self) -> i128 {
        (self.back - self.sent) - (self.answered - self.received)
    }
}

/// How far the agent's clock is ahead of the coordinator's, and how sure that is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offset {
    /// Agent reading − coordinator reading of the same instant, in nanoseconds.
    pub offset: i128,
    /// The most the true offset can differ from `offset`, in nanoseconds.
    pub uncertainty: i128,
}

impl Offset {
    /// The coordinator's reading of an instant the agent read as `agent`.
    pub fn to_coordinator(&self, agent: i128) -> i128 {
        agent - self.offset
    }

    /// The agent's reading of the instant the coordinator read as `coordinator`.
    pub fn to_agent(&self, coordinator: i128) -> i128 {
        coordinator + self.offset
    }
}

/// Why no offset could be estimated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClockError {
    #[error("no round trip to estimate the clock offset from")]
    NoExchange,
    #[error("an exchange whose readings go backwards (the agent answered before it received, or the answer came back before it was sent)")]
    Backwards,
}

/// The offset from the exchange with the shortest time on the wire; its uncertainty is half of
/// that time. Exchanges whose readings run backwards are refused, not skipped: they mean a
/// clock that is not monotonic, or readings mixed up.
pub fn estimate(exchanges: &[Exchange]) -> Result<Offset, ClockError> {
    if exchanges
        .iter()
        .any(|e| e.answered < e.received || e.back < e.sent || e.on_the_wire() < 0)
    {
        return Err(ClockError::Backwards);
    }
    let best = exchanges
        .iter()
        .min_by_key(|e| e.on_the_wire())
        .ok_or(ClockError::NoExchange)?;
    let wire = best.on_the_wire();
    // Rounded up: the stated bound must not be smaller than the true one by a rounding.
    Ok(Offset {
        offset: ((best.received - best.sent) + (best.answered - best.back)).div_euclid(2),
        uncertainty: (wire + 1) / 2,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An exchange with the agent's clock `offset` ahead, legs of `out` and `back` ns, and the
    /// agent taking `busy` ns to answer, starting at coordinator time `at`.
    fn exchange(at: i128, offset: i128, out: i128, back: i128, busy: i128) -> Exchange {
        Exchange {
            sent: at,
            received: at + out + offset,
            answered: at + out + busy + offset,
            back: at + out + busy + back,
        }
    }

    #[test]
    fn symmetric_legs_give_the_offset_exactly() {
        let e = exchange(1_000, 5_000_000, 200_000, 200_000, 30_000);
        let estimated = estimate(&[e]).unwrap();
        assert_eq!(estimated.offset, 5_000_000);
        assert_eq!(estimated.uncertainty, 200_000);
        assert_eq!(e.on_the_wire(), 400_000);
    }

    /// However the wire time splits between the legs, the true offset lies within the stated
    /// uncertainty, down to the most lopsided split.
    #[test]
    fn asymmetric_legs_stay_within_the_uncertainty() {
        let offset = -7_654_321;
        for out in [0, 1, 50_000, 123_457, 300_000, 399_999, 400_000] {
            let e = exchange(10, offset, out, 400_000 - out, 1_000);
            let estimated = estimate(&[e]).unwrap();
            assert!(
                (estimated.offset - offset).abs() <= estimated.uncertainty,
                "out {out}: estimated {} ± {}, true {offset}",
                estimated.offset,
                estimated.uncertainty
            );
        }
    }

    #[test]
    fn the_shortest_time_on_the_wire_wins() {
        let offset = 42_000;
        let slow = exchange(0, offset, 900_000, 100_000, 0); // lopsided and long: off by 400 µs
        let quick = exchange(2_000_000, offset, 60_000, 40_000, 5_000);
        let estimated = estimate(&[slow, quick]).unwrap();
        assert_eq!(estimated.uncertainty, 50_000);
        assert_eq!(estimated.offset, offset + 10_000);
        assert_eq!(
            estimated.to_coordinator(1_000_000 + offset),
            1_000_000 - 10_000
        );
        // And back: a coordinator instant maps to the agent reading it came from.
        assert_eq!(
            estimated.to_agent(estimated.to_coordinator(7_000_000)),
            7_000_000
        );
    }

    #[test]
    fn no_exchange_and_backwards_readings_are_errors() {
        assert_eq!(estimate(&[]), Err(ClockError::NoExchange));
        let mut e = exchange(0, 0, 10, 10, 10);
        e.answered = e.received - 1;
        assert_eq!(estimate(&[e]), Err(ClockError::Backwards));
    }
}
