//! The proxy as a relapse fault: inject switches its mode, revert switches back to pass-through.

use std::time::Duration;

use relapse_core::fault::{BoxFuture, Effective, Fault, FaultError, RevertInstructions, Reverted};
use tokio::time::Instant;

use crate::proxy::{DbProxy, ProxyMode};

/// The journal kind of a db_proxy fault.
pub const KIND: &str = "db_proxy";

/// How long inject (for `reset`) and revert wait for their confirmation, by default.
pub const DEFAULT_CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

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
        RevertInstructions {
            kind: KIND,
            json: serde_json::json!({
                "proxy": self.proxy.local_addr().to_string(),
                "note": "in-process",
            })
            .to_string(),
        }
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
/// with it and nothing outlived it; this only checks the record.
pub fn revert_journaled(json: &str) -> Result<String, String> {
    let record: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("invalid db_proxy record: {e}"))?;
    record
        .get("proxy")
        .and_then(|p| p.as_str())
        .ok_or_else(|| "invalid db_proxy record: no proxy address".to_string())?;
    Ok("proxy was in-process; gone with its process".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journaled_revert_checks_the_record() {
        assert_eq!(
            revert_journaled(r#"{"proxy":"127.0.0.1:41234","note":"in-process"}"#),
            Ok("proxy was in-process; gone with its process".to_string())
        );
        assert!(revert_journaled("{}").is_err());
        assert!(revert_journaled("not json").is_err());
    }
}
