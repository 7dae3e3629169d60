//! The frontend's two tables as something the harness can know, journal and
//! drop before, while and after the demo runs.
//!
//! The names are chosen by the caller ([`DemoTables::for_run`] or
//! [`DemoTables::fresh`]) and handed to the frontend child, which creates
//! exactly those tables. A [`DemoTablesRecord`] says where they are;
//! [`drop_tables`] drops them from any process, e.g. a guardian executing a
//! revert journal after relapse was killed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{database, DatabaseDsn};

/// What every demo table name starts with, so that `tablename LIKE 'relapse%'`
/// finds leftovers.
pub const TABLE_PREFIX: &str = "relapse_demo_";

/// The longest table name: PostgreSQL keeps 63 bytes of an identifier
/// (MySQL 64) and would silently truncate a longer one.
pub const MAX_TABLE_NAME: usize = 63;

/// The longest tag [`DemoTables::for_run`] takes: the prefix, the tag and
/// `_queue` fit in [`MAX_TABLE_NAME`].
pub const MAX_TAG: usize = MAX_TABLE_NAME - TABLE_PREFIX.len() - "_queue".len();

/// How long [`drop_tables`] waits to be connected (and authenticated).
pub const DROP_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long [`drop_tables`] waits for its statements once connected (the
/// server is told the same bound, so a `DROP` waiting for a lock gives up).
pub const DROP_STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);

/// The tables a database-backed frontend owns: `relapse_demo_<tag>_mail` and
/// `relapse_demo_<tag>_queue`.
///
/// The fields are public for reading; anything that interpolates them into
/// SQL ([`crate::Demo::start`], the frontend child, [`drop_tables`]) checks
/// them with [`DemoTables::validate`] first.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DemoTables {
    /// Delivered messages (`id`, `body`, `queued_at`, `delivered_at`).
    pub mail: String,
    /// Messages waiting for delivery (`id`, `body`, `queued_at`).
    pub queue: String,
}

/// A table name (or tag) that is not a safe demo table identifier.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[error("invalid demo table name {name:?}: {reason}")]
pub struct InvalidTableName {
    /// The rejected name or tag.
    pub name: String,
    /// Why it was rejected.
    pub reason: &'static str,
}

impl InvalidTableName {
    fn new(name: &str, reason: &'static str) -> Self {
        Self {
            name: name.to_owned(),
            reason,
        }
    }
}

/// Lowercase ASCII letters, digits and `_` only: a plain identifier on both
/// servers, unquoted, and lowercase so that PostgreSQL's case folding and
/// MySQL's case-sensitive table names agree with the catalog.
fn is_identifier_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'
}

/// Checks one table name: [`TABLE_PREFIX`], then `[a-z0-9_]`, at most
/// [`MAX_TABLE_NAME`] bytes.
pub fn validate_table_name(name: &str) -> Result<(), InvalidTableName> {
    if !name.starts_with(TABLE_PREFIX) {
        return Err(InvalidTableName::new(name, "must start with relapse_demo_"));
    }
    if name.len() == TABLE_PREFIX.len() {
        return Err(InvalidTableName::new(
            name,
            "needs something after relapse_demo_",
        ));
    }
    if name.len() > MAX_TABLE_NAME {
        return Err(InvalidTableName::new(name, "longer than 63 bytes"));
    }
    if !name.chars().all(is_identifier_char) {
        return Err(InvalidTableName::new(
            name,
            "only lowercase ascii letters, digits and _ are allowed",
        ));
    }
    Ok(())
}

impl DemoTables {
    /// `relapse_demo_<tag>_mail` and `relapse_demo_<tag>_queue`. `tag` is
    /// 1 to [`MAX_TAG`] lowercase ASCII letters, digits or `_`, e.g. the
    /// harness's pid and a counter (`"4242_0"`).
    pub fn for_run(tag: &str) -> Result<DemoTables, InvalidTableName> {
        if tag.is_empty() {
            return Err(InvalidTableName::new(tag, "the tag is empty"));
        }
        if tag.len() > MAX_TAG {
            return Err(InvalidTableName::new(
                tag,
                "the tag is longer than 44 bytes",
            ));
        }
        if !tag.chars().all(is_identifier_char) {
            return Err(InvalidTableName::new(
                tag,
                "only lowercase ascii letters, digits and _ are allowed in the tag",
            ));
        }
        let tables = DemoTables {
            mail: format!("{TABLE_PREFIX}{tag}_mail"),
            queue: format!("{TABLE_PREFIX}{tag}_queue"),
        };
        tables.validate()?;
        Ok(tables)
    }

    /// Names no other call in this process returns:
    /// `relapse_demo_<pid of this process>_<n>_mail` / `…_queue`, with `n`
    /// counting up from 0 per process.
    pub fn fresh() -> DemoTables {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}_{n}", std::process::id());
        // A u32 and a u64 in decimal with one `_`: at most 31 bytes of [0-9_].
        Self::for_run(&tag).expect("a pid and a counter make a valid tag")
    }

    /// Checks both names ([`validate_table_name`]) and that they differ.
    pub fn validate(&self) -> Result<(), InvalidTableName> {
        validate_table_name(&self.mail)?;
        validate_table_name(&self.queue)?;
        if self.mail == self.queue {
            return Err(InvalidTableName::new(
                &self.mail,
                "the mail and queue tables must differ",
            ));
        }
        Ok(())
    }
}

/// Which server a [`DemoTablesRecord`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatabaseServer {
    /// PostgreSQL.
    Postgres,
    /// MariaDB or MySQL.
    Mysql,
}

impl std::fmt::Display for DatabaseServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Postgres => "postgres",
            Self::Mysql => "mysql",
        })
    }
}

/// Everything needed to drop a frontend's tables from another process: what
/// the harness journals before the tables exist. Serialized as
/// `{"server":"postgres","dsn":"…","mail":"relapse_demo_…_mail","queue":"relapse_demo_…_queue"}`.
///
/// `dsn` is the connection string as given (a PostgreSQL DSN or a
/// `mysql://` URL) and so holds a password if the DSN has one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DemoTablesRecord {
    /// Which server.
    pub server: DatabaseServer,
    /// How to connect to it.
    pub dsn: String,
    /// The mail table.
    pub mail: String,
    /// The queue table.
    pub queue: String,
}

impl DemoTablesRecord {
    /// The record of `tables` on the server `dsn` names.
    pub fn new(dsn: &DatabaseDsn, tables: &DemoTables) -> DemoTablesRecord {
        let (server, dsn) = match dsn {
            DatabaseDsn::Postgres(dsn) => (DatabaseServer::Postgres, dsn),
            DatabaseDsn::Mysql(url) => (DatabaseServer::Mysql, url),
        };
        DemoTablesRecord {
            server,
            dsn: dsn.clone(),
            mail: tables.mail.clone(),
            queue: tables.queue.clone(),
        }
    }

    /// The tables, unchecked.
    pub fn tables(&self) -> DemoTables {
        DemoTables {
            mail: self.mail.clone(),
            queue: self.queue.clone(),
        }
    }

    /// The server and DSN as a [`DatabaseDsn`].
    pub fn dsn(&self) -> DatabaseDsn {
        match self.server {
            DatabaseServer::Postgres => DatabaseDsn::Postgres(self.dsn.clone()),
            DatabaseServer::Mysql => DatabaseDsn::Mysql(self.dsn.clone()),
        }
    }
}

/// Why [`drop_tables`] failed. Nothing was dropped unless the error comes
/// from the `DROP` itself.
#[derive(thiserror::Error, Debug)]
pub enum DropTablesError {
    /// The record names a table that is not a demo table identifier; nothing
    /// was sent to the server.
    #[error("refusing to drop tables: {0}")]
    InvalidName(#[from] InvalidTableName),
    /// The record's MySQL URL does not parse.
    #[error("bad mysql url in the tables record: {0}")]
    BadMysqlUrl(#[source] mysql_async::UrlError),
    /// The record's PostgreSQL DSN does not parse.
    #[error("bad postgres dsn in the tables record: {0}")]
    BadPostgresDsn(#[source] tokio_postgres::Error),
    /// Not connected within [`DROP_CONNECT_TIMEOUT`].
    #[error("could not connect to {server} within {}", humantime::format_duration(*.after))]
    ConnectTimeout {
        /// Which server.
        server: DatabaseServer,
        /// How long we waited.
        after: Duration,
    },
    /// The statements did not finish within [`DROP_STATEMENT_TIMEOUT`].
    #[error("{server} did not drop the tables within {}", humantime::format_duration(*.after))]
    Timeout {
        /// Which server.
        server: DatabaseServer,
        /// How long we waited.
        after: Duration,
    },
    /// PostgreSQL refused the connection or a statement.
    #[error("postgres: {0}")]
    Postgres(#[source] tokio_postgres::Error),
    /// MariaDB / MySQL refused the connection or a statement.
    #[error("mysql: {0}")]
    Mysql(#[source] mysql_async::Error),
    /// [`drop_tables_blocking`] could not build its runtime.
    #[error("failed to start a tokio runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// [`drop_tables_blocking`] was called from inside a tokio runtime.
    #[error("drop_tables_blocking was called from inside a tokio runtime; use drop_tables")]
    InsideRuntime,
}

/// Drops the record's two tables (`DROP TABLE IF EXISTS`) and says what it
/// did, in one line: `dropped tables relapse_demo_…_mail, relapse_demo_…_queue
/// on postgres`, or that they were already gone. Idempotent: tables that are
/// gone are no error.
///
/// Checks the names before connecting. Bounded: at most
/// [`DROP_CONNECT_TIMEOUT`] to connect, then [`DROP_STATEMENT_TIMEOUT`] for
/// the statements, so an unreachable or stuck server costs a few seconds, not
/// a hang.
pub async fn drop_tables(record: &DemoTablesRecord) -> Result<String, DropTablesError> {
    let tables = record.tables();
    tables.validate()?;
    let existed = match record.server {
        DatabaseServer::Postgres => {
            database::postgres::drop_tables_at(
                &record.dsn,
                &tables,
                DROP_CONNECT_TIMEOUT,
                DROP_STATEMENT_TIMEOUT,
            )
            .await?
        }
        DatabaseServer::Mysql => {
            database::mysql::drop_tables_at(
                &record.dsn,
                &tables,
                DROP_CONNECT_TIMEOUT,
                DROP_STATEMENT_TIMEOUT,
            )
            .await?
        }
    };
    Ok(describe_drop(record.server, &tables, existed))
}

/// [`drop_tables`] for callers outside any tokio runtime (a guardian's plain
/// `main`, a `Drop` impl): runs it on a current-thread runtime of its own.
///
/// Must not be called from inside a tokio runtime (a runtime cannot block
/// on another); there it returns [`DropTablesError::InsideRuntime`] instead
/// of panicking. Inside a runtime, await [`drop_tables`].
pub fn drop_tables_blocking(record: &DemoTablesRecord) -> Result<String, DropTablesError> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(DropTablesError::InsideRuntime);
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(DropTablesError::Runtime)?
        .block_on(drop_tables(record))
}

/// Which of the two tables existed right before the `DROP`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Existed {
    pub(crate) mail: bool,
    pub(crate) queue: bool,
}

fn describe_drop(server: DatabaseServer, tables: &DemoTables, existed: Existed) -> String {
    let DemoTables { mail, queue } = tables;
    match (existed.mail, existed.queue) {
        (true, true) => format!("dropped tables {mail}, {queue} on {server}"),
        (true, false) => {
            format!("dropped table {mail} on {server} ({queue} was already gone)")
        }
        (false, true) => {
            format!("dropped table {queue} on {server} ({mail} was already gone)")
        }
        (false, false) => format!("tables {mail}, {queue} on {server} were already gone"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn for_run_names_both_tables_after_the_tag() {
        let tables = DemoTables::for_run("4242_0").unwrap();
        assert_eq!(tables.mail, "relapse_demo_4242_0_mail");
        assert_eq!(tables.queue, "relapse_demo_4242_0_queue");
        let longest = "a".repeat(MAX_TAG);
        let tables = DemoTables::for_run(&longest).unwrap();
        assert_eq!(tables.queue.len(), MAX_TABLE_NAME);
    }

    #[test]
    fn for_run_rejects_unsafe_tags() {
        for tag in [
            "",
            "Upper",
            "a-b",
            "a b",
            "x; DROP TABLE users",
            "\"quoted\"",
            "é",
            "a\0",
            &"a".repeat(MAX_TAG + 1),
        ] {
            assert!(DemoTables::for_run(tag).is_err(), "{tag:?}");
        }
    }

    #[test]
    fn validate_checks_prefix_charset_length_and_distinctness() {
        let ok = DemoTables::for_run("t").unwrap();
        assert_eq!(ok.validate(), Ok(()));
        for (mail, queue) in [
            ("users", "relapse_demo_t_queue"),
            ("relapse_demo_t_mail", "relapse_demo_"),
            ("relapse_demo_t_mail", "relapse_demo_T_queue"),
            ("relapse_demo_t_mail", "relapse_demo_t_queue; --"),
            ("relapse_demo_t_mail", "relapse_demo_t_mail"),
        ] {
            let tables = DemoTables {
                mail: mail.to_owned(),
                queue: queue.to_owned(),
            };
            assert!(tables.validate().is_err(), "{tables:?}");
        }
        let long = format!("{TABLE_PREFIX}{}", "q".repeat(MAX_TABLE_NAME));
        assert!(validate_table_name(&long).is_err());
    }

    #[test]
    fn fresh_names_differ_and_carry_this_pid() {
        let a = DemoTables::fresh();
        let b = DemoTables::fresh();
        assert_ne!(a, b);
        let prefix = format!("relapse_demo_{}_", std::process::id());
        assert!(a.mail.starts_with(&prefix), "{a:?}");
        assert!(a.mail.ends_with("_mail") && a.queue.ends_with("_queue"));
        a.validate().unwrap();
    }

    #[test]
    fn the_record_round_trips_through_json() {
        let tables = DemoTables::for_run("7_1").unwrap();
        let record = DemoTablesRecord::new(
            &DatabaseDsn::Postgres("host=127.0.0.1 user=postgres dbname=test".to_owned()),
            &tables,
        );
        let json = serde_json::to_string(&record).unwrap();
        assert_eq!(
            json,
            r#"{"server":"postgres","dsn":"host=127.0.0.1 user=postgres dbname=test","mail":"relapse_demo_7_1_mail","queue":"relapse_demo_7_1_queue"}"#
        );
        let back: DemoTablesRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back, record);
        assert_eq!(back.tables(), tables);
        let mysql: DemoTablesRecord = serde_json::from_str(
            r#"{"server":"mysql","dsn":"mysql://root@127.0.0.1:3306/test","mail":"relapse_demo_7_1_mail","queue":"relapse_demo_7_1_queue"}"#,
        )
        .unwrap();
        assert_eq!(
            mysql.dsn(),
            DatabaseDsn::Mysql("mysql://root@127.0.0.1:3306/test".to_owned())
        );
    }

    #[test]
    fn describes_what_it_dropped() {
        let tables = DemoTables::for_run("d").unwrap();
        let line =
            |mail, queue| describe_drop(DatabaseServer::Mysql, &tables, Existed { mail, queue });
        assert_eq!(
            line(true, true),
            "dropped tables relapse_demo_d_mail, relapse_demo_d_queue on mysql"
        );
        assert_eq!(
            line(false, false),
            "tables relapse_demo_d_mail, relapse_demo_d_queue on mysql were already gone"
        );
        assert!(line(true, false).contains("relapse_demo_d_queue was already gone"));
    }

    #[tokio::test]
    async fn drop_tables_refuses_a_bad_name_without_connecting() {
        let record = DemoTablesRecord {
            server: DatabaseServer::Postgres,
            // Nothing listens here; a connection attempt would fail differently.
            dsn: "host=127.0.0.1 port=1 user=postgres dbname=test".to_owned(),
            mail: "users".to_owned(),
            queue: "relapse_demo_x_queue".to_owned(),
        };
        let error = drop_tables(&record).await.unwrap_err();
        assert!(
            matches!(error, DropTablesError::InvalidName(_)),
            "{error:?}"
        );
    }
}
