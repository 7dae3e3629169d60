//! The frontend's database side, reproducing the Kolab incident: one
//! database server held locks across the cluster, the front ends answered
//! 503 and then misleading 401 / "planned maintenance" pages, and mail queued
//! and was delivered late.
//!
//! Each frontend owns two tables whose names the parent chose and passed on
//! the command line (see [`crate::DemoTables`]): a queue that `POST /send` appends to, and a mail table that a background
//! delivery task moves queued rows into every [`DELIVERY_INTERVAL`]. The
//! tables live on PostgreSQL ([`postgres`]) or MariaDB / MySQL ([`mysql`]);
//! this module holds what does not depend on which: the bounds, the error
//! classification, the delivery loop.

pub(crate) mod mysql;
pub(crate) mod postgres;

use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::{DatabaseDsn, DemoTables};

pub(crate) use mysql::parse_url as parse_mysql_url;

/// How often the delivery task drains the queue.
pub(crate) const DELIVERY_INTERVAL: Duration = Duration::from_millis(100);
/// Connections serving requests.
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

/// Runs `call` bounded by `bound`. On timeout `call` is dropped wherever it
/// was; each store makes sure that leaves no connection behind that a later
/// call would trip over.
async fn bounded<T>(
    bound: Duration,
    call: impl Future<Output = Result<T, DbFailure>>,
) -> Result<T, DbFailure> {
    tokio::time::timeout(bound, call)
        .await
        .unwrap_or(Err(DbFailure::Timeout(bound)))
}

/// One of the two servers. An enum rather than a trait object: there are
/// exactly two, and async fns in an enum need no boxing.
enum Store {
    Postgres(postgres::Store),
    Mysql(mysql::Store),
}

/// The delivery task's connection on one of the two servers.
enum Delivery {
    Postgres(postgres::Delivery),
    Mysql(mysql::Delivery),
}

impl Delivery {
    async fn round(&mut self, tables: &DemoTables) -> Result<u64, DbFailure> {
        match self {
            Self::Postgres(delivery) => delivery.round(tables).await,
            Self::Mysql(delivery) => delivery.round(tables).await,
        }
    }

    fn reset(&mut self) {
        match self {
            Self::Postgres(delivery) => delivery.reset(),
            Self::Mysql(delivery) => delivery.reset(),
        }
    }

    async fn close(self) {
        match self {
            Self::Postgres(delivery) => delivery.close().await,
            Self::Mysql(delivery) => delivery.close().await,
        }
    }
}

/// The frontend's database state, shared by all request handlers.
pub(crate) struct Database {
    store: Store,
    /// Bound on every statement of a request, client- and server-side.
    timeout: Duration,
    pub(crate) misleading_errors: bool,
    tables: DemoTables,
    /// The last queue depth read successfully.
    last_depth: AtomicI64,
}

impl Database {
    /// Connects, creates `tables` if missing, reads the initial queue depth.
    /// `tables` must be valid ([`DemoTables::validate`]): they are formatted
    /// into the statements.
    pub(crate) async fn open(
        dsn: DatabaseDsn,
        tables: DemoTables,
        timeout: Duration,
        misleading_errors: bool,
    ) -> Result<Arc<Self>, DbFailure> {
        let (store, depth) = bounded(SETUP_TIMEOUT, async {
            Ok(match dsn {
                DatabaseDsn::Postgres(dsn) => {
                    let (store, depth) =
                        postgres::Store::open(dsn, timeout, SETUP_TIMEOUT, &tables).await?;
                    (Store::Postgres(store), depth)
                }
                DatabaseDsn::Mysql(url) => {
                    let (store, depth) =
                        mysql::Store::open(&url, timeout, SETUP_TIMEOUT, &tables).await?;
                    (Store::Mysql(store), depth)
                }
            })
        })
        .await?;
        Ok(Arc::new(Self {
            store,
            timeout,
            misleading_errors,
            tables,
            last_depth: AtomicI64::new(depth),
        }))
    }

    /// `GET /mail`: the latest delivered messages, newest first.
    pub(crate) async fn list_mail(&self) -> Result<Vec<(i64, String)>, DbFailure> {
        bounded(self.timeout, async {
            match &self.store {
                Store::Postgres(store) => store.list_mail(&self.tables).await,
                Store::Mysql(store) => store.list_mail(&self.tables).await,
            }
        })
        .await
    }

    /// `POST /send`: queues one message.
    pub(crate) async fn enqueue(&self, body: &str) -> Result<(), DbFailure> {
        bounded(self.timeout, async {
            match &self.store {
                Store::Postgres(store) => store.enqueue(&self.tables, body).await,
                Store::Mysql(store) => store.enqueue(&self.tables, body).await,
            }
        })
        .await
    }

    /// `GET /health`: `SELECT 1`.
    pub(crate) async fn ping(&self) -> Result<(), DbFailure> {
        bounded(self.timeout, async {
            match &self.store {
                Store::Postgres(store) => store.ping().await,
                Store::Mysql(store) => store.ping().await,
            }
        })
        .await
    }

    /// The queue depth and whether it is stale (the last known value,
    /// because the database did not answer now).
    pub(crate) async fn queue_depth(&self) -> (i64, bool) {
        let read = bounded(self.timeout, async {
            match &self.store {
                Store::Postgres(store) => store.queue_depth(&self.tables).await,
                Store::Mysql(store) => store.queue_depth(&self.tables).await,
            }
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

    /// The delivery task: every [`DELIVERY_INTERVAL`] moves the queued rows
    /// into the mail table in one transaction, on a connection of its own,
    /// until `cancel`; then closes that connection. A failed round is logged
    /// and retried next time.
    pub(crate) async fn deliver(self: Arc<Self>, cancel: CancellationToken) {
        let mut delivery = match &self.store {
            Store::Postgres(store) => Delivery::Postgres(store.delivery()),
            Store::Mysql(store) => Delivery::Mysql(store.delivery()),
        };
        let mut interval = tokio::time::interval(DELIVERY_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                _ = interval.tick() => {}
            }
            let result = tokio::select! {
                () = cancel.cancelled() => {
                    // Abandoned mid-round: the connection may be mid-transaction.
                    delivery.reset();
                    break;
                }
                result = bounded(DELIVERY_STATEMENT_TIMEOUT * 2, delivery.round(&self.tables)) => result,
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
                        // Info, not warn: during an injected outage this is the demo doing what
                        // it should, and relapse's own output is the place for the verdict.
                        tracing::info!(%failure, "mail delivery failed");
                    }
                    // A timed-out round may have left the connection mid-transaction.
                    if matches!(failure, DbFailure::Timeout(_)) {
                        delivery.reset();
                    }
                }
            }
        }
        // Bounded like a round: a server that does not answer cannot hold up
        // the shutdown.
        let _ = tokio::time::timeout(DELIVERY_STATEMENT_TIMEOUT, delivery.close()).await;
    }

    /// Drops this instance's tables, bounded; a failure is logged and
    /// returned.
    pub(crate) async fn drop_tables(&self) -> Result<(), DbFailure> {
        let result = bounded(TEARDOWN_TIMEOUT, async {
            match &self.store {
                Store::Postgres(store) => store.drop_tables(&self.tables, TEARDOWN_TIMEOUT).await,
                Store::Mysql(store) => store.drop_tables(&self.tables, TEARDOWN_TIMEOUT).await,
            }
        })
        .await;
        if let Err(failure) = &result {
            let DemoTables { mail, queue } = &self.tables;
            tracing::warn!(%failure, %mail, %queue, "failed to drop the demo tables");
        }
        result
    }
}
