//! The PostgreSQL store: a few shared clients for requests, a client of its
//! own for the delivery task.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_postgres::{Client, Config, NoTls};

use super::{DbFailure, DELIVERY_STATEMENT_TIMEOUT, MAIL_LIMIT, POOL_SIZE};
use crate::tables::{DatabaseServer, DropTablesError, Existed};
use crate::DemoTables;

impl From<tokio_postgres::Error> for DbFailure {
    fn from(error: tokio_postgres::Error) -> Self {
        Self::Error(error.to_string())
    }
}

/// Opens a connection whose session bounds every statement (and every lock
/// wait) by `bound`, so a statement blocked on a lock is cancelled by the
/// server instead of piling up behind the client's own timeout.
async fn connect(dsn: &str, bound: Duration) -> Result<Client, tokio_postgres::Error> {
    connect_with(&dsn.parse()?, bound).await
}

/// [`connect`] with a parsed configuration.
async fn connect_with(config: &Config, bound: Duration) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "database connection ended");
        }
    });
    let millis = bound.as_millis().max(1);
    client
        .batch_execute(&format!(
            "SET statement_timeout = {millis}; SET lock_timeout = {millis}"
        ))
        .await?;
    Ok(client)
}

/// The request side. A client abandoned by the caller's timeout stays
/// usable: tokio-postgres pipelines requests and discards the answers of
/// dropped ones, and the server cancels the statement at its own
/// `statement_timeout`.
pub(super) struct Store {
    dsn: String,
    /// Session bound of every request client.
    timeout: Duration,
    pool: Vec<Mutex<Option<Arc<Client>>>>,
    next: AtomicUsize,
}

impl Store {
    /// Connects, creates the tables if missing, returns the queue depth.
    pub(super) async fn open(
        dsn: String,
        timeout: Duration,
        setup_timeout: Duration,
        tables: &DemoTables,
    ) -> Result<(Self, i64), DbFailure> {
        let client = connect(&dsn, setup_timeout).await?;
        let DemoTables { mail, queue } = tables;
        client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {queue} (
                     id bigserial PRIMARY KEY,
                     body text NOT NULL,
                     queued_at timestamptz NOT NULL DEFAULT now());
                 CREATE TABLE IF NOT EXISTS {mail} (
                     id bigserial PRIMARY KEY,
                     body text NOT NULL,
                     queued_at timestamptz NOT NULL,
                     delivered_at timestamptz NOT NULL DEFAULT now());"
            ))
            .await?;
        let depth: i64 = client
            .query_one(&format!("SELECT count(*) FROM {queue}"), &[])
            .await?
            .get(0);
        let store = Self {
            dsn,
            timeout,
            pool: (0..POOL_SIZE).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
        };
        Ok((store, depth))
    }

    /// A request client, round-robin over the pool; a closed (or never
    /// opened) slot is reconnected.
    async fn client(&self) -> Result<Arc<Client>, DbFailure> {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.pool.len();
        let slot = &self.pool[index];
        if let Some(client) = lock(slot).as_ref().filter(|client| !client.is_closed()) {
            return Ok(Arc::clone(client));
        }
        let client = Arc::new(connect(&self.dsn, self.timeout).await?);
        *lock(slot) = Some(Arc::clone(&client));
        Ok(client)
    }

    pub(super) async fn list_mail(
        &self,
        tables: &DemoTables,
    ) -> Result<Vec<(i64, String)>, DbFailure> {
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT id, body FROM {} ORDER BY id DESC LIMIT {MAIL_LIMIT}",
                    tables.mail
                ),
                &[],
            )
            .await?;
        Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
    }

    pub(super) async fn enqueue(&self, tables: &DemoTables, body: &str) -> Result<(), DbFailure> {
        self.client()
            .await?
            .execute(
                &format!("INSERT INTO {} (body) VALUES ($1)", tables.queue),
                &[&body],
            )
            .await?;
        Ok(())
    }

    pub(super) async fn ping(&self) -> Result<(), DbFailure> {
        self.client().await?.simple_query("SELECT 1").await?;
        Ok(())
    }

    pub(super) async fn queue_depth(&self, tables: &DemoTables) -> Result<i64, DbFailure> {
        let row = self
            .client()
            .await?
            .query_one(&format!("SELECT count(*) FROM {}", tables.queue), &[])
            .await?;
        Ok(row.get(0))
    }

    pub(super) fn delivery(&self) -> Delivery {
        Delivery {
            dsn: self.dsn.clone(),
            client: None,
        }
    }

    pub(super) async fn drop_tables(
        &self,
        tables: &DemoTables,
        bound: Duration,
    ) -> Result<(), DbFailure> {
        let DemoTables { mail, queue } = tables;
        connect(&self.dsn, bound)
            .await?
            .batch_execute(&format!("DROP TABLE IF EXISTS {queue}, {mail}"))
            .await?;
        Ok(())
    }
}

/// Drops `tables` on the server `dsn` names, from any process: connects
/// within `connect_timeout`, then checks which tables exist and drops them in
/// one transaction bounded by `statement_timeout` (on the server too).
pub(crate) async fn drop_tables_at(
    dsn: &str,
    tables: &DemoTables,
    connect_timeout: Duration,
    statement_timeout: Duration,
) -> Result<Existed, DropTablesError> {
    let config: Config = dsn.parse().map_err(DropTablesError::BadPostgresDsn)?;
    let mut client =
        tokio::time::timeout(connect_timeout, connect_with(&config, statement_timeout))
            .await
            .map_err(|_| DropTablesError::ConnectTimeout {
                server: DatabaseServer::Postgres,
                after: connect_timeout,
            })?
            .map_err(DropTablesError::Postgres)?;
    let DemoTables { mail, queue } = tables;
    let drop = async {
        let transaction = client.transaction().await?;
        let row = transaction
            .query_one(
                "SELECT to_regclass($1) IS NOT NULL, to_regclass($2) IS NOT NULL",
                &[mail, queue],
            )
            .await?;
        let existed = Existed {
            mail: row.get(0),
            queue: row.get(1),
        };
        // Validated identifiers (see `DemoTables::validate`).
        transaction
            .batch_execute(&format!("DROP TABLE IF EXISTS {queue}, {mail}"))
            .await?;
        transaction.commit().await?;
        Ok(existed)
    };
    tokio::time::timeout(statement_timeout, drop)
        .await
        .map_err(|_| DropTablesError::Timeout {
            server: DatabaseServer::Postgres,
            after: statement_timeout,
        })?
        .map_err(DropTablesError::Postgres)
}

/// The delivery task's own connection, opened on first use.
pub(super) struct Delivery {
    dsn: String,
    client: Option<Client>,
}

impl Delivery {
    /// Moves every queued row into the mail table in one transaction.
    pub(super) async fn round(&mut self, tables: &DemoTables) -> Result<u64, DbFailure> {
        let client = match &mut self.client {
            Some(client) if !client.is_closed() => client,
            slot => slot.insert(connect(&self.dsn, DELIVERY_STATEMENT_TIMEOUT).await?),
        };
        let transaction = client.transaction().await?;
        let DemoTables { mail, queue } = tables;
        let moved = transaction
            .execute(
                &format!(
                    "WITH moved AS (DELETE FROM {queue} RETURNING id, body, queued_at)
                     INSERT INTO {mail} (body, queued_at)
                     SELECT body, queued_at FROM moved ORDER BY id"
                ),
                &[],
            )
            .await?;
        transaction.commit().await?;
        Ok(moved)
    }

    /// Forgets the connection after a round that timed out, which may have
    /// left it mid-transaction; closing it ends the transaction.
    pub(super) fn reset(&mut self) {
        self.client = None;
    }

    /// Closes the connection; the server ends its session at once.
    pub(super) async fn close(self) {
        drop(self.client);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
