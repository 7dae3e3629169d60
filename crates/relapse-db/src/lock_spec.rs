//! What a db_lock locks and how: the lock spec (a table in a mode, rows by a where clause, the
//! global read lock), its mode checked against the server's list, the table quoted as an
//! identifier, and the statements that take and release it.

use serde::{Deserialize, Serialize};

use crate::{DbError, DbKind, MYSQL_TABLE_MODES, POSTGRES_TABLE_MODES};

/// What to lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "lock")]
pub enum LockSpec {
    /// A whole table. `table` is a name, or `schema.table`; each part is quoted, so it is taken
    /// literally (case-sensitive on PostgreSQL) and may not itself contain a dot. `mode` is one of
    /// [`POSTGRES_TABLE_MODES`] or [`MYSQL_TABLE_MODES`], in any case, `_` allowed for spaces.
    Table { table: String, mode: String },
    /// The rows of `table` that `where_clause` selects, `FOR UPDATE` in an open transaction.
    /// `where_clause` is trusted SQL from the scenario; it must select at least one row.
    Rows { table: String, where_clause: String },
    /// MySQL/MariaDB only: `FLUSH TABLES WITH READ LOCK`, which stalls every write on the server.
    GlobalRead,
}

/// A lock statement that has been checked and quoted.
#[derive(Debug, Clone)]
pub(crate) struct Statements {
    /// Run before the lock statement, in the same session (`BEGIN`).
    pub(crate) begin: Option<&'static str>,
    pub(crate) lock: String,
    /// Whether `lock` returns rows, of which there must be at least one.
    pub(crate) returns_rows: bool,
    /// Releases the lock.
    pub(crate) release: &'static str,
}

fn quote_postgres(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn quote_mysql(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// Quotes `name` or `schema.name`.
fn quote_table(kind: DbKind, table: &str) -> Result<String, DbError> {
    let parts: Vec<&str> = table.split('.').collect();
    if parts.len() > 2 || parts.iter().any(|p| p.is_empty() || p.contains('\0')) {
        return Err(DbError::Table(table.to_string()));
    }
    let quote = match kind {
        DbKind::Postgres => quote_postgres,
        DbKind::Mysql => quote_mysql,
    };
    Ok(parts.into_iter().map(quote).collect::<Vec<_>>().join("."))
}

/// Normalises a mode ("access_exclusive", "Access  Exclusive") and checks it against the list.
fn check_mode(kind: DbKind, mode: &str) -> Result<&'static str, DbError> {
    let wanted = mode
        .replace('_', " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_uppercase();
    let modes = match kind {
        DbKind::Postgres => POSTGRES_TABLE_MODES,
        DbKind::Mysql => MYSQL_TABLE_MODES,
    };
    modes
        .iter()
        .copied()
        .find(|m| *m == wanted)
        .ok_or_else(|| DbError::Mode {
            kind,
            mode: mode.to_string(),
            expected: modes.join(", "),
        })
}

impl LockSpec {
    /// Checks the spec for `kind` without connecting, for scenario validation.
    pub fn validate(&self, kind: DbKind) -> Result<(), DbError> {
        self.statements(kind).map(|_| ())
    }

    pub(crate) fn statements(&self, kind: DbKind) -> Result<Statements, DbError> {
        match (self, kind) {
            (LockSpec::Table { table, mode }, DbKind::Postgres) => Ok(Statements {
                begin: Some("BEGIN"),
                lock: format!(
                    "LOCK TABLE {} IN {} MODE",
                    quote_table(kind, table)?,
                    check_mode(kind, mode)?
                ),
                returns_rows: false,
                release: "ROLLBACK",
            }),
            (LockSpec::Table { table, mode }, DbKind::Mysql) => Ok(Statements {
                begin: None,
                lock: format!(
                    "LOCK TABLES {} {}",
                    quote_table(kind, table)?,
                    check_mode(kind, mode)?
                ),
                returns_rows: false,
                release: "UNLOCK TABLES",
            }),
            (
                LockSpec::Rows {
                    table,
                    where_clause,
                },
                _,
            ) => {
                if where_clause.trim().is_empty() {
                    return Err(DbError::EmptyWhere);
                }
                // The clause goes between parentheses on lines of its own, so that a trailing
                // `--` comment in it cannot swallow the `FOR UPDATE` and silently lock nothing.
                Ok(Statements {
                    begin: Some(match kind {
                        DbKind::Postgres => "BEGIN",
                        DbKind::Mysql => "START TRANSACTION",
                    }),
                    lock: format!(
                        "SELECT 1 FROM {} WHERE (\n{}\n) FOR UPDATE",
                        quote_table(kind, table)?,
                        where_clause
                    ),
                    returns_rows: true,
                    release: "ROLLBACK",
                })
            }
            (LockSpec::GlobalRead, DbKind::Mysql) => Ok(Statements {
                begin: None,
                lock: "FLUSH TABLES WITH READ LOCK".to_string(),
                returns_rows: false,
                release: "UNLOCK TABLES",
            }),
            (LockSpec::GlobalRead, DbKind::Postgres) => Err(DbError::GlobalReadUnsupported(kind)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_checked_and_normalised() {
        assert_eq!(
            check_mode(DbKind::Postgres, "access_exclusive"),
            Ok("ACCESS EXCLUSIVE")
        );
        assert_eq!(
            check_mode(DbKind::Postgres, " share  row exclusive "),
            Ok("SHARE ROW EXCLUSIVE")
        );
        assert_eq!(check_mode(DbKind::Mysql, "write"), Ok("WRITE"));
        assert!(check_mode(DbKind::Postgres, "EXCLUSIVE MODE; DROP TABLE x").is_err());
        assert!(check_mode(DbKind::Mysql, "ACCESS EXCLUSIVE").is_err());
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_table(DbKind::Postgres, "a\"b").unwrap(), "\"a\"\"b\"");
        assert_eq!(quote_table(DbKind::Mysql, "s.t`x").unwrap(), "`s`.`t``x`");
        assert!(quote_table(DbKind::Postgres, "").is_err());
        assert!(quote_table(DbKind::Postgres, "a.b.c").is_err());
        assert!(quote_table(DbKind::Mysql, "a.").is_err());
    }

    #[test]
    fn global_read_is_mysql_only_and_where_is_required() {
        assert_eq!(
            LockSpec::GlobalRead.validate(DbKind::Postgres),
            Err(DbError::GlobalReadUnsupported(DbKind::Postgres))
        );
        assert!(LockSpec::GlobalRead.validate(DbKind::Mysql).is_ok());
        let rows = LockSpec::Rows {
            table: "t".into(),
            where_clause: " ".into(),
        };
        assert_eq!(rows.validate(DbKind::Mysql), Err(DbError::EmptyWhere));
    }
}
