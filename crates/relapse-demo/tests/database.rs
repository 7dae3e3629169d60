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
use relapse_demo::{
    drop_tables, drop_tables_blocking, DatabaseDsn, DatabaseServer, Demo, DemoDatabase, DemoError,
    DemoOptions, DemoTables, DemoTablesRecord, DropTablesError, ErrorProfile, Launcher,
    DROP_CONNECT_TIMEOUT,
};
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

    /// The tables in the session's schema / database whose names start with
    /// `prefix` (taken literally), sorted: what an operator hunting leftovers
    /// with `tablename LIKE 'relapse%'` would see.
    async fn tables_starting_with(&mut self, prefix: &str) -> Vec<String> {
        let pattern = format!("{}%", prefix.replace('_', "\\_"));
        let mut names: Vec<String> = match self {
            Session::Postgres(client) => client
                .query(
                    "SELECT tablename::text FROM pg_tables
                     WHERE schemaname = current_schema() AND tablename LIKE $1",
                    &[&pattern],
                )
                .await
                .unwrap()
                .iter()
                .map(|row| row.get(0))
                .collect(),
            Session::Mariadb(conn) => conn
                .exec(
                    "SELECT table_name FROM information_schema.tables
                     WHERE table_schema = DATABASE() AND table_name LIKE ?",
                    (pattern,),
                )
                .await
                .unwrap(),
        };
        names.sort();
        names
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
    let _guard = DropGuard(options.database.as_ref().unwrap().record());
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
    let options = options(server, ErrorProfile::Honest);
    let _guard = DropGuard(options.database.as_ref().unwrap().record());
    let demo = Demo::start(options).await.unwrap();
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
    let options = options(server, profile);
    let _guard = DropGuard(options.database.as_ref().unwrap().record());
    let demo = Demo::start(options).await.unwrap();
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

    // The server first works off the statements that queued behind the lock (each was given up
    // by the frontend after the upstream timeout, but a lock wait is not cut short on the
    // server), so on a loaded machine the first send after the unlock may still time out: the
    // outage must end, not end within one statement.
    eventually("a send after the unlock is accepted", || async {
        let after = post(&format!("{url}/send"), "after").await;
        (after.status == StatusCode::ACCEPTED).then_some(())
    })
    .await;
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

impl Server {
    fn name(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Mariadb => "mariadb",
        }
    }

    fn record_server(self) -> DatabaseServer {
        match self {
            Self::Postgres => DatabaseServer::Postgres,
            Self::Mariadb => DatabaseServer::Mysql,
        }
    }

    /// A DSN for this server's kind at 127.0.0.1:`port`.
    fn dsn_at_port(self, port: u16) -> String {
        match self {
            Self::Postgres => format!("host=127.0.0.1 port={port} user=postgres dbname=test"),
            Self::Mariadb => format!("mysql://root@127.0.0.1:{port}/test"),
        }
    }
}

/// Tables of this test process, for one scenario on one server.
fn tables_for(scenario: &str, server: Server) -> DemoTables {
    DemoTables::for_run(&format!(
        "{}_{scenario}_{}",
        std::process::id(),
        server.name()
    ))
    .unwrap()
}

/// Drops the record's tables when the test ends, failed or not. Runs
/// [`drop_tables_blocking`] on a thread of its own: `Drop` runs inside the
/// test's runtime, where the blocking call refuses to work.
struct DropGuard(DemoTablesRecord);

impl Drop for DropGuard {
    fn drop(&mut self) {
        let record = self.0.clone();
        let result = std::thread::spawn(move || drop_tables_blocking(&record)).join();
        if !std::thread::panicking() {
            result.unwrap().unwrap();
        }
    }
}

/// Waits, without reaping it, until our child `pid` has exited; returns the
/// signal that ended it. The child stays a zombie for its `tokio::process::Child`
/// (inside the `Demo`) to reap.
async fn exited_by_signal(pid: u32) -> Option<nix::sys::signal::Signal> {
    use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap());
    let wait = tokio::task::spawn_blocking(move || {
        waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT)
    });
    let status = tokio::time::timeout(BOUND, wait)
        .await
        .unwrap_or_else(|_| panic!("pid {pid} did not exit within {BOUND:?}"))
        .unwrap()
        .unwrap();
    match status {
        WaitStatus::Signaled(_, signal, _) => Some(signal),
        _ => None,
    }
}

fn sigkill(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

/// The names chosen before `Demo::start` are exactly the tables that exist
/// after it; a SIGKILLed demo (what a SIGKILLed harness amounts to, its
/// children dying of their parent-death signal) leaves them behind; the
/// journaled record is enough for `drop_tables` to remove them, twice.
async fn tables_left_by_a_killed_demo_are_dropped_from_the_record(server: Server) {
    let tables = tables_for("killed", server);
    let record = DemoTablesRecord::new(&server.dsn(), &tables);
    assert_eq!(record.server, server.record_server());
    let prefix = tables.mail.trim_end_matches("mail").to_owned();
    let mut db = Session::connect(server).await;
    let _guard = DropGuard(record.clone());
    assert_eq!(db.tables_starting_with(&prefix).await, Vec::<String>::new());

    let mut options = options(server, ErrorProfile::Honest);
    options.database.as_mut().unwrap().tables = tables.clone();
    assert_eq!(options.database.as_ref().unwrap().record(), record);
    let demo = Demo::start(options).await.unwrap();
    assert_eq!(demo.database_tables(), Some(tables.clone()));
    assert_eq!(demo.tables_record(), Some(record.clone()));
    let mut expected = vec![tables.mail.clone(), tables.queue.clone()];
    expected.sort();
    assert_eq!(db.tables_starting_with(&prefix).await, expected);
    let url = demo.frontend_url().to_owned();
    let sent = post(&format!("{url}/send"), "lost in the crash").await;
    assert_eq!(sent.status, StatusCode::ACCEPTED, "{}", sent.body);

    for pid in [demo.frontend_pid(), demo.backend_pid()] {
        sigkill(pid);
        assert_eq!(
            exited_by_signal(pid).await,
            Some(nix::sys::signal::Signal::SIGKILL)
        );
    }
    // Dropping the `Demo` only reaps the children: no cleanup happens here.
    drop(demo);
    assert_eq!(db.tables_starting_with(&prefix).await, expected);

    let done = drop_tables(&record).await.unwrap();
    let server_name = record.server.to_string();
    assert_eq!(
        done,
        format!(
            "dropped tables {}, {} on {server_name}",
            tables.mail, tables.queue
        )
    );
    assert_eq!(db.tables_starting_with(&prefix).await, Vec::<String>::new());

    let again = drop_tables(&record).await.unwrap();
    assert_eq!(
        again,
        format!(
            "tables {}, {} on {server_name} were already gone",
            tables.mail, tables.queue
        )
    );
}

#[tokio::test]
async fn postgres_tables_left_by_a_killed_demo_are_dropped_from_the_record() {
    tables_left_by_a_killed_demo_are_dropped_from_the_record(Server::Postgres).await;
}

#[tokio::test]
async fn mariadb_tables_left_by_a_killed_demo_are_dropped_from_the_record() {
    tables_left_by_a_killed_demo_are_dropped_from_the_record(Server::Mariadb).await;
}

/// A SIGSTOPped frontend cannot drop its tables on SIGTERM and is SIGKILLed
/// after the grace; `Demo::shutdown` then drops them itself.
async fn shutdown_drops_the_tables_of_a_frontend_that_could_not(server: Server) {
    let tables = tables_for("stopped", server);
    let _guard = DropGuard(DemoTablesRecord::new(&server.dsn(), &tables));
    let mut db = Session::connect(server).await;
    let mut options = options(server, ErrorProfile::Honest);
    options.database.as_mut().unwrap().tables = tables.clone();
    let demo = Demo::start(options).await.unwrap();
    assert!(db.table_exists(&tables.mail).await);
    assert!(db.table_exists(&tables.queue).await);

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(demo.frontend_pid()).unwrap()),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    demo.shutdown().await;
    assert!(!db.table_exists(&tables.mail).await);
    assert!(!db.table_exists(&tables.queue).await);
}

#[tokio::test]
async fn postgres_shutdown_drops_the_tables_of_a_frontend_that_could_not() {
    shutdown_drops_the_tables_of_a_frontend_that_could_not(Server::Postgres).await;
}

#[tokio::test]
async fn mariadb_shutdown_drops_the_tables_of_a_frontend_that_could_not() {
    shutdown_drops_the_tables_of_a_frontend_that_could_not(Server::Mariadb).await;
}

/// A port on 127.0.0.1 that nothing listens on (bound, then closed).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    port
}

/// Connection refused: an error at once, never a hang.
async fn drop_tables_fails_fast_when_nothing_listens(server: Server) {
    let record = DemoTablesRecord {
        server: server.record_server(),
        dsn: server.dsn_at_port(closed_port()),
        ..DemoTablesRecord::new(&server.dsn(), &tables_for("refused", server))
    };
    let started = Instant::now();
    let error = drop_tables(&record).await.unwrap_err();
    let took = started.elapsed();
    assert!(took < DROP_CONNECT_TIMEOUT, "took {took:?}");
    match server {
        Server::Postgres => assert!(matches!(error, DropTablesError::Postgres(_)), "{error:?}"),
        Server::Mariadb => assert!(matches!(error, DropTablesError::Mysql(_)), "{error:?}"),
    }
    assert!(std::error::Error::source(&error).is_some(), "{error:?}");
}

#[tokio::test]
async fn postgres_drop_tables_fails_fast_when_nothing_listens() {
    drop_tables_fails_fast_when_nothing_listens(Server::Postgres).await;
}

#[tokio::test]
async fn mariadb_drop_tables_fails_fast_when_nothing_listens() {
    drop_tables_fails_fast_when_nothing_listens(Server::Mariadb).await;
}

/// A "server" that accepts connections (the kernel does, into the backlog)
/// and never says a word: `drop_tables` gives up after the connect timeout.
async fn drop_tables_gives_up_on_a_server_that_never_answers(server: Server) {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let record = DemoTablesRecord {
        server: server.record_server(),
        dsn: server.dsn_at_port(port),
        ..DemoTablesRecord::new(&server.dsn(), &tables_for("silent", server))
    };
    let started = Instant::now();
    let error = tokio::time::timeout(BOUND, drop_tables(&record))
        .await
        .expect("drop_tables hung")
        .unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(
            error,
            DropTablesError::ConnectTimeout { server: s, after } if s == record.server && after == DROP_CONNECT_TIMEOUT
        ),
        "{error:?}"
    );
    assert!(took >= DROP_CONNECT_TIMEOUT, "took {took:?}");
    assert!(took < DROP_CONNECT_TIMEOUT + SLACK, "took {took:?}");
    assert!(
        error.to_string().starts_with("could not connect to "),
        "{error}"
    );
    drop(silent);
}

#[tokio::test]
async fn postgres_drop_tables_gives_up_on_a_server_that_never_answers() {
    drop_tables_gives_up_on_a_server_that_never_answers(Server::Postgres).await;
}

#[tokio::test]
async fn mariadb_drop_tables_gives_up_on_a_server_that_never_answers() {
    drop_tables_gives_up_on_a_server_that_never_answers(Server::Mariadb).await;
}

/// The blocking wrapper drops the tables outside any runtime and refuses,
/// rather than panics, inside one.
#[test]
fn drop_tables_blocking_works_outside_a_runtime_and_refuses_inside_one() {
    for server in [Server::Postgres, Server::Mariadb] {
        let tables = tables_for("blocking", server);
        let record = DemoTablesRecord::new(&server.dsn(), &tables);
        let _guard = DropGuard(record.clone());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut db = Session::connect(server).await;
            for table in [&tables.mail, &tables.queue] {
                let create = format!("CREATE TABLE {table} (id INT)");
                match &mut db {
                    Session::Postgres(client) => client.batch_execute(&create).await.unwrap(),
                    Session::Mariadb(conn) => conn.query_drop(create).await.unwrap(),
                }
            }
            assert!(matches!(
                drop_tables_blocking(&record),
                Err(DropTablesError::InsideRuntime)
            ));
            assert!(db.table_exists(&tables.mail).await);
        });
        drop(runtime);

        let done = drop_tables_blocking(&record).unwrap();
        assert!(done.starts_with("dropped tables "), "{done}");
        let again = drop_tables_blocking(&record).unwrap();
        assert!(again.ends_with("were already gone"), "{again}");
    }
}

#[tokio::test]
async fn start_refuses_unsafe_table_names_before_spawning_anything() {
    let mut options = options(Server::Postgres, ErrorProfile::Honest);
    options.database.as_mut().unwrap().tables = DemoTables {
        mail: "users".to_owned(),
        queue: "relapse_demo_x_queue".to_owned(),
    };
    // A launcher that cannot run: had `start` spawned anything it would fail with `Spawn`.
    options.launcher.program = "/nonexistent/relapse-demo-child".into();
    let error = Demo::start(options).await.unwrap_err();
    assert!(matches!(error, DemoError::InvalidTables(_)), "{error:?}");
}
