//! `db_lock`: one session on a real database takes a lock and holds it.

use schemars::JsonSchema;
use serde::Deserialize;
use toml::Spanned;

use crate::scenario::check::Env;
use crate::scenario::{Template};
use crate::scenario::load::{problem, Problem};
use crate::scenario::{DbLockTarget, DbServer};

/// `db_lock`: one session holds a real lock on a database server.
#[derive(Debug, Clone, PartialEq)]
pub struct DbLockSpec {
    pub server: DbServer,
    /// Connection string (template): a PostgreSQL DSN or URL, or a `mysql://` URL.
    pub dsn: Template,
    pub lock: DbLockTarget,
}

/// `db_lock = { … }`: exactly one server of `postgres`, `mysql`, and the lock: `table` (with a
/// `mode`), `table` and `rows`, or `global_read`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DbLockSection {
    /// A PostgreSQL server: a DSN or URL (a template).
    #[schemars(with = "Option<String>")]
    pub postgres: Option<Spanned<String>>,
    /// A MariaDB/MySQL server: a `mysql://` URL (a template).
    #[schemars(with = "Option<String>")]
    pub mysql: Option<Spanned<String>>,
    /// The table to lock (a template).
    #[schemars(with = "Option<String>")]
    pub table: Option<Spanned<String>>,
    /// With `table` alone: PostgreSQL's `LOCK TABLE … IN <mode> MODE` (default
    /// `"ACCESS EXCLUSIVE"`) or MySQL's `LOCK TABLES … READ|WRITE` (default `"WRITE"`).
    pub mode: Option<String>,
    /// With `table`: a WHERE clause (trusted SQL) whose rows are locked `FOR UPDATE` in an open
    /// transaction.
    pub rows: Option<String>,
    /// MySQL's `FLUSH TABLES WITH READ LOCK`, instead of a table; default false.
    #[serde(default)]
    pub global_read: bool,
}

pub fn check(section: &Spanned<DbLockSection>, env: &Env) -> Result<DbLockSpec, Problem> {
    let span = section.span();
    let db = section.get_ref();
    let (server, dsn) = match (&db.postgres, &db.mysql) {
        (Some(dsn), None) => (DbServer::Postgres, dsn),
        (None, Some(dsn)) => (DbServer::Mysql, dsn),
        _ => return problem(span, "db_lock needs exactly one server: expected `postgres = \"DSN\"` or `mysql = \"mysql://…\"`"),
    };
    let lock = match (&db.table, &db.rows, db.global_read) {
        (None, None, true) if server == DbServer::Mysql => DbLockTarget::GlobalRead,
        (_, _, true) if server == DbServer::Postgres => {
            return problem(span, "global_read is MySQL's FLUSH TABLES WITH READ LOCK: PostgreSQL has none; expected `table`")
        }
        (Some(table), None, false) => DbLockTarget::Table {
            table: env.template(table)?,
            mode: db.mode.clone().unwrap_or_else(|| match server {
                DbServer::Postgres => "ACCESS EXCLUSIVE".to_string(),
                DbServer::Mysql => "WRITE".to_string(),
            }),
        },
        (Some(table), Some(rows), false) if db.mode.is_none() => DbLockTarget::Rows {
            table: env.template(table)?,
            where_clause: rows.clone(),
        },
        _ => return problem(span, "db_lock needs `table` (with an optional `mode`), `table` and `rows` (a WHERE clause), or `global_read = true`"),
    };
    Ok(DbLockSpec {
        server,
        dsn: env.template(dsn)?,
        lock,
    })
}

/// One small valid table of this kind, for the kind list's own test.
#[cfg(test)]
pub const EXAMPLE: &str = r#"db_lock = { postgres = "host=127.0.0.1", table = "mail" }"#;
