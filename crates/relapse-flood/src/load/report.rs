//! What a load run did: counts, statuses, latency (an HdrHistogram), the rate asked and the
//! rate delivered, per source address when asked; rendered for people and as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;

use hdrhistogram::Histogram;

/// Counts for one source address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceStats {
    pub requests: u64,
    pub statuses: BTreeMap<u16, u64>,
    pub errors: u64,
}

/// What a load run did.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// Requests written to a connection.
    pub sent: u64,
    /// Requests answered (any status).
    pub completed: u64,
    /// Requests not answered, by why: `connect`, `timeout`, `http`, `backlogged`, …
    pub errors_by_kind: BTreeMap<String, u64>,
    pub statuses: BTreeMap<u16, u64>,
    /// From the start to the last worker's end (in-flight requests included).
    pub duration: Duration,
    /// `completed / duration`.
    pub achieved_rps: f64,
    /// Latency of answered requests in microseconds, 2 significant digits (1%): from the
    /// intended send time in the open model, from the send in the closed one.
    pub latency: Histogram<u64>,
    pub per_source: Option<BTreeMap<IpAddr, SourceStats>>,
    /// The asked rate (open model).
    pub intended_rate: Option<f64>,
    /// Requests due by the time the run stopped (open model).
    pub intended: Option<u64>,
}

impl LoadReport {
    /// The latency at quantile `q` (0.5, 0.99, …).
    pub fn latency_at(&self, q: f64) -> Duration {
        Duration::from_micros(self.latency.value_at_quantile(q))
    }

    pub fn latency_max(&self) -> Duration {
        Duration::from_micros(self.latency.max())
    }

    /// Errors of one kind.
    pub fn errors(&self, kind: &str) -> u64 {
        self.errors_by_kind.get(kind).copied().unwrap_or(0)
    }

    /// All errors.
    pub fn total_errors(&self) -> u64 {
        self.errors_by_kind.values().sum()
    }

    /// Adds another run's counts to this one, as if both were one run (they ran side by side:
    /// the duration is the longer one).
    pub fn merge(&mut self, other: LoadReport) {
        self.sent += other.sent;
        self.completed += other.completed;
        for (k, v) in other.errors_by_kind {
            *self.errors_by_kind.entry(k).or_default() += v;
        }
        for (k, v) in other.statuses {
            *self.statuses.entry(k).or_default() += v;
        }
        self.duration = self.duration.max(other.duration);
        self.achieved_rps = self.completed as f64 / self.duration.as_secs_f64().max(1e-9);
        self.latency
            .add(&other.latency)
            .expect("histograms of the same precision merge");
        if let (Some(mine), Some(theirs)) = (&mut self.per_source, other.per_source) {
            for (ip, s) in theirs {
                let t = mine.entry(ip).or_default();
                t.requests += s.requests;
                t.errors += s.errors;
                for (status, n) in s.statuses {
                    *t.statuses.entry(status).or_default() += n;
                }
            }
        }
        let sum = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        self.intended_rate = sum(self.intended_rate, other.intended_rate);
        self.intended = sum(
            self.intended.map(|n| n as f64),
            other.intended.map(|n| n as f64),
        )
        .map(|n| n as u64);
    }

    /// A human-readable summary, a few lines.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{} sent, {} completed in {:.2?}: {:.1} req/s",
            self.sent, self.completed, self.duration, self.achieved_rps
        );
        if let (Some(rate), Some(intended)) = (self.intended_rate, self.intended) {
            let _ = writeln!(s, "asked {rate:.1} req/s: {intended} requests were due");
        }
        let us = |q: f64| format!("{:.2?}", self.latency_at(q));
        let _ = writeln!(
            s,
            "latency p50 {} p90 {} p99 {} p99.9 {} max {:.2?}",
            us(0.5),
            us(0.9),
            us(0.99),
            us(0.999),
            self.latency_max()
        );
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        let _ = writeln!(
            s,
            "statuses: {}",
            if statuses.is_empty() {
                "none".into()
            } else {
                statuses.join(", ")
            }
        );
        if !self.errors_by_kind.is_empty() {
            let errors: Vec<String> = self
                .errors_by_kind
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            let _ = writeln!(s, "errors: {}", errors.join(", "));
        }
        if let Some(per_source) = &self.per_source {
            let _ = writeln!(s, "{} source addresses", per_source.len());
        }
        s
    }

    /// The report as JSON (latencies in microseconds).
    pub fn to_json(&self) -> serde_json::Value {
        let q = |q: f64| self.latency.value_at_quantile(q);
        serde_json::json!({
            "sent": self.sent,
            "completed": self.completed,
            "errors": self.errors_by_kind,
            "statuses": self.statuses.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
            "duration_s": self.duration.as_secs_f64(),
            "rps": self.achieved_rps,
            "latency_us": { "p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "p999": q(0.999), "max": self.latency.max() },
            "intended_rate": self.intended_rate,
            "intended": self.intended,
            "sources": self.per_source.as_ref().map(|p| p.len()),
        })
    }
}
