//! The db_lock fault against real servers: PostgreSQL on 127.0.0.1:5432 (user postgres, database
//! test) and MariaDB/MySQL on 127.0.0.1:3306 (user root, database test), or the servers named by
//! RELAPSE_TEST_PG_DSN and RELAPSE_TEST_MYSQL_DSN.
//!
//! Each test makes its own table, locks it, and shows a concurrent writer waiting on the lock
//! (from the server's own view: pg_stat_activity, the processlist, innodb_trx), then released.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use mysql_async::prelude::Queryable;
use relapse_core::fault::{Fault, FaultError, FaultGuard};
use relapse_db::{revert_record, DbKind, DbLock, DbLockRecord, LockSpec};
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};

/// How long anything the servers do here may take before the test fails.
const BOUND: Duration = Duration::from_secs(5);
/// How long a writer behind a lock must still be waiting.
const STILL_WAITING: Duration = Duration::from_millis(100);

fn pg_dsn() -> String {
    std::env::var("RELAPSE_TEST_PG_DSN")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test".into())
}

fn mysql_dsn() -> String {
    std::env::var("RELAPSE_TEST_MYSQL_DSN")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into())
}

/// MySQL tests run one at a time: a global read lock would stall the others' writes.
static MYSQL_SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn table_name() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "relapse_test_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

async fn pg_connect() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&pg_dsn(), tokio_postgres::NoTls)
        .await
        .expect("connect to postgres");
    tokio::spawn(connection);
    client
}

async fn mysql_connect() -> mysql_async::Conn {
    mysql_async::Conn::new(mysql_async::Opts::from_url(&mysql_dsn()).unwrap())
        .await
        .expect("connect to mysql")
}

/// A test table with one row (id 1); dropped when the guard is, even if the test failed. Its drop
/// runs on a thread and runtime of its own, so it works from a panicking test too.
struct Table {
    kind: DbKind,
    name: String,
}

impl Table {
    async fn create(kind: DbKind) -> Table {
        let table = Table {
            kind,
            name: table_name(),
        };
        let name = &table.name;
        match kind {
            DbKind::Postgres => pg_connect()
                .await
                .batch_execute(&format!(
                    "CREATE TABLE {name} (id int PRIMARY KEY, v int NOT NULL);
                     INSERT INTO {name} VALUES (1, 0), (2, 0);"
                ))
                .await
                .expect("create table"),
            DbKind::Mysql => {
                let mut conn = mysql_connect().await;
                conn.query_drop(format!(
                    "CREATE TABLE {name} (id int PRIMARY KEY, v int NOT NULL) ENGINE=InnoDB"
                ))
                .await
                .expect("create table");
                conn.query_drop(format!("INSERT INTO {name} VALUES (1, 0), (2, 0)"))
                    .await
                    .expect("insert");
                conn.disconnect().await.unwrap();
            }
        }
        table
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        let (kind, name) = (self.kind, self.name.clone());
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                match kind {
                    DbKind::Postgres => {
                        let client = pg_connect().await;
                        // A session a failed test left holding a lock must not stall the drop.
                        let _ = client
                            .batch_execute(&format!(
                                "SELECT pg_terminate_backend(pid) FROM pg_locks
                                 WHERE relation = '{name}'::regclass AND pid <> pg_backend_pid();
                                 SET lock_timeout = '5s';
                                 DROP TABLE IF EXISTS {name};"
                            ))
                            .await
                            .map_err(|e| eprintln!("dropping {name}: {e}"));
                    }
                    DbKind::Mysql => {
                        let mut conn = mysql_connect().await;
                        let _ = conn
                            .query_drop(format!(
                                "SET SESSION lock_wait_timeout = 5; DROP TABLE IF EXISTS {name}"
                            ))
                            .await
                            .map_err(|e| eprintln!("dropping {name}: {e}"));
                        let _ = conn.disconnect().await;
                    }
                }
            })
        })
        .join();
        if dropped.is_err() {
            eprintln!("dropping table {} failed", self.name);
        }
    }
}

/// A writer on its own connection, started behind the lock.
struct Writer {
    session: u64,
    task: JoinHandle<Result<(), String>>,
}

async fn start_writer(kind: DbKind, table: &str) -> Writer {
    let sql = format!("UPDATE {table} SET v = v + 1 WHERE id = 1");
    match kind {
        DbKind::Postgres => {
            let client = pg_connect().await;
            let pid: i32 = client
                .query_one("SELECT pg_backend_pid()", &[])
                .await
                .unwrap()
                .get(0);
            let task =
                tokio::spawn(
                    async move { client.batch_execute(&sql).await.map_err(|e| e.to_string()) },
                );
            Writer {
                session: pid as u64,
                task,
            }
        }
        DbKind::Mysql => {
            let mut conn = mysql_connect().await;
            let id = conn.id() as u64;
            let task = tokio::spawn(async move {
                conn.query_drop(sql).await.map_err(|e| e.to_string())?;
                conn.disconnect().await.map_err(|e| e.to_string())
            });
            Writer { session: id, task }
        }
    }
}

/// Polls the server until it shows the writer's session waiting for a lock; returns what it shows.
async fn server_shows_waiting(kind: DbKind, session: u64) -> String {
    let deadline = Instant::now() + BOUND;
    match kind {
        DbKind::Postgres => {
            let client = pg_connect().await;
            let pid = session as i32;
            loop {
                let row = client
                    .query_opt(
                        "SELECT a.wait_event_type, a.wait_event,
                                (SELECT count(*) FROM pg_locks l WHERE l.pid = a.pid AND NOT l.granted)
                         FROM pg_stat_activity a WHERE a.pid = $1",
                        &[&pid],
                    )
                    .await
                    .unwrap();
                if let Some(row) = row {
                    let kind: Option<String> = row.get(0);
                    let event: Option<String> = row.get(1);
                    let ungranted: i64 = row.get(2);
                    if kind.as_deref() == Some("Lock") && ungranted > 0 {
                        return format!("wait_event Lock/{}", event.unwrap_or_default());
                    }
                }
                assert!(
                    Instant::now() < deadline,
                    "postgres never showed backend {pid} waiting for a lock"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        DbKind::Mysql => {
            let mut conn = mysql_connect().await;
            loop {
                let state: Option<Option<String>> = conn
                    .exec_first(
                        "SELECT state FROM information_schema.processlist WHERE id = ?",
                        (session,),
                    )
                    .await
                    .unwrap();
                let trx: Option<String> = conn
                    .exec_first(
                        "SELECT trx_state FROM information_schema.innodb_trx
                         WHERE trx_mysql_thread_id = ?",
                        (session,),
                    )
                    .await
                    .unwrap();
                let state = state.flatten().unwrap_or_default();
                if state.to_ascii_lowercase().starts_with("waiting for")
                    && state.to_ascii_lowercase().contains("lock")
                {
                    conn.disconnect().await.unwrap();
                    return format!("processlist state {state}");
                }
                if trx.as_deref() == Some("LOCK WAIT") {
                    conn.disconnect().await.unwrap();
                    return "innodb_trx LOCK WAIT".to_string();
                }
                assert!(
                    Instant::now() < deadline,
                    "mysql never showed connection {session} waiting for a lock (state {state:?}, trx {trx:?})"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}

/// Shows the writer blocked behind the injected lock: still running after a short wait, and
/// shown waiting for a lock by the server.
async fn assert_writer_waits(kind: DbKind, writer: &mut Writer) {
    let shown = server_shows_waiting(kind, writer.session).await;
    assert!(
        timeout(STILL_WAITING, &mut writer.task).await.is_err(),
        "the writer finished while the lock was held"
    );
    eprintln!("{kind} writer {} is waiting: {shown}", writer.session);
}

async fn assert_writer_completes(writer: Writer) {
    timeout(BOUND, writer.task)
        .await
        .expect("the writer did not finish after the lock was released")
        .unwrap()
        .expect("the writer failed");
}

fn dsn(kind: DbKind) -> String {
    match kind {
        DbKind::Postgres => pg_dsn(),
        DbKind::Mysql => mysql_dsn(),
    }
}

/// Injects `spec`, shows a writer waiting, reverts, shows it done; then reverts again.
async fn lock_stalls_writer_until_reverted(kind: DbKind, spec: impl Fn(&str) -> LockSpec) {
    let table = Table::create(kind).await;
    let mut lock = DbLock::new(kind, &dsn(kind), spec(&table.name))
        .await
        .unwrap();
    let record: DbLockRecord = lock.revert_instructions().decode().unwrap();
    assert_eq!(record.session_id, lock.session_id());
    assert_eq!(record.kind, kind);

    let before = Instant::now();
    let effective = lock.inject().await.unwrap();
    assert!(effective.at >= before);
    eprintln!("{}: {}", lock.describe(), effective.detail);

    let mut writer = start_writer(kind, &table.name).await;
    assert_writer_waits(kind, &mut writer).await;

    let reverted = lock.revert().await.unwrap();
    assert!(reverted.at >= effective.at);
    assert_writer_completes(writer).await;

    // Idempotent, and the lock can be taken again on the same session.
    let again = lock.revert().await.unwrap();
    assert!(
        again.detail.contains("nothing to revert"),
        "{}",
        again.detail
    );
    lock.inject().await.unwrap();
    lock.revert().await.unwrap();
}

/// Injects `spec`, shows a writer waiting, kills the session from the journal record alone, shows
/// the writer done; then the fault's own revert and a second journaled revert still succeed.
async fn journaled_revert_releases_lock(kind: DbKind, spec: impl Fn(&str) -> LockSpec) {
    let table = Table::create(kind).await;
    let mut lock = DbLock::new(kind, &dsn(kind), spec(&table.name))
        .await
        .unwrap();
    let record: DbLockRecord = lock.revert_instructions().decode().unwrap();
    lock.inject().await.unwrap();
    let mut writer = start_writer(kind, &table.name).await;
    assert_writer_waits(kind, &mut writer).await;

    let done = revert_record(&record).await.unwrap();
    assert!(done.contains("released"), "{done}");
    assert_writer_completes(writer).await;

    let again = revert_record(&record).await.unwrap();
    assert!(again.contains("gone"), "{again}");
    let reverted = lock.revert().await.unwrap();
    eprintln!("after the kill, revert says: {}", reverted.detail);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_table_locks_stall_writers_until_reverted() {
    for mode in ["ACCESS EXCLUSIVE", "share"] {
        lock_stalls_writer_until_reverted(DbKind::Postgres, |table| LockSpec::Table {
            table: table.to_string(),
            mode: mode.to_string(),
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_row_lock_stalls_writers_until_reverted() {
    lock_stalls_writer_until_reverted(DbKind::Postgres, |table| LockSpec::Rows {
        table: table.to_string(),
        where_clause: "id = 1 -- a trailing comment must not drop FOR UPDATE".to_string(),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_journaled_revert_kills_the_session() {
    journaled_revert_releases_lock(DbKind::Postgres, |table| LockSpec::Table {
        table: table.to_string(),
        mode: "exclusive".to_string(),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_row_lock_on_no_rows_is_refused() {
    let table = Table::create(DbKind::Postgres).await;
    let mut lock = DbLock::new(
        DbKind::Postgres,
        &pg_dsn(),
        LockSpec::Rows {
            table: table.name.clone(),
            where_clause: "id = 99".into(),
        },
    )
    .await
    .unwrap();
    match lock.inject().await {
        Err(FaultError::NotConfirmed(why)) => assert!(why.contains("no rows"), "{why}"),
        other => panic!("expected not confirmed, got {other:?}"),
    }
    // Nothing is held: a writer goes straight through.
    let writer = start_writer(DbKind::Postgres, &table.name).await;
    assert_writer_completes(writer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_table_lock_stalls_writers_until_reverted() {
    let _serial = MYSQL_SERIAL.lock().await;
    lock_stalls_writer_until_reverted(DbKind::Mysql, |table| LockSpec::Table {
        table: table.to_string(),
        mode: "write".to_string(),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_row_lock_stalls_writers_until_reverted() {
    let _serial = MYSQL_SERIAL.lock().await;
    lock_stalls_writer_until_reverted(DbKind::Mysql, |table| LockSpec::Rows {
        table: table.to_string(),
        where_clause: "id = 1 -- a trailing comment must not drop FOR UPDATE".to_string(),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_global_read_lock_stalls_writers_until_reverted() {
    let _serial = MYSQL_SERIAL.lock().await;
    lock_stalls_writer_until_reverted(DbKind::Mysql, |_| LockSpec::GlobalRead).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_journaled_revert_kills_the_session() {
    let _serial = MYSQL_SERIAL.lock().await;
    for spec in [
        (|table: &str| LockSpec::Table {
            table: table.to_string(),
            mode: "WRITE".to_string(),
        }) as fn(&str) -> LockSpec,
        |_| LockSpec::GlobalRead,
    ] {
        journaled_revert_releases_lock(DbKind::Mysql, spec).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_specs_are_refused_before_connecting() {
    // Port 1: nothing listens, so an attempt to connect would fail differently.
    let err = DbLock::new(
        DbKind::Postgres,
        "host=127.0.0.1 port=1 user=postgres",
        LockSpec::Table {
            table: "t".into(),
            mode: "EXCLUSIVE; DROP TABLE t".into(),
        },
    )
    .await
    .err()
    .unwrap();
    assert!(err.to_string().contains("expected one of"), "{err}");
    let err = DbLock::new(
        DbKind::Postgres,
        "host=127.0.0.1 port=1",
        LockSpec::GlobalRead,
    )
    .await
    .err()
    .unwrap();
    assert!(err.to_string().contains("only for mysql"), "{err}");
}

/// `revert_now`, through the engine's guard: dropping an applied guard ends the session, and the
/// server releases the lock.
async fn dropping_the_guard_releases(kind: DbKind, spec: LockSpec, table: &Table) {
    let lock = DbLock::new(kind, &dsn(kind), spec).await.unwrap();
    let mut guard = FaultGuard::new(Box::new(lock));
    guard.inject().await.unwrap();
    let mut writer = start_writer(kind, &table.name).await;
    assert_writer_waits(kind, &mut writer).await;
    drop(guard);
    assert_writer_completes(writer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_dropping_the_guard_releases_the_lock() {
    let table = Table::create(DbKind::Postgres).await;
    let spec = LockSpec::Rows {
        table: table.name.clone(),
        where_clause: "id = 1".into(),
    };
    dropping_the_guard_releases(DbKind::Postgres, spec, &table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_dropping_the_guard_releases_the_lock() {
    let _serial = MYSQL_SERIAL.lock().await;
    let table = Table::create(DbKind::Mysql).await;
    let spec = LockSpec::Table {
        table: table.name.clone(),
        mode: "write".into(),
    };
    dropping_the_guard_releases(DbKind::Mysql, spec, &table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_lock_not_granted_in_time_is_not_confirmed() {
    let table = Table::create(DbKind::Postgres).await;
    let spec = LockSpec::Table {
        table: table.name.clone(),
        mode: "access exclusive".into(),
    };
    let mut first = DbLock::new(DbKind::Postgres, &pg_dsn(), spec.clone())
        .await
        .unwrap();
    first.inject().await.unwrap();
    let mut second = DbLock::new(DbKind::Postgres, &pg_dsn(), spec)
        .await
        .unwrap();
    second
        .set_grant_timeout(Duration::from_millis(200))
        .await
        .unwrap();
    match second.inject().await {
        Err(FaultError::NotConfirmed(why)) => assert!(why.contains("not granted"), "{why}"),
        other => panic!("expected not confirmed, got {other:?}"),
    }
    let reverted = second.revert().await.unwrap();
    assert!(reverted.detail.contains("nothing to revert"));
    first.revert().await.unwrap();
}

/// The SQL backlog gauge reads what the server counts, follows changes, and says why when the
/// query does not give a number.
async fn gauge_counts_rows(kind: DbKind, dsn: &str) {
    use relapse_core::sense::Gauge;
    use relapse_db::SqlGauge;

    let table = Table::create(kind).await;
    let name = &table.name;
    let gauge = SqlGauge::new(kind, dsn, &format!("SELECT count(*) FROM {name}")).unwrap();
    assert_eq!(timeout(BOUND, gauge.read()).await.unwrap().unwrap(), 2.0);
    let insert = format!("INSERT INTO {name} VALUES (3, 0), (4, 0), (5, 0)");
    match kind {
        DbKind::Postgres => {
            pg_connect().await.batch_execute(&insert).await.unwrap();
        }
        DbKind::Mysql => mysql_connect().await.query_drop(&insert).await.unwrap(),
    }
    assert_eq!(timeout(BOUND, gauge.read()).await.unwrap().unwrap(), 5.0);

    let words = SqlGauge::new(kind, dsn, "SELECT 'many'").unwrap();
    let error = timeout(BOUND, words.read()).await.unwrap().unwrap_err();
    assert!(
        matches!(&error, relapse_core::sense::GaugeError::NoValue(m) if m.contains("not a number")),
        "{error}"
    );
    let nothing = SqlGauge::new(kind, dsn, &format!("SELECT v FROM {name} WHERE id = 0")).unwrap();
    let error = timeout(BOUND, nothing.read()).await.unwrap().unwrap_err();
    assert!(
        matches!(&error, relapse_core::sense::GaugeError::NoValue(m) if m.contains("no row")),
        "{error}"
    );
}

#[tokio::test]
async fn sql_gauge_reads_a_count_on_postgres() {
    gauge_counts_rows(DbKind::Postgres, &pg_dsn()).await;
}

#[tokio::test]
async fn sql_gauge_reads_a_count_on_mysql() {
    let _serial = MYSQL_SERIAL.lock().await;
    gauge_counts_rows(DbKind::Mysql, &mysql_dsn()).await;
}
