//! The Kolab scenario end to end: a real frontend process against the real
//! PostgreSQL at 127.0.0.1:5432 (trust auth) and the real MariaDB at
//! 127.0.0.1:3306 (root, no password), with its tables locked by this test.
//! Every scenario runs against both servers.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::RETRY_AFTER;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mysql_async::prelude::Queryable;
use relapse_demo::{DatabaseDsn, Demo, DemoDatabase, DemoOptions, ErrorProfile, Launcher};
use tokio_postgres::NoTls;

const POSTGRES_DSN: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";
const MARIADB_URL: &str = "mysql://root@127.0.0.1:3306/test";
const UPSTREAM_TIMEOUT: Duration = Duration::from_millis(300);
/// Upper bound on anything a test waits for; only reached when a test fails.
const BOUND: Duration = Duration::from_secs(10);
/// What an outage answer may take beyond the upstream timeout.
const SLACK: Duration = Duration::from_millis(700);

#[derive(Debug, Clone, Copy)]
enum Server {
    Postgres,
    Mariadb,
}

impl Server {
    fn dsn(self) -> DatabaseDsn {
        match self {
            Self::Postgres => DatabaseDsn::Postgres(POSTGRES_DSN.to_owned()),
            Self::Mariadb => DatabaseDsn::Mysql(MARIADB_URL.to_owned()),
        }
    }
}

fn options(server: Server, profile: ErrorProfile) -> DemoOptions {
    DemoOptions {
        upstream_timeout: UPSTREAM_TIMEOUT,
        database: Some(DemoDatabase::new(server.dsn(), profile)),
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

/// The test's own session on a server, which looks at the frontend's tables
/// and locks them the way another client of a shared database server would.
enum Session {
    Postgres(tokio_postgres::Client),
    Mariadb(mysql_async::Conn),
}

impl Session {
    async fn connect(server: Server) -> Session {
        match server {
            Server::Postgres => {
                let (client, connection) =
                    tokio_postgres::connect(POSTGRES_DSN, NoTls).await.unwrap();
                tokio::spawn(connection);
                Session::Postgres(client)
            }
            Server::Mariadb => {
                let opts = mysql_async::Opts::from_url(MARIADB_URL).unwrap();
                Session::Mariadb(mysql_async::Conn::new(opts).await.unwrap())
            }
        }
    }

    async fn table_exists(&mut self, name: &str) -> bool {
        match self {
            Session::Postgres(client) => client
                .query_one("SELECT to_regclass($1) IS NOT NULL", &[&name])
                .await
                .unwrap()
                .get(0),
            Session::Mariadb(conn) => {
                let count: Option<i64> = conn
                    .exec_first(
                        "SELECT COUNT(*) FROM information_schema.tables
                         WHERE table_schema = DATABASE() AND table_name = ?",
                        (name,),
                    )
                    .await
                    .unwrap();
                count == Some(1)
            }
        }
    }

    /// Locks `table` against every other session, reads included, until
    /// [`Session::unlock`]: an ACCESS EXCLUSIVE lock in a transaction on
    /// PostgreSQL, `LOCK TABLES … WRITE` (a metadata lock) on MariaDB.
    async fn lock(&mut self, table: &str) {
        let call = async {
            match self {
                Session::Postgres(client) => client
                    .batch_execute(&format!(
                        "BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"
                    ))
                    .await
                    .unwrap(),
                Session::Mariadb(conn) => conn
                    .query_drop(format!("LOCK TABLES {table} WRITE"))
                    .await
                    .unwrap(),
            }
        };
        tokio::time::timeout(BOUND, call)
            .await
            .unwrap_or_else(|_| panic!("no lock on {table} within {BOUND:?}"));
    }

    async fn unlock(&mut self) {
        match self {
            Session::Postgres(client) => client.batch_execute("ROLLBACK").await.unwrap(),
            Session::Mariadb(conn) => conn.query_drop("UNLOCK TABLES").await.unwrap(),
        }
    }
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

async fn sent_mail_is_delivered_and_tables_are_dropped_at_shutdown(server: Server) {
    let options = options(server, ErrorProfile::Honest);
    let chosen = options.database.as_ref().unwrap().tables.clone();
    let demo = Demo::start(options).await.unwrap();
    let url = demo.frontend_url().to_owned();
    let tables = demo.database_tables().unwrap();
    assert_eq!(tables, chosen);
    // `DemoTables::fresh`: named after this (the harness's) process.
    let prefix = format!("relapse_demo_{}_", std::process::id());
    assert!(tables.queue.starts_with(&prefix), "{tables:?}");
    assert!(tables.queue.ends_with("_queue"), "{tables:?}");
    assert_eq!(tables.mail, tables.queue.replace("_queue", "_mail"));
    let mut db = Session::connect(server).await;
    assert!(db.table_exists(&tables.mail).await);
    assert!(db.table_exists(&tables.queue).await);

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
    assert!(!db.table_exists(&tables.mail).await);
    assert!(!db.table_exists(&tables.queue).await);
}

#[tokio::test]
async fn postgres_sent_mail_is_delivered_and_tables_are_dropped_at_shutdown() {
    sent_mail_is_delivered_and_tables_are_dropped_at_shutdown(Server::Postgres).await;
}

#[tokio::test]
async fn mariadb_sent_mail_is_delivered_and_tables_are_dropped_at_shutdown() {
    sent_mail_is_delivered_and_tables_are_dropped_at_shutdown(Server::Mariadb).await;
}

async fn metrics_report_the_queue_depth_and_go_stale_when_locked(server: Server) {
    let demo = Demo::start(options(server, ErrorProfile::Honest))
        .await
        .unwrap();
    let url = demo.frontend_url().to_owned();
    let tables = demo.database_tables().unwrap();
    let mut db = Session::connect(server).await;

    // Hold the delivery back (it cannot insert into the mail table) while
    // sending still works: the mail queues up, as it did at Kolab.
    db.lock(&tables.mail).await;
    for n in 0..3 {
        let sent = post(&format!("{url}/send"), &format!("queued {n}")).await;
        assert_eq!(sent.status, StatusCode::ACCEPTED, "{}", sent.body);
    }
    let metrics = get(&format!("{url}/metrics")).await;
    assert_eq!(queue_depth(&metrics.body), 3, "{}", metrics.body);
    assert!(metrics.body.contains("relapse_demo_queue_depth_stale 0"));
    db.unlock().await;
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
    db.lock(&tables.queue).await;
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
    db.unlock().await;

    demo.shutdown().await;
}

#[tokio::test]
async fn postgres_metrics_report_the_queue_depth_and_go_stale_when_locked() {
    metrics_report_the_queue_depth_and_go_stale_when_locked(Server::Postgres).await;
}

#[tokio::test]
async fn mariadb_metrics_report_the_queue_depth_and_go_stale_when_locked() {
    metrics_report_the_queue_depth_and_go_stale_when_locked(Server::Mariadb).await;
}

/// Locks the queue table, checks what `POST /send` answers, unlocks, checks it
/// is accepted again.
async fn locked_queue_answers(server: Server, profile: ErrorProfile) -> Reply {
    let demo = Demo::start(options(server, profile)).await.unwrap();
    let url = demo.frontend_url().to_owned();
    let tables = demo.database_tables().unwrap();
    let mut db = Session::connect(server).await;

    assert_eq!(
        post(&format!("{url}/send"), "before").await.status,
        StatusCode::ACCEPTED
    );

    db.lock(&tables.queue).await;
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
    db.unlock().await;

    let after = post(&format!("{url}/send"), "after").await;
    assert_eq!(after.status, StatusCode::ACCEPTED, "{}", after.body);
    eventually("the message sent after the outage is delivered", || async {
        let reply = get(&format!("{url}/mail")).await;
        reply.body.contains("after").then_some(())
    })
    .await;

    demo.shutdown().await;
    assert!(!db.table_exists(&tables.queue).await);
    assert!(!db.table_exists(&tables.mail).await);
    during
}

async fn honest_profile_answers_503_with_retry_after_while_locked(server: Server) {
    let during = locked_queue_answers(server, ErrorProfile::Honest).await;
    assert_eq!(during.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(during.retry_after.as_deref(), Some("5"));
    assert!(
        during.body.contains("database is unavailable"),
        "{}",
        during.body
    );
}

#[tokio::test]
async fn postgres_honest_profile_answers_503_with_retry_after_while_locked() {
    honest_profile_answers_503_with_retry_after_while_locked(Server::Postgres).await;
}

#[tokio::test]
async fn mariadb_honest_profile_answers_503_with_retry_after_while_locked() {
    honest_profile_answers_503_with_retry_after_while_locked(Server::Mariadb).await;
}

async fn misleading_profile_answers_401_planned_maintenance_while_locked(server: Server) {
    let during = locked_queue_answers(server, ErrorProfile::MisleadingErrors).await;
    assert_eq!(during.status, StatusCode::UNAUTHORIZED);
    assert_eq!(during.retry_after, None);
    assert!(
        during.body.contains("planned maintenance"),
        "{}",
        during.body
    );
}

#[tokio::test]
async fn postgres_misleading_profile_answers_401_planned_maintenance_while_locked() {
    misleading_profile_answers_401_planned_maintenance_while_locked(Server::Postgres).await;
}

#[tokio::test]
async fn mariadb_misleading_profile_answers_401_planned_maintenance_while_locked() {
    misleading_profile_answers_401_planned_maintenance_while_locked(Server::Mariadb).await;
}

#[tokio::test]
async fn database_routes_are_absent_without_a_database() {
    let demo = Demo::start(DemoOptions {
        database: None,
        ..options(Server::Postgres, ErrorProfile::Honest)
    })
    .await
    .unwrap();
    assert_eq!(demo.database_tables(), None);
    let url = demo.frontend_url().to_owned();
    // `/metrics` is always there; only the queue gauges need the database.
    let metrics = get(&format!("{url}/metrics")).await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(
        !metrics.body.contains("relapse_demo_queue_depth"),
        "{}",
        metrics.body
    );
    assert_eq!(
        get(&format!("{url}/mail")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        post(&format!("{url}/send"), "x").await.status,
        StatusCode::NOT_FOUND
    );
    demo.shutdown().await;
}
