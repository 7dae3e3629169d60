//! What a coordinator and an agent say to each other: JSON bodies of HTTP/2 `POST`s over TLS,
//! one path per call, each carrying the run and its holder secret but `clock` and `held`.
//!
//! HTTP/2 + JSON rather than gRPC: the faults travel as the scenario's own serde types, the
//! build needs no protobuf compiler, and an operator can ask an agent what it holds with curl.

use serde::{Deserialize, Serialize};

/// The paths of the calls.
pub mod path {
    pub const CLOCK: &str = "/v1/clock";
    pub const LEASE: &str = "/v1/lease";
    pub const RELEASE: &str = "/v1/release";
    pub const APPLY: &str = "/v1/apply";
    pub const REVERT: &str = "/v1/revert";
    pub const HELD: &str = "/v1/held";
    pub const CLEANUP: &str = "/v1/cleanup";
    pub const PROBE: &str = "/v1/probe";
    pub const CHECK: &str = "/v1/check";
    pub const GO: &str = "/v1/go";
}

/// `cleanup`: an operator's order to revert what the agent still holds. The run that holds the
/// lease keeps its faults unless `force`, which also ends its lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CleanupRequest {
    #[serde(default)]
    pub force: bool,
}

/// What `cleanup` did: one line per fault reverted or failed, and the run it left alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CleanupAnswer {
    pub reverted: Vec<String>,
    pub failed: Vec<String>,
    /// The run holding the lease, whose faults were kept (cleanup without `force`).
    pub kept: Option<String>,
}

/// Who is asking: a run, and the secret its coordinator made when it took the lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunId {
    pub run: String,
    pub holder: String,
}

/// `clock`: the agent's own monotonic readings of the request's arrival and of its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockAnswer {
    pub received_ns: i128,
    pub answered_ns: i128,
}

/// `lease`: take or renew the lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRequest {
    #[serde(flatten)]
    pub id: RunId,
    pub lease_ms: u64,
    pub renew_every_ms: u64,
}

/// The lease runs until this reading of the agent's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseAnswer {
    pub expires_ns: i128,
}

/// `apply`: one fault, as the scenario's `[[fault]]` table writes it (its kind's key and
/// value, as TOML), to run on the agent's host until reverted or until the lease lapses. The
/// agent reads the table with the scenario format's own types and checks, against its own
/// allowlist, so an error names the line and column of `table`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApplyRequest {
    #[serde(flatten)]
    pub id: RunId,
    /// The fault's name in the scenario.
    pub name: String,
    /// The kind, as scenarios spell it (`process_freeze`).
    pub kind: String,
    /// The kind's key and value: `process_freeze = { command = "postgres: checkpointer" }`.
    pub table: String,
    /// How long the fault is scheduled to stay: floods stop by themselves after it.
    pub duration_ms: u64,
    /// The run's template variables, which the agent renders the table's templates with.
    #[serde(default)]
    pub vars: std::collections::BTreeMap<String, String>,
    /// Only get ready: build the fault and journal its revert, then wait for `go` (a shard of
    /// a spread flood, which starts with the others). The answer's instant is when it was
    /// ready.
    #[serde(default)]
    pub prepare: bool,
}

/// `go`: inject a prepared fault at `at_ns`, a reading of the agent's clock (the coordinator
/// maps one instant of its own through each agent's offset).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoRequest {
    #[serde(flatten)]
    pub id: RunId,
    pub fault: u64,
    pub at_ns: i128,
}

/// The fault took effect at this reading of the agent's clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The agent's handle on the fault, for its revert.
    pub fault: u64,
    pub effective_ns: i128,
    pub detail: String,
}

/// `revert`: one fault the run applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevertRequest {
    #[serde(flatten)]
    pub id: RunId,
    pub fault: u64,
}

/// The fault was reverted (the injector confirmed it) at this reading of the agent's clock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevertAnswer {
    pub reverted_ns: i128,
    pub detail: String,
    /// What a request flood did (`relapse_core::report::FloodFigures` as JSON): its counts and
    /// its latency histogram, for the coordinator to merge with the other shards'.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub figures: Option<serde_json::Value>,
}

/// `held`: what the agent holds now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Holdings {
    /// The run holding the lease, if any.
    pub run: Option<String>,
    pub faults: Vec<HeldFault>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldFault {
    pub run: String,
    pub fault: u64,
    pub name: String,
    pub kind: String,
    pub describe: String,
}

/// `probe`: an SLI probe to check from the agent's host, as the scenario's `[[probe]]` writes
/// its kind (`http = { url = "http://127.0.0.1:8080/" }`), read and checked there like a fault's
/// table. It lives as long as the run's lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeRequest {
    #[serde(flatten)]
    pub id: RunId,
    /// The probe's name in the scenario.
    pub name: String,
    /// The kind's key and value.
    pub table: String,
    /// The run's template variables.
    #[serde(default)]
    pub vars: std::collections::BTreeMap<String, String>,
}

/// The agent's handle on an opened probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeOpened {
    pub probe: u64,
}

/// `check`: run one check of an opened probe now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckRequest {
    #[serde(flatten)]
    pub id: RunId,
    pub probe: u64,
}

/// One check, timed on the agent's clock: it was sent at `started_ns` and took `latency_ns`.
/// `error` is set when it failed; `status` is the HTTP status where there was one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checked {
    pub started_ns: i128,
    pub latency_ns: u64,
    pub status: Option<u16>,
    pub error: Option<String>,
}

/// Every refusal and failure: a status and a sentence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub error: String,
}
