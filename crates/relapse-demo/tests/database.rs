//! The Kolab scenario end to end: a real frontend process against the real
//! PostgreSQL at 127.0.0.1:5432 (trust auth), with its queue table locked by
//! this test.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::RETRY_AFTER;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use relapse_demo::{Demo, DemoDatabase, DemoOptions, ErrorProfile, Launcher};
use tokio_postgres::NoTls;

const DSN: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";
const UPSTREAM_TIMEOUT: Duration = Duration::from_millis(300);
/// Upper bound on anything a test waits for; only reached when a test fails.
const BOUND: Duration = Duration::from_secs(10);
/// What an outage answer may take beyond the upstream timeout.
const SLACK: Duration = Duration::from_millis(700);

fn options(profile: ErrorProfile) -> DemoOptions {
    DemoOptions {
        upstream_timeout: UPSTREAM_TIMEOUT,
        database: Some(DemoDatabase {
            postgres_dsn: DSN.to_owned(),
            profile,
        }),
        ..DemoOptions::new(Launcher {
            program: env!("CARGO_BIN_EXE_relapse-demo-child").into(),
            args: Vec::new(),
        })
    }
}

struct Reply {
    status: StatusCode,
    retry_after: Option<String>,
    body: String,
}

/// One bounded request on a fresh connection.
async fn call(method: Method, url: &str, body: &str) -> Reply {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let exchange = async {
        let response = client.request(request).await.unwrap();
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
        }
    };
    tokio::time::timeout(BOUND, exchange)
        .await
        .unwrap_or_else(|_| panic!("{url} did not answer within {BOUND:?}"))
}

async fn get(url: &str) -> Reply {
    call(Method::GET, url, "").await
}

async fn post(url: &str, body: &str) -> Reply {
    call(Method::POST, url, body).await
}

async fn connect() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(DSN, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// Polls `check` until it returns `Some`, failing the test after `BOUND`.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + BOUND;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {BOUND:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn queue_depth(metrics: &str) -> i64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("relapse_demo_queue_depth "))
        .unwrap_or_else(|| panic!("no queue depth in {metrics:?}"))
        .trim()
        .parse()
        .unwrap()
}

async fn table_exists(client: &tokio_postgres::Client, name: &str) -> bool {
    client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&name])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn sent_mail_is_delivered_and_tables_are_dropped_at_shutdown() {
    let demo = Demo::start(options(ErrorProfile::Honest)).await.unwrap();
    let url = demo.frontend_url().to_owned();
    let tables = demo.database_tables().unwrap();
    assert_eq!(
        tables.queue,
        format!("relapse_demo_{}_queue", demo.frontend_pid())
    );
    let db = connect().await;
    assert!(table_exists(&db, &tables.mail).await);
    assert!(table_exists(&db, &tables.queue).await);

    assert_eq!(get(&format!("{url}/health")).await.status, StatusCode::OK);
    let metrics = get(&format!("{url}/metrics")).await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert_eq!(queue_depth(&metrics.body), 0);
    assert!(metrics.body.contains("relapse_demo_queue_depth_stale 0"));

    let sent = post(&format!("{url}/send"), "hello from the test").await;
    assert_eq!(sent.status, StatusCode::ACCEPTED, "{}", sent.body);
    let listed = eventually("the message is delivered", || async {
        let reply = get(&format!("{url}/mail")).await;
        assert_eq!(reply.status, StatusCode::OK);
        reply
            .body
            .contains("hello from the test")
            .then_some(reply.body)
    })
    .await;
    assert!(listed.lines().count() == 1, "{listed:?}");

    demo.shutdown().await;
    assert!(!table_exists(&db, &tables.mail).await);
    assert!(!table_exists(&db, &tables.queue).await);
}

#[tokio::test]
async fn metrics_report_the_queue_depth_and_go_stale_when_locked() {
    let demo = Demo::start(options(ErrorProfile::Honest)).await.unwrap();
    let url = demo.frontend_url().to_owned();
    let tables = demo.database_tables().unwrap();
    let mut db = connect().await;

    // Hold the delivery back (it cannot insert into the mail table) while
    // sending still works: the mail queues up, as it did at Kolab.
    let blocker = db.transaction().await.unwrap();
    blocker
        .batch_execute(&format!(
            "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
            tables.mail
        ))
        .await
        .unwrap();
    for n in 0..3 {
        let sent = post(&format!("{url}/send"), &format!("queued {n}")).await;
        assert_eq!(sent.status, StatusCode::ACCEPTED, "{}", sent.body);
    }
    let metrics = get(&format!("{url}/metrics")).await;
    assert_eq!(queue_depth(&metrics.body), 3, "{}", metrics.body);
    assert!(metrics.body.contains("relapse_demo_queue_depth_stale 0"));
    blocker.rollback().await.unwrap();
    // Released, the queue drains late but completely.
    eventually("the queue drains", || async {
        let metrics = get(&format!("{url}/metrics")).await;
        (queue_depth(&metrics.body) == 0).then_some(())
    })
    .await;
    let mail = get(&format!("{url}/mail")).await.body;
    for n in 0..3 {
        assert!(mail.contains(&format!("queued {n}")), "{mail:?}");
    }

    // With the queue locked exclusively the depth cannot be read: the last
    // known value (0, just read), marked stale, within the timeout.
    let blocker = db.transaction().await.unwrap();
    blocker
        .batch_execute(&format!(
            "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
            tables.queue
        ))
        .await
        .unwrap();
    let started = Instant::now();
    let metrics = get(&format!("{url}/metrics")).await;
    assert!(started.elapsed() < UPSTREAM_TIMEOUT + SLACK);
    assert_eq!(metrics.status, StatusCode::OK);
    assert_eq!(queue_depth(&metrics.body), 0);
    assert!(
        metrics.body.contains("relapse_demo_queue_depth_stale 1"),
        "{}",
        metrics.body
    );
    let health = get(&format!("{url}/health")).await;
    assert_eq!(
        health.status,
        StatusCode::OK,
        "SELECT 1 needs no table lock"
    );
    blocker.rollback().await.unwrap();

    demo.shutdown().await;
}

/// Locks the queue table, checks what `POST /send` answers, unlocks, checks it
/// is accepted again.
async fn locked_queue_answers(profile: ErrorProfile) -> Reply {
    let demo = Demo::start(options(profile)).await.unwrap();
    let url = demo.frontend_url().to_owned();
    let tables = demo.database_tables().unwrap();
    let mut db = connect().await;

    assert_eq!(
        post(&format!("{url}/send"), "before").await.status,
        StatusCode::ACCEPTED
    );

    let blocker = db.transaction().await.unwrap();
    blocker
        .batch_execute(&format!(
            "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
            tables.queue
        ))
        .await
        .unwrap();
    let started = Instant::now();
    let during = post(&format!("{url}/send"), "during").await;
    let took = started.elapsed();
    assert!(
        took < UPSTREAM_TIMEOUT + SLACK,
        "the outage answer took {took:?}"
    );
    // Blocked statements do not pile up: several more in a row each answer
    // within the bound too.
    for _ in 0..3 {
        let started = Instant::now();
        let again = post(&format!("{url}/send"), "during").await;
        assert_eq!(again.status, during.status);
        assert!(started.elapsed() < UPSTREAM_TIMEOUT + SLACK);
    }
    blocker.rollback().await.unwrap();

    let after = post(&format!("{url}/send"), "after").await;
    assert_eq!(after.status, StatusCode::ACCEPTED, "{}", after.body);
    eventually("the message sent after the outage is delivered", || async {
        let reply = get(&format!("{url}/mail")).await;
        reply.body.contains("after").then_some(())
    })
    .await;

    demo.shutdown().await;
    let db = connect().await;
    assert!(!table_exists(&db, &tables.queue).await);
    during
}

#[tokio::test]
async fn honest_profile_answers_503_with_retry_after_while_locked() {
    let during = locked_queue_answers(ErrorProfile::Honest).await;
    assert_eq!(during.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(during.retry_after.as_deref(), Some("5"));
    assert!(
        during.body.contains("database is unavailable"),
        "{}",
        during.body
    );
}

#[tokio::test]
async fn misleading_profile_answers_401_planned_maintenance_while_locked() {
    let during = locked_queue_answers(ErrorProfile::MisleadingErrors).await;
    assert_eq!(during.status, StatusCode::UNAUTHORIZED);
    assert_eq!(during.retry_after, None);
    assert!(
        during.body.contains("planned maintenance"),
        "{}",
        during.body
    );
}

#[tokio::test]
async fn database_routes_are_absent_without_a_database() {
    let demo = Demo::start(DemoOptions {
        database: None,
        ..options(ErrorProfile::Honest)
    })
    .await
    .unwrap();
    assert_eq!(demo.database_tables(), None);
    let url = demo.frontend_url().to_owned();
    assert_eq!(
        get(&format!("{url}/metrics")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        post(&format!("{url}/send"), "x").await.status,
        StatusCode::NOT_FOUND
    );
    demo.shutdown().await;
}
