//! The frontend's login (the OpenSRS incident): real password hashing on a few slots, so a
//! flood of logins queues up and starves everyone, and a fail2ban-style per-source limiter,
//! the mitigation that worked at OpenSRS.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

/// The one account: `user=demo&password=demo-password`.
pub(crate) const DEMO_USER: &str = "demo";
const DEMO_PASSWORD: &str = "demo-password";
/// Fixed so the expected hash is the same in every run; the demo has one account and no
/// stored passwords to protect.
const SALT: &[u8] = b"relapse-demo-login-salt";

/// Argon2id with 4 MiB and 2 passes: about 3–4 ms per verify on a 2-core machine (measured,
/// median of 50, release build; dev builds optimize argon2 too), cheap alone and expensive by
/// the thousand, as a real login is.
const M_COST_KIB: u32 = 4096;
const T_COST: u32 = 2;
const HASH_LEN: usize = 32;

/// The most sources the limiter tracks; past it new sources go untracked rather than letting a
/// flood from many addresses grow the table without bound.
const MAX_TRACKED: usize = 100_000;

/// The least time between two sweeps of a full table: a sweep walks every entry, and a flood from
/// ever new addresses must not pay that on each of its failures.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// The limiter's settings (see `DemoAuth` for their meaning).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LimiterConfig {
    pub(crate) max_failures: u32,
    pub(crate) window: Duration,
    pub(crate) ban: Duration,
}

/// The outcome of one login attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Welcome,
    Invalid,
    /// No hashing slot came free within the wait bound.
    Overloaded,
}

/// The login service: the hasher, its slots, the limiter and the counters.
pub(crate) struct Auth {
    hasher: Argon2<'static>,
    expected: [u8; HASH_LEN],
    /// One permit per core: a hash holds a core for its whole run, so more at once would only
    /// slow every one of them down; requests beyond wait in line here.
    slots: Arc<Semaphore>,
    /// How long a login may wait for a slot before it is answered 503.
    wait_bound: Duration,
    /// `None` is the no_mitigation profile.
    limiter: Option<Mutex<Limiter>>,
    pub(crate) counters: Counters,
}

/// What `/metrics` reports about logins.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) ok: AtomicU64,
    pub(crate) invalid: AtomicU64,
    pub(crate) blocked: AtomicU64,
    pub(crate) overloaded: AtomicU64,
    /// Requests on any route answered `blocked`, logins included.
    pub(crate) blocked_requests: AtomicU64,
    /// Password hashes computed (a blocked or overloaded login computes none).
    pub(crate) hashes: AtomicU64,
}

impl Auth {
    pub(crate) fn new(limiter: Option<LimiterConfig>, wait_bound: Duration) -> Self {
        let params = Params::new(M_COST_KIB, T_COST, 1, Some(HASH_LEN))
            .expect("the login hash parameters are valid");
        let hasher = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let mut expected = [0; HASH_LEN];
        hash_into(&hasher, DEMO_PASSWORD, &mut expected);
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Self {
            hasher,
            expected,
            slots: Arc::new(Semaphore::new(cores)),
            wait_bound,
            limiter: limiter.map(|config| Mutex::new(Limiter::new(config))),
            counters: Counters::default(),
        }
    }

    /// If `source` is banned, how long the ban still lasts (so the caller answers at once,
    /// without hashing).
    pub(crate) fn banned(&self, source: IpAddr) -> Option<Duration> {
        let limiter = self.limiter.as_ref()?;
        lock(limiter).banned(source, Instant::now())
    }

    /// Checks `user`/`password`, waiting at most the wait bound for a hashing slot; a failure
    /// counts against `source`. An unknown user is hashed all the same, so that its answer takes
    /// as long as a wrong password's and does not tell which users exist.
    pub(crate) async fn login(
        self: &Arc<Self>,
        source: IpAddr,
        user: &str,
        password: &str,
    ) -> Verdict {
        let permit =
            match tokio::time::timeout(self.wait_bound, Arc::clone(&self.slots).acquire_owned())
                .await
            {
                Ok(Ok(permit)) => permit,
                // The semaphore is never closed; treat it like a full line all the same.
                Ok(Err(_)) | Err(_) => {
                    self.counters.overloaded.fetch_add(1, Ordering::Relaxed);
                    return Verdict::Overloaded;
                }
            };
        let auth = Arc::clone(self);
        let password = password.to_owned();
        // The hash runs off the async threads, holding its slot until it is done.
        let matches = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut hash = [0; HASH_LEN];
            hash_into(&auth.hasher, &password, &mut hash);
            auth.counters.hashes.fetch_add(1, Ordering::Relaxed);
            constant_time_eq(&hash, &auth.expected)
        })
        .await
        .unwrap_or(false);
        if matches && user == DEMO_USER {
            self.counters.ok.fetch_add(1, Ordering::Relaxed);
            Verdict::Welcome
        } else {
            self.counters.invalid.fetch_add(1, Ordering::Relaxed);
            if let Some(limiter) = &self.limiter {
                lock(limiter).record_failure(source, Instant::now());
            }
            Verdict::Invalid
        }
    }

    /// Sources banned right now.
    pub(crate) fn blocked_sources(&self) -> usize {
        self.limiter
            .as_ref()
            .map_or(0, |limiter| lock(limiter).blocked(Instant::now()))
    }
}

fn hash_into(hasher: &Argon2<'_>, password: &str, out: &mut [u8; HASH_LEN]) {
    hasher
        .hash_password_into(password.as_bytes(), SALT, out)
        .expect("a fixed-length hash of a bounded password cannot fail");
}

/// Compares without stopping at the first difference, so the time taken does not tell how much
/// of a guess was right.
fn constant_time_eq(a: &[u8; HASH_LEN], b: &[u8; HASH_LEN]) -> bool {
    a.iter().zip(b).fold(0, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A poisoned limiter is still a consistent table (every update is a single insert or field
/// write), so keep using it.
fn lock(limiter: &Mutex<Limiter>) -> std::sync::MutexGuard<'_, Limiter> {
    limiter
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Failed logins per source in a sliding window, and the bans they earn. Takes the time as an
/// argument so its tests use exact instants.
#[derive(Debug)]
pub(crate) struct Limiter {
    config: LimiterConfig,
    sources: HashMap<IpAddr, Source>,
    capacity: usize,
    last_sweep: Option<Instant>,
}

#[derive(Debug, Default)]
struct Source {
    /// Times of the recent failures, oldest first; never more than `max_failures`.
    failures: VecDeque<Instant>,
    banned_until: Option<Instant>,
}

impl Source {
    /// Whether the entry no longer says anything at `now`.
    fn expired(&self, config: &LimiterConfig, now: Instant) -> bool {
        let ban_over = self.banned_until.is_none_or(|until| until <= now);
        let failures_over = self
            .failures
            .back()
            .is_none_or(|last| now.duration_since(*last) >= config.window);
        ban_over && failures_over
    }
}

impl Limiter {
    pub(crate) fn new(config: LimiterConfig) -> Self {
        Self::with_capacity(config, MAX_TRACKED)
    }

    fn with_capacity(config: LimiterConfig, capacity: usize) -> Self {
        Self {
            config,
            sources: HashMap::new(),
            capacity,
            last_sweep: None,
        }
    }

    /// The rest of `source`'s ban at `now`, if it is banned.
    pub(crate) fn banned(&self, source: IpAddr, now: Instant) -> Option<Duration> {
        let until = self.sources.get(&source)?.banned_until?;
        (until > now).then(|| until - now)
    }

    /// Counts a failed login; the `max_failures`-th within the window bans the source.
    pub(crate) fn record_failure(&mut self, source: IpAddr, now: Instant) {
        if !self.sources.contains_key(&source) && self.sources.len() >= self.capacity {
            self.evict_expired(now);
            if self.sources.len() >= self.capacity {
                // Full of live entries: this source goes uncounted. Evicting a live one would
                // unban an attacker, which is worse.
                return;
            }
        }
        let config = self.config;
        let entry = match self.sources.entry(source) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => entry.insert(Source::default()),
        };
        if entry.banned_until.is_some_and(|until| until > now) {
            // Failures of a request that was already in flight when the ban began.
            return;
        }
        entry.banned_until = None;
        while entry
            .failures
            .front()
            .is_some_and(|first| now.duration_since(*first) >= config.window)
        {
            entry.failures.pop_front();
        }
        entry.failures.push_back(now);
        if entry.failures.len() >= config.max_failures as usize {
            entry.failures.clear();
            entry.banned_until = Some(now + config.ban);
        }
    }

    /// How many sources are banned at `now`.
    pub(crate) fn blocked(&self, now: Instant) -> usize {
        self.sources
            .values()
            .filter(|source| source.banned_until.is_some_and(|until| until > now))
            .count()
    }

    fn evict_expired(&mut self, now: Instant) {
        if self
            .last_sweep
            .is_some_and(|last| now.saturating_duration_since(last) < SWEEP_INTERVAL)
        {
            return;
        }
        self.last_sweep = Some(now);
        let config = self.config;
        self.sources
            .retain(|_, source| !source.expired(&config, now));
    }
}

/// A parsed `user=NAME&password=PW` form.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Credentials {
    pub(crate) user: String,
    pub(crate) password: String,
}

/// Parses an `application/x-www-form-urlencoded` login form: both fields, in any order, each
/// once; other fields are ignored, as browsers send submit buttons too.
pub(crate) fn parse_form(body: &[u8]) -> Result<Credentials, String> {
    let body = std::str::from_utf8(body).map_err(|_| "the form is not utf-8".to_owned())?;
    let mut user = None;
    let mut password = None;
    for pair in body.split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match decode(name)?.as_str() {
            "user" => &mut user,
            "password" => &mut password,
            _ => continue,
        };
        if slot.replace(decode(value)?).is_some() {
            return Err(format!("field {name:?} given twice"));
        }
    }
    match (user, password) {
        (Some(user), Some(password)) => Ok(Credentials { user, password }),
        (None, _) => Err("missing field \"user\"".to_owned()),
        (_, None) => Err("missing field \"password\"".to_owned()),
    }
}

/// Form decoding: `+` is a space, `%XX` a byte, and the bytes must be UTF-8.
fn decode(text: &str) -> Result<String, String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut input = text.bytes();
    while let Some(byte) = input.next() {
        match byte {
            b'+' => bytes.push(b' '),
            b'%' => {
                let high = input.next().and_then(hex);
                let low = input.next().and_then(hex);
                match (high, low) {
                    (Some(high), Some(low)) => bytes.push(high << 4 | low),
                    _ => return Err(format!("bad percent escape in {text:?}")),
                }
            }
            byte => bytes.push(byte),
        }
    }
    String::from_utf8(bytes).map_err(|_| format!("{text:?} does not decode to utf-8"))
}

fn hex(digit: u8) -> Option<u8> {
    (digit as char).to_digit(16).map(|value| value as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: LimiterConfig = LimiterConfig {
        max_failures: 3,
        window: Duration::from_secs(10),
        ban: Duration::from_secs(30),
    };

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_third_failure_in_the_window_bans_for_the_ban_time() {
        let start = Instant::now();
        let at = |millis| start + Duration::from_millis(millis);
        let mut limiter = Limiter::new(CONFIG);
        let source = ip("127.5.0.1");
        limiter.record_failure(source, at(0));
        limiter.record_failure(source, at(1_000));
        assert_eq!(limiter.banned(source, at(1_000)), None);
        limiter.record_failure(source, at(2_000));
        assert_eq!(
            limiter.banned(source, at(2_000)),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            limiter.banned(source, at(31_999)),
            Some(Duration::from_millis(1))
        );
        assert_eq!(limiter.blocked(at(31_999)), 1);
        assert_eq!(limiter.banned(ip("127.0.0.1"), at(2_000)), None);
        assert_eq!(limiter.banned(source, at(32_000)), None);
        assert_eq!(limiter.blocked(at(32_000)), 0);
        // The ban wiped the count: after it, three new failures are needed again.
        limiter.record_failure(source, at(32_000));
        limiter.record_failure(source, at(32_001));
        assert_eq!(limiter.banned(source, at(32_001)), None);
    }

    #[test]
    fn failures_older_than_the_window_do_not_count() {
        let start = Instant::now();
        let at = |millis| start + Duration::from_millis(millis);
        let mut limiter = Limiter::new(CONFIG);
        let source = ip("127.5.0.2");
        limiter.record_failure(source, at(0));
        limiter.record_failure(source, at(5_000));
        // The first failure is exactly one window old: out.
        limiter.record_failure(source, at(10_000));
        assert_eq!(limiter.banned(source, at(10_000)), None);
        limiter.record_failure(source, at(10_001));
        assert!(limiter.banned(source, at(10_001)).is_some());
    }

    #[test]
    fn a_full_table_evicts_expired_sources_and_never_live_ones() {
        let start = Instant::now();
        let at = |millis| start + Duration::from_millis(millis);
        let config = LimiterConfig {
            max_failures: 1,
            ..CONFIG
        };
        let mut limiter = Limiter::with_capacity(config, 2);
        limiter.record_failure(ip("127.5.0.1"), at(0));
        limiter.record_failure(ip("127.5.0.2"), at(20_000));
        // Full of bans: the third source goes untracked.
        limiter.record_failure(ip("127.5.0.3"), at(20_000));
        assert_eq!(limiter.banned(ip("127.5.0.3"), at(20_000)), None);
        assert_eq!(limiter.blocked(at(20_000)), 2);
        // The first ban has run out: its entry makes room.
        limiter.record_failure(ip("127.5.0.3"), at(30_000));
        assert!(limiter.banned(ip("127.5.0.3"), at(30_000)).is_some());
        assert!(limiter.banned(ip("127.5.0.2"), at(30_000)).is_some());
        assert_eq!(limiter.sources.len(), 2);
        // A sweep finds nothing to evict (127.5.0.2's ban lasts until 50 s)...
        limiter.record_failure(ip("127.5.0.4"), at(49_500));
        // ...and the next is not due before a second later, even though that ban is now over.
        limiter.record_failure(ip("127.5.0.4"), at(50_000));
        assert_eq!(limiter.banned(ip("127.5.0.4"), at(50_000)), None);
        limiter.record_failure(ip("127.5.0.4"), at(50_500));
        assert!(limiter.banned(ip("127.5.0.4"), at(50_500)).is_some());
        assert_eq!(limiter.banned(ip("127.5.0.2"), at(50_500)), None);
    }

    #[test]
    fn parses_login_forms() {
        let ok = |user: &str, password: &str| {
            Ok(Credentials {
                user: user.into(),
                password: password.into(),
            })
        };
        assert_eq!(
            parse_form(b"user=demo&password=demo-password"),
            ok("demo", "demo-password")
        );
        assert_eq!(
            parse_form(b"password=a+b%26c%3D&submit=go&user=d%C3%A9mo"),
            ok("démo", "a b&c=")
        );
        assert_eq!(parse_form(b"user=&password="), ok("", ""));
        assert!(parse_form(b"user=demo").is_err());
        assert!(parse_form(b"password=x").is_err());
        assert!(parse_form(b"").is_err());
        assert!(parse_form(b"user=a&user=b&password=x").is_err());
        assert!(parse_form(b"user=%zz&password=x").is_err());
        assert!(parse_form(b"user=%C3&password=x").is_err());
        assert!(parse_form(b"user=\xff&password=x").is_err());
    }

    #[test]
    fn verifies_the_demo_password() {
        let auth = Arc::new(Auth::new(Some(CONFIG), Duration::from_secs(5)));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let source = ip("127.5.0.9");
        runtime.block_on(async {
            assert_eq!(
                auth.login(source, "demo", "demo-password").await,
                Verdict::Welcome
            );
            assert_eq!(auth.login(source, "demo", "nope").await, Verdict::Invalid);
            assert_eq!(
                auth.login(source, "other", "demo-password").await,
                Verdict::Invalid
            );
        });
        assert_eq!(auth.counters.hashes.load(Ordering::Relaxed), 3);
        assert_eq!(auth.banned(source), None);
    }
}
