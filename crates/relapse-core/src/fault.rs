//! The contract between the engine and the injector crates.
//!
//! A fault is a pair `inject() -> Effective` / `revert()`. The engine holds every applied fault in a
//! [`FaultGuard`], which reverts it on drop if nobody did, so no exit path leaves it applied.

use std::future::Future;
use std::pin::Pin;

use serde::de::DeserializeOwned;
use serde::Serialize;
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

/// Any error, boxed: the source kept under a typed error of this crate.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An injector's record of how to revert one fault from another process: a typed value of the
/// injector crate, serialised once into the journal and read back by the same kind.
pub trait RevertRecord: Serialize + DeserializeOwned {
    /// The fault kind that writes and reads this record (the injector crate's `KIND`).
    const KIND: &'static str;
}

/// How to revert a fault without the process that injected it: written to the journal before
/// the fault is injected, executed by the guardian or `relapse cleanup` if the harness dies.
#[derive(Debug, Clone, PartialEq)]
pub struct RevertInstructions {
    /// The fault kind, which picks the injector that can execute the instructions.
    pub kind: &'static str,
    /// The injector's record, as the journal stores it.
    pub record: serde_json::Value,
}

impl RevertInstructions {
    /// The instructions that carry `record`.
    pub fn new<R: RevertRecord>(record: &R) -> RevertInstructions {
        RevertInstructions::for_kind(R::KIND, record)
    }

    /// The instructions of `kind` that carry `record`, for a record type shared by several kinds
    /// (the floods).
    pub fn for_kind(kind: &'static str, record: &impl Serialize) -> RevertInstructions {
        RevertInstructions {
            kind,
            // A record is plain data (numbers, strings, enums): it always serialises.
            record: serde_json::to_value(record).expect("a revert record always serialises"),
        }
    }

    /// The typed record back.
    pub fn decode<R: RevertRecord>(&self) -> Result<R, RevertError> {
        decode_record(self.record.clone())
    }
}

/// Reads a journaled record as the kind `R` wrote it.
pub fn decode_record<R: RevertRecord>(value: serde_json::Value) -> Result<R, RevertError> {
    decode_as(R::KIND, value)
}

/// Reads a journaled record of `kind` as an `R`, for record types shared by several kinds.
pub fn decode_as<R: DeserializeOwned>(
    kind: &'static str,
    value: serde_json::Value,
) -> Result<R, RevertError> {
    serde_json::from_value(value).map_err(|source| RevertError::Record { kind, source })
}

/// Why a journaled revert could not be executed. The journal entry then stays, for
/// `relapse cleanup` to try again.
#[derive(Debug, thiserror::Error)]
pub enum RevertError {
    /// The entry is not a record of its kind (a corrupt or foreign journal).
    #[error("unreadable {kind} record: {source}")]
    Record {
        kind: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// The entry names a kind no injector knows.
    #[error("unknown fault kind \"{0}\" in the journal: cannot revert it")]
    UnknownKind(String),
    /// The revert was attempted and failed.
    #[error("{context}: {source}")]
    Failed {
        context: String,
        #[source]
        source: BoxError,
    },
    /// The revert was refused or could not be confirmed (a session held by someone else, a
    /// process still there after the deadline).
    #[error("{0}")]
    NotConfirmed(String),
}

impl RevertError {
    /// A failure with what was being done.
    pub fn failed(context: impl Into<String>, source: impl Into<BoxError>) -> RevertError {
        RevertError::Failed {
            context: context.into(),
            source: source.into(),
        }
    }
}

/// Why a revert could not be written to (or struck from) the journal.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct LogError(pub BoxError);

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

    /// What a request flood did, once reverted: its counts and latencies (a spread flood's
    /// merged from its shards'). `None` for every other fault.
    fn flood_outcome(&self) -> Option<crate::report::FloodOutcome> {
        None
    }
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
    ) -> Result<u64, LogError>;

    /// Removes a recorded revert once it is confirmed.
    fn remove(&mut self, id: u64) -> Result<(), LogError>;
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

    /// What the fault hands back once reverted, if it is a request flood.
    pub fn flood_outcome(&self) -> Option<crate::report::FloodOutcome> {
        self.fault.flood_outcome()
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

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct CounterRecord;

    impl RevertRecord for CounterRecord {
        const KIND: &'static str = "counter";
    }

    #[test]
    fn a_record_comes_back_as_its_type_and_a_foreign_one_is_refused() {
        let instructions = RevertInstructions::new(&CounterRecord);
        assert_eq!(instructions.kind, "counter");
        assert_eq!(
            instructions.decode::<CounterRecord>().unwrap(),
            CounterRecord
        );
        let foreign = decode_record::<CounterRecord>(serde_json::json!({"pid": 1})).unwrap_err();
        assert!(
            foreign
                .to_string()
                .starts_with("unreadable counter record: "),
            "{foreign}"
        );
    }

    /// Counts how often it is applied: > 0 means applied.
    struct Counter(Arc<AtomicU32>);

    impl Fault for Counter {
        fn describe(&self) -> String {
            "counter".into()
        }
        fn revert_instructions(&self) -> RevertInstructions {
            RevertInstructions::new(&CounterRecord)
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
