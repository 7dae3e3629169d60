//! The failover's state machine on exact sequences of check results, and its round scheduling
//! on tokio's paused clock.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::*;

fn options(fall: u32, rise: u32, failback: bool) -> FailoverOptions {
    FailoverOptions {
        fall,
        rise,
        failback,
        ..FailoverOptions::default()
    }
}

fn health(fall: u32, rise: u32, failback: bool) -> Health {
    Health::new(vec![PRIMARY, STANDBY], &options(fall, rise, failback))
}

const PASS: CheckResult = Ok(());

fn fail() -> CheckResult {
    Err("backend did not answer within 250ms".to_owned())
}

fn down(backend: &'static str, failures: u32) -> Event {
    Event::Down {
        backend,
        failures,
        reason: "backend did not answer within 250ms".to_owned(),
    }
}

fn up(backend: &'static str, passes: u32) -> Event {
    Event::Up { backend, passes }
}

fn switched(from: &'static str, to: &'static str, why: Switch) -> Event {
    Event::Switched { from, to, why }
}

#[test]
fn fall_failures_in_a_row_fail_over_and_rise_passes_bring_the_primary_back_up() {
    let mut health = health(2, 2, false);
    assert_eq!(health.round(&[PASS, PASS]), []);
    assert_eq!(health.round(&[fail(), PASS]), []);
    assert_eq!(
        health.round(&[fail(), PASS]),
        [
            down(PRIMARY, 2),
            switched(PRIMARY, STANDBY, Switch::Failover)
        ]
    );
    assert_eq!((health.active, health.switches), (1, 1));
    // DOWN stays DOWN while it fails; one pass is not enough to rise.
    assert_eq!(health.round(&[fail(), PASS]), []);
    assert_eq!(health.round(&[PASS, PASS]), []);
    assert_eq!(health.round(&[PASS, PASS]), [up(PRIMARY, 2)]);
    // Without failback the standby stays active.
    assert_eq!(health.round(&[PASS, PASS]), []);
    assert_eq!((health.active, health.switches), (1, 1));
}

#[test]
fn a_result_against_the_streak_starts_it_over() {
    let mut health = health(3, 3, false);
    for _ in 0..3 {
        assert_eq!(health.round(&[fail(), PASS]), []);
        assert_eq!(health.round(&[fail(), PASS]), []);
        assert_eq!(health.round(&[PASS, PASS]), []);
    }
    assert_eq!(health.round(&[fail(), PASS]), []);
    assert_eq!(health.round(&[fail(), PASS]), []);
    assert_eq!(
        health.round(&[fail(), PASS]),
        [
            down(PRIMARY, 3),
            switched(PRIMARY, STANDBY, Switch::Failover)
        ]
    );
    for _ in 0..3 {
        assert_eq!(health.round(&[PASS, PASS]), []);
        assert_eq!(health.round(&[PASS, PASS]), []);
        assert_eq!(health.round(&[fail(), PASS]), []);
    }
}

#[test]
fn fall_one_fails_over_on_the_first_failure() {
    let mut health = health(1, 1, false);
    assert_eq!(
        health.round(&[fail(), PASS]),
        [
            down(PRIMARY, 1),
            switched(PRIMARY, STANDBY, Switch::Failover)
        ]
    );
    assert_eq!(health.round(&[PASS, PASS]), [up(PRIMARY, 1)]);
}

#[test]
fn failback_returns_to_the_primary_in_the_round_it_is_up() {
    let mut health = health(2, 2, true);
    health.round(&[fail(), PASS]);
    health.round(&[fail(), PASS]);
    assert_eq!(health.active, 1);
    assert_eq!(health.round(&[PASS, PASS]), []);
    assert_eq!(
        health.round(&[PASS, PASS]),
        [up(PRIMARY, 2), switched(STANDBY, PRIMARY, Switch::Failback)]
    );
    assert_eq!((health.active, health.switches), (0, 2));
    assert_eq!(health.round(&[PASS, PASS]), []);
}

#[test]
fn a_failed_standby_fails_over_back_to_an_up_primary_even_without_failback() {
    let mut health = health(1, 1, false);
    health.round(&[fail(), PASS]);
    assert_eq!(health.round(&[PASS, PASS]), [up(PRIMARY, 1)]);
    assert_eq!(
        health.round(&[PASS, fail()]),
        [
            down(STANDBY, 1),
            switched(STANDBY, PRIMARY, Switch::Failover)
        ]
    );
}

#[test]
fn with_no_backend_up_it_stays_and_says_so_once_per_outage() {
    // FLG's evening: the standby, now the main one, hangs too.
    let mut health = health(2, 2, false);
    health.round(&[fail(), PASS]);
    health.round(&[fail(), PASS]);
    assert_eq!(health.round(&[fail(), fail()]), []);
    assert_eq!(
        health.round(&[fail(), fail()]),
        [
            down(STANDBY, 2),
            Event::NoneUp {
                staying_on: STANDBY
            }
        ]
    );
    for _ in 0..5 {
        assert_eq!(health.round(&[fail(), fail()]), []);
    }
    assert_eq!((health.active, health.switches), (1, 1));
    // The standby comes back first: it is active and UP, nothing to switch.
    health.round(&[fail(), PASS]);
    assert_eq!(health.round(&[fail(), PASS]), [up(STANDBY, 2)]);
    // A second outage is said again.
    health.round(&[fail(), fail()]);
    assert_eq!(
        health.round(&[fail(), fail()]),
        [
            down(STANDBY, 2),
            Event::NoneUp {
                staying_on: STANDBY
            }
        ]
    );
    // Then the primary is UP: fail over to it.
    health.round(&[PASS, fail()]);
    assert_eq!(
        health.round(&[PASS, fail()]),
        [up(PRIMARY, 2), switched(STANDBY, PRIMARY, Switch::Failover)]
    );
    assert_eq!((health.active, health.switches), (0, 2));
}

#[test]
fn both_down_in_one_round_is_no_switch() {
    let mut health = health(1, 1, true);
    assert_eq!(
        health.round(&[fail(), fail()]),
        [
            down(PRIMARY, 1),
            down(STANDBY, 1),
            Event::NoneUp {
                staying_on: PRIMARY
            }
        ]
    );
    assert_eq!(
        health.round(&[fail(), PASS]),
        [up(STANDBY, 1), switched(PRIMARY, STANDBY, Switch::Failover)]
    );
}

#[test]
fn the_event_lines_keep_their_words() {
    assert_eq!(
        down(PRIMARY, 2).to_string(),
        "backend primary is DOWN after 2 failed checks (backend did not answer within 250ms)"
    );
    assert_eq!(
        up(PRIMARY, 2).to_string(),
        "backend primary is UP after 2 passed checks"
    );
    assert_eq!(
        up(STANDBY, 1).to_string(),
        "backend standby is UP after 1 passed check"
    );
    assert_eq!(
        switched(PRIMARY, STANDBY, Switch::Failover).to_string(),
        "switched from primary to standby (failover)"
    );
    assert_eq!(
        switched(STANDBY, PRIMARY, Switch::Failback).to_string(),
        "switched from standby to primary (failback)"
    );
    assert_eq!(
        Event::NoneUp {
            staying_on: STANDBY
        }
        .to_string(),
        "no backend is UP: staying on standby"
    );
}

#[test]
fn metrics_show_the_published_state_and_nothing_without_a_standby() {
    let single = Upstream::new("http://127.0.0.1:1/", None);
    assert_eq!(single.active_url(), "http://127.0.0.1:1");
    assert_eq!(single.metrics(), "");

    let upstream = Upstream::new("http://127.0.0.1:1", Some("http://127.0.0.1:2"));
    let mut health = health(1, 1, false);
    health.round(&[fail(), PASS]);
    upstream.publish(&health);
    assert_eq!(upstream.active_url(), "http://127.0.0.1:2");
    assert_eq!(
        upstream.metrics(),
        "# HELP relapse_demo_backend_up 1 if the frontend's health checks have the backend UP.\n\
         # TYPE relapse_demo_backend_up gauge\n\
         relapse_demo_backend_up{backend=\"primary\"} 0\n\
         relapse_demo_backend_up{backend=\"standby\"} 1\n\
         # HELP relapse_demo_active_backend 1 for the backend the frontend sends its requests to.\n\
         # TYPE relapse_demo_active_backend gauge\n\
         relapse_demo_active_backend{backend=\"primary\"} 0\n\
         relapse_demo_active_backend{backend=\"standby\"} 1\n\
         # HELP relapse_demo_backend_switches_total Switches of the active backend (failovers and failbacks).\n\
         # TYPE relapse_demo_backend_switches_total counter\n\
         relapse_demo_backend_switches_total 1\n"
    );
}

/// A fake pair of backends on the paused clock: a frozen one never answers its check.
struct Fake {
    frozen: Mutex<[bool; 2]>,
    /// When each check started, and of which backend.
    checks: Mutex<Vec<(Duration, usize)>>,
    start: Instant,
}

impl Fake {
    fn new() -> Arc<Fake> {
        Arc::new(Fake {
            frozen: Mutex::new([false; 2]),
            checks: Mutex::new(Vec::new()),
            start: Instant::now(),
        })
    }

    fn freeze(&self, index: usize) {
        self.frozen.lock().unwrap()[index] = true;
    }

    fn thaw(&self, index: usize) {
        self.frozen.lock().unwrap()[index] = false;
    }

    /// Starts the failover loop against this fake; its events come out of the receiver with
    /// the time since the start.
    fn run(
        self: &Arc<Self>,
        options: FailoverOptions,
    ) -> (Arc<Upstream>, mpsc::UnboundedReceiver<(Duration, Event)>) {
        let upstream = Arc::new(Upstream::new(
            "http://primary.invalid",
            Some("http://standby.invalid"),
        ));
        let (sender, receiver) = mpsc::unbounded_channel();
        let fake = self.clone();
        let start = self.start;
        tokio::spawn(run(
            options,
            upstream.clone(),
            move |index| {
                let fake = fake.clone();
                async move {
                    fake.checks
                        .lock()
                        .unwrap()
                        .push((fake.start.elapsed(), index));
                    let frozen = fake.frozen.lock().unwrap()[index];
                    if frozen {
                        std::future::pending::<()>().await;
                    }
                    Ok(())
                }
            },
            move |event| {
                let _ = sender.send((start.elapsed(), event.clone()));
            },
        ));
        (upstream, receiver)
    }

    fn check_starts(&self, index: usize) -> Vec<u64> {
        let checks = self.checks.lock().unwrap();
        checks
            .iter()
            .filter(|(_, of)| *of == index)
            .map(|(at, _)| at.as_millis() as u64)
            .collect()
    }
}

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

#[tokio::test(start_paused = true)]
async fn a_backend_frozen_just_before_a_round_is_down_and_switched_at_fall_minus_one_inters_plus_timeout(
) {
    let fake = Fake::new();
    let (upstream, mut events) = fake.run(FailoverOptions {
        inter: ms(250),
        timeout: ms(250),
        fall: 2,
        rise: 2,
        failback: false,
    });
    // Rounds start at 0 and 250: freeze the primary just before the second.
    tokio::time::sleep_until(fake.start + ms(249)).await;
    fake.freeze(0);
    assert_eq!(upstream.active_url(), "http://primary.invalid");

    // That round's check fails at 250 + timeout; the next round starts then, on time, and its
    // check, the fall-th failure, fails at 250 + (fall - 1) * inter + timeout = 750.
    let (at, event) = events.recv().await.unwrap();
    assert_eq!((at, event), (ms(750), down(PRIMARY, 2)));
    let (at, event) = events.recv().await.unwrap();
    assert_eq!(
        (at, event),
        (ms(750), switched(PRIMARY, STANDBY, Switch::Failover))
    );
    assert_eq!(upstream.active_url(), "http://standby.invalid");
    assert_eq!(fake.check_starts(0), [0, 250, 500, 750]);
    assert_eq!(fake.check_starts(1), [0, 250, 500, 750]);
}

#[tokio::test(start_paused = true)]
async fn rounds_start_every_inter_and_a_slow_round_delays_the_next() {
    let fake = Fake::new();
    let (_upstream, mut events) = fake.run(FailoverOptions {
        inter: ms(100),
        timeout: ms(250),
        fall: 3,
        rise: 2,
        failback: false,
    });
    tokio::time::sleep_until(fake.start + ms(350)).await;
    assert_eq!(fake.check_starts(0), [0, 100, 200, 300]);
    // From 350 the primary never answers: the round at 400 ends at its timeout, 650, and the
    // next starts then (not in a burst for the ticks it missed), then 250 after each.
    fake.freeze(0);
    let (at, event) = events.recv().await.unwrap();
    assert_eq!((at, event), (ms(400 + 3 * 250), down(PRIMARY, 3)));
    assert_eq!(
        fake.check_starts(0),
        [0, 100, 200, 300, 400, 650, 900, 1150]
    );
    // Every round checked both backends at the same instant.
    assert_eq!(fake.check_starts(0), fake.check_starts(1));
}

#[tokio::test(start_paused = true)]
async fn both_frozen_is_down_and_stranded_then_back_without_a_switch() {
    let fake = Fake::new();
    let (upstream, mut events) = fake.run(FailoverOptions {
        inter: ms(100),
        timeout: ms(100),
        fall: 1,
        rise: 1,
        failback: false,
    });
    tokio::time::sleep_until(fake.start + ms(50)).await;
    fake.freeze(0);
    fake.freeze(1);
    let mut next = || events.try_recv().ok();
    tokio::time::sleep_until(fake.start + ms(201)).await;
    let timed_out = |backend| Event::Down {
        backend,
        failures: 1,
        reason: "backend did not answer within 100ms".to_owned(),
    };
    assert_eq!(next(), Some((ms(200), timed_out(PRIMARY))));
    assert_eq!(next(), Some((ms(200), timed_out(STANDBY))));
    assert_eq!(
        next(),
        Some((
            ms(200),
            Event::NoneUp {
                staying_on: PRIMARY
            }
        ))
    );
    tokio::time::sleep_until(fake.start + ms(950)).await;
    assert_eq!(next(), None);
    assert_eq!(upstream.active_url(), "http://primary.invalid");
    assert!(upstream
        .metrics()
        .contains("relapse_demo_backend_switches_total 0\n"));

    // The round that started at 900 is still waiting on both; the one at 1000 passes.
    fake.thaw(0);
    fake.thaw(1);
    tokio::time::sleep_until(fake.start + ms(1001)).await;
    assert_eq!(next(), Some((ms(1000), up(PRIMARY, 1))));
    assert_eq!(next(), Some((ms(1000), up(STANDBY, 1))));
    assert_eq!(next(), None);
    assert_eq!(upstream.active_url(), "http://primary.invalid");
}
