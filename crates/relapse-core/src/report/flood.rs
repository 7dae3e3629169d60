//! What a request flood did: its counts and its latency histogram, for one flood or one shard of
//! a flood spread over agents. A shard's figures travel back from its agent as JSON, the
//! histogram serialized as HdrHistogram V2 in base64, and the shards' figures merge into the
//! whole flood's, whose percentiles are those of one histogram of every shard's values.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// One flood's figures (or one shard's).
#[derive(Debug, Clone, PartialEq)]
pub struct FloodFigures {
    /// Requests written to a connection.
    pub sent: u64,
    /// Requests answered, any status.
    pub completed: u64,
    /// Requests not answered, by why: `connect`, `timeout`, `http`, `backlogged`, …
    pub errors_by_kind: BTreeMap<String, u64>,
    pub statuses: BTreeMap<u16, u64>,
    /// From the flood's start to its last worker's end.
    pub duration: Duration,
    /// The asked rate, and the requests due by the flood's end (open model).
    pub intended_rate: Option<f64>,
    pub intended: Option<u64>,
    /// The latency of answered requests in microseconds.
    pub latency: Histogram<u64>,
}

/// Why figures cannot be read or merged.
#[derive(Debug, thiserror::Error)]
pub enum FiguresError {
    #[error("the latency histogram is not base64: {0}")]
    Base64(#[from] base64::DecodeError),
    #[error("the latency histogram is not HdrHistogram V2: {0}")]
    Deserialize(String),
    #[error("the shards' histograms cannot be added: {0}")]
    Merge(String),
    #[error("no figures to merge")]
    Empty,
}

/// The significant digits of every flood's latency histogram: shards' histograms add up only
/// when recorded with the same settings.
pub const LATENCY_SIGNIFICANT_DIGITS: u8 = 2;

impl FloodFigures {
    /// A flood that sent nothing (every shard of a spread flood lost), over `duration`.
    pub fn nothing_sent(duration: Duration) -> FloodFigures {
        FloodFigures {
            sent: 0,
            completed: 0,
            errors_by_kind: BTreeMap::new(),
            statuses: BTreeMap::new(),
            duration,
            intended_rate: None,
            intended: None,
            latency: Histogram::new(LATENCY_SIGNIFICANT_DIGITS)
                .expect("2 significant digits are valid"),
        }
    }

    /// The latency at quantile `q` (0.5, 0.99, …).
    pub fn latency_at(&self, q: f64) -> Duration {
        Duration::from_micros(self.latency.value_at_quantile(q))
    }

    /// Answers per second over the flood's duration.
    pub fn achieved_rps(&self) -> f64 {
        if self.duration.is_zero() {
            0.0
        } else {
            self.completed as f64 / self.duration.as_secs_f64()
        }
    }

    /// Sent over due (open model): 1 when the flood sent what was asked of it.
    pub fn delivered(&self) -> Option<f64> {
        match self.intended {
            Some(0) | None => None,
            Some(due) => Some(self.sent as f64 / due as f64),
        }
    }

    /// The whole flood from its shards' figures: counts and the due requests added, the
    /// histograms added into one of the first shard's settings (the flood's own: every shard
    /// records with them), the duration the longest shard's.
    pub fn merge(shards: &[FloodFigures]) -> Result<FloodFigures, FiguresError> {
        let first = shards.first().ok_or(FiguresError::Empty)?;
        let mut whole = FloodFigures {
            sent: 0,
            completed: 0,
            errors_by_kind: BTreeMap::new(),
            statuses: BTreeMap::new(),
            duration: Duration::ZERO,
            intended_rate: None,
            intended: None,
            latency: Histogram::new_from(&first.latency),
        };
        // A histogram read back from V2 is as large as its own values need; the whole grows to
        // hold every shard's largest.
        whole.latency.auto(true);
        for shard in shards {
            whole.sent += shard.sent;
            whole.completed += shard.completed;
            for (kind, count) in &shard.errors_by_kind {
                *whole.errors_by_kind.entry(kind.clone()).or_default() += count;
            }
            for (status, count) in &shard.statuses {
                *whole.statuses.entry(*status).or_default() += count;
            }
            whole.duration = whole.duration.max(shard.duration);
            if let Some(rate) = shard.intended_rate {
                *whole.intended_rate.get_or_insert(0.0) += rate;
            }
            if let Some(due) = shard.intended {
                *whole.intended.get_or_insert(0) += due;
            }
            whole
                .latency
                .add(&shard.latency)
                .map_err(|e| FiguresError::Merge(format!("{e:?}")))?;
        }
        Ok(whole)
    }
}

/// The figures as they travel and as report files keep them: the histogram in the V2 encoding
/// (uncompressed), in standard base64.
#[derive(Serialize, Deserialize)]
struct FiguresFile {
    sent: u64,
    completed: u64,
    errors_by_kind: BTreeMap<String, u64>,
    statuses: BTreeMap<u16, u64>,
    duration_ms: f64,
    intended_rate: Option<f64>,
    intended: Option<u64>,
    /// Derived from the counts and the histogram, for readers of the JSON; not read back.
    #[serde(default)]
    achieved_rps: f64,
    #[serde(default)]
    latency_ms: Option<LatencyMs>,
    latency_v2: String,
}

/// Percentiles of the latency histogram, in milliseconds.
#[derive(Serialize, Deserialize)]
struct LatencyMs {
    p50: f64,
    p90: f64,
    p99: f64,
    p999: f64,
    max: f64,
}

impl Serialize for FloodFigures {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut bytes = Vec::new();
        V2Serializer::new()
            .serialize(&self.latency, &mut bytes)
            .map_err(|e| serde::ser::Error::custom(format!("latency histogram: {e:?}")))?;
        FiguresFile {
            sent: self.sent,
            completed: self.completed,
            errors_by_kind: self.errors_by_kind.clone(),
            statuses: self.statuses.clone(),
            duration_ms: self.duration.as_secs_f64() * 1e3,
            intended_rate: self.intended_rate,
            intended: self.intended,
            achieved_rps: self.achieved_rps(),
            latency_ms: Some(LatencyMs {
                p50: ms(self.latency_at(0.5)),
                p90: ms(self.latency_at(0.9)),
                p99: ms(self.latency_at(0.99)),
                p999: ms(self.latency_at(0.999)),
                max: ms(Duration::from_micros(self.latency.max())),
            }),
            latency_v2: base64::engine::general_purpose::STANDARD.encode(bytes),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for FloodFigures {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let file = FiguresFile::deserialize(deserializer)?;
        let latency = histogram(&file.latency_v2).map_err(serde::de::Error::custom)?;
        Ok(FloodFigures {
            sent: file.sent,
            completed: file.completed,
            errors_by_kind: file.errors_by_kind,
            statuses: file.statuses,
            duration: Duration::from_secs_f64(file.duration_ms.max(0.0) / 1e3),
            intended_rate: file.intended_rate,
            intended: file.intended,
            latency,
        })
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

fn histogram(v2_base64: &str) -> Result<Histogram<u64>, FiguresError> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(v2_base64)?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| FiguresError::Deserialize(format!("{e:?}")))
}

/// A flood's report in the run's: its fault, the whole flood's figures, and a spread flood's
/// shards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FloodReport {
    pub fault: String,
    #[serde(flatten)]
    pub outcome: FloodOutcome,
}

/// What a flood fault hands back once reverted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FloodOutcome {
    /// The whole flood; for a spread flood, merged from the shards that reported, with the
    /// requests due of a shard that did not counted as due and not sent. `None` for a flood
    /// that holds connections rather than counting requests (`slowloris`, `connection_flood`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub figures: Option<FloodFigures>,
    /// A spread flood's shards, in the order of its `on`; empty for a flood on one host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<ShardOutcome>,
}

/// One shard of a spread flood.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardOutcome {
    pub agent: String,
    /// Its figures, as its agent sent them back; `None` when the shard was lost.
    pub figures: Option<FloodFigures>,
    /// Why the shard's figures are missing: its agent failed or could not be reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(values: &[u64], sent: u64) -> FloodFigures {
        let mut latency = Histogram::new(2).unwrap();
        for value in values {
            latency.record(*value).unwrap();
        }
        FloodFigures {
            sent,
            completed: values.len() as u64,
            errors_by_kind: BTreeMap::from([("timeout".to_string(), sent - values.len() as u64)]),
            statuses: BTreeMap::from([(200, values.len() as u64)]),
            duration: Duration::from_millis(900 + sent),
            intended_rate: Some(50.0),
            intended: Some(sent + 1),
            latency,
        }
    }

    #[test]
    fn figures_travel_as_json_and_come_back_the_same() {
        let sent = figures(&[120, 450, 9_000, 1_200_000], 5);
        let text = serde_json::to_string(&sent).unwrap();
        assert!(text.contains("\"latency_v2\":\""), "{text}");
        let back: FloodFigures = serde_json::from_str(&text).unwrap();
        assert_eq!(back, sent);
        let bad = text.replace("\"latency_v2\":\"", "\"latency_v2\":\"!");
        let error = serde_json::from_str::<FloodFigures>(&bad).unwrap_err();
        assert!(error.to_string().contains("not base64"), "{error}");
    }

    #[test]
    fn merged_figures_add_the_counts_and_keep_the_longest_duration() {
        // As they arrive from agents: read back from JSON, each histogram only as large as its
        // own values; the second's reach far past the first's.
        let travelled = |f: FloodFigures| -> FloodFigures {
            serde_json::from_str(&serde_json::to_string(&f).unwrap()).unwrap()
        };
        let a = travelled(figures(&[100, 200, 300], 4));
        let b = travelled(figures(&[1_000, 5_000_000], 2));
        let whole = FloodFigures::merge(&[a.clone(), b.clone()]).unwrap();
        assert_eq!(whole.sent, 6);
        assert_eq!(whole.completed, 5);
        assert_eq!(whole.errors_by_kind["timeout"], 1);
        assert_eq!(whole.statuses[&200], 5);
        assert_eq!(whole.duration, a.duration.max(b.duration));
        assert_eq!(whole.intended_rate, Some(100.0));
        assert_eq!(whole.intended, Some(8));
        assert_eq!(whole.latency.len(), 5);
        assert_eq!(whole.latency.max(), b.latency.max());
        assert_eq!(whole.delivered(), Some(6.0 / 8.0));
        assert!(matches!(FloodFigures::merge(&[]), Err(FiguresError::Empty)));
    }
}
