//! An Alertmanager's alerts as a detection source: the alert the system's monitoring raised, read
//! where it is held, without changing anyone's routing to send a copy to relapse.

use std::collections::BTreeMap;
use std::time::Duration;

use relapse_core::fault::BoxFuture;
use relapse_core::sense::{Detector, DetectorError, SignalSender};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::http::HttpTarget;
use crate::pull::{self, Poll};
use crate::ProbeError;

/// The alerts asked for: active ones only. Silenced and inhibited alerts are left out, as they
/// are from every notification, since nobody is told of them; resolved ones are never listed.
const ALERTS_PATH: &str = "/api/v2/alerts?active=true&silenced=false&inhibited=false";

/// Polls an Alertmanager's active alerts (`GET /api/v2/alerts`) every period and signals changes:
/// fires while an active alert's labels include every one of the matchers (all alerts when there
/// are none, as for [`crate::WebhookSink::detector`]), clears when none is left.
///
/// A poll that gets no list (the server unreachable, a timeout, a status other than 2xx) counts
/// neither way; see [`pull::watch_polls`].
pub struct AlertmanagerDetector {
    target: HttpTarget,
    url: String,
    matchers: BTreeMap<String, String>,
    every: Duration,
}

impl AlertmanagerDetector {
    /// Builds a detector polling the Alertmanager at `url` (its base URL, such as
    /// `http://127.0.0.1:9093`) every `every`, each poll bounded by `timeout`.
    pub fn new(
        url: &str,
        matchers: BTreeMap<String, String>,
        every: Duration,
        timeout: Duration,
    ) -> Result<Self, ProbeError> {
        Ok(AlertmanagerDetector {
            target: pull::api_target(url, ALERTS_PATH, timeout)?,
            url: url.trim().to_owned(),
            matchers,
            every,
        })
    }
}

impl Detector for AlertmanagerDetector {
    fn watch(
        self: Box<Self>,
        signals: SignalSender,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, Result<(), DetectorError>> {
        Box::pin(async move {
            let source = format!("alertmanager {}", self.url);
            pull::watch_polls(&source, self.every, signals, cancel, || async {
                match pull::get_json(&self.target).await {
                    Ok((status, alerts)) => judge(status, &alerts, &self.matchers),
                    Err(error) => Poll::Failed(error),
                }
            })
            .await
        })
    }
}

/// Reads the list of alerts (`[{"labels": {…}, "status": {"state": "active"}, …}]`) and picks
/// the first active one that matches; the server lists them in a stable order (by fingerprint).
fn judge(status: u16, alerts: &Value, matchers: &BTreeMap<String, String>) -> Poll {
    if !(200..300).contains(&status) {
        return Poll::Failed(format!("status {status}"));
    }
    let Some(alerts) = alerts.as_array() else {
        return Poll::Failed(format!(
            "status {status}: not a list of alerts (is this an Alertmanager's v2 API?)"
        ));
    };
    // Asked for active alerts only; the state is checked again so that a server which ignores
    // a parameter cannot make a suppressed alert count.
    let active: Vec<&serde_json::Map<String, Value>> = alerts
        .iter()
        .filter(|alert| alert.pointer("/status/state").and_then(Value::as_str) == Some("active"))
        .filter_map(|alert| alert.get("labels").and_then(Value::as_object))
        .collect();
    let matching: Vec<_> = active
        .iter()
        .filter(|labels| {
            matchers
                .iter()
                .all(|(name, value)| labels.get(name).and_then(Value::as_str) == Some(value))
        })
        .collect();
    let detail = match matching.first() {
        None => format!("no active alert matches ({} active)", active.len()),
        Some(first) => format!(
            "{} of {} active alerts match: {}",
            matching.len(),
            active.len(),
            pull::format_labels(first)
        ),
    };
    Poll::Answer {
        firing: !matching.is_empty(),
        detail: crate::short_detail(&detail),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn matchers(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    /// Two alerts as Alertmanager 0.25 lists them, the second silenced.
    fn alerts() -> Value {
        json!([
            {"annotations": {}, "endsAt": "2026-12-02T03:07:08.719Z", "fingerprint": "101c148d3d744066",
             "receivers": [{"name": "none"}], "startsAt": "2026-12-02T03:03:08.719Z",
             "status": {"inhibitedBy": [], "silencedBy": [], "state": "active"},
             "updatedAt": "2026-12-02T03:03:08.724Z",
             "labels": {"alertname": "TargetDown", "instance": "127.0.0.1:9115", "job": "target", "severity": "page"}},
            {"fingerprint": "2", "status": {"inhibitedBy": [], "silencedBy": ["s1"], "state": "suppressed"},
             "labels": {"alertname": "TargetDown", "severity": "ticket"}},
        ])
    }

    fn answer(firing: bool, detail: &str) -> Poll {
        Poll::Answer {
            firing,
            detail: detail.to_owned(),
        }
    }

    #[test]
    fn fires_on_an_active_alert_with_every_matching_label() {
        assert_eq!(
            judge(200, &alerts(), &matchers(&[("alertname", "TargetDown")])),
            answer(
                true,
                r#"1 of 1 active alerts match: {alertname="TargetDown", instance="127.0.0.1:9115", job="target", severity="page"}"#
            )
        );
        assert_eq!(
            judge(200, &alerts(), &matchers(&[])),
            answer(
                true,
                r#"1 of 1 active alerts match: {alertname="TargetDown", instance="127.0.0.1:9115", job="target", severity="page"}"#
            )
        );
    }

    #[test]
    fn a_suppressed_alert_or_a_missing_label_does_not_count() {
        let ticket = matchers(&[("alertname", "TargetDown"), ("severity", "ticket")]);
        assert_eq!(
            judge(200, &alerts(), &ticket),
            answer(false, "no active alert matches (1 active)")
        );
        let other = matchers(&[("alertname", "TargetDown"), ("team", "mail")]);
        assert_eq!(
            judge(200, &alerts(), &other),
            answer(false, "no active alert matches (1 active)")
        );
        assert_eq!(
            judge(200, &json!([]), &other),
            answer(false, "no active alert matches (0 active)")
        );
    }

    #[test]
    fn an_error_or_an_odd_answer_fails_the_poll() {
        assert_eq!(
            judge(503, &json!("unavailable"), &matchers(&[])),
            Poll::Failed("status 503".to_owned())
        );
        assert_eq!(
            judge(
                200,
                &json!({"status": "success", "data": []}),
                &matchers(&[])
            ),
            Poll::Failed(
                "status 200: not a list of alerts (is this an Alertmanager's v2 API?)".to_owned()
            )
        );
    }

    #[test]
    fn asks_for_active_unsilenced_uninhibited_alerts() {
        let detector = AlertmanagerDetector::new(
            "http://127.0.0.1:9093/",
            matchers(&[]),
            Duration::from_millis(250),
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(
            detector.target.uri.to_string(),
            "http://127.0.0.1:9093/api/v2/alerts?active=true&silenced=false&inhibited=false"
        );
    }
}
