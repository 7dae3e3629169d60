//! A backlog gauge read with SQL: the first column of the first row of a query, such as
//! `SELECT count(*) FROM mail_queue`.

use mysql_async::prelude::Queryable;
use relapse_core::fault::BoxFuture;
use relapse_core::sense::{Gauge, GaugeError};
use tokio::sync::Mutex;

use crate::{connect_mysql, connect_postgres, DbError, DbKind};

/// The session tag of gauge connections, so a DBA can tell them from the target's own.
const GAUGE_TAG: &str = "relapse-backlog";

/// Reads a number with one query on a connection it keeps; a failed read drops the connection so
/// that the next read starts afresh (a lock or a restart may have broken it).
pub struct SqlGauge {
    kind: DbKind,
    dsn: String,
    query: String,
    session: Mutex<Option<GaugeSession>>,
}

enum GaugeSession {
    Postgres {
        client: tokio_postgres::Client,
        task: tokio::task::JoinHandle<()>,
    },
    Mysql(mysql_async::Conn),
}

impl Drop for GaugeSession {
    fn drop(&mut self) {
        if let GaugeSession::Postgres { task, .. } = self {
            task.abort();
        }
    }
}

impl SqlGauge {
    /// Checks the DSN; connects on the first read.
    pub fn new(kind: DbKind, dsn: &str, query: &str) -> Result<SqlGauge, DbError> {
        let checked = match kind {
            DbKind::Postgres => dsn
                .parse::<tokio_postgres::Config>()
                .map(|_| ())
                .map_err(|e| e.to_string()),
            DbKind::Mysql => mysql_async::Opts::from_url(dsn)
                .map(|_| ())
                .map_err(|e| e.to_string()),
        };
        checked.map_err(|reason| DbError::Dsn { kind, reason })?;
        Ok(SqlGauge {
            kind,
            dsn: dsn.to_owned(),
            query: query.to_owned(),
            session: Mutex::new(None),
        })
    }

    async fn read_on(&self, session: &mut GaugeSession) -> Result<f64, GaugeError> {
        match session {
            GaugeSession::Postgres { client, .. } => {
                // The simple protocol returns text whatever the column type (bigint from count,
                // numeric from sum), which parses to a number the same way.
                let messages = client
                    .simple_query(&self.query)
                    .await
                    .map_err(|e| GaugeError::unreachable("the backlog query", e))?;
                let row = messages
                    .iter()
                    .find_map(|m| match m {
                        tokio_postgres::SimpleQueryMessage::Row(row) => Some(row),
                        _ => None,
                    })
                    .ok_or_else(no_row)?;
                number(row.get(0))
            }
            GaugeSession::Mysql(conn) => {
                let value: Option<mysql_async::Value> = conn
                    .query_first(&self.query)
                    .await
                    .map_err(|e| GaugeError::unreachable("the backlog query", e))?;
                match value.ok_or_else(no_row)? {
                    mysql_async::Value::Int(n) => Ok(n as f64),
                    mysql_async::Value::UInt(n) => Ok(n as f64),
                    mysql_async::Value::Float(n) => Ok(f64::from(n)),
                    mysql_async::Value::Double(n) => Ok(n),
                    mysql_async::Value::Bytes(bytes) => {
                        number(Some(&String::from_utf8_lossy(&bytes)))
                    }
                    mysql_async::Value::NULL => number(None),
                    other => Err(GaugeError::NoValue(format!("not a number: {other:?}"))),
                }
            }
        }
    }
}

fn no_row() -> GaugeError {
    GaugeError::NoValue("the query returned no row".to_string())
}

fn number(text: Option<&str>) -> Result<f64, GaugeError> {
    let text = text.ok_or_else(|| GaugeError::NoValue("the first column is NULL".to_string()))?;
    text.trim()
        .parse::<f64>()
        .map_err(|_| GaugeError::NoValue(format!("not a number: \"{text}\"")))
}

impl Gauge for SqlGauge {
    fn read(&self) -> BoxFuture<'_, Result<f64, GaugeError>> {
        Box::pin(async move {
            let mut slot = self.session.lock().await;
            // Taken out while in use: a read cancelled half-way (the engine's timeout) drops the
            // session with it instead of leaving a connection in the middle of a query.
            let mut session = match slot.take() {
                Some(session) => session,
                None => match self.kind {
                    DbKind::Postgres => {
                        let (client, task) = connect_postgres(&self.dsn, GAUGE_TAG)
                            .await
                            .map_err(|e| GaugeError::unreachable("connecting to postgres", e))?;
                        GaugeSession::Postgres { client, task }
                    }
                    DbKind::Mysql => GaugeSession::Mysql(
                        connect_mysql(&self.dsn)
                            .await
                            .map_err(|e| GaugeError::unreachable("connecting to mysql", e))?,
                    ),
                },
            };
            let value = self.read_on(&mut session).await?;
            *slot = Some(session);
            Ok(value)
        })
    }
}
