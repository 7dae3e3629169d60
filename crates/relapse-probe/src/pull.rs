//! What the pulled detection sources share (a Prometheus query, an Alertmanager's alerts): the
//! poll loop and how it treats a poll that got no answer, the API URL and the JSON answer.

use std::future::Future;
use std::time::Duration;

use relapse_core::sense::{DetectorError, SignalSender};
use serde_json::Value;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::http::HttpTarget;
use crate::ProbeError;

/// The largest answer read: a query's vector or an Alertmanager's alerts are kilobytes, and a
/// runaway one must not fill the harness's memory.
pub(crate) const BODY_LIMIT: usize = 8 << 20;

/// What one poll found.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Poll {
    /// The server answered; `firing` says whether the answer counts as the problem noticed.
    Answer { firing: bool, detail: String },
    /// No usable answer this time (unreachable, a timeout, an error answer that may pass): it
    /// counts neither as firing nor as clear, since a monitoring server that cannot be asked has
    /// noticed nothing the harness can know of.
    Failed(String),
    /// The server refused the request as written and would refuse it every time (PromQL it
    /// cannot parse): watching stops with a configuration error.
    Refused(String),
}

/// Polls every `every` (never overlapping, no bursts after a slow poll) until `cancel`, and
/// signals changes of the answer's state like the other polled sources ([`crate::HealthEdge`]).
///
/// A failed poll changes nothing: the first of a run of failed polls is logged as a warning, and
/// the next signal's detail says how many polls failed since the last signal and the last error. A source whose
/// every poll failed sends no signal at all, so the run shows nothing detected, with the
/// warnings in the log, as for a log file that cannot be read.
pub(crate) async fn watch_polls<F, Fut>(
    source: &str,
    every: Duration,
    signals: SignalSender,
    cancel: CancellationToken,
    mut poll: F,
) -> Result<(), DetectorError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Poll>,
{
    let mut ticks = tokio::time::interval(crate::poll_period(every));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut edge = crate::HealthEdge::new();
    let mut failures = Failures::default();
    loop {
        let Some(outcome) = cancel
            .run_until_cancelled(async {
                ticks.tick().await;
                poll().await
            })
            .await
        else {
            return Ok(());
        };
        match outcome {
            Poll::Answer { firing, detail } => {
                failures.answered(source);
                tracing::trace!(source, firing, %detail, "poll");
                // Only a change becomes a signal, and only a signal carries the failures.
                if firing == edge.is_healthy() {
                    edge.observe(!firing, failures.annotate(detail), &signals);
                }
            }
            Poll::Failed(error) => failures.failed(source, error),
            Poll::Refused(reason) => {
                return Err(DetectorError::Config(format!("{source}: {reason}")));
            }
        }
    }
}

/// The polls that failed since the last signal, and the current run of failed polls.
#[derive(Debug, Default)]
struct Failures {
    since_signal: u32,
    last: Option<String>,
    /// Failed polls in a row, up to the latest: only the first of a run is a warning, so a
    /// server that stays down, or whose error flips between "reset" and "refused", is reported
    /// once, not on every poll.
    in_a_row: u32,
}

impl Failures {
    fn failed(&mut self, source: &str, error: String) {
        if self.in_a_row == 0 {
            tracing::warn!(
                source,
                %error,
                "poll failed; it counts neither as firing nor as clear (more failures in a row are logged at debug level)"
            );
        } else {
            tracing::debug!(source, %error, "poll failed again");
        }
        self.in_a_row += 1;
        self.since_signal += 1;
        self.last = Some(error);
    }

    fn answered(&mut self, source: &str) {
        if self.in_a_row > 0 {
            tracing::info!(source, failed = self.in_a_row, "polls are answered again");
            self.in_a_row = 0;
        }
    }

    /// The detail of a signal, with the failures since the previous one; resets the count.
    fn annotate(&mut self, detail: String) -> String {
        let detail = crate::short_detail(&detail);
        match (std::mem::take(&mut self.since_signal), self.last.take()) {
            (0, _) | (_, None) => detail,
            (1, Some(last)) => format!(
                "{detail} (1 failed poll since the last signal: {})",
                crate::short_detail(&last)
            ),
            (n, Some(last)) => format!(
                "{detail} ({n} failed polls since the last signal, the last: {})",
                crate::short_detail(&last)
            ),
        }
    }
}

/// The target for `path_and_query` under a server's base URL (`http://host:port`, perhaps with a
/// path prefix; no query or fragment, which the API path would end up inside).
pub(crate) fn api_target(
    base_url: &str,
    path_and_query: &str,
    timeout: Duration,
) -> Result<HttpTarget, ProbeError> {
    let base = base_url.trim();
    if base.contains(['?', '#']) {
        return Err(ProbeError::InvalidUrl {
            url: base_url.to_owned(),
            reason: "a server's base URL has no query or fragment".to_owned(),
        });
    }
    let url = format!("{}{path_and_query}", base.trim_end_matches('/'));
    HttpTarget::new(&url, "GET", timeout).map_err(|error| match error {
        // Name the URL the scenario gave, not the one with the API path appended.
        ProbeError::InvalidUrl { reason, .. } => ProbeError::InvalidUrl {
            url: base_url.to_owned(),
            reason,
        },
        ProbeError::UnsupportedUrl { .. } => ProbeError::UnsupportedUrl {
            url: base_url.to_owned(),
        },
        other => other,
    })
}

/// GETs the target and reads its answer as JSON: the status and the value, or why there is
/// none (the request failed, or the body is not JSON; the status says which kind of server
/// answered then).
pub(crate) async fn get_json(target: &HttpTarget) -> Result<(u16, Value), String> {
    let (status, body) = target.fetch_answer(BODY_LIMIT).await?;
    match serde_json::from_slice(&body) {
        Ok(value) => Ok((status, value)),
        Err(_) if (200..300).contains(&status) => {
            Err(format!("status {status} with a body that is not JSON"))
        }
        Err(_) => Err(format!("status {status}")),
    }
}

/// Percent-encodes a query-string value: everything but RFC 3986's unreserved characters, so
/// PromQL's `{`, `"`, `=`, `+`, spaces and non-ASCII text arrive as written.
pub(crate) fn encode_query_value(value: &str) -> String {
    let mut encoded = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                encoded.push(byte as char);
            }
            _ => encoded.push_str(&format!("%{byte:02X}")),
        }
    }
    encoded
}

/// A label set as Prometheus prints it: `name{a="1", b="2"}` (the name is `__name__`; without
/// one, `{a="1"}`), values escaped as in PromQL strings.
pub(crate) fn format_labels(labels: &serde_json::Map<String, Value>) -> String {
    let name = labels.get("__name__").and_then(Value::as_str).unwrap_or("");
    let pairs: Vec<String> = labels
        .iter()
        .filter(|(label, _)| label.as_str() != "__name__")
        .map(|(label, value)| {
            let value = value.as_str().unwrap_or_default();
            let escaped = value
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{label}=\"{escaped}\"")
        })
        .collect();
    if pairs.is_empty() && !name.is_empty() {
        return name.to_owned();
    }
    format!("{name}{{{}}}", pairs.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(
            encode_query_value(r#"probe_success{job="x y"} == 0"#),
            "probe_success%7Bjob%3D%22x%20y%22%7D%20%3D%3D%200"
        );
        assert_eq!(encode_query_value("a+b/c&d=é"), "a%2Bb%2Fc%26d%3D%C3%A9");
        assert_eq!(encode_query_value("Az09-._~"), "Az09-._~");
    }

    #[test]
    fn labels_print_as_prometheus_prints_them() {
        let labels = |value: Value| value.as_object().unwrap().clone();
        assert_eq!(
            format_labels(&labels(
                json!({"__name__": "up", "job": "a\"b", "instance": "x\\y"})
            )),
            r#"up{instance="x\\y", job="a\"b"}"#
        );
        assert_eq!(format_labels(&labels(json!({"job": "a"}))), r#"{job="a"}"#);
        assert_eq!(format_labels(&labels(json!({"__name__": "up"}))), "up");
        assert_eq!(format_labels(&labels(json!({}))), "{}");
    }

    #[test]
    fn api_urls_keep_the_base_path_and_refuse_a_query() {
        let timeout = Duration::from_secs(1);
        let target = api_target(
            "http://127.0.0.1:9090/prom/",
            "/api/v1/query?query=up",
            timeout,
        )
        .unwrap();
        assert_eq!(
            target.uri.to_string(),
            "http://127.0.0.1:9090/prom/api/v1/query?query=up"
        );
        assert!(matches!(
            api_target("http://127.0.0.1:9090/?x=1", "/api", timeout),
            Err(ProbeError::InvalidUrl { url, .. }) if url == "http://127.0.0.1:9090/?x=1"
        ));
        assert!(matches!(
            api_target("https://127.0.0.1:9090", "/api", timeout),
            Err(ProbeError::UnsupportedUrl { url }) if url == "https://127.0.0.1:9090"
        ));
    }

    #[test]
    fn a_signal_carries_the_failures_since_the_last_one() {
        let mut failures = Failures::default();
        assert_eq!(failures.annotate("firing".into()), "firing");
        failures.failed("s", "refused".into());
        assert_eq!(
            failures.annotate("firing".into()),
            "firing (1 failed poll since the last signal: refused)"
        );
        assert_eq!(failures.annotate("clear".into()), "clear");
        failures.failed("s", "refused".into());
        failures.failed("s", "timeout".into());
        failures.answered("s");
        assert_eq!(
            failures.annotate("clear".into()),
            "clear (2 failed polls since the last signal, the last: timeout)"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn polls_on_schedule_and_signals_changes_only() {
        let every = Duration::from_millis(100);
        let mut script = std::collections::VecDeque::from([
            Poll::Answer {
                firing: false,
                detail: "ok".into(),
            },
            Poll::Failed("refused".into()),
            Poll::Answer {
                firing: true,
                detail: "down".into(),
            },
            Poll::Answer {
                firing: true,
                detail: "down".into(),
            },
            Poll::Failed("timeout".into()),
            Poll::Failed("timeout".into()),
            Poll::Answer {
                firing: false,
                detail: "ok".into(),
            },
            Poll::Refused("bad query".into()),
        ]);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let start = tokio::time::Instant::now();
        let result = watch_polls(
            "test",
            every,
            SignalSender::new(0, tx),
            CancellationToken::new(),
            || std::future::ready(script.pop_front().unwrap()),
        )
        .await;
        assert!(
            matches!(&result, Err(DetectorError::Config(reason)) if reason == "test: bad query"),
            "{result:?}"
        );
        let mut signals = Vec::new();
        while let Ok(signal) = rx.try_recv() {
            signals.push((signal.at - start, signal.firing, signal.detail));
        }
        // The first tick is at once: poll k (from 0) runs at k × every.
        assert_eq!(
            signals,
            [
                (
                    2 * every,
                    true,
                    "down (1 failed poll since the last signal: refused)".to_owned()
                ),
                (
                    6 * every,
                    false,
                    "ok (2 failed polls since the last signal, the last: timeout)".to_owned()
                ),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn stops_when_cancelled() {
        let cancel = CancellationToken::new();
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let watching = watch_polls(
            "test",
            Duration::from_millis(100),
            SignalSender::new(0, tx),
            cancel.clone(),
            std::future::pending::<Poll>,
        );
        cancel.cancel();
        assert!(watching.await.is_ok());
    }
}
