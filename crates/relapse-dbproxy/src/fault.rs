//! The proxy as a relapse fault: inject switches its mode, revert switches back to pass-through.

use std::time::Duration;

use relapse_core::fault::{
    BoxFuture, Effective, Fault, FaultError, RevertError, RevertInstructions, RevertRecord,
    Reverted,
};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::proxy::{DbProxy, ProxyMode};

/// The journal kind of a db_proxy fault.
pub const KIND: &str = "db_proxy";

/// How long inject (for `reset`) and revert wait for their confirmation, by default.
pub const DEFAULT_CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// The journal's record of a db_proxy fault: the proxy runs inside relapse, so there is nothing
/// to undo from outside; the record says which proxy, for people reading the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbProxyRecord {
    pub proxy: String,
    pub note: String,
}

impl RevertRecord for DbProxyRecord {
    const KIND: &'static str = KIND;
}

/// A mode of a running [`DbProxy`], as a fault.
#[derive(Debug)]
pub struct DbProxyFault {
    proxy: DbProxy,
    mode: ProxyMode,
    confirm_timeout: Duration,
}

impl DbProxyFault {
    pub fn new(proxy: DbProxy, mode: ProxyMode) -> DbProxyFault {
        DbProxyFault {
            proxy,
            mode,
            confirm_timeout: DEFAULT_CONFIRM_TIMEOUT,
        }
    }

    /// How long inject and revert wait for their confirmation.
    pub fn with_confirm_timeout(mut self, timeout: Duration) -> DbProxyFault {
        self.confirm_timeout = timeout;
        self
    }

    pub fn proxy(&self) -> &DbProxy {
        &self.proxy
    }
}

impl Fault for DbProxyFault {
    fn describe(&self) -> String {
        format!("db_proxy {} on {}", self.mode, self.proxy.local_addr())
    }

    fn revert_instructions(&self) -> RevertInstructions {
        RevertInstructions::new(&DbProxyRecord {
            proxy: self.proxy.local_addr().to_string(),
            note: "in-process".to_string(),
        })
    }

    /// Effective at once for every mode but `reset`, which is effective once every connection
    /// that was open is closed: a mode switch is seen by each connection at its next message, and
    /// `refuse_new` is checked on every accept.
    fn inject(&mut self) -> BoxFuture<'_, Result<Effective, FaultError>> {
        Box::pin(async move {
            let addr = self.proxy.local_addr();
            self.proxy.set_mode(self.mode);
            let detail = match self.mode {
                ProxyMode::Reset => {
                    tokio::time::timeout(self.confirm_timeout, self.proxy.all_closed())
                        .await
                        .map_err(|_| {
                            FaultError::NotConfirmed(format!(
                                "{} connections to {addr} still open after {:?}",
                                self.proxy.stats().open,
                                self.confirm_timeout
                            ))
                        })?;
                    format!("every connection to {addr} reset; new ones are reset too")
                }
                ProxyMode::RefuseNew => format!("new connections to {addr} refused"),
                mode => format!("{mode} on {addr}"),
            };
            Ok(Effective {
                at: Instant::now(),
                detail,
            })
        })
    }

    /// Confirmed once nothing is held any more: held statements went to the server, in order.
    fn revert(&mut self) -> BoxFuture<'_, Result<Reverted, FaultError>> {
        Box::pin(async move {
            let addr = self.proxy.local_addr();
            self.proxy.set_mode(ProxyMode::PassThrough);
            tokio::time::timeout(self.confirm_timeout, self.proxy.released())
                .await
                .map_err(|_| {
                    FaultError::NotConfirmed(format!(
                        "{} statements still held by {addr} after {:?}",
                        self.proxy.stats().held,
                        self.confirm_timeout
                    ))
                })?;
            Ok(Reverted {
                at: Instant::now(),
                detail: format!("{addr} back to pass-through; nothing held"),
            })
        })
    }

    fn revert_now(&mut self) {
        self.proxy.set_mode(ProxyMode::PassThrough);
    }
}

/// Executes a journaled db_proxy revert. The proxy lived in the relapse process, so it is gone
/// with it and nothing outlived it.
pub fn revert_record(record: &DbProxyRecord) -> Result<String, RevertError> {
    Ok(format!(
        "proxy {} was in-process; gone with its process",
        record.proxy
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use relapse_core::fault::decode_record;

    #[test]
    fn journaled_revert_checks_the_record() {
        let record: DbProxyRecord =
            decode_record(serde_json::json!({"proxy": "127.0.0.1:41234", "note": "in-process"}))
                .unwrap();
        assert_eq!(
            revert_record(&record).unwrap(),
            "proxy 127.0.0.1:41234 was in-process; gone with its process"
        );
        assert!(decode_record::<DbProxyRecord>(serde_json::json!({})).is_err());
        assert!(decode_record::<DbProxyRecord>(serde_json::json!("not json")).is_err());
    }
}
