//! A backlog gauge read from a metric in Prometheus text format, such as a mail queue's depth on
//! the target's `/metrics`.

use std::time::Duration;

use relapse_core::fault::BoxFuture;
use relapse_core::sense::{Gauge, GaugeError};

use crate::http::HttpTarget;
use crate::ProbeError;

/// The largest exposition the gauge reads: a `/metrics` page is a few kilobytes, and a runaway
/// one must not fill the harness's memory.
const BODY_LIMIT: usize = 4 << 20;

/// Reads one metric from a Prometheus text exposition: the sum of every sample of that name
/// (one per label set), so a queue split by priority reads as its total depth.
pub struct MetricGauge {
    target: HttpTarget,
    metric: String,
}

impl MetricGauge {
    pub fn new(url: &str, metric: &str, timeout: Duration) -> Result<MetricGauge, ProbeError> {
        Ok(MetricGauge {
            target: HttpTarget::new(url, "GET", timeout)?,
            metric: metric.to_owned(),
        })
    }
}

impl Gauge for MetricGauge {
    fn read(&self) -> BoxFuture<'_, Result<f64, GaugeError>> {
        Box::pin(async move {
            let body = self
                .target
                .fetch(BODY_LIMIT)
                .await
                .map_err(|e| GaugeError::unreachable(format!("GET {}", self.target.uri), e))?;
            let text = String::from_utf8_lossy(&body);
            metric_sum(&text, &self.metric).ok_or_else(|| {
                GaugeError::NoValue(format!(
                    "no sample of metric \"{}\" in the response",
                    self.metric
                ))
            })
        })
    }
}

/// The sum of the samples named `metric` in a Prometheus text exposition; `None` when there are
/// none. Written by hand: the format's sample line is `name[{labels}] value [timestamp]`, and a
/// parser crate would bring more than this one question needs.
pub fn metric_sum(text: &str, metric: &str) -> Option<f64> {
    let mut sum = None;
    for line in text.lines() {
        let line = line.trim_start();
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(metric) else {
            continue;
        };
        // The name must end here: `queue_depth` is not `queue_depth_max`.
        let rest = match rest.chars().next() {
            Some('{') => match label_set_end(rest) {
                Some(end) => &rest[end..],
                None => continue,
            },
            Some(c) if c.is_whitespace() => rest,
            _ => continue,
        };
        let Some(value) = rest.split_whitespace().next() else {
            continue;
        };
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            other => match other.parse::<f64>() {
                Ok(v) => v,
                Err(_) => continue,
            },
        };
        sum = Some(sum.unwrap_or(0.0) + value);
    }
    sum
}

/// The byte after the `}` that closes a label set starting at `text[0] == '{'`, skipping quoted
/// label values (which may hold `}` and escaped quotes).
fn label_set_end(text: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in text.char_indices().skip(1) {
        match (quoted, escaped, c) {
            (true, true, _) => escaped = false,
            (true, false, '\\') => escaped = true,
            (true, false, '"') => quoted = false,
            (false, _, '"') => quoted = true,
            (false, _, '}') => return Some(i + 1),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPOSITION: &str = "\
# HELP mail_queue_depth Messages waiting for delivery.
# TYPE mail_queue_depth gauge
mail_queue_depth{priority=\"high\"} 3
mail_queue_depth{priority=\"low\",note=\"a } and a \\\" inside\"} 4.5 1700000000000
mail_queue_depth_max 100
other_metric 7
";

    #[test]
    fn sums_every_label_set_of_exactly_that_name() {
        assert_eq!(metric_sum(EXPOSITION, "mail_queue_depth"), Some(7.5));
        assert_eq!(metric_sum(EXPOSITION, "mail_queue_depth_max"), Some(100.0));
        assert_eq!(metric_sum(EXPOSITION, "other_metric"), Some(7.0));
    }

    #[test]
    fn a_missing_or_unparsable_metric_is_none() {
        assert_eq!(metric_sum(EXPOSITION, "mail_queue"), None);
        assert_eq!(metric_sum("queue{a=\"1\" 5\n", "queue"), None);
        assert_eq!(metric_sum("queue not_a_number\n", "queue"), None);
        assert_eq!(metric_sum("", "queue"), None);
    }
}
