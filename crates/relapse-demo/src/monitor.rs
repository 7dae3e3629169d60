//! The monitor: stands in for the customer's external monitoring. It polls the
//! frontend's `/health` and pages through an Alertmanager-style webhook, so
//! the harness can measure time-to-detect exactly as a real pager would see it.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::MonitorOptions;

/// Alertmanager's zero time, used as `endsAt` of an alert that is still firing.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";
const EXTERNAL_URL: &str = "http://relapse-demo-monitor";

type HttpClient = Client<HttpConnector, Full<Bytes>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AlertStatus {
    Firing,
    Resolved,
}

impl AlertStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Firing => "firing",
            Self::Resolved => "resolved",
        }
    }
}

/// One alert notification, before it is encoded as a webhook payload.
pub(crate) struct Alert<'a> {
    pub(crate) status: AlertStatus,
    pub(crate) alertname: &'a str,
    /// The frontend's `host:port`.
    pub(crate) instance: &'a str,
    pub(crate) summary: String,
    pub(crate) starts_at: SystemTime,
    /// `None` while firing.
    pub(crate) ends_at: Option<SystemTime>,
}

/// Encodes an alert as an Alertmanager webhook payload (version 4), the
/// format most incident tooling already accepts.
pub(crate) fn webhook_payload(alert: &Alert<'_>) -> Value {
    let labels: BTreeMap<&str, &str> = BTreeMap::from([
        ("alertname", alert.alertname),
        ("service", "webmail"),
        ("severity", "page"),
        ("instance", alert.instance),
    ]);
    let annotations = json!({ "summary": alert.summary });
    let status = alert.status.as_str();
    let ends_at = match alert.ends_at {
        Some(time) => humantime::format_rfc3339_millis(time).to_string(),
        None => ZERO_TIME.to_owned(),
    };
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{{alertname={:?}}}", alert.alertname),
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "relapse",
        "groupLabels": { "alertname": alert.alertname },
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": EXTERNAL_URL,
        "alerts": [{
            "status": status,
            "labels": labels,
            "annotations": annotations,
            "startsAt": humantime::format_rfc3339_millis(alert.starts_at).to_string(),
            "endsAt": ends_at,
            "generatorURL": format!("{EXTERNAL_URL}/"),
            "fingerprint": fingerprint(&labels),
        }],
    })
}

/// A stable 64-bit FNV-1a hash of the label set as 16 hex digits; like
/// Alertmanager's, it identifies the alert across firing and resolved.
fn fingerprint(labels: &BTreeMap<&str, &str>) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (name, value) in labels {
        // 0xff never occurs in UTF-8, so it separates fields unambiguously.
        for byte in name
            .bytes()
            .chain([0xff])
            .chain(value.bytes())
            .chain([0xff])
        {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

/// The monitor's view of the frontend.
enum State {
    Up { failures: u32 },
    Down { since: SystemTime, successes: u32 },
}

/// Runs the monitor until `cancel` fires.
pub(crate) async fn run(
    options: MonitorOptions,
    frontend_url: String,
    sink: Option<Uri>,
    cancel: CancellationToken,
) {
    cancel
        .run_until_cancelled(monitor_loop(options, frontend_url, sink))
        .await;
}

async fn monitor_loop(options: MonitorOptions, frontend_url: String, sink: Option<Uri>) {
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let instance = frontend_url
        .strip_prefix("http://")
        .unwrap_or(&frontend_url)
        .to_owned();
    let health: Uri = match format!("{frontend_url}/health").parse() {
        Ok(uri) => uri,
        Err(error) => {
            tracing::warn!(%error, %frontend_url, "monitor cannot build the health url");
            return;
        }
    };
    // Zero would make tokio's interval panic and a zero threshold is
    // meaningless; clamp both to the smallest sensible value.
    let fall = options.fall.max(1);
    let rise = options.rise.max(1);
    let mut ticker = tokio::time::interval(options.interval.max(Duration::from_millis(1)));
    // Delay, not Burst: a slow check must not be followed by a volley of
    // back-to-back checks that would skew the detection time.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);

    let mut state = State::Up { failures: 0 };
    loop {
        ticker.tick().await;
        let result = check(&client, &health, options.timeout).await;
        let notify = match (&mut state, result) {
            (State::Up { failures }, Ok(())) => {
                *failures = 0;
                None
            }
            (State::Up { failures }, Err(reason)) => {
                *failures += 1;
                tracing::debug!(%reason, failures = *failures, "health check failed");
                if *failures >= fall {
                    let since = SystemTime::now();
                    tracing::info!(%reason, "frontend is DOWN");
                    let summary = format!(
                        "webmail frontend {instance} failed {fall} consecutive health checks: {reason}"
                    );
                    state = State::Down {
                        since,
                        successes: 0,
                    };
                    Some((AlertStatus::Firing, summary, since, None))
                } else {
                    None
                }
            }
            (State::Down { successes, .. }, Err(reason)) => {
                *successes = 0;
                tracing::debug!(%reason, "health check failed");
                None
            }
            (State::Down { since, successes }, Ok(())) => {
                *successes += 1;
                if *successes >= rise {
                    let since = *since;
                    tracing::info!("frontend is UP");
                    let summary = format!(
                        "webmail frontend {instance} passed {rise} consecutive health checks"
                    );
                    state = State::Up { failures: 0 };
                    Some((
                        AlertStatus::Resolved,
                        summary,
                        since,
                        Some(SystemTime::now()),
                    ))
                } else {
                    None
                }
            }
        };
        if let (Some((status, summary, starts_at, ends_at)), Some(sink)) = (notify, &sink) {
            let payload = webhook_payload(&Alert {
                status,
                alertname: &options.alertname,
                instance: &instance,
                summary,
                starts_at,
                ends_at,
            });
            // Bounded by the check timeout so a hung sink cannot stall the
            // monitor; a failed page is only logged, as the brief asks.
            if let Err(reason) = post(&client, sink, &payload, options.timeout).await {
                tracing::warn!(%reason, sink = %sink, status = status.as_str(), "failed to deliver alert");
            }
        }
    }
}

/// One health check: 200 within `timeout` (body included) or the reason why not.
async fn check(client: &HttpClient, health: &Uri, timeout: Duration) -> Result<(), String> {
    let call = async {
        let request = Request::get(health.clone())
            .body(Full::new(Bytes::new()))
            .map_err(|error| error.to_string())?;
        let response = client
            .request(request)
            .await
            .map_err(|error| format!("request failed: {error}"))?;
        let status = response.status();
        // Read the body so the pooled connection can be reused.
        response
            .into_body()
            .collect()
            .await
            .map_err(|error| format!("reading the body failed: {error}"))?;
        if status == StatusCode::OK {
            Ok(())
        } else {
            Err(format!("frontend answered {status}"))
        }
    };
    bounded(timeout, call).await
}

/// Runs one call of the monitor's, failing it with "no answer within …" past `timeout`.
async fn bounded(
    timeout: Duration,
    call: impl std::future::Future<Output = Result<(), String>>,
) -> Result<(), String> {
    tokio::time::timeout(timeout, call)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "no answer within {}",
                humantime::format_duration(timeout)
            ))
        })
}

async fn post(
    client: &HttpClient,
    sink: &Uri,
    payload: &Value,
    timeout: Duration,
) -> Result<(), String> {
    let body = serde_json::to_vec(payload).map_err(|error| error.to_string())?;
    let call = async {
        let mut request = Request::new(Full::new(Bytes::from(body)));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = sink.clone();
        request
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let response = client
            .request(request)
            .await
            .map_err(|error| format!("request failed: {error}"))?;
        let status = response.status();
        let _ = response.into_body().collect().await;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("sink answered {status}"))
        }
    };
    bounded(timeout, call).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(status: AlertStatus, ends_at: Option<SystemTime>) -> Value {
        webhook_payload(&Alert {
            status,
            alertname: "FrontendDown",
            instance: "127.0.0.1:8080",
            summary: "down".into(),
            starts_at: SystemTime::UNIX_EPOCH + Duration::from_millis(1_500),
            ends_at,
        })
    }

    #[test]
    fn firing_payload_has_the_alertmanager_shape() {
        let payload = alert(AlertStatus::Firing, None);
        assert_eq!(payload["version"], "4");
        assert_eq!(payload["groupKey"], "{}:{alertname=\"FrontendDown\"}");
        assert_eq!(payload["status"], "firing");
        assert_eq!(payload["receiver"], "relapse");
        assert_eq!(payload["truncatedAlerts"], 0);
        assert_eq!(payload["groupLabels"]["alertname"], "FrontendDown");
        assert_eq!(payload["commonLabels"]["severity"], "page");
        let alert = &payload["alerts"][0];
        assert_eq!(alert["status"], "firing");
        assert_eq!(alert["labels"]["alertname"], "FrontendDown");
        assert_eq!(alert["labels"]["service"], "webmail");
        assert_eq!(alert["labels"]["instance"], "127.0.0.1:8080");
        assert_eq!(alert["annotations"]["summary"], "down");
        assert_eq!(alert["startsAt"], "1970-01-01T00:00:01.500Z");
        assert_eq!(alert["endsAt"], ZERO_TIME);
        assert_eq!(alert["generatorURL"], "http://relapse-demo-monitor/");
        let fingerprint = alert["fingerprint"].as_str().unwrap();
        assert_eq!(fingerprint.len(), 16);
        assert!(fingerprint.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn resolved_payload_keeps_the_fingerprint_and_sets_ends_at() {
        let firing = alert(AlertStatus::Firing, None);
        let resolved = alert(
            AlertStatus::Resolved,
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(2)),
        );
        assert_eq!(resolved["status"], "resolved");
        assert_eq!(resolved["alerts"][0]["endsAt"], "1970-01-01T00:00:02.000Z");
        assert_eq!(
            firing["alerts"][0]["fingerprint"],
            resolved["alerts"][0]["fingerprint"]
        );
    }
}
