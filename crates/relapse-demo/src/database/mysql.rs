//! The MariaDB / MySQL store: a bounded `mysql_async` pool for requests, a
//! connection of its own for the delivery task.

use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{
    Conn, IsolationLevel, Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts, TxOpts,
};

use super::{DbFailure, DELIVERY_STATEMENT_TIMEOUT, MAIL_LIMIT, POOL_SIZE};
use crate::tables::{DatabaseServer, DropTablesError, Existed};
use crate::DemoTables;

/// Rows one delivery round moves at most; the rest wait for the next round,
/// which keeps the id list of one round's statements short.
const DELIVERY_BATCH: usize = 1000;

impl From<mysql_async::Error> for DbFailure {
    fn from(error: mysql_async::Error) -> Self {
        Self::Error(error.to_string())
    }
}

/// Parses a `mysql://user[:password]@host[:port]/database` URL.
pub(crate) fn parse_url(url: &str) -> Result<Opts, String> {
    Opts::from_url(url).map_err(|error| error.to_string())
}

/// The statement run on every new connection so that the server gives up on
/// a statement after about `bound`, instead of letting statements blocked on
/// a lock pile up behind the client's own timeout.
///
/// The lock-wait variables exist on both servers but take whole seconds, so
/// they are rounded up to at least 1 s; MariaDB's `max_statement_time` takes
/// fractions and bounds everything, including metadata-lock waits (`LOCK
/// TABLES`). It sits in a `/*M! … */` comment, which MariaDB executes and
/// MySQL skips: MySQL has no such variable and would refuse the whole `SET`.
fn session_bounds(bound: Duration) -> String {
    let seconds = bound.as_millis().div_ceil(1000).max(1);
    let fraction = bound.as_secs_f64().max(0.001);
    format!(
        "SET SESSION lock_wait_timeout = {seconds}, innodb_lock_wait_timeout = {seconds} \
         /*M!, max_statement_time = {fraction:.3} */"
    )
}

/// Connection options with the session bounds of `bound`.
fn bounded_opts(opts: &Opts, bound: Duration) -> OptsBuilder {
    OptsBuilder::from_opts(opts.clone()).setup(vec![session_bounds(bound)])
}

async fn connect(opts: &Opts, bound: Duration) -> Result<Conn, DbFailure> {
    Ok(Conn::new(bounded_opts(opts, bound)).await?)
}

/// The request side.
///
/// A request abandoned by the caller's timeout drops its pooled `Conn` in
/// the middle of a command. mysql_async marks a connection as broken for the
/// duration of every command, so the pool closes such a connection instead of
/// handing it, with an unread answer on the wire, to the next request.
pub(super) struct Store {
    opts: Opts,
    pool: Pool,
}

impl Store {
    /// Connects, creates the tables if missing, returns the queue depth.
    pub(super) async fn open(
        url: &str,
        timeout: Duration,
        setup_timeout: Duration,
        tables: &DemoTables,
    ) -> Result<(Self, i64), DbFailure> {
        let opts = parse_url(url)
            .map_err(|reason| DbFailure::Error(format!("bad mysql url: {reason}")))?;
        let mut conn = connect(&opts, setup_timeout).await?;
        let DemoTables { mail, queue } = tables;
        // InnoDB for row locks and transactions. DATETIME(6) rather than
        // TIMESTAMP(6): a TIMESTAMP column's implicit default and ON UPDATE
        // depend on the server's `explicit_defaults_for_timestamp`.
        conn.query_drop(format!(
            "CREATE TABLE IF NOT EXISTS {queue} (
                 id BIGINT AUTO_INCREMENT PRIMARY KEY,
                 body TEXT NOT NULL,
                 queued_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6))
             ENGINE = InnoDB DEFAULT CHARSET = utf8mb4"
        ))
        .await?;
        conn.query_drop(format!(
            "CREATE TABLE IF NOT EXISTS {mail} (
                 id BIGINT AUTO_INCREMENT PRIMARY KEY,
                 body TEXT NOT NULL,
                 queued_at DATETIME(6) NOT NULL,
                 delivered_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6))
             ENGINE = InnoDB DEFAULT CHARSET = utf8mb4"
        ))
        .await?;
        let depth = count(&mut conn, queue).await?;
        conn.disconnect().await?;

        let constraints =
            PoolConstraints::new(0, POOL_SIZE).expect("a pool of 0 to POOL_SIZE connections");
        // No reset when a connection goes back to the pool: requests leave no
        // session state behind, and a reset would cost a round trip each.
        let pool_opts = PoolOpts::default()
            .with_constraints(constraints)
            .with_reset_connection(false);
        let pool = Pool::new(bounded_opts(&opts, timeout).pool_opts(pool_opts));
        Ok((Self { opts, pool }, depth))
    }

    pub(super) async fn list_mail(
        &self,
        tables: &DemoTables,
    ) -> Result<Vec<(i64, String)>, DbFailure> {
        let mut conn = self.pool.get_conn().await?;
        Ok(conn
            .query(format!(
                "SELECT id, body FROM {} ORDER BY id DESC LIMIT {MAIL_LIMIT}",
                tables.mail
            ))
            .await?)
    }

    pub(super) async fn enqueue(&self, tables: &DemoTables, body: &str) -> Result<(), DbFailure> {
        let mut conn = self.pool.get_conn().await?;
        conn.exec_drop(
            format!("INSERT INTO {} (body) VALUES (?)", tables.queue),
            (body,),
        )
        .await?;
        Ok(())
    }

    pub(super) async fn ping(&self) -> Result<(), DbFailure> {
        let mut conn = self.pool.get_conn().await?;
        conn.query_drop("SELECT 1").await?;
        Ok(())
    }

    pub(super) async fn queue_depth(&self, tables: &DemoTables) -> Result<i64, DbFailure> {
        let mut conn = self.pool.get_conn().await?;
        count(&mut conn, &tables.queue).await
    }

    pub(super) fn delivery(&self) -> Delivery {
        Delivery {
            opts: self.opts.clone(),
            conn: None,
        }
    }

    pub(super) async fn drop_tables(
        &self,
        tables: &DemoTables,
        bound: Duration,
    ) -> Result<(), DbFailure> {
        let DemoTables { mail, queue } = tables;
        let mut conn = connect(&self.opts, bound).await?;
        conn.query_drop(format!("DROP TABLE IF EXISTS {queue}, {mail}"))
            .await?;
        conn.disconnect().await?;
        // Idle request connections hold no locks; closing them politely only
        // spares the server an "aborted connection" note.
        self.pool.clone().disconnect().await?;
        Ok(())
    }
}

/// Drops `tables` on the server `url` names, from any process: connects
/// within `connect_timeout`, then checks which tables exist and drops them,
/// bounded by `statement_timeout` (on the server too, for lock waits).
pub(crate) async fn drop_tables_at(
    url: &str,
    tables: &DemoTables,
    connect_timeout: Duration,
    statement_timeout: Duration,
) -> Result<Existed, DropTablesError> {
    let opts = Opts::from_url(url).map_err(DropTablesError::BadMysqlUrl)?;
    let mut conn = tokio::time::timeout(
        connect_timeout,
        Conn::new(bounded_opts(&opts, statement_timeout)),
    )
    .await
    .map_err(|_| DropTablesError::ConnectTimeout {
        server: DatabaseServer::Mysql,
        after: connect_timeout,
    })?
    .map_err(DropTablesError::Mysql)?;
    let DemoTables { mail, queue } = tables;
    let drop = async {
        let present: Vec<String> = conn
            .exec(
                "SELECT table_name FROM information_schema.tables
                 WHERE table_schema = DATABASE() AND table_name IN (?, ?)",
                (mail, queue),
            )
            .await?;
        let existed = Existed {
            mail: present.iter().any(|name| name == mail),
            queue: present.iter().any(|name| name == queue),
        };
        // Validated identifiers (see `DemoTables::validate`).
        conn.query_drop(format!("DROP TABLE IF EXISTS {queue}, {mail}"))
            .await?;
        conn.disconnect().await?;
        Ok(existed)
    };
    tokio::time::timeout(statement_timeout, drop)
        .await
        .map_err(|_| DropTablesError::Timeout {
            server: DatabaseServer::Mysql,
            after: statement_timeout,
        })?
        .map_err(DropTablesError::Mysql)
}

async fn count(conn: &mut Conn, table: &str) -> Result<i64, DbFailure> {
    conn.query_first(format!("SELECT COUNT(*) FROM {table}"))
        .await?
        .ok_or_else(|| DbFailure::Error("COUNT(*) returned no row".to_owned()))
}

/// The delivery task's own connection, opened on first use.
pub(super) struct Delivery {
    opts: Opts,
    conn: Option<Conn>,
}

impl Delivery {
    /// Moves queued rows into the mail table in one transaction: locks them
    /// (`FOR UPDATE`), copies exactly those ids, deletes exactly those ids.
    /// READ COMMITTED takes no gap locks, so `POST /send` can append to the
    /// queue while a round runs.
    pub(super) async fn round(&mut self, tables: &DemoTables) -> Result<u64, DbFailure> {
        let conn = match &mut self.conn {
            Some(conn) => conn,
            slot => slot.insert(connect(&self.opts, DELIVERY_STATEMENT_TIMEOUT).await?),
        };
        let result = deliver_on(conn, tables).await;
        if result.is_err() {
            // A failed command may have closed the connection (mysql_async
            // does on I/O errors), and a server error leaves it usable: it
            // is simplest to start the next round on a fresh one either way.
            self.conn = None;
        }
        result
    }

    /// Forgets the connection after a round that timed out, which may have
    /// left it mid-command or mid-transaction; closing it ends both.
    pub(super) fn reset(&mut self) {
        self.conn = None;
    }

    /// Closes the connection and waits for that, so that no transaction of
    /// ours can still hold a lock the `DROP TABLE` at shutdown waits for.
    pub(super) async fn close(self) {
        if let Some(conn) = self.conn {
            if let Err(error) = conn.disconnect().await {
                tracing::debug!(%error, "delivery connection did not close cleanly");
            }
        }
    }
}

/// One round's transaction on `conn`.
async fn deliver_on(conn: &mut Conn, tables: &DemoTables) -> Result<u64, DbFailure> {
    let mut options = TxOpts::default();
    options.with_isolation_level(IsolationLevel::ReadCommitted);
    let mut transaction = conn.start_transaction(options).await?;
    match move_queued(&mut transaction, tables).await {
        Ok(moved) => {
            transaction.commit().await?;
            Ok(moved)
        }
        Err(failure) => {
            // Release the row locks now rather than when the connection goes.
            if let Err(error) = transaction.rollback().await {
                tracing::debug!(%error, "delivery rollback failed");
            }
            Err(failure)
        }
    }
}

async fn move_queued(
    transaction: &mut mysql_async::Transaction<'_>,
    tables: &DemoTables,
) -> Result<u64, DbFailure> {
    let DemoTables { mail, queue } = tables;
    let ids: Vec<i64> = transaction
        .query(format!(
            "SELECT id FROM {queue} ORDER BY id LIMIT {DELIVERY_BATCH} FOR UPDATE"
        ))
        .await?;
    if ids.is_empty() {
        return Ok(0);
    }
    // Integers read from the database, so formatting them in is safe.
    let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
    transaction
        .query_drop(format!(
            "INSERT INTO {mail} (body, queued_at)
             SELECT body, queued_at FROM {queue} WHERE id IN ({list}) ORDER BY id"
        ))
        .await?;
    transaction
        .query_drop(format!("DELETE FROM {queue} WHERE id IN ({list})"))
        .await?;
    Ok(transaction.affected_rows())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request abandoned mid-statement by the client-side timeout must not
    /// leave its connection, with the abandoned answer still on the wire, for
    /// the next request: the answers after it are theirs, and come at once.
    #[tokio::test]
    async fn an_abandoned_request_leaves_no_poisoned_connection() {
        // A server-side bound well above the sleep below, so that only the
        // client gives up.
        let timeout = Duration::from_secs(5);
        let tables = DemoTables::for_run(&format!("{}_unit", std::process::id())).unwrap();
        let (store, depth) = Store::open(
            "mysql://root@127.0.0.1:3306/test",
            timeout,
            timeout,
            &tables,
        )
        .await
        .unwrap();
        assert_eq!(depth, 0);

        let abandoned = tokio::time::timeout(Duration::from_millis(100), async {
            let mut conn = store.pool.get_conn().await?;
            conn.query_drop("SELECT SLEEP(2)").await
        })
        .await;
        assert!(abandoned.is_err(), "SLEEP(2) finished within 100 ms");

        let started = std::time::Instant::now();
        for n in 0..2 * POOL_SIZE {
            store
                .enqueue(&tables, &format!("message {n}"))
                .await
                .unwrap();
            let depth = store.queue_depth(&tables).await.unwrap();
            assert_eq!(depth, i64::try_from(n + 1).unwrap());
        }
        // Well below the abandoned SLEEP(2): nothing waited for its answer.
        let took = started.elapsed();
        assert!(took < Duration::from_secs(1), "took {took:?}");

        store.drop_tables(&tables, timeout).await.unwrap();
    }
}
