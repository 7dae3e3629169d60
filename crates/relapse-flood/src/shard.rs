//! A flood spread over agents: each shard's report as it travels back (its counts, and its
//! latency histogram serialized as HdrHistogram V2), merged into one report whose percentiles
//! are those of one histogram of every shard's values. Each shard's part of the whole is
//! `relapse_core::scenario::spread`'s.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::load::{new_histogram, LoadReport};

/// Why a shard's report cannot be read or merged.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("the latency histogram could not be serialized: {0}")]
    Serialize(String),
    #[error("the latency histogram is not base64: {0}")]
    Base64(#[from] base64::DecodeError),
    #[error("the latency histogram is not HdrHistogram V2: {0}")]
    Deserialize(String),
    #[error("the shards' histograms cannot be added: {0}")]
    Merge(String),
}

/// One shard's report, as an agent sends it back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardReport {
    pub sent: u64,
    pub completed: u64,
    pub errors_by_kind: BTreeMap<String, u64>,
    pub statuses: BTreeMap<u16, u64>,
    /// From the shard's start to its last worker's end.
    pub duration_ms: f64,
    /// The shard's asked rate and the requests due by its end (open model).
    pub intended_rate: Option<f64>,
    pub intended: Option<u64>,
    /// The latency of answered requests in microseconds: an HdrHistogram in the V2 encoding
    /// (uncompressed), in standard base64.
    pub latency_v2: String,
}

impl ShardReport {
    pub fn new(report: &LoadReport) -> Result<ShardReport, ShardError> {
        let mut bytes = Vec::new();
        V2Serializer::new()
            .serialize(&report.latency, &mut bytes)
            .map_err(|e| ShardError::Serialize(format!("{e:?}")))?;
        Ok(ShardReport {
            sent: report.sent,
            completed: report.completed,
            errors_by_kind: report.errors_by_kind.clone(),
            statuses: report.statuses.clone(),
            duration_ms: report.duration.as_secs_f64() * 1e3,
            intended_rate: report.intended_rate,
            intended: report.intended,
            latency_v2: base64::engine::general_purpose::STANDARD.encode(bytes),
        })
    }

    /// The shard's latency histogram, read back.
    pub fn latency(&self) -> Result<Histogram<u64>, ShardError> {
        let bytes = base64::engine::general_purpose::STANDARD.decode(&self.latency_v2)?;
        Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .map_err(|e| ShardError::Deserialize(format!("{e:?}")))
    }
}

/// The whole flood from its shards' reports: counts added, histograms merged into one of the
/// flood's own settings, the duration the longest shard's, and the achieved rate every answer
/// over that duration. Per-source figures stay with the shards.
pub fn merge(shards: &[ShardReport]) -> Result<LoadReport, ShardError> {
    let mut latency = new_histogram();
    let mut merged = LoadReport {
        sent: 0,
        completed: 0,
        errors_by_kind: BTreeMap::new(),
        statuses: BTreeMap::new(),
        duration: Duration::ZERO,
        achieved_rps: 0.0,
        latency: new_histogram(),
        per_source: None,
        intended_rate: None,
        intended: None,
    };
    for shard in shards {
        merged.sent += shard.sent;
        merged.completed += shard.completed;
        for (kind, count) in &shard.errors_by_kind {
            *merged.errors_by_kind.entry(kind.clone()).or_default() += count;
        }
        for (status, count) in &shard.statuses {
            *merged.statuses.entry(*status).or_default() += count;
        }
        merged.duration = merged
            .duration
            .max(Duration::from_secs_f64(shard.duration_ms.max(0.0) / 1e3));
        if let Some(rate) = shard.intended_rate {
            *merged.intended_rate.get_or_insert(0.0) += rate;
        }
        if let Some(due) = shard.intended {
            *merged.intended.get_or_insert(0) += due;
        }
        latency
            .add(shard.latency()?)
            .map_err(|e| ShardError::Merge(format!("{e:?}")))?;
    }
    merged.latency = latency;
    if !merged.duration.is_zero() {
        merged.achieved_rps = merged.completed as f64 / merged.duration.as_secs_f64();
    }
    Ok(merged)
}

#[cfg(test)]
mod tests;
