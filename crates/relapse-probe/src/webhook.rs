//! The webhook sink: an HTTP endpoint the system's alerting POSTs to, and the detectors that
//! pick their alerts out of it.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use relapse_core::fault::BoxFuture;
use relapse_core::sense::{Detector, DetectorError, SignalSender};
use serde_json::{Map, Value};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::ProbeError;

/// Alert payloads are small; anything bigger is a mistake or abuse, not an alert.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// How many alerts a detector may fall behind before it starts missing some. Alerts arrive at
/// human rates; this only matters if a detector task is starved.
const CHANNEL_CAPACITY: usize = 1024;

/// One alert as the sink understood it.
#[derive(Debug, Clone)]
struct Alert {
    labels: BTreeMap<String, String>,
    firing: bool,
}

impl Alert {
    /// A short, recognisable description, e.g. `alertname=FrontendDown firing`.
    fn detail(&self) -> String {
        let state = if self.firing { "firing" } else { "resolved" };
        match self.labels.get("alertname") {
            Some(name) => crate::short_detail(&format!("alertname={name} {state}")),
            None => state.to_owned(),
        }
    }

    fn matches(&self, matchers: &BTreeMap<String, String>) -> bool {
        matchers
            .iter()
            .all(|(name, value)| self.labels.get(name) == Some(value))
    }
}

/// State shared by the server's connections.
struct Shared {
    alerts: broadcast::Sender<Arc<Alert>>,
    received: AtomicU64,
}

/// An HTTP/1.1 endpoint accepting alert notifications as JSON POSTs on any path.
///
/// Understands Alertmanager webhook payloads (an object with an `alerts` array, version 4) and
/// plain JSON objects whose string fields (and `labels` object) are the alert's labels and whose
/// `status` says `resolved` or anything else for firing. Runs until the cancellation token given
/// to [`WebhookSink::bind`] fires.
pub struct WebhookSink {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl WebhookSink {
    /// Listens on `addr` (port 0 picks a free port) and serves until `cancel` fires.
    pub async fn bind(
        addr: SocketAddr,
        cancel: CancellationToken,
    ) -> Result<WebhookSink, ProbeError> {
        let bind_error = |reason| ProbeError::Bind { addr, reason };
        let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
        let local = listener.local_addr().map_err(bind_error)?;
        let (alerts, _) = broadcast::channel(CHANNEL_CAPACITY);
        let shared = Arc::new(Shared {
            alerts,
            received: AtomicU64::new(0),
        });
        tokio::spawn(serve(listener, shared.clone(), cancel));
        tracing::debug!(addr = %local, "webhook sink listening");
        Ok(WebhookSink {
            addr: local,
            shared,
        })
    }

    /// The URL to give the system's alerting: `http://IP:PORT/alerts`. When listening on every
    /// interface, the loopback address stands in, since "0.0.0.0" is not somewhere to send to.
    pub fn url(&self) -> String {
        let ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("http://{}/alerts", SocketAddr::new(ip, self.addr.port()))
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many alerts the sink has accepted so far.
    pub fn received(&self) -> u64 {
        self.shared.received.load(Ordering::Relaxed)
    }

    /// A detection source for the alerts whose labels contain every one of `matchers` (all
    /// alerts when empty). It subscribes now, so nothing accepted after this call is missed even
    /// if watching starts later.
    pub fn detector(&self, matchers: BTreeMap<String, String>) -> WebhookDetector {
        WebhookDetector {
            alerts: self.shared.alerts.subscribe(),
            matchers,
        }
    }
}

/// Fires when a matching alert fires and clears when it is resolved.
pub struct WebhookDetector {
    alerts: broadcast::Receiver<Arc<Alert>>,
    matchers: BTreeMap<String, String>,
}

impl Detector for WebhookDetector {
    fn watch(
        self: Box<Self>,
        signals: SignalSender,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, Result<(), DetectorError>> {
        let WebhookDetector {
            mut alerts,
            matchers,
        } = *self;
        Box::pin(async move {
            loop {
                let received = tokio::select! {
                    biased;
                    _ = cancel.cancelled() => return Ok(()),
                    received = alerts.recv() => received,
                };
                match received {
                    Ok(alert) if alert.matches(&matchers) => {
                        if alert.firing {
                            signals.fire(alert.detail());
                        } else {
                            signals.clear(alert.detail());
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "webhook detector fell behind and missed alerts");
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        if cancel.is_cancelled() {
                            return Ok(());
                        }
                        return Err(DetectorError::lost(
                            "the webhook sink stopped",
                            broadcast::error::RecvError::Closed,
                        ));
                    }
                }
            }
        })
    }
}

/// Accepts connections until `cancel`, serving each on its own task so that one slow client
/// cannot hold up the others.
async fn serve(listener: TcpListener, shared: Arc<Shared>, cancel: CancellationToken) {
    loop {
        let stream = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(error) => {
                    // Typically EMFILE: back off instead of spinning on an error accept() keeps
                    // returning.
                    tracing::warn!(%error, "webhook sink: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(&shared, request).await) }
            });
            // The timer enables hyper's header read timeout, so idle half-open clients do not
            // pile up for the whole run.
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service);
            // Dropping the connection on cancel closes it: the sink's life ends with the run.
            if let Some(Err(error)) = cancel.run_until_cancelled(connection).await {
                tracing::debug!(%error, "webhook sink: connection ended with an error");
            }
        });
    }
    tracing::debug!("webhook sink stopped");
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

async fn handle(shared: &Shared, request: Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::POST {
        let mut response = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed: expected POST\n",
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    let path = request.uri().path().to_owned();
    let body = match Limited::new(request.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body too large: expected at most 1 MiB\n",
            );
        }
        Err(_) => return text(StatusCode::BAD_REQUEST, "unreadable body\n"),
    };
    let payload = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(payload)) => payload,
        Ok(_) => return text(StatusCode::BAD_REQUEST, "expected a json object\n"),
        Err(_) => {
            return text(
                StatusCode::BAD_REQUEST,
                "invalid json: expected a json object\n",
            )
        }
    };
    let alerts = parse_alerts(&payload);
    shared
        .received
        .fetch_add(alerts.len() as u64, Ordering::Relaxed);
    for alert in alerts {
        tracing::debug!(%path, labels = ?alert.labels, firing = alert.firing, "webhook sink: alert");
        // No receivers just means no detector is watching the sink; not an error.
        let _ = shared.alerts.send(Arc::new(alert));
    }
    text(StatusCode::OK, "ok\n")
}

/// Reads the alerts out of a payload: an Alertmanager notification carries several, a plain JSON
/// object is one.
fn parse_alerts(payload: &Map<String, Value>) -> Vec<Alert> {
    let status = |object: &Map<String, Value>| {
        object
            .get("status")
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    if let Some(Value::Array(alerts)) = payload.get("alerts") {
        // Each alert carries its own status; the group's is the fallback for terse senders.
        let group_status = status(payload);
        return alerts
            .iter()
            .filter_map(Value::as_object)
            .map(|alert| Alert {
                labels: string_fields(alert.get("labels").and_then(Value::as_object)),
                firing: status(alert).or_else(|| group_status.clone()).as_deref()
                    != Some("resolved"),
            })
            .collect();
    }
    let mut labels = string_fields(Some(payload));
    labels.extend(string_fields(
        payload.get("labels").and_then(Value::as_object),
    ));
    vec![Alert {
        labels,
        firing: status(payload).as_deref() != Some("resolved"),
    }]
}

/// The string-valued fields of an object; other values are not labels.
fn string_fields(object: Option<&Map<String, Value>>) -> BTreeMap<String, String> {
    object
        .into_iter()
        .flatten()
        .filter_map(|(name, value)| Some((name.clone(), value.as_str()?.to_owned())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn parses_alertmanager_payloads() {
        let payload = object(json!({
            "version": "4",
            "status": "firing",
            "alerts": [
                {"status": "firing", "labels": {"alertname": "A", "severity": "page", "n": 1}},
                {"status": "resolved", "labels": {"alertname": "B"}},
                {"labels": {"alertname": "C"}},
                "junk",
            ],
        }));
        let alerts = parse_alerts(&payload);
        assert_eq!(alerts.len(), 3);
        assert!(alerts[0].firing);
        assert_eq!(alerts[0].labels.len(), 2);
        assert_eq!(alerts[0].detail(), "alertname=A firing");
        assert!(!alerts[1].firing);
        assert_eq!(alerts[1].detail(), "alertname=B resolved");
        assert!(alerts[2].firing, "falls back to the group status");
    }

    #[test]
    fn parses_plain_objects_and_matches() {
        let alert = &parse_alerts(&object(json!({
            "service": "webmail",
            "count": 3,
            "labels": {"alertname": "Down", "team": "mail"},
        })))[0];
        assert!(alert.firing);
        assert_eq!(alert.labels["service"], "webmail");
        assert!(!alert.labels.contains_key("count"));
        let matchers = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        assert!(alert.matches(&matchers(&[])));
        assert!(alert.matches(&matchers(&[("team", "mail"), ("alertname", "Down")])));
        assert!(!alert.matches(&matchers(&[("team", "web")])));
        assert!(!alert.matches(&matchers(&[("missing", "x")])));

        let resolved = &parse_alerts(&object(json!({"status": "resolved"})))[0];
        assert!(!resolved.firing);
        assert_eq!(resolved.detail(), "resolved");
    }
}
