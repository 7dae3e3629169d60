//! The frontend's PostgreSQL side, reproducing the Kolab incident: one
//! database server held locks across the cluster, the front ends answered
//! 503 and then misleading 401 / "planned maintenance" pages, and mail queued
//! and was delivered late.
//!
//! Each frontend owns two tables named after its pid (see [`tables_for_pid`]):
//! a queue that `POST /send` appends to, and a mail table that a background
//! delivery task moves queued rows into every [`DELIVERY_INTERVAL`].

use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_postgres::{Client, NoTls};
use tokio_util::sync::CancellationToken;

use crate::DemoTables;

/// How often the delivery task drains the queue.
pub(crate) const DELIVERY_INTERVAL: Duration = Duration::from_millis(100);
/// Clients serving requests, used round-robin.
const POOL_SIZE: usize = 4;
/// Bound on the setup at start (connect + create tables).
const SETUP_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on dropping the tables at shutdown; below the parent's SIGTERM grace.
const TEARDOWN_TIMEOUT: Duration = Duration::from_millis(1500);
/// Server-side bounds of the delivery connection: a locked queue makes one
/// round fail rather than hang, and the next round tries again.
const DELIVERY_STATEMENT_TIMEOUT: Duration = Duration::from_secs(1);
/// Messages `GET /mail` lists.
const MAIL_LIMIT: i64 = 20;

/// The table names of the frontend with process id `pid`.
pub(crate) fn tables_for_pid(pid: u32) -> DemoTables {
    DemoTables {
        mail: format!("relapse_demo_{pid}_mail"),
        queue: format!("relapse_demo_{pid}_queue"),
    }
}

/// Why a database call failed: either way the database is "unavailable".
#[derive(Debug)]
pub(crate) enum DbFailure {
    Timeout(Duration),
    Error(String),
}

impl std::fmt::Display for DbFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Timeout(after) => write!(
                f,
                "database did not answer within {}",
                humantime::format_duration(*after)
            ),
            Self::Error(reason) => write!(f, "database error: {reason}"),
        }
    }
}

impl From<tokio_postgres::Error> for DbFailure {
    fn from(error: tokio_postgres::Error) -> Self {
        Self::Error(error.to_string())
    }
}

/// The frontend's database state, shared by all request handlers.
pub(crate) struct Database {
    dsn: String,
    /// Bound on every statement of a request, client- and server-side.
    timeout: Duration,
    pub(crate) misleading_errors: bool,
    tables: DemoTables,
    pool: Vec<Mutex<Option<Arc<Client>>>>,
    next: AtomicUsize,
    /// The last queue depth read successfully.
    last_depth: AtomicI64,
}

/// Opens a connection whose session bounds every statement (and every lock
/// wait) by `bound`, so a statement blocked on a lock is cancelled by the
/// server instead of piling up behind the client's own timeout.
async fn connect(dsn: &str, bound: Duration) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(dsn, NoTls).await?;
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

/// Runs `call` bounded by `bound`.
async fn bounded<T>(
    bound: Duration,
    call: impl Future<Output = Result<T, DbFailure>>,
) -> Result<T, DbFailure> {
    tokio::time::timeout(bound, call)
        .await
        .unwrap_or(Err(DbFailure::Timeout(bound)))
}

impl Database {
    /// Connects, creates this instance's tables if missing, reads the
    /// initial queue depth.
    pub(crate) async fn open(
        dsn: String,
        timeout: Duration,
        misleading_errors: bool,
    ) -> Result<Arc<Self>, DbFailure> {
        let tables = tables_for_pid(std::process::id());
        let database = Arc::new(Self {
            dsn,
            timeout,
            misleading_errors,
            tables,
            pool: (0..POOL_SIZE).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
            last_depth: AtomicI64::new(0),
        });
        bounded(SETUP_TIMEOUT, async {
            let client = connect(&database.dsn, SETUP_TIMEOUT).await?;
            let DemoTables { mail, queue } = &database.tables;
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
            database.last_depth.store(depth, Ordering::Relaxed);
            Ok(())
        })
        .await?;
        Ok(database)
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

    /// `GET /mail`: the latest delivered messages, newest first.
    pub(crate) async fn list_mail(&self) -> Result<Vec<(i64, String)>, DbFailure> {
        bounded(self.timeout, async {
            let client = self.client().await?;
            let rows = client
                .query(
                    &format!(
                        "SELECT id, body FROM {} ORDER BY id DESC LIMIT {MAIL_LIMIT}",
                        self.tables.mail
                    ),
                    &[],
                )
                .await?;
            Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
        })
        .await
    }

    /// `POST /send`: queues one message.
    pub(crate) async fn enqueue(&self, body: &str) -> Result<(), DbFailure> {
        bounded(self.timeout, async {
            let client = self.client().await?;
            client
                .execute(
                    &format!("INSERT INTO {} (body) VALUES ($1)", self.tables.queue),
                    &[&body],
                )
                .await?;
            Ok(())
        })
        .await
    }

    /// `GET /health`: `SELECT 1`.
    pub(crate) async fn ping(&self) -> Result<(), DbFailure> {
        bounded(self.timeout, async {
            self.client().await?.simple_query("SELECT 1").await?;
            Ok(())
        })
        .await
    }

    /// The queue depth and whether it is stale (the last known value,
    /// because the database did not answer now).
    pub(crate) async fn queue_depth(&self) -> (i64, bool) {
        let read = bounded(self.timeout, async {
            let client = self.client().await?;
            let depth: i64 = client
                .query_one(&format!("SELECT count(*) FROM {}", self.tables.queue), &[])
                .await?
                .get(0);
            Ok(depth)
        })
        .await;
        match read {
            Ok(depth) => {
                self.last_depth.store(depth, Ordering::Relaxed);
                (depth, false)
            }
            Err(failure) => {
                tracing::debug!(%failure, "queue depth read failed");
                (self.last_depth.load(Ordering::Relaxed), true)
            }
        }
    }

    /// The delivery task: every [`DELIVERY_INTERVAL`] moves all queued rows
    /// into the mail table in one transaction, on a connection of its own,
    /// until `cancel`. A failed round is logged and retried next time.
    pub(crate) async fn deliver(self: Arc<Self>, cancel: CancellationToken) {
        let mut client: Option<Client> = None;
        let mut interval = tokio::time::interval(DELIVERY_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = interval.tick() => {}
            }
            let round = async {
                if client.as_ref().is_none_or(Client::is_closed) {
                    client = Some(connect(&self.dsn, DELIVERY_STATEMENT_TIMEOUT).await?);
                }
                let Some(client) = client.as_mut() else {
                    unreachable!("connected above");
                };
                let transaction = client.transaction().await?;
                let DemoTables { mail, queue } = &self.tables;
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
                Ok::<u64, DbFailure>(moved)
            };
            let result = tokio::select! {
                () = cancel.cancelled() => return,
                result = bounded(DELIVERY_STATEMENT_TIMEOUT * 2, round) => result,
            };
            match result {
                Ok(moved) => {
                    if std::mem::replace(&mut failing, false) {
                        tracing::info!("mail delivery recovered");
                    }
                    if moved > 0 {
                        tracing::debug!(moved, "delivered queued mail");
                    }
                }
                Err(failure) => {
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!(%failure, "mail delivery failed");
                    }
                    // A timed-out round may have left the connection mid-transaction.
                    if matches!(failure, DbFailure::Timeout(_)) {
                        client = None;
                    }
                }
            }
        }
    }

    /// Drops this instance's tables (best effort, bounded).
    pub(crate) async fn drop_tables(&self) {
        let DemoTables { mail, queue } = &self.tables;
        let result = bounded(TEARDOWN_TIMEOUT, async {
            let client = connect(&self.dsn, TEARDOWN_TIMEOUT).await?;
            client
                .batch_execute(&format!("DROP TABLE IF EXISTS {queue}, {mail}"))
                .await?;
            Ok(())
        })
        .await;
        if let Err(failure) = result {
            tracing::warn!(%failure, %mail, %queue, "failed to drop the demo tables");
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
