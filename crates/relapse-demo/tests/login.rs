//! The OpenSRS scenario end to end: a real frontend process whose `/login` hashes passwords, hit
//! from many loopback source addresses (127.x.y.z), with and without the per-source limiter.
//!
//! A binary of its own because one of its tests saturates the CPU on purpose, which would skew
//! the latency bounds of the other demo tests if they ran beside it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST, RETRY_AFTER};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use relapse_demo::{Demo, DemoAuth, DemoError, DemoOptions, Launcher};
use tokio::net::TcpSocket;
use tokio::sync::RwLock;

/// Also the longest a login waits for a hashing slot before it is answered 503.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(1);
/// Upper bound on anything a test waits for; only reached when a test fails.
const BOUND: Duration = Duration::from_secs(10);
const FORM: &str = "application/x-www-form-urlencoded";
const RIGHT: &str = "user=demo&password=demo-password";
const WRONG: &str = "user=demo&password=guess";

/// The overload test takes this for writing, every other test for reading: the flood must not
/// share the two cores with another test's logins, whose hashes it would slow down.
static CPU: RwLock<()> = RwLock::const_new(());

fn options(auth: Option<DemoAuth>) -> DemoOptions {
    DemoOptions {
        upstream_timeout: UPSTREAM_TIMEOUT,
        auth,
        ..DemoOptions::new(Launcher {
            program: env!("CARGO_BIN_EXE_relapse-demo-child").into(),
            args: Vec::new(),
        })
    }
}

fn ip(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn frontend_addr(demo: &Demo) -> SocketAddr {
    demo.frontend_url()
        .trim_start_matches("http://")
        .parse()
        .unwrap()
}

#[derive(Debug)]
struct Reply {
    status: StatusCode,
    retry_after: Option<String>,
    body: String,
    elapsed: Duration,
}

/// A keep-alive HTTP/1 connection from a chosen loopback source address.
struct Connection {
    sender: SendRequest<Full<Bytes>>,
    server: SocketAddr,
}

impl Connection {
    async fn open(source: IpAddr, server: SocketAddr) -> Connection {
        let connect = async {
            let socket = TcpSocket::new_v4().unwrap();
            // Port 0: any free port, on the source address the limiter is to see.
            socket.bind(SocketAddr::new(source, 0)).unwrap();
            let stream = socket.connect(server).await.unwrap();
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(connection);
            sender
        };
        let sender = tokio::time::timeout(BOUND, connect)
            .await
            .unwrap_or_else(|_| panic!("no connection from {source} within {BOUND:?}"));
        Connection { sender, server }
    }

    /// One bounded request; `body` is sent as a login form.
    async fn send(&mut self, method: Method, path: &str, body: &str) -> Reply {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.server.to_string())
            .header(CONTENT_TYPE, FORM)
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap();
        let started = Instant::now();
        let exchange = async {
            self.sender.ready().await.unwrap();
            let response = self.sender.send_request(request).await.unwrap();
            let status = response.status();
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .map(|value| value.to_str().unwrap().to_owned());
            let body = response.into_body().collect().await.unwrap().to_bytes();
            Reply {
                status,
                retry_after,
                body: String::from_utf8(body.to_vec()).unwrap(),
                elapsed: started.elapsed(),
            }
        };
        tokio::time::timeout(BOUND, exchange)
            .await
            .unwrap_or_else(|_| panic!("{path} did not answer within {BOUND:?}"))
    }

    async fn login(&mut self, form: &str) -> Reply {
        self.send(Method::POST, "/login", form).await
    }
}

/// One request on a connection of its own from `source`.
async fn call(demo: &Demo, source: IpAddr, method: Method, path: &str, body: &str) -> Reply {
    Connection::open(source, frontend_addr(demo))
        .await
        .send(method, path, body)
        .await
}

async fn login(demo: &Demo, source: IpAddr, form: &str) -> Reply {
    call(demo, source, Method::POST, "/login", form).await
}

/// The login metrics of `demo`, read from 127.0.0.1.
#[derive(Debug, PartialEq, Eq)]
struct Metrics {
    ok: u64,
    invalid: u64,
    blocked: u64,
    overloaded: u64,
    hashes: u64,
    blocked_sources: u64,
    blocked_requests: u64,
}

async fn metrics(demo: &Demo) -> Metrics {
    let reply = call(demo, ip(127, 0, 0, 1), Method::GET, "/metrics", "").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let value = |name: &str| {
        reply
            .body
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {name} in {:?}", reply.body))
            .parse()
            .unwrap()
    };
    Metrics {
        ok: value("relapse_demo_logins_total{result=\"ok\"}"),
        invalid: value("relapse_demo_logins_total{result=\"invalid\"}"),
        blocked: value("relapse_demo_logins_total{result=\"blocked\"}"),
        overloaded: value("relapse_demo_logins_total{result=\"overloaded\"}"),
        hashes: value("relapse_demo_login_hashes_total"),
        blocked_sources: value("relapse_demo_blocked_sources"),
        blocked_requests: value("relapse_demo_blocked_requests_total"),
    }
}

#[tokio::test]
async fn login_checks_the_password_and_the_form() {
    let _cpu = CPU.read().await;
    let demo = Demo::start(options(Some(DemoAuth::default())))
        .await
        .unwrap();
    let me = ip(127, 0, 0, 1);

    let welcome = login(&demo, me, RIGHT).await;
    assert_eq!(welcome.status, StatusCode::OK, "{}", welcome.body);
    assert_eq!(welcome.body, "welcome\n");
    // Any order, other fields ignored, form encoding decoded.
    let reordered = login(
        &demo,
        me,
        "submit=Log+in&password=demo%2Dpassword&user=demo",
    )
    .await;
    assert_eq!(reordered.status, StatusCode::OK, "{}", reordered.body);

    let wrong = login(&demo, me, WRONG).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.body, "invalid credentials\n");
    let unknown = login(&demo, me, "user=root&password=demo-password").await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.body, "invalid credentials\n");

    for malformed in ["user=demo", "password=x", "", "user=%zz&password=x"] {
        let reply = login(&demo, me, malformed).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{malformed:?}");
        assert!(reply.body.starts_with("bad login form: "), "{}", reply.body);
    }
    assert_eq!(
        call(&demo, me, Method::GET, "/login", "").await.status,
        StatusCode::NOT_FOUND
    );

    // An unknown user is hashed like a wrong password; malformed forms are not hashed at all.
    assert_eq!(
        metrics(&demo).await,
        Metrics {
            ok: 2,
            invalid: 2,
            blocked: 0,
            overloaded: 0,
            hashes: 4,
            blocked_sources: 0,
            blocked_requests: 0,
        }
    );
    demo.shutdown().await;
}

#[tokio::test]
async fn without_auth_there_is_no_login_and_bad_settings_are_refused() {
    let _cpu = CPU.read().await;
    let demo = Demo::start(options(None)).await.unwrap();
    let reply = login(&demo, ip(127, 0, 0, 1), RIGHT).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let metrics = call(&demo, ip(127, 0, 0, 1), Method::GET, "/metrics", "").await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(!metrics.body.contains("relapse_demo_logins_total"));
    demo.shutdown().await;

    for auth in [
        DemoAuth {
            max_failures: 0,
            ..DemoAuth::default()
        },
        DemoAuth {
            ban: Duration::ZERO,
            ..DemoAuth::default()
        },
    ] {
        let error = Demo::start(options(Some(auth))).await.unwrap_err();
        assert!(matches!(error, DemoError::InvalidAuth(_)), "{error:?}");
    }
    // The limiter's settings do not matter when it is off.
    let demo = Demo::start(options(Some(DemoAuth {
        max_failures: 0,
        ..DemoAuth::no_mitigation()
    })))
    .await
    .unwrap();
    demo.shutdown().await;
}

#[tokio::test]
async fn failed_logins_block_their_source_on_every_route_without_hashing() {
    let _cpu = CPU.read().await;
    let demo = Demo::start(options(Some(DemoAuth::default())))
        .await
        .unwrap();
    let attacker = ip(127, 5, 0, 1);

    // Each on its own connection: the ban is per address, not per connection.
    for _ in 0..3 {
        let reply = login(&demo, attacker, WRONG).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.body);
    }
    let before = metrics(&demo).await;
    assert_eq!((before.invalid, before.hashes), (3, 3));
    assert_eq!(before.blocked_sources, 1);

    // Even the right password: the source is banned, not the guess.
    let blocked = login(&demo, attacker, RIGHT).await;
    assert_eq!(blocked.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(blocked.body, "blocked\n");
    // The default ban is 30 s; whole seconds, rounded up.
    let retry_after: u64 = blocked.retry_after.unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    let inbox = call(&demo, attacker, Method::GET, "/", "").await;
    assert_eq!(inbox.status, StatusCode::TOO_MANY_REQUESTS);

    // Everyone else still gets in.
    let welcome = login(&demo, ip(127, 0, 0, 1), RIGHT).await;
    assert_eq!(welcome.status, StatusCode::OK, "{}", welcome.body);
    let neighbour = login(&demo, ip(127, 5, 0, 2), WRONG).await;
    assert_eq!(neighbour.status, StatusCode::UNAUTHORIZED);

    let after = metrics(&demo).await;
    assert_eq!(
        after,
        Metrics {
            ok: 1,
            invalid: 4,
            blocked: 1,
            overloaded: 0,
            // The two logins from others; none for the blocked one.
            hashes: 5,
            blocked_sources: 1,
            blocked_requests: 2,
        }
    );
    demo.shutdown().await;
}

#[tokio::test]
async fn without_mitigation_a_source_is_never_blocked() {
    let _cpu = CPU.read().await;
    let demo = Demo::start(options(Some(DemoAuth::no_mitigation())))
        .await
        .unwrap();
    let attacker = ip(127, 5, 0, 1);
    let mut connection = Connection::open(attacker, frontend_addr(&demo)).await;
    for _ in 0..6 {
        let reply = connection.login(WRONG).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.body);
    }
    let welcome = login(&demo, attacker, RIGHT).await;
    assert_eq!(welcome.status, StatusCode::OK, "{}", welcome.body);
    let metrics = metrics(&demo).await;
    assert_eq!((metrics.invalid, metrics.hashes), (6, 7));
    assert_eq!((metrics.blocked, metrics.blocked_sources), (0, 0));
    demo.shutdown().await;
}

#[tokio::test]
async fn a_ban_expires_and_the_source_may_try_again() {
    let _cpu = CPU.read().await;
    let ban = Duration::from_millis(500);
    let demo = Demo::start(options(Some(DemoAuth {
        ban,
        ..DemoAuth::default()
    })))
    .await
    .unwrap();
    let attacker = ip(127, 5, 0, 3);
    let mut connection = Connection::open(attacker, frontend_addr(&demo)).await;
    for _ in 0..3 {
        assert_eq!(
            connection.login(WRONG).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    let banned_at = Instant::now();
    let blocked = connection.login(WRONG).await;
    assert_eq!(blocked.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(blocked.retry_after.as_deref(), Some("1"));

    // Poll a route that never hashes until the ban is over.
    let deadline = banned_at + BOUND;
    loop {
        let reply = connection.send(Method::GET, "/metrics", "").await;
        if reply.status == StatusCode::OK {
            break;
        }
        assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(Instant::now() < deadline, "still banned after {BOUND:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Over no sooner than the ban time after the third failure (which was before `banned_at`,
    // so allow for the round trip of the blocked request).
    assert!(
        banned_at.elapsed() + blocked.elapsed >= ban,
        "unbanned after {:?}",
        banned_at.elapsed()
    );
    let retry = connection.login(WRONG).await;
    assert_eq!(retry.status, StatusCode::UNAUTHORIZED, "{}", retry.body);
    assert_eq!(metrics(&demo).await.blocked_sources, 0);
    demo.shutdown().await;
}

#[tokio::test]
async fn a_login_flood_from_many_sources_starves_the_right_user() {
    let _cpu = CPU.write().await;
    let demo = Demo::start(options(Some(DemoAuth::no_mitigation())))
        .await
        .unwrap();
    let server = frontend_addr(&demo);
    let me = ip(127, 0, 0, 1);

    // Idle latency: the best of a few, so one scheduling hiccup does not set the baseline.
    let mut connection = Connection::open(me, server).await;
    let mut idle = Duration::MAX;
    for _ in 0..5 {
        let reply = connection.login(RIGHT).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        idle = idle.min(reply.elapsed);
    }

    // 64 sources in 127.6.0.64/26, each sending wrong logins back to back until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let mut flood = tokio::task::JoinSet::new();
    for host in 64..128 {
        let stop = Arc::clone(&stop);
        flood.spawn(async move {
            let mut connection = Connection::open(ip(127, 6, 0, host), server).await;
            while !stop.load(Ordering::Relaxed) {
                let status = connection.login(WRONG).await.status;
                assert!(
                    status == StatusCode::UNAUTHORIZED || status == StatusCode::SERVICE_UNAVAILABLE,
                    "{status}"
                );
            }
        });
    }
    // Saturated once every flooder has had about one answer: the rest are queued for slots.
    let deadline = Instant::now() + BOUND;
    while metrics(&demo).await.invalid < 64 {
        assert!(Instant::now() < deadline, "the flood did not get going");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let starved = connection.login(RIGHT).await;
    stop.store(true, Ordering::Relaxed);
    while let Some(flooder) = flood.join_next().await {
        flooder.unwrap();
    }
    let floor = (idle * 10).max(Duration::from_millis(30));
    assert!(
        starved.status == StatusCode::SERVICE_UNAVAILABLE
            || (starved.status == StatusCode::OK && starved.elapsed >= floor),
        "idle {idle:?}, under the flood {} after {:?}",
        starved.status,
        starved.elapsed
    );
    eprintln!(
        "login latency: idle {idle:?}, under a 64-source flood {:?} ({})",
        starved.elapsed, starved.status
    );
    // The flood is over: the line drains and the right user gets in again.
    let after = connection.login(RIGHT).await;
    assert_eq!(after.status, StatusCode::OK, "{}", after.body);
    demo.shutdown().await;
}
