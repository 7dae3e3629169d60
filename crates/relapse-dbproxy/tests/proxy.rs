//! The proxy against the real PostgreSQL (127.0.0.1:5432) and MariaDB (127.0.0.1:3306) servers
//! on this machine. Every test has its own proxy on 127.0.0.1:0 and its own uniquely named
//! tables, dropped at the end.

mod support;

use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use relapse_core::fault::Fault;
use relapse_dbproxy::{DbProxyFault, ErrorCode, Protocol, ProxyMode};
use support::*;
use tokio_postgres::error::SqlState;
use tokio_postgres::SimpleQueryMessage;

fn first_value(messages: &[SimpleQueryMessage]) -> Option<String> {
    messages.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    })
}

/// Simple and extended protocol, a prepared statement, a transaction, a result larger than the
/// proxy's buffer.
async fn pg_workload(client: &mut tokio_postgres::Client) {
    let table = unique("relapse_proxy_exact");
    let rows = client.simple_query("SELECT 1").await.unwrap();
    assert_eq!(first_value(&rows).as_deref(), Some("1"));
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (id int PRIMARY KEY, v text)"
        ))
        .await
        .unwrap();
    let row = client
        .query_one("SELECT $1::int + 1", &[&41i32])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
    let insert = client
        .prepare(&format!("INSERT INTO {table} VALUES ($1, $2)"))
        .await
        .unwrap();
    client.execute(&insert, &[&1i32, &"a"]).await.unwrap();
    let tx = client.transaction().await.unwrap();
    tx.execute(&insert, &[&2i32, &"b"]).await.unwrap();
    tx.execute(&format!("UPDATE {table} SET v = 'c' WHERE id = 1"), &[])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let rows = client
        .query(&format!("SELECT id, v FROM {table} ORDER BY id"), &[])
        .await
        .unwrap();
    let got: Vec<(i32, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(got, vec![(1, "c".to_string()), (2, "b".to_string())]);
    let big = client
        .query_one("SELECT repeat('x', 300000)", &[])
        .await
        .unwrap();
    assert_eq!(big.get::<_, String>(0).len(), 300_000);
    client
        .batch_execute(&format!("DROP TABLE {table}"))
        .await
        .unwrap();
}

async fn mysql_workload(conn: &mut mysql_async::Conn) {
    let table = unique("relapse_proxy_exact");
    let one: Option<i64> = conn.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    conn.query_drop(format!("CREATE TABLE {table} (id INT PRIMARY KEY, v TEXT)"))
        .await
        .unwrap();
    let insert = format!("INSERT INTO {table} VALUES (?, ?)");
    conn.exec_drop(&insert, (1, "a")).await.unwrap();
    let mut tx = conn
        .start_transaction(mysql_async::TxOpts::default())
        .await
        .unwrap();
    tx.exec_drop(&insert, (2, "b")).await.unwrap();
    tx.query_drop(format!("UPDATE {table} SET v = 'c' WHERE id = 1"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let rows: Vec<(i32, String)> = conn
        .exec(
            format!("SELECT id, v FROM {table} WHERE id > ? ORDER BY id"),
            (0,),
        )
        .await
        .unwrap();
    assert_eq!(rows, vec![(1, "c".to_string()), (2, "b".to_string())]);
    let big: Option<String> = conn
        .query_first("SELECT REPEAT('x', 300000)")
        .await
        .unwrap();
    assert_eq!(big.map(|b| b.len()), Some(300_000));
    conn.query_drop(format!("DROP TABLE {table}"))
        .await
        .unwrap();
}

fn assert_same_bytes(client_side: &[Recording], server_side: &[Recording]) {
    assert_eq!(client_side.len(), 1, "one connection on the client side");
    assert_eq!(server_side.len(), 1, "one connection on the server side");
    let (c, s) = (&client_side[0], &server_side[0]);
    assert!(!c.0.is_empty() && !c.1.is_empty(), "nothing recorded");
    assert!(
        c.0 == s.0,
        "client → server bytes differ ({} vs {} bytes)",
        c.0.len(),
        s.0.len()
    );
    assert!(
        c.1 == s.1,
        "server → client bytes differ ({} vs {} bytes)",
        c.1.len(),
        s.1.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_pass_through_is_byte_exact() {
    let server_side = Relay::start(pg_server()).await;
    let proxy = proxy(Protocol::Postgres, server_side.addr).await;
    let client_side = Relay::start(proxy.local_addr()).await;
    let mut client = pg(client_side.addr).await;
    within("workload", pg_workload(&mut client)).await;
    drop(client);
    assert_same_bytes(
        &client_side.recordings(1).await,
        &server_side.recordings(1).await,
    );
    assert!(proxy.stats().statements >= 8, "{:?}", proxy.stats());
    assert!(proxy.shutdown(Duration::from_secs(2)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_pass_through_is_byte_exact() {
    let server_side = Relay::start(mysql_server()).await;
    let proxy = proxy(Protocol::Mysql, server_side.addr).await;
    let client_side = Relay::start(proxy.local_addr()).await;
    let mut conn = mysql(client_side.addr).await;
    within("workload", mysql_workload(&mut conn)).await;
    within("disconnect", conn.disconnect()).await.unwrap();
    // MariaDB here has no TLS, so its greeting has no CLIENT_SSL bit to clear: the bytes match.
    assert_same_bytes(
        &client_side.recordings(1).await,
        &server_side.recordings(1).await,
    );
    assert!(proxy.stats().statements >= 6, "{:?}", proxy.stats());
    assert!(proxy.shutdown(Duration::from_secs(2)).await);
}

async fn run(program: &str, args: &[&str]) {
    let output = tokio::process::Command::new(program)
        .args(args)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!("cannot run {program} ({e}): the db_proxy tests need the PostgreSQL client tools (pgbench) on PATH")
        });
    assert!(
        output.status.success(),
        "{program} {args:?}: {}\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_runs_through_the_proxy() {
    let db = unique("relapse_pgbench");
    let admin = pg(pg_server()).await;
    admin
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .unwrap();
    run(
        "pgbench",
        &[
            "-i",
            "-q",
            "-h",
            "127.0.0.1",
            "-p",
            "5432",
            "-U",
            "postgres",
            &db,
        ],
    )
    .await;
    let proxy = proxy(Protocol::Postgres, pg_server()).await;
    let port = proxy.local_addr().port().to_string();
    // libpq asks for TLS first (SSLRequest): the proxy's 'N' makes it go on in plaintext.
    run(
        "pgbench",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "postgres",
            "-S",
            "-t",
            "200",
            &db,
        ],
    )
    .await;
    let stats = proxy.stats();
    assert!(stats.statements >= 200, "{stats:?}");
    assert!(proxy.shutdown(Duration::from_secs(2)).await);
    admin
        .batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stall_holds_a_query_until_revert() {
    let proxy = proxy(Protocol::Postgres, pg_server()).await;
    let client = pg(proxy.local_addr()).await;
    let mut fault = DbProxyFault::new(proxy.clone(), ProxyMode::Stall);
    within("inject", fault.inject()).await.unwrap();
    let mut query = Box::pin(client.simple_query("SELECT 40 + 2"));
    assert_waits("query during stall", &mut query).await;
    within("the query to be held", proxy.held_at_least(1)).await;
    assert_waits("query during stall", &mut query).await;
    within("revert", fault.revert()).await.unwrap();
    assert_eq!(proxy.stats().held, 0);
    let rows = within("query after revert", query).await.unwrap();
    assert_eq!(first_value(&rows).as_deref(), Some("42"));
    assert!(proxy.shutdown(Duration::from_secs(2)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_stall_holds_a_query_until_revert() {
    let proxy = proxy(Protocol::Mysql, mysql_server()).await;
    let mut conn = mysql(proxy.local_addr()).await;
    let mut fault = DbProxyFault::new(proxy.clone(), ProxyMode::Stall);
    within("inject", fault.inject()).await.unwrap();
    let query = tokio::spawn(async move {
        let v: Option<i64> = conn.query_first("SELECT 40 + 2").await.unwrap();
        (conn, v)
    });
    within("the query to be held", proxy.held_at_least(1)).await;
    let mut query = Box::pin(query);
    assert_waits("query during stall", &mut query).await;
    within("revert", fault.revert()).await.unwrap();
    let (conn, v) = within("query after revert", query).await.unwrap();
    assert_eq!(v, Some(42));
    within("disconnect", conn.disconnect()).await.unwrap();
    assert!(proxy.shutdown(Duration::from_secs(2)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stall_writes_holds_an_insert_while_reads_pass() {
    let table = unique("relapse_proxy_writes");
    let proxy = proxy(Protocol::Postgres, pg_server()).await;
    let writer = pg(proxy.local_addr()).await;
    let reader = pg(proxy.local_addr()).await;
    writer
        .batch_execute(&format!("CREATE TABLE {table} (id int)"))
        .await
        .unwrap();
    let count = format!("SELECT count(*) FROM {table}");
    let mut fault = DbProxyFault::new(proxy.clone(), ProxyMode::StallWrites);
    within("inject", fault.inject()).await.unwrap();

    // Extended protocol: Parse/Bind/Execute/Sync held as a unit from the Parse of the INSERT.
    let insert = format!("INSERT INTO {table} VALUES (1)");
    let write = tokio::spawn(async move {
        let r = writer.execute(&insert, &[]).await;
        (writer, r)
    });
    within("the insert to be held", proxy.held_at_least(1)).await;
    // Reads on another connection pass, and do not see the held insert: it was not forwarded.
    let n: i64 = within("read during stall_writes", reader.query_one(&count, &[]))
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    let mut write = Box::pin(write);
    assert_waits("insert during stall_writes", &mut write).await;

    within("revert", fault.revert()).await.unwrap();
    let (writer, inserted) = within("insert after revert", write).await.unwrap();
    assert_eq!(inserted.unwrap(), 1);
    let n: i64 = reader.query_one(&count, &[]).await.unwrap().get(0);
    assert_eq!(n, 1);

    // Simple protocol, and a statement prepared before the fault and bound during it.
    let prepared = writer
        .prepare(&format!("INSERT INTO {table} VALUES ($1)"))
        .await
        .unwrap();
    within("inject", fault.inject()).await.unwrap();
    let simple = format!("INSERT INTO {table} VALUES (2)");
    // Sent together (tokio-postgres pipelines): the Bind of the prepared INSERT is held and the
    // simple query queues behind it.
    let write = tokio::spawn(async move {
        let (b, a) = tokio::join!(
            writer.execute(&prepared, &[&3i32]),
            writer.batch_execute(&simple)
        );
        (a, b)
    });
    within("the insert to be held", proxy.held_at_least(1)).await;
    assert_eq!(
        reader
            .query_one(&count, &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        1
    );
    within("revert", fault.revert()).await.unwrap();
    let (a, b) = within("inserts after revert", write).await.unwrap();
    a.unwrap();
    assert_eq!(b.unwrap(), 1);
    assert_eq!(
        reader
            .query_one(&count, &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        3
    );

    reader
        .batch_execute(&format!("DROP TABLE {table}"))
        .await
        .unwrap();
    assert!(proxy.shutdown(Duration::from_secs(2)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_stall_writes_holds_an_insert_while_reads_pass() {
    let table = unique("relapse_proxy_writes");
    let proxy = proxy(Protocol::Mysql, mysql_server()).await;
    let mut writer = mysql(proxy.local_addr()).await;
    let mut reader = mysql(proxy.local_addr()).await;
    writer
        .query_drop(format!("CREATE TABLE {table} (id INT)"))
        .await
        .unwrap();
    // Prepared before the fault, so that during it only COM_STMT_EXECUTE goes out, which the
    // proxy classifies by the statement id the server assigned.
    let insert = format!("INSERT INTO {table} VALUES (?)");
    writer.exec_drop(&insert, (1,)).await.unwrap();
    let count = format!("SELECT COUNT(*) FROM {table}");
    let mut fault = DbProxyFault::new(proxy.clone(), ProxyMode::StallWrites);
    within("inject", fault.inject()).await.unwrap();

    let simple = format!("INSERT INTO {table} VALUES (3)");
    let write = tokio::spawn(async move {
        let a = writer.exec_drop(&insert, (2,)).await;
        let b = writer.query_drop(simple).await;
        (writer, a, b)
    });
    within("the insert to be held", proxy.held_at_least(1)).await;
    let n: Option<i64> = within("read during stall_writes", reader.query_first(&count))
        .await
        .unwrap();
    assert_eq!(n, Some(1));
    let mut write = Box::pin(write);
    assert_waits("insert during stall_writes", &mut write).await;

    within("revert", fault.revert()).await.unwrap();
    let (writer, a, b) = within("inserts after revert", write).await.unwrap();
    a.unwrap();
    b.unwrap();
    let n: Option<i64> = reader.query_first(&count).await.unwrap();
    assert_eq!(n, Some(3));
    reader
        .query_drop(format!("DROP TABLE {table}"))
        .await
        .unwrap();
    within("disconnect", writer.disconnect()).await.unwrap();
    within("disconnect", reader.disconnect()).await.unwrap();
    assert!(proxy.shutdown(Duration::from_secs(2)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_error_mode_answers_with_the_sqlstate() {
    let proxy = proxy(Protocol::Postgres, pg_server()).await;
    let client = pg(proxy.local_addr()).await;
    for (code, state) in [
        (ErrorCode::LockNotAvailable, SqlState::LOCK_NOT_AVAILABLE),
        (ErrorCode::Deadlock, SqlState::T_R_DEADLOCK_DETECTED),
        (ErrorCode::QueryCanceled, SqlState::QUERY_CANCELED),
    ] {
        let mut fault = DbProxyFault::new(proxy.clone(), ProxyMode::Error { code });
        within("inject", fault.inject()).await.unwrap();
        let simple = within("simple query", client.simple_query("SELECT 1"))
            .await
            .unwrap_err();
        assert_eq!(simple.code(), Some(&state), "simple query: {simple}");
        let extended = within("extended query", client.query("SELECT 1", &[]))
            .await
            .unwrap_err();
        assert_eq!(extended.code(), Some(&state), "extended query: {extended}");
        within("revert", fault.revert()).await.unwrap();
        let rows = within("simple query", client.simple_query("SELECT 7"))
            .await
            .unwrap();
        assert_eq!(first_value(&rows).as_deref(), Some("7"));
        let row = within(
            "extended query",
            client.query_one("SELECT $1::int", &[&8i32]),
        )
        .await
        .unwrap();
        assert_eq!(row.get::<_, i32>(0), 8);
    }
    assert_eq!(proxy.stats().errors_injected, 6);
    assert!(proxy.shutdown(Duration::from_secs(2)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_error_mode_answers_with_the_error_code() {
    let proxy = proxy(Protocol::Mysql, mysql_server()).await;
    let mut conn = mysql(proxy.local_addr()).await;
    for (code, number, state) in [
        (ErrorCode::LockNotAvailable, 1205, "HY000"),
        (ErrorCode::Deadlock, 1213, "40001"),
    ] {
        let mut fault = DbProxyFault::new(proxy.clone(), ProxyMode::Error { code });
        within("inject", fault.inject()).await.unwrap();
        for (what, result) in [
            ("text query", conn.query_drop("SELECT 1").await),
            ("prepared statement", conn.exec_drop("SELECT ?", (1,)).await),
        ] {
            match result {
                Err(mysql_async::Error::Server(e)) => {
                    assert_eq!((e.code, e.state.as_str()), (number, state), "{what}: {e:?}")
                }
                other => panic!("{what}: expected a server error, got {other:?}"),
            }
        }
        within("revert", fault.revert()).await.unwrap();
        let v: Option<i64> = within("query after revert", conn.query_first("SELECT 7"))
            .await
            .unwrap();
        assert_eq!(v, Some(7));
        let v: Option<i64> = within("prepared after revert", conn.exec_first("SELECT ?", (8,)))
            .await
            .unwrap();
        assert_eq!(v, Some(8));
    }
    within("disconnect", conn.disconnect()).await.unwrap();
    assert!(proxy.shutdown(Duration::from_secs(2)).await);
}

async fn timed(client: &tokio_postgres::Client) -> Duration {
    let started = Instant::now();
    within("query", client.simple_query("SELECT 1"))
        .await
        .unwrap();
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_delays_each_statement() {
    let proxy = proxy(Protocol::Postgres, pg_server()).await;
    let client = pg(proxy.local_addr()).await;
    let fast = timed(&client).await;
    let mut fault = DbProxyFault::new(
        proxy.clone(),
        ProxyMode::Latency {
            latency: Duration::from_millis(100),
            jitter: Duration::ZERO,
        },
    );
    within("inject", fault.inject()).await.unwrap();
    let slow = timed(&client).await;
    within("revert", fault.revert()).await.unwrap();
    let fast_again = timed(&client).await;
    assert!(slow >= Duration::from_millis(100), "with latency: {slow:?}");
    assert!(fast < Duration::from_millis(90), "pass-through: {fast:?}");
    assert!(
        fast_again < Duration::from_millis(90),
        "after revert: {fast_again:?}"
    );
    assert!(proxy.shutdown(Duration::from_secs(2)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_closes_open_connections_and_new_ones() {
    let proxy = proxy(Protocol::Postgres, pg_server()).await;
    let client = pg(proxy.local_addr()).await;
    let mut fault = DbProxyFault::new(proxy.clone(), ProxyMode::Reset);
    within("inject", fault.inject()).await.unwrap();
    assert_eq!(proxy.stats().open, 0);
    let err = within("query after reset", client.simple_query("SELECT 1"))
        .await
        .unwrap_err();
    assert!(
        err.is_closed() || err.to_string().contains("connection"),
        "{err}"
    );
    assert!(
        within("connect during reset", pg_connect(proxy.local_addr()))
            .await
            .is_err(),
        "a new connection during reset must fail"
    );
    within("revert", fault.revert()).await.unwrap();
    let client = pg(proxy.local_addr()).await;
    let rows = client.simple_query("SELECT 1").await.unwrap();
    assert_eq!(first_value(&rows).as_deref(), Some("1"));
    assert!(proxy.shutdown(Duration::from_secs(2)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_refuse_new_keeps_open_connections() {
    let proxy = proxy(Protocol::Mysql, mysql_server()).await;
    let mut open = mysql(proxy.local_addr()).await;
    let mut fault = DbProxyFault::new(proxy.clone(), ProxyMode::RefuseNew);
    within("inject", fault.inject()).await.unwrap();
    assert!(
        within(
            "connect during refuse_new",
            mysql_connect(proxy.local_addr())
        )
        .await
        .is_err(),
        "a new connection during refuse_new must fail"
    );
    let v: Option<i64> = within("query on the open connection", open.query_first("SELECT 1"))
        .await
        .unwrap();
    assert_eq!(v, Some(1));
    within("revert", fault.revert()).await.unwrap();
    let mut new = mysql(proxy.local_addr()).await;
    let v: Option<i64> = new.query_first("SELECT 2").await.unwrap();
    assert_eq!(v, Some(2));
    assert!(proxy.stats().refused >= 1);
    within("disconnect", open.disconnect()).await.unwrap();
    within("disconnect", new.disconnect()).await.unwrap();
    assert!(proxy.shutdown(Duration::from_secs(2)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_refuse_new_keeps_open_connections() {
    let proxy = proxy(Protocol::Postgres, pg_server()).await;
    let open = pg(proxy.local_addr()).await;
    proxy.set_mode(ProxyMode::RefuseNew);
    assert!(within("connect", pg_connect(proxy.local_addr()))
        .await
        .is_err());
    assert!(open.simple_query("SELECT 1").await.is_ok());
    proxy.set_mode(ProxyMode::PassThrough);
    let new = pg(proxy.local_addr()).await;
    assert!(new.simple_query("SELECT 1").await.is_ok());
    assert!(proxy.shutdown(Duration::from_secs(2)).await);
}
