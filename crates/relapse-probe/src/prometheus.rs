//! A PromQL query as a detection source: the system's monitoring has the data that says it is
//! broken, whether or not anyone wrote an alert on it.

use std::time::Duration;

use relapse_core::fault::BoxFuture;
use relapse_core::sense::{Detector, DetectorError, SignalSender};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::http::HttpTarget;
use crate::pull::{self, Poll};
use crate::ProbeError;

/// Runs an instant query on a Prometheus server every period (`GET /api/v1/query`) and signals
/// changes: fires while the result holds a sample that counts — any sample, or with `above` one
/// whose value is greater than it; a NaN sample never counts — and clears when none is left.
///
/// A poll that gets no result (the server unreachable, a timeout, an error answer such as a
/// query that timed out on the server) counts neither way; see [`pull::watch_polls`]. A query
/// the server cannot parse (`bad_data`), or one whose result is a string or a range vector,
/// would fail the same way on every poll: watching stops with [`DetectorError::Config`].
pub struct PrometheusDetector {
    target: HttpTarget,
    url: String,
    every: Duration,
    above: Option<f64>,
}

impl PrometheusDetector {
    /// Builds a detector querying `query` on the server at `url` (its base URL, such as
    /// `http://127.0.0.1:9090`) every `every`, each poll bounded by `timeout`.
    pub fn new(
        url: &str,
        query: &str,
        every: Duration,
        timeout: Duration,
        above: Option<f64>,
    ) -> Result<Self, ProbeError> {
        if query.trim().is_empty() {
            return Err(ProbeError::EmptyQuery);
        }
        if let Some(above) = above.filter(|above| !above.is_finite()) {
            return Err(ProbeError::InvalidThreshold { above });
        }
        let path = format!(
            "/api/v1/query?query={}",
            pull::encode_query_value(query.trim())
        );
        Ok(PrometheusDetector {
            target: pull::api_target(url, &path, timeout)?,
            url: url.trim().to_owned(),
            every,
            above,
        })
    }
}

impl Detector for PrometheusDetector {
    fn watch(
        self: Box<Self>,
        signals: SignalSender,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, Result<(), DetectorError>> {
        Box::pin(async move {
            let source = format!("prometheus {}", self.url);
            pull::watch_polls(&source, self.every, signals, cancel, || async {
                match pull::get_json(&self.target).await {
                    Ok((status, answer)) => judge(read_answer(status, &answer), self.above),
                    Err(error) => Poll::Failed(error),
                }
            })
            .await
        })
    }
}

/// One sample of a result: the series it belongs to, as Prometheus prints it, and its value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    series: String,
    /// The value as the server wrote it (`"0"`, `"NaN"`, `"+Inf"`), for the detail.
    text: String,
    value: f64,
}

/// What an instant query returned.
#[derive(Debug, Clone, PartialEq)]
enum QueryResult {
    Vector(Vec<Sample>),
    Scalar(Sample),
}

/// Reads the answer to `/api/v1/query` (`{"status": "success", "data": {"resultType", "result"}}`,
/// or `{"status": "error", "errorType", "error"}` with a 4xx or 5xx status).
fn read_answer(status: u16, answer: &Value) -> Result<QueryResult, Poll> {
    let failed = |what: &str| Poll::Failed(format!("status {status}: {what}"));
    match answer.get("status").and_then(Value::as_str) {
        Some("success") => {}
        Some(_) => {
            let kind = answer
                .get("errorType")
                .and_then(Value::as_str)
                .unwrap_or("error");
            let message = answer.get("error").and_then(Value::as_str).unwrap_or("");
            let reason = crate::short_detail(&format!("{kind}: {message}"));
            // bad_data is the server saying the request itself is wrong: the same query will
            // never do. Everything else (timeout, execution, unavailable) may pass.
            return Err(if kind == "bad_data" {
                Poll::Refused(format!("the server refused the query: {reason}"))
            } else {
                Poll::Failed(format!("status {status}: {reason}"))
            });
        }
        None => return Err(failed("not a Prometheus query answer (no \"status\")")),
    }
    let data = answer.get("data");
    let result = data.and_then(|data| data.get("result"));
    match data
        .and_then(|data| data.get("resultType"))
        .and_then(Value::as_str)
    {
        Some("vector") => {
            let samples = result
                .and_then(Value::as_array)
                .ok_or_else(|| failed("a vector without a result list"))?;
            samples
                .iter()
                .map(|sample| {
                    let labels = sample.get("metric").and_then(Value::as_object);
                    let series = labels.map_or_else(|| "{}".to_owned(), pull::format_labels);
                    read_value(sample.get("value"), series)
                        .ok_or_else(|| failed("a sample without a [time, value] pair"))
                })
                .collect::<Result<_, _>>()
                .map(QueryResult::Vector)
        }
        Some("scalar") => read_value(result, String::new())
            .map(QueryResult::Scalar)
            .ok_or_else(|| failed("a scalar without a [time, value] pair")),
        Some(other) => Err(Poll::Refused(format!(
            "the query returns a {}: expected an instant vector or a scalar{}",
            if other == "matrix" {
                "range vector"
            } else {
                other
            },
            if other == "matrix" {
                " (take one value of each series, e.g. with max_over_time(…))"
            } else {
                ""
            }
        ))),
        None => Err(failed("no \"resultType\"")),
    }
}

/// A `[time, "value"]` pair; the value is a string so that NaN and ±Inf survive JSON.
fn read_value(pair: Option<&Value>, series: String) -> Option<Sample> {
    let text = pair?.as_array()?.get(1)?.as_str()?.to_owned();
    // Rust reads Prometheus's "NaN", "+Inf" and "-Inf" as they are.
    let value = text.parse().ok()?;
    Some(Sample {
        series,
        text,
        value,
    })
}

/// Whether a sample counts: never a NaN (0/0, or `scalar()` of nothing), and with `above`, only
/// a value greater than it.
fn counts(sample: &Sample, above: Option<f64>) -> bool {
    !sample.value.is_nan() && above.is_none_or(|above| sample.value > above)
}

/// A threshold as a person wrote it: `0.5`, `1e300` (not three hundred digits).
fn format_threshold(above: f64) -> String {
    let plain = above.to_string();
    if plain.len() <= 16 {
        plain
    } else {
        format!("{above:e}")
    }
}

/// Turns a read answer into a poll: firing or not, and a detail naming what counted.
fn judge(result: Result<QueryResult, Poll>, above: Option<f64>) -> Poll {
    let result = match result {
        Ok(result) => result,
        Err(poll) => return poll,
    };
    let threshold = above.map(|above| format!("above {}", format_threshold(above)));
    let (firing, detail) = match result {
        QueryResult::Scalar(sample) => {
            let firing = counts(&sample, above);
            let detail = match (&threshold, firing) {
                (Some(threshold), true) => {
                    format!("query returned scalar {}, {threshold}", sample.text)
                }
                (Some(threshold), false) => {
                    format!("query returned scalar {}, not {threshold}", sample.text)
                }
                (None, _) => format!("query returned scalar {}", sample.text),
            };
            (firing, detail)
        }
        QueryResult::Vector(samples) if samples.is_empty() => {
            (false, "query returned no series".to_owned())
        }
        QueryResult::Vector(samples) => {
            let counted: Vec<&Sample> = samples.iter().filter(|s| counts(s, above)).collect();
            let total = samples.len();
            let listed = || {
                counted
                    .iter()
                    .map(|s| format!("{} = {}", s.series, s.text))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let detail = match (&threshold, counted.len()) {
                (None, 0) => format!("query returned {total} series, all NaN"),
                (None, _) => format!("query returned {total} series: {}", listed()),
                (Some(threshold), 0) => format!("query returned {total} series, none {threshold}"),
                (Some(threshold), n) => {
                    format!(
                        "query returned {total} series, {n} {threshold}: {}",
                        listed()
                    )
                }
            };
            (!counted.is_empty(), detail)
        }
    };
    Poll::Answer {
        firing,
        detail: crate::short_detail(&detail),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn poll(answer: Value, above: Option<f64>) -> Poll {
        judge(read_answer(200, &answer), above)
    }

    fn answer(firing: bool, detail: &str) -> Poll {
        Poll::Answer {
            firing,
            detail: detail.to_owned(),
        }
    }

    fn vector(result: Value) -> Value {
        json!({"status": "success", "data": {"resultType": "vector", "result": result}})
    }

    #[test]
    fn a_vector_fires_while_it_has_a_sample() {
        let down = vector(json!([
            {"metric": {"__name__": "probe_success", "instance": "127.0.0.1:9115", "job": "web"},
             "value": [1700000000.123, "0"]}
        ]));
        assert_eq!(
            poll(down, None),
            answer(
                true,
                r#"query returned 1 series: probe_success{instance="127.0.0.1:9115", job="web"} = 0"#
            )
        );
        assert_eq!(
            poll(vector(json!([])), None),
            answer(false, "query returned no series")
        );
    }

    #[test]
    fn above_counts_only_greater_values_and_nan_never_counts() {
        let three = vector(json!([
            {"metric": {"job": "a"}, "value": [1.0, "0"]},
            {"metric": {"job": "b"}, "value": [1.0, "0.75"]},
            {"metric": {"job": "c"}, "value": [1.0, "NaN"]},
        ]));
        assert_eq!(
            poll(three.clone(), Some(0.5)),
            answer(
                true,
                r#"query returned 3 series, 1 above 0.5: {job="b"} = 0.75"#
            )
        );
        assert_eq!(
            poll(three.clone(), Some(0.75)),
            answer(false, "query returned 3 series, none above 0.75")
        );
        assert_eq!(
            poll(three, None),
            answer(
                true,
                r#"query returned 3 series: {job="a"} = 0, {job="b"} = 0.75"#
            )
        );
        let zero = vector(json!([{"metric": {}, "value": [1.0, "0"]}]));
        assert_eq!(
            poll(zero, Some(0.5)),
            answer(false, "query returned 1 series, none above 0.5")
        );
        let nan = vector(json!([{"metric": {"job": "a"}, "value": [1.0, "NaN"]}]));
        assert_eq!(
            poll(nan.clone(), None),
            answer(false, "query returned 1 series, all NaN")
        );
        assert_eq!(
            poll(nan, Some(-1.0)),
            answer(false, "query returned 1 series, none above -1")
        );
        let infinite = vector(json!([{"metric": {"job": "a"}, "value": [1.0, "+Inf"]}]));
        assert_eq!(
            poll(infinite, Some(1e300)),
            answer(
                true,
                r#"query returned 1 series, 1 above 1e300: {job="a"} = +Inf"#
            )
        );
    }

    #[test]
    fn a_scalar_counts_unless_nan_or_not_above() {
        let scalar = |value: &str| json!({"status": "success", "data": {"resultType": "scalar", "result": [1.5, value]}});
        assert_eq!(
            poll(scalar("3"), None),
            answer(true, "query returned scalar 3")
        );
        assert_eq!(
            poll(scalar("NaN"), None),
            answer(false, "query returned scalar NaN")
        );
        assert_eq!(
            poll(scalar("3"), Some(2.5)),
            answer(true, "query returned scalar 3, above 2.5")
        );
        assert_eq!(
            poll(scalar("-Inf"), Some(2.5)),
            answer(false, "query returned scalar -Inf, not above 2.5")
        );
    }

    #[test]
    fn a_bad_query_is_refused_and_other_errors_only_fail_the_poll() {
        let bad = json!({"status": "error", "errorType": "bad_data",
            "error": "invalid parameter \"query\": 1:17: parse error: unexpected end of input"});
        assert_eq!(
            judge(read_answer(400, &bad), None),
            Poll::Refused(
                "the server refused the query: bad_data: invalid parameter \"query\": 1:17: parse error: unexpected end of input"
                    .to_owned()
            )
        );
        let timeout = json!({"status": "error", "errorType": "timeout", "error": "query timed out in expression evaluation"});
        assert_eq!(
            judge(read_answer(503, &timeout), None),
            Poll::Failed(
                "status 503: timeout: query timed out in expression evaluation".to_owned()
            )
        );
        assert_eq!(
            judge(read_answer(200, &json!({"data": {}})), None),
            Poll::Failed("status 200: not a Prometheus query answer (no \"status\")".to_owned())
        );
        let unreadable = vector(json!([{"metric": {}, "value": [1.0, 0]}]));
        assert_eq!(
            judge(read_answer(200, &unreadable), None),
            Poll::Failed("status 200: a sample without a [time, value] pair".to_owned())
        );
    }

    #[test]
    fn strings_and_range_vectors_are_refused() {
        let typed =
            |kind: &str| json!({"status": "success", "data": {"resultType": kind, "result": []}});
        assert_eq!(
            poll(typed("matrix"), None),
            Poll::Refused("the query returns a range vector: expected an instant vector or a scalar (take one value of each series, e.g. with max_over_time(…))".to_owned())
        );
        assert_eq!(
            poll(typed("string"), None),
            Poll::Refused(
                "the query returns a string: expected an instant vector or a scalar".to_owned()
            )
        );
    }

    #[test]
    fn a_long_result_is_cut_in_the_detail() {
        let many: Vec<Value> = (0..100)
            .map(|i| json!({"metric": {"instance": format!("host-{i}")}, "value": [1.0, "1"]}))
            .collect();
        let Poll::Answer { firing, detail } = poll(vector(Value::Array(many)), None) else {
            panic!("not an answer");
        };
        assert!(firing);
        assert!(detail.starts_with(r#"query returned 100 series: {instance="host-0"} = 1, "#));
        assert!(
            detail.chars().count() <= 201 && detail.ends_with('…'),
            "{detail}"
        );
    }

    #[test]
    fn the_query_is_encoded_into_the_url_and_checked() {
        let every = Duration::from_millis(250);
        let timeout = Duration::from_secs(1);
        let detector = PrometheusDetector::new(
            "http://127.0.0.1:9090",
            r#" probe_success{job="web"} == 0 "#,
            every,
            timeout,
            None,
        )
        .unwrap();
        assert_eq!(
            detector.target.uri.to_string(),
            "http://127.0.0.1:9090/api/v1/query?query=probe_success%7Bjob%3D%22web%22%7D%20%3D%3D%200"
        );
        assert!(matches!(
            PrometheusDetector::new("http://127.0.0.1:9090", " ", every, timeout, None),
            Err(ProbeError::EmptyQuery)
        ));
        assert!(matches!(
            PrometheusDetector::new(
                "http://127.0.0.1:9090",
                "up",
                every,
                timeout,
                Some(f64::NAN)
            ),
            Err(ProbeError::InvalidThreshold { .. })
        ));
    }
}
