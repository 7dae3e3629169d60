//! Database locks: one session takes a lock on a real PostgreSQL or MySQL/MariaDB server and holds
//! it until reverted. This reproduces the Kolab incident, where one database server held locks
//! until every transaction behind them stalled: the server is up and answers, but every writer
//! (or, with a global read lock, every write) waits.
//!
//! The fault connects when it is made ([`DbLock::new`]), so that its journal record can name the
//! server session that will hold the lock (PostgreSQL backend pid, MySQL connection id) before
//! anything is locked. Each session is also tagged with a unique name (PostgreSQL
//! `application_name`; on MySQL a user-level lock `GET_LOCK(tag)`), and [`revert_record`]
//! only kills a session that still carries the tag, so a pid or connection id reused after a
//! server restart is never killed.
//!
//! Trust: the table name and lock mode are checked (the mode against a fixed list, the table
//! quoted as an identifier), but a row lock's `where_clause` is SQL taken as it is written in the
//! scenario: scenarios are trusted input, like a shell command in a CI file.
//!
//! Here: the fault (connect, lock, confirm, release). What it locks is in `lock_spec`, the
//! revert from a journal record alone in `revert`, the SQL gauge in `gauge`.

#![forbid(unsafe_code)]
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod gauge;
mod lock_spec;
mod revert;

pub use gauge::SqlGauge;
pub use lock_spec::LockSpec;
use lock_spec::Statements;
pub use revert::{revert_record, revert_record_blocking};

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mysql_async::prelude::Queryable;
use relapse_core::fault::{
    BoxFuture, Effective, Fault, FaultError, RevertInstructions, RevertRecord, Reverted,
};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// The journal kind of a database lock.
pub const KIND: &str = "db_lock";

/// How long a lock statement may wait for the server to grant it, by default.
pub const DEFAULT_GRANT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`revert_record`] waits for a killed session to be gone.
const KILL_CONFIRM_WITHIN: Duration = Duration::from_secs(5);
/// How often to look for the killed session: there is no event to wait for on another session.
const KILL_CONFIRM_POLL: Duration = Duration::from_millis(5);

/// The PostgreSQL table lock modes (`LOCK TABLE … IN <mode> MODE`).
pub const POSTGRES_TABLE_MODES: &[&str] = &[
    "ACCESS SHARE",
    "ROW SHARE",
    "ROW EXCLUSIVE",
    "SHARE UPDATE EXCLUSIVE",
    "SHARE",
    "SHARE ROW EXCLUSIVE",
    "EXCLUSIVE",
    "ACCESS EXCLUSIVE",
];
/// The MySQL/MariaDB table lock modes (`LOCK TABLES … <mode>`).
pub const MYSQL_TABLE_MODES: &[&str] = &["READ", "WRITE"];

/// Which server a lock is taken on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DbKind {
    Postgres,
    Mysql,
}

impl From<relapse_core::scenario::DbServer> for DbKind {
    fn from(server: relapse_core::scenario::DbServer) -> DbKind {
        match server {
            relapse_core::scenario::DbServer::Postgres => DbKind::Postgres,
            relapse_core::scenario::DbServer::Mysql => DbKind::Mysql,
        }
    }
}

impl std::fmt::Display for DbKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DbKind::Postgres => "postgres",
            DbKind::Mysql => "mysql",
        })
    }
}

/// Why a database lock was refused before anything was locked.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DbError {
    #[error("invalid table name \"{0}\": expected name or schema.name, non-empty, without NUL")]
    Table(String),
    #[error("invalid {kind} table lock mode \"{mode}\": expected one of {expected}")]
    Mode {
        kind: DbKind,
        mode: String,
        expected: String,
    },
    #[error("empty where clause: expected SQL that selects the rows to lock")]
    EmptyWhere,
    #[error("a global read lock is only for mysql, not {0}")]
    GlobalReadUnsupported(DbKind),
    #[error("invalid {kind} dsn: {reason}")]
    Dsn { kind: DbKind, reason: String },
    #[error("cannot connect to {kind}: {reason}")]
    Connect { kind: DbKind, reason: String },
}

/// The journal's record of a database lock: enough to kill the holding session from another
/// process.
///
/// The DSN is stored as given. If it holds a password, the journal file then holds it too (the
/// journal is written 0600).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbLockRecord {
    pub kind: DbKind,
    pub dsn: String,
    /// PostgreSQL backend pid, or MySQL connection id, of the session holding the lock.
    pub session_id: u64,
    /// The session's tag: its PostgreSQL `application_name`, or the MySQL user lock it holds.
    pub tag: String,
    /// The lock statement, for people reading the journal.
    pub statement: String,
}

impl RevertRecord for DbLockRecord {
    const KIND: &'static str = KIND;
}

/// Why a session could not be opened: the connection string, or the server.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("dsn: {0}")]
    Dsn(String),
    #[error(transparent)]
    Postgres(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Mysql(#[from] mysql_async::Error),
}

/// A unique session tag: this process, a counter, and the time, so that two harness runs never
/// share one.
fn new_tag() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "relapse-db-lock-{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The connected session that takes and holds the lock.
enum Session {
    Postgres {
        client: tokio_postgres::Client,
        /// Drives the connection; it ends when the client is dropped.
        task: tokio::task::JoinHandle<()>,
    },
    Mysql(mysql_async::Conn),
}

pub(crate) async fn connect_postgres(
    dsn: &str,
    tag: &str,
) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), ConnectError> {
    let mut config =
        tokio_postgres::Config::from_str(dsn).map_err(|e| ConnectError::Dsn(e.to_string()))?;
    config.application_name(tag);
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    let task = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "db_lock postgres connection ended");
        }
    });
    Ok((client, task))
}

pub(crate) async fn connect_mysql(dsn: &str) -> Result<mysql_async::Conn, ConnectError> {
    let opts = mysql_async::Opts::from_url(dsn).map_err(|e| ConnectError::Dsn(e.to_string()))?;
    Ok(mysql_async::Conn::new(opts).await?)
}

/// Holds a lock on a database server, from one session, until reverted.
pub struct DbLock {
    kind: DbKind,
    dsn: String,
    spec: LockSpec,
    statements: Statements,
    tag: String,
    session_id: u64,
    grant_timeout: Duration,
    /// `None` once `revert_now` dropped it.
    session: Option<Session>,
    /// Whether the lock may be held (set before the lock statement is sent).
    applied: bool,
}

impl DbLock {
    /// Checks the spec and connects the session that will hold the lock, tagging it; nothing is
    /// locked yet. `dsn` is a tokio-postgres connection string (`host=… user=… dbname=…` or
    /// `postgresql://…`) or a MySQL URL (`mysql://user@host:3306/db`).
    pub async fn new(kind: DbKind, dsn: &str, spec: LockSpec) -> Result<DbLock, DbError> {
        let statements = spec.statements(kind)?;
        let tag = new_tag();
        let grant_timeout = DEFAULT_GRANT_TIMEOUT;
        let connect_error = |error: ConnectError| match error {
            ConnectError::Dsn(reason) => DbError::Dsn { kind, reason },
            other => DbError::Connect {
                kind,
                reason: other.to_string(),
            },
        };
        let (session, session_id) = match kind {
            DbKind::Postgres => {
                let (client, task) = connect_postgres(dsn, &tag).await.map_err(connect_error)?;
                let setup = async {
                    // A lock held by an idle transaction must not be ended by the server's own
                    // timeout: only revert ends it.
                    client
                        .batch_execute("SET idle_in_transaction_session_timeout = 0")
                        .await?;
                    let row = client.query_one("SELECT pg_backend_pid()", &[]).await?;
                    Ok::<i32, tokio_postgres::Error>(row.get(0))
                };
                let pid = setup.await.map_err(|e| DbError::Connect {
                    kind,
                    reason: e.to_string(),
                })?;
                (Session::Postgres { client, task }, pid as u64)
            }
            DbKind::Mysql => {
                let mut conn = connect_mysql(dsn).await.map_err(connect_error)?;
                let id = conn.id() as u64;
                let got: Option<Option<i64>> = conn
                    .exec_first("SELECT GET_LOCK(?, 0)", (tag.as_str(),))
                    .await
                    .map_err(|e| DbError::Connect {
                        kind,
                        reason: format!("tagging the session with GET_LOCK: {e}"),
                    })?;
                if got != Some(Some(1)) {
                    return Err(DbError::Connect {
                        kind,
                        reason: format!("GET_LOCK({tag}) was not granted: {got:?}"),
                    });
                }
                (Session::Mysql(conn), id)
            }
        };
        let mut lock = DbLock {
            kind,
            dsn: dsn.to_string(),
            spec,
            statements,
            tag,
            session_id,
            grant_timeout,
            session: Some(session),
            applied: false,
        };
        lock.set_grant_timeout(grant_timeout)
            .await
            .map_err(|e| DbError::Connect { kind, reason: e })?;
        Ok(lock)
    }

    /// Sets how long the lock statement may wait for the server to grant it (PostgreSQL
    /// `lock_timeout`, MySQL `lock_wait_timeout` and `innodb_lock_wait_timeout`), whole seconds
    /// on MySQL, at least one.
    pub async fn set_grant_timeout(&mut self, timeout: Duration) -> Result<(), String> {
        self.grant_timeout = timeout;
        match self.session.as_mut() {
            Some(Session::Postgres { client, .. }) => client
                .batch_execute(&format!(
                    "SET lock_timeout = {}",
                    timeout.as_millis().max(1)
                ))
                .await
                .map_err(|e| e.to_string()),
            Some(Session::Mysql(conn)) => {
                let secs = timeout.as_secs().max(1);
                conn.query_drop(format!(
                    "SET SESSION lock_wait_timeout = {secs}, innodb_lock_wait_timeout = {secs}"
                ))
                .await
                .map_err(|e| e.to_string())
            }
            None => Err("the session was closed".to_string()),
        }
    }

    /// The server session that holds (or will hold) the lock: PostgreSQL backend pid or MySQL
    /// connection id.
    pub fn session_id(&self) -> u64 {
        self.session_id
    }

    /// The session's unique tag.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    pub fn spec(&self) -> &LockSpec {
        &self.spec
    }

    fn record(&self) -> DbLockRecord {
        DbLockRecord {
            kind: self.kind,
            dsn: self.dsn.clone(),
            session_id: self.session_id,
            tag: self.tag.clone(),
            statement: self.statements.lock.clone(),
        }
    }

    /// Runs `sql` in the session; returns the number of rows it returned.
    async fn run(&mut self, sql: &str, rows: bool) -> Result<usize, String> {
        match self.session.as_mut() {
            Some(Session::Postgres { client, .. }) => {
                if rows {
                    client
                        .query(sql, &[])
                        .await
                        .map(|r| r.len())
                        .map_err(|e| e.to_string())
                } else {
                    client
                        .batch_execute(sql)
                        .await
                        .map(|()| 0)
                        .map_err(|e| e.to_string())
                }
            }
            Some(Session::Mysql(conn)) => {
                if rows {
                    conn.query::<i64, _>(sql)
                        .await
                        .map(|r| r.len())
                        .map_err(|e| e.to_string())
                } else {
                    conn.query_drop(sql)
                        .await
                        .map(|()| 0)
                        .map_err(|e| e.to_string())
                }
            }
            None => Err("the session was closed by revert_now; make a new DbLock".to_string()),
        }
    }

    fn session_alive(&self) -> bool {
        match &self.session {
            Some(Session::Postgres { client, .. }) => !client.is_closed(),
            Some(Session::Mysql(_)) => true,
            None => false,
        }
    }
}

impl Fault for DbLock {
    fn describe(&self) -> String {
        format!(
            "{} lock on {} session {}: {}",
            self.kind,
            match &self.spec {
                LockSpec::Table { .. } => "table",
                LockSpec::Rows { .. } => "rows",
                LockSpec::GlobalRead => "global read",
            },
            self.session_id,
            self.statements.lock.replace('\n', " ")
        )
    }

    fn revert_instructions(&self) -> RevertInstructions {
        RevertInstructions::new(&self.record())
    }

    fn inject(&mut self) -> BoxFuture<'_, Result<Effective, FaultError>> {
        Box::pin(async move {
            self.applied = true;
            if let Some(begin) = self.statements.begin {
                self.run(begin, false)
                    .await
                    .map_err(|e| FaultError::Injector(format!("{begin}: {e}")))?;
            }
            let lock = self.statements.lock.clone();
            let result = self.run(&lock, self.statements.returns_rows).await;
            // The server answered the lock statement: the lock is granted from here.
            let at = Instant::now();
            let release = self.statements.release;
            match result {
                Ok(rows) if self.statements.returns_rows && rows == 0 => {
                    let _ = self.run(release, false).await;
                    self.applied = false;
                    Err(FaultError::NotConfirmed(format!(
                        "the where clause selected no rows, so nothing is locked: {}",
                        lock.replace('\n', " ")
                    )))
                }
                Ok(rows) => Ok(Effective {
                    at,
                    detail: if self.statements.returns_rows {
                        format!(
                            "{} session {} holds {rows} row lock(s): {}",
                            self.kind,
                            self.session_id,
                            lock.replace('\n', " ")
                        )
                    } else {
                        format!("{} session {} granted: {lock}", self.kind, self.session_id)
                    },
                }),
                Err(e) => {
                    let _ = self.run(release, false).await;
                    self.applied = false;
                    Err(FaultError::NotConfirmed(format!(
                        "lock not granted (waited at most {:?}): {e}",
                        self.grant_timeout
                    )))
                }
            }
        })
    }

    fn revert(&mut self) -> BoxFuture<'_, Result<Reverted, FaultError>> {
        Box::pin(async move {
            if !self.applied {
                return Ok(Reverted {
                    at: Instant::now(),
                    detail: "no lock held; nothing to revert".to_string(),
                });
            }
            let release = self.statements.release;
            let direct = if self.session_alive() {
                self.run(release, false).await
            } else {
                Err("the session is closed".to_string())
            };
            let detail = match direct {
                Ok(_) => format!("{release} on {} session {}", self.kind, self.session_id),
                Err(e) => {
                    // The session is gone or broken: make sure from a second session that it is
                    // gone, and kill it if it is not.
                    let done = revert_record(&self.record())
                        .await
                        .map_err(|k| FaultError::Injector(format!("{release}: {e}; {k}")))?;
                    self.session = None;
                    format!("{release} failed ({e}); {done}")
                }
            };
            self.applied = false;
            Ok(Reverted {
                at: Instant::now(),
                detail,
            })
        })
    }

    fn revert_now(&mut self) {
        // Ending the session is enough: the server releases its locks when the session ends.
        match self.session.take() {
            Some(Session::Postgres { client, task }) => {
                // Dropping the client ends the connection task, which closes the connection.
                drop(client);
                drop(task);
            }
            Some(Session::Mysql(conn)) => drop(conn),
            None => {}
        }
        self.applied = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let record = DbLockRecord {
            kind: DbKind::Postgres,
            dsn: "host=127.0.0.1 user=postgres dbname=test".into(),
            session_id: 4242,
            tag: "relapse-db-lock-1-0-5".into(),
            statement: "LOCK TABLE \"t\" IN ACCESS EXCLUSIVE MODE".into(),
        };
        let json = serde_json::to_string(&record).unwrap();
        assert!(json.contains("\"kind\":\"postgres\""));
        assert_eq!(serde_json::from_str::<DbLockRecord>(&json).unwrap(), record);
    }
}
