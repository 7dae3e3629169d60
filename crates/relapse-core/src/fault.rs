//! The contract between the engine and the injector crates.
//!
//! A fault is a pair `inject() -> Effective` / `revert()`. The engine holds every applied fault in a
//! [`FaultGuard`], which reverts it on drop if nobody did, so no exit path leaves it applied.

use std::future::Future;
use std::pin::Pin;

use tokio::time::Instant;

/// A boxed, sendable future: the trait objects here must be `dyn`-compatible.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What an injector confirms when a fault has become effective.
#[derive(Debug, Clone)]
pub struct Effective {
    /// The instant the injector confirmed the fault (the process is stopped, the lock granted).
    pub at: Instant,
    /// What was done, for the timeline: "pid 4242 stopped (state T)".
    pub detail: String,
}

/// What an injector confirms when a fault has been removed.
#[derive(Debug, Clone)]
pub struct Reverted {
    pub at: Instant,
    pub detail: String,
}

/// Why an injector could not inject or revert.
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    /// The target is not what the scenario said (no such process, unreadable pidfile).
    #[error("target: {0}")]
    Target(String),
    /// The injector itself failed (a syscall, a connection).
    #[error("injector: {0}")]
    Injector(String),
    /// The fault was asked for but could not be confirmed effective.
    #[error("not confirmed: {0}")]
    NotConfirmed(String),
}

/// How to revert a fault without the process that injected it: written to the journal before
/// the fault is injected, executed by the guardian or `relapse cleanup` if the harness dies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevertInstructions {
    /// The fault kind, which picks the injector that can execute the instructions.
    pub kind: &'static str,
    /// The injector's own instructions, as a JSON document.
    pub json: String,
}

/// A fault injector. Implementations live in the injector crates.
pub trait Fault: Send {
    /// A short description for the timeline: "freeze pid 4242".
    fn describe(&self) -> String;

    /// How to revert this fault from another process. Known before injection, so it can be
    /// journaled first.
    fn revert_instructions(&self) -> RevertInstructions;

    /// Applies the fault and returns once it is confirmed effective.
    ///
    /// Cancel safety: not cancel safe. If the future is dropped part-way, the fault may be
    /// applied; the guard's revert still runs, and revert is idempotent.
    fn inject(&mut self) -> BoxFuture<'_, Result<Effective, FaultError>>;

    /// Removes the fault and returns once its removal is confirmed. Idempotent: reverting a fault
    /// that is not applied succeeds.
    fn revert(&mut self) -> BoxFuture<'_, Result<Reverted, FaultError>>;

    /// Removes the fault without waiting for confirmation, for drop paths that cannot await.
    /// Idempotent like `revert`.
    fn revert_now(&mut self);
}

/// Where the engine writes down how to revert each fault before injecting it, and strikes it out
/// once the revert is confirmed (the journal; see the relapse-journal crate).
pub trait RevertLog: Send {
    /// Durably records a revert; returns its id. An error means the fault must not be injected.
    fn record(
        &mut self,
        fault: &str,
        describe: &str,
        instructions: &RevertInstructions,
    ) -> Result<u64, String>;

    /// Removes a recorded revert once it is confirmed.
    fn remove(&mut self, id: u64) -> Result<(), String>;
}

/// Holds a fault that may be applied; dropping the guard reverts it if it still is.
pub struct FaultGuard {
    fault: Box<dyn Fault>,
    applied: bool,
}

impl FaultGuard {
    pub fn new(fault: Box<dyn Fault>) -> FaultGuard {
        FaultGuard {
            fault,
            applied: false,
        }
    }

    pub fn describe(&self) -> String {
        self.fault.describe()
    }

    pub fn revert_instructions(&self) -> RevertInstructions {
        self.fault.revert_instructions()
    }

    pub fn is_applied(&self) -> bool {
        self.applied
    }

    /// Injects the fault. The guard counts it as applied from before the call, because an
    /// injector that fails half-way may have left part of it in place.
    pub async fn inject(&mut self) -> Result<Effective, FaultError> {
        self.applied = true;
        self.fault.inject().await
    }

    /// Reverts the fault if it is applied; `Ok(None)` when there was nothing to revert.
    pub async fn revert(&mut self) -> Result<Option<Reverted>, FaultError> {
        if !self.applied {
            return Ok(None);
        }
        let reverted = self.fault.revert().await?;
        self.applied = false;
        Ok(Some(reverted))
    }
}

impl Drop for FaultGuard {
    fn drop(&mut self) {
        if self.applied {
            tracing::warn!(fault = %self.fault.describe(), "fault dropped while applied; reverting now");
            self.fault.revert_now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    /// Counts how often it is applied: > 0 means applied.
    struct Counter(Arc<AtomicU32>);

    impl Fault for Counter {
        fn describe(&self) -> String {
            "counter".into()
        }
        fn revert_instructions(&self) -> RevertInstructions {
            RevertInstructions {
                kind: "counter",
                json: "{}".into(),
            }
        }
        fn inject(&mut self) -> BoxFuture<'_, Result<Effective, FaultError>> {
            Box::pin(async move {
                self.0.fetch_add(1, Ordering::SeqCst);
                Ok(Effective {
                    at: Instant::now(),
                    detail: String::new(),
                })
            })
        }
        fn revert(&mut self) -> BoxFuture<'_, Result<Reverted, FaultError>> {
            Box::pin(async move {
                self.0.store(0, Ordering::SeqCst);
                Ok(Reverted {
                    at: Instant::now(),
                    detail: String::new(),
                })
            })
        }
        fn revert_now(&mut self) {
            self.0.store(0, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn dropping_an_applied_guard_reverts_it() {
        let state = Arc::new(AtomicU32::new(0));
        let mut guard = FaultGuard::new(Box::new(Counter(state.clone())));
        guard.inject().await.unwrap();
        assert_eq!(state.load(Ordering::SeqCst), 1);
        drop(guard);
        assert_eq!(state.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn revert_is_idempotent() {
        let state = Arc::new(AtomicU32::new(0));
        let mut guard = FaultGuard::new(Box::new(Counter(state.clone())));
        assert!(guard.revert().await.unwrap().is_none());
        guard.inject().await.unwrap();
        assert!(guard.revert().await.unwrap().is_some());
        assert!(guard.revert().await.unwrap().is_none());
        assert!(!guard.is_applied());
        assert_eq!(state.load(Ordering::SeqCst), 0);
    }
}
