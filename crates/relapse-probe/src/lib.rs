//! relapse-probe: how the harness feels the system under test, and how it hears the system's
//! own monitoring.
//!
//! Two sides, matching the traits in [`relapse_core::sense`]:
//!
//! - **SLI probes** ([`Probe`](relapse_core::sense::Probe)) measure what users feel.
//!   [`HttpProbe`] sends one HTTP/1.1 request through a keep-alive pool, as a browser would, and
//!   succeeds when the status is one of the expected ones; [`TcpProbe`] only checks that a
//!   connection can be opened; [`ImapProbe`] logs in to an IMAP server, selects a mailbox and
//!   can fetch a header, as a mail client starting a session would. Each check enforces its own timeout and reports failures as short,
//!   categorical error kinds (`timeout`, `refused`, `status 503`, ...) so that reports can
//!   aggregate them.
//! - **Detection sources** ([`Detector`](relapse_core::sense::Detector)) report when the
//!   system's monitoring noticed the problem and when it considers it over.
//!   [`WebhookSink`] is an HTTP endpoint the system's alerting POSTs to (Alertmanager payloads or
//!   plain JSON); each [`WebhookDetector`] picks the alerts whose labels match it.
//!   [`HttpHealthDetector`] polls a health endpoint and [`CommandDetector`] runs a check command;
//!   both report changes of state only. [`LogDetector`] tails a log file and fires on every new
//!   line matching a pattern. [`PrometheusDetector`] polls a PromQL query on a Prometheus server
//!   and [`AlertmanagerDetector`] an Alertmanager's active alerts; both report changes of state
//!   only, and a poll that got no answer counts neither way.
//! - **Backlog gauges** ([`Gauge`](relapse_core::sense::Gauge)): [`MetricGauge`] reads a metric
//!   such as a queue depth from a Prometheus text exposition.
//! - **Pacing** ([`Pacer`](relapse_core::sense::Pacer)): [`KernelPacer`] schedules the probes'
//!   checks on a kernel timer, to the microsecond rather than the runtime's millisecond.

// Denied, not forbidden: handing the probes' kernel timer to the runtime (`pace::register`) is
// the crate's one `unsafe` call, with its safety argument beside it.
#![deny(unsafe_code)]
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod alertmanager;
mod command;
mod error;
mod health;
mod http;
mod imap;
mod log;
mod metric;
mod pace;
mod prometheus;
mod pull;
mod tcp;
mod webhook;

pub use alertmanager::AlertmanagerDetector;
pub use command::CommandDetector;
pub use error::ProbeError;
pub use health::HttpHealthDetector;
pub use http::HttpProbe;
pub use imap::{ImapProbe, ImapSession};
pub use log::LogDetector;
pub use metric::{metric_sum, MetricGauge};
pub use pace::KernelPacer;
pub use prometheus::PrometheusDetector;
pub use tcp::TcpProbe;
pub use webhook::{WebhookDetector, WebhookSink};

/// How much of a line of output or log a signal detail keeps: enough to recognise it, short
/// enough for a report table.
const DETAIL_MAX_CHARS: usize = 200;

/// Trims whitespace and cuts `text` to [`DETAIL_MAX_CHARS`] characters (on a character boundary,
/// so multi-byte text never panics), marking the cut with an ellipsis.
pub(crate) fn short_detail(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(DETAIL_MAX_CHARS) {
        None => text.to_owned(),
        Some((cut, _)) => format!("{}…", &text[..cut]),
    }
}

/// Periods of zero would make `tokio::time::interval` panic; a scenario checker should refuse
/// them, but a detector must not bring the harness down if one slips through.
pub(crate) fn poll_period(every: std::time::Duration) -> std::time::Duration {
    every.max(std::time::Duration::from_millis(1))
}

/// The state of a polled source, turned into signals on changes only. The run starts from a
/// healthy system, so only a change is news.
pub(crate) struct HealthEdge {
    healthy: bool,
}

impl HealthEdge {
    pub(crate) fn new() -> HealthEdge {
        HealthEdge { healthy: true }
    }

    /// The state the last signal (or the start) left.
    pub(crate) fn is_healthy(&self) -> bool {
        self.healthy
    }

    /// Records one observation; fires on healthy → unhealthy, clears on the way back.
    pub(crate) fn observe(
        &mut self,
        healthy: bool,
        detail: String,
        signals: &relapse_core::sense::SignalSender,
    ) {
        if healthy == self.healthy {
            return;
        }
        self.healthy = healthy;
        if healthy {
            signals.clear(detail);
        } else {
            signals.fire(detail);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_detail_trims_and_cuts_on_char_boundaries() {
        assert_eq!(short_detail("  hello \n"), "hello");
        let long = "é".repeat(300);
        let cut = short_detail(&long);
        assert_eq!(cut.chars().count(), DETAIL_MAX_CHARS + 1);
        assert!(cut.ends_with('…'));
    }
}
