//! Reverting a db_lock from its journal record alone (the guardian, `relapse cleanup`): the
//! holding session is killed only while it still carries the fault's tag, and the kill is
//! confirmed.

use mysql_async::prelude::Queryable;
use relapse_core::fault::RevertError;
use tokio::time::Instant;

use crate::{
    connect_mysql, connect_postgres, DbKind, DbLockRecord, KILL_CONFIRM_POLL, KILL_CONFIRM_WITHIN,
};

/// Kills the session a journaled lock was held by, from a new session; used by the guardian and
/// `relapse cleanup`. Only a session that still carries the record's tag is killed. Returns once
/// the session is confirmed gone (its locks released), or it was already gone. Idempotent.
///
/// Async: from blocking code use [`revert_record_blocking`].
pub async fn revert_record(record: &DbLockRecord) -> Result<String, RevertError> {
    match record.kind {
        DbKind::Postgres => revert_postgres(record).await,
        DbKind::Mysql => revert_mysql(record).await,
    }
}

/// [`revert_record`] on a runtime of its own. Must not be called from inside a tokio runtime.
pub fn revert_record_blocking(record: &DbLockRecord) -> Result<String, RevertError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| RevertError::failed("cannot start a runtime", e))?
        .block_on(revert_record(record))
}

async fn revert_postgres(record: &DbLockRecord) -> Result<String, RevertError> {
    let (client, task) = connect_postgres(&record.dsn, "relapse-db-lock-cleanup")
        .await
        .map_err(|e| RevertError::failed("cannot connect to postgres", e))?;
    let pid = i32::try_from(record.session_id).map_err(|_| {
        RevertError::NotConfirmed(format!(
            "invalid postgres backend pid {}",
            record.session_id
        ))
    })?;
    let result = async {
        let alive = "SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND application_name = $2";
        let rows = client
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE pid = $1 AND application_name = $2",
                &[&pid, &record.tag],
            )
            .await
            .map_err(|e| RevertError::failed(format!("pg_terminate_backend({pid})"), e))?;
        if rows.is_empty() {
            return Ok(format!(
                "postgres backend {pid} ({}) is gone; nothing to release",
                record.tag
            ));
        }
        let deadline = Instant::now() + KILL_CONFIRM_WITHIN;
        loop {
            let left = client
                .query(alive, &[&pid, &record.tag])
                .await
                .map_err(|e| RevertError::failed(format!("watching backend {pid}"), e))?;
            if left.is_empty() {
                return Ok(format!(
                    "postgres backend {pid} ({}) terminated; its locks are released",
                    record.tag
                ));
            }
            if Instant::now() >= deadline {
                return Err(RevertError::NotConfirmed(format!(
                    "postgres backend {pid} was still there {KILL_CONFIRM_WITHIN:?} after pg_terminate_backend"
                )));
            }
            tokio::time::sleep(KILL_CONFIRM_POLL).await;
        }
    }
    .await;
    drop(client);
    let _ = task.await;
    result
}

/// The connection that holds the user lock `tag`, if any.
async fn tag_holder(
    conn: &mut mysql_async::Conn,
    tag: &str,
) -> Result<Option<u64>, mysql_async::Error> {
    conn.exec_first::<Option<u64>, _, _>("SELECT IS_USED_LOCK(?)", (tag,))
        .await
        .map(Option::flatten)
}

async fn revert_mysql(record: &DbLockRecord) -> Result<String, RevertError> {
    let mut conn = connect_mysql(&record.dsn)
        .await
        .map_err(|e| RevertError::failed("cannot connect to mysql", e))?;
    let id = record.session_id;
    let result = async {
        let current = tag_holder(&mut conn, &record.tag)
            .await
            .map_err(|e| RevertError::failed("IS_USED_LOCK", e))?;
        match current {
            None => {
                return Ok(format!(
                    "mysql connection {id} ({}) is gone; nothing to release",
                    record.tag
                ))
            }
            Some(other) if other != id => {
                return Err(RevertError::NotConfirmed(format!(
                    "mysql tag {} is held by connection {other}, not {id}; not killing it",
                    record.tag
                )))
            }
            Some(_) => {}
        }
        // An integer of our own, so formatting it in is safe.
        if let Err(e) = conn.query_drop(format!("KILL CONNECTION {id}")).await {
            // It may have ended between the check and the kill ("unknown thread id").
            tracing::debug!(error = %e, "KILL CONNECTION {id}");
        }
        let deadline = Instant::now() + KILL_CONFIRM_WITHIN;
        loop {
            let held = tag_holder(&mut conn, &record.tag)
                .await
                .map_err(|e| RevertError::failed("IS_USED_LOCK", e))?;
            let listed: Option<u64> = conn
                .exec_first(
                    "SELECT COUNT(*) FROM information_schema.processlist WHERE id = ?",
                    (id,),
                )
                .await
                .map_err(|e| RevertError::failed("processlist", e))?;
            if held.is_none() && listed == Some(0) {
                return Ok(format!(
                    "mysql connection {id} ({}) killed; its locks are released",
                    record.tag
                ));
            }
            if Instant::now() >= deadline {
                return Err(RevertError::NotConfirmed(format!(
                    "mysql connection {id} was still there {KILL_CONFIRM_WITHIN:?} after KILL"
                )));
            }
            tokio::time::sleep(KILL_CONFIRM_POLL).await;
        }
    }
    .await;
    let _ = conn.disconnect().await;
    result
}
