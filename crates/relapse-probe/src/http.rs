//! The HTTP SLI probe, and the HTTP exchange it shares with the health-endpoint detector, the
//! metric gauge and the pulled detection sources.

use std::error::Error as StdError;
use std::io;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderName, HeaderValue, USER_AGENT};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use relapse_core::fault::BoxFuture;
use relapse_core::sense::{Outcome, Probe};

use crate::ProbeError;

const PROBE_USER_AGENT: &str = concat!("relapse-probe/", env!("CARGO_PKG_VERSION"));

/// How one HTTP exchange ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Exchange {
    /// A response arrived and its whole body was read.
    Complete { status: u16 },
    /// Something went wrong; `status` is set when the response head had arrived before.
    Failed { status: Option<u16>, error: String },
}

/// One HTTP endpoint and how to ask it: the part the probe and the health detector share.
#[derive(Clone)]
pub(crate) struct HttpTarget {
    /// Pooled keep-alive client: a user's browser reuses connections too, so a hung server shows
    /// up the way users meet it (requests parked on an open connection), not only as connect
    /// failures.
    client: Client<HttpConnector, Full<Bytes>>,
    pub(crate) uri: Uri,
    method: Method,
    timeout: Duration,
    /// Sent with every request: a login form, its content type.
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
}

impl HttpTarget {
    pub(crate) fn new(url: &str, method: &str, timeout: Duration) -> Result<Self, ProbeError> {
        let uri = parse_http_url(url)?;
        // Methods are case-sensitive on the wire, but nobody means the extension method "get".
        let method =
            Method::from_bytes(method.trim().to_ascii_uppercase().as_bytes()).map_err(|_| {
                ProbeError::InvalidMethod {
                    method: method.to_owned(),
                }
            })?;

        let mut connector = HttpConnector::new();
        connector.enforce_http(true);
        // Latency is what the harness measures; don't let Nagle add to it.
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            // Without a timer the pool never evicts idle connections on its own.
            .pool_timer(TokioTimer::new())
            .build(connector);
        Ok(HttpTarget {
            client,
            uri,
            method,
            timeout,
            headers: Vec::new(),
            body: Bytes::new(),
        })
    }

    /// The request every exchange sends, with these headers and this body.
    fn request(&self) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(self.body.clone()));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        let headers = request.headers_mut();
        headers.insert(USER_AGENT, HeaderValue::from_static(PROBE_USER_AGENT));
        for (name, value) in &self.headers {
            headers.insert(name.clone(), value.clone());
        }
        request
    }

    /// Sends the request and reads the whole response; connecting, the response head and the
    /// body all count against the timeout, since a hung peer can stall any of them.
    pub(crate) async fn exchange(&self) -> Exchange {
        let request = self.request();

        let mut status = None;
        let call = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|error| classify_client_error(&error))?;
            let code = response.status().as_u16();
            status = Some(code);
            // Read frame by frame and drop the data: the body must arrive in full, but there is
            // no reason to hold a large one in memory.
            let mut body = response.into_body();
            while let Some(frame) = body.frame().await {
                frame.map_err(|error| classify_error(&error, false))?;
            }
            Ok::<u16, String>(code)
        };
        let result = tokio::time::timeout(self.timeout, call).await;
        match (result, status) {
            (Ok(Ok(status)), _) => Exchange::Complete { status },
            (Ok(Err(error)), status) => Exchange::Failed { status, error },
            (Err(_elapsed), status) => Exchange::Failed {
                status,
                error: "timeout".to_owned(),
            },
        }
    }
}

impl HttpTarget {
    /// Fetches a body of at most `limit` bytes, under the timeout; a status other than 2xx is an
    /// error (the body is not read then), as is a larger body.
    pub(crate) async fn fetch(&self, limit: usize) -> Result<Vec<u8>, String> {
        self.read_answer(limit, false).await.map(|(_, body)| body)
    }

    /// Fetches the status and a body of at most `limit` bytes whatever the status, under the
    /// timeout: an API's error answer (a Prometheus 400) says in its body what went wrong.
    pub(crate) async fn fetch_answer(&self, limit: usize) -> Result<(u16, Vec<u8>), String> {
        self.read_answer(limit, true).await
    }

    async fn read_answer(&self, limit: usize, any_status: bool) -> Result<(u16, Vec<u8>), String> {
        let request = self.request();
        let call = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|error| classify_client_error(&error))?;
            let status = response.status().as_u16();
            if !any_status && !response.status().is_success() {
                return Err(format!("status {status}"));
            }
            let mut body = response.into_body();
            let mut data = Vec::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|error| classify_error(&error, false))?;
                if let Some(chunk) = frame.data_ref() {
                    if data.len() + chunk.len() > limit {
                        return Err(format!("body larger than {limit} bytes"));
                    }
                    data.extend_from_slice(chunk);
                }
            }
            Ok((status, data))
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .unwrap_or_else(|_| Err("timeout".to_owned()))
    }
}

/// Accepts `http://host[:port][/path]` only: HTTPS would need a TLS stack this crate leaves out.
fn parse_http_url(url: &str) -> Result<Uri, ProbeError> {
    let invalid = |reason: &str| ProbeError::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: Uri = url.trim().parse().map_err(|_| invalid("not a url"))?;
    if uri.scheme_str() != Some("http") {
        return Err(ProbeError::UnsupportedUrl {
            url: url.to_owned(),
        });
    }
    match uri.authority() {
        Some(authority) if !authority.host().is_empty() => Ok(uri),
        _ => Err(invalid("no host")),
    }
}

/// Checks a list of expected or healthy statuses.
pub(crate) fn check_statuses(statuses: &[u16]) -> Result<(), ProbeError> {
    if statuses.is_empty() {
        return Err(ProbeError::NoStatus);
    }
    match statuses.iter().find(|s| !(100..=599).contains(*s)) {
        Some(&status) => Err(ProbeError::InvalidStatus { status }),
        None => Ok(()),
    }
}

/// Turns a client error into a short error kind. The interesting part (refused, reset, dns) is
/// buried in the source chain, so walk it.
fn classify_client_error(error: &hyper_util::client::legacy::Error) -> String {
    classify_error(error, error.is_connect())
}

fn classify_error(error: &(dyn StdError + 'static), connecting: bool) -> String {
    let mut io_error = None;
    let mut hyper_error = None;
    let mut dns = false;
    let mut current = Some(error);
    while let Some(error) = current {
        if io_error.is_none() {
            io_error = error.downcast_ref::<io::Error>();
        }
        // The deepest hyper error is the specific one: "canceled" often wraps "connection
        // closed before message completed".
        if let Some(error) = error.downcast_ref::<hyper::Error>() {
            hyper_error = Some(error);
        }
        // hyper-util's ConnectError is private; its message is the only way to tell DNS apart.
        if connecting && error.to_string() == "dns error" {
            dns = true;
        }
        current = error.source();
    }
    if dns {
        return "connect: dns".to_owned();
    }
    if let Some(io_error) = io_error {
        return classify_io(io_error.kind(), connecting);
    }
    if let Some(hyper_error) = hyper_error {
        let what = if hyper_error.is_incomplete_message() {
            "incomplete response"
        } else if hyper_error.is_parse() {
            "bad response"
        } else if hyper_error.is_timeout() {
            return "timeout".to_owned();
        } else if hyper_error.is_canceled() {
            "canceled"
        } else if hyper_error.is_closed() {
            "connection closed"
        } else {
            "error"
        };
        return format!("http: {what}");
    }
    if connecting {
        "connect: error".to_owned()
    } else {
        "http: error".to_owned()
    }
}

/// Maps an I/O error kind to an error kind; shared with the TCP probe.
pub(crate) fn classify_io(kind: io::ErrorKind, connecting: bool) -> String {
    match kind {
        io::ErrorKind::ConnectionRefused => "refused".to_owned(),
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => "reset".to_owned(),
        io::ErrorKind::TimedOut => "timeout".to_owned(),
        io::ErrorKind::UnexpectedEof if !connecting => "http: incomplete response".to_owned(),
        kind if connecting => format!("connect: {kind}"),
        kind => format!("http: {kind}"),
    }
}

/// An HTTP SLI probe: one request, success iff the status is expected.
pub struct HttpProbe {
    target: HttpTarget,
    expect: Vec<u16>,
}

impl HttpProbe {
    /// Builds a probe for `method url`, expecting one of `expect` within `timeout`.
    ///
    /// Only `http://` URLs are accepted. No connection is made here.
    pub fn new(
        url: &str,
        method: &str,
        timeout: Duration,
        expect: Vec<u16>,
    ) -> Result<HttpProbe, ProbeError> {
        check_statuses(&expect)?;
        Ok(HttpProbe {
            target: HttpTarget::new(url, method, timeout)?,
            expect,
        })
    }

    /// Sends `headers` and `body` with every check, e.g. a login form.
    pub fn with_request(
        mut self,
        headers: &[(String, String)],
        body: &str,
    ) -> Result<HttpProbe, ProbeError> {
        for (name, value) in headers {
            let invalid = || ProbeError::InvalidHeader { name: name.clone() };
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid())?;
            let value = HeaderValue::from_str(value).map_err(|_| invalid())?;
            self.target.headers.push((name, value));
        }
        self.target.body = Bytes::from(body.to_owned());
        Ok(self)
    }
}

impl Probe for HttpProbe {
    fn check(&self) -> BoxFuture<'_, Outcome> {
        Box::pin(async move {
            match self.target.exchange().await {
                Exchange::Complete { status } if self.expect.contains(&status) => {
                    Outcome::Success {
                        status: Some(status),
                    }
                }
                Exchange::Complete { status } => Outcome::Failure {
                    status: Some(status),
                    error: format!("status {status}"),
                },
                Exchange::Failed { status, error } => Outcome::Failure { status, error },
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_http_urls() {
        assert!(parse_http_url("http://127.0.0.1:8080/health").is_ok());
        assert!(parse_http_url("http://localhost").is_ok());
        let error = parse_http_url("https://x").unwrap_err();
        assert_eq!(
            error.to_string(),
            r#"unsupported url "https://x": expected http://"#
        );
        assert!(matches!(
            parse_http_url("localhost:80"),
            Err(ProbeError::UnsupportedUrl { .. })
        ));
        assert!(matches!(
            parse_http_url("http://"),
            Err(ProbeError::InvalidUrl { .. })
        ));
        assert!(matches!(
            parse_http_url("not a url"),
            Err(ProbeError::InvalidUrl { .. })
        ));
    }

    #[test]
    fn validates_method_and_statuses() {
        let timeout = Duration::from_secs(1);
        assert!(HttpProbe::new("http://127.0.0.1:1/", "get", timeout, vec![200]).is_ok());
        assert!(matches!(
            HttpProbe::new("http://127.0.0.1:1/", "GE T", timeout, vec![200]),
            Err(ProbeError::InvalidMethod { .. })
        ));
        assert!(matches!(
            HttpProbe::new("http://127.0.0.1:1/", "", timeout, vec![200]),
            Err(ProbeError::InvalidMethod { .. })
        ));
        assert!(matches!(
            HttpProbe::new("http://127.0.0.1:1/", "GET", timeout, vec![]),
            Err(ProbeError::NoStatus)
        ));
        assert!(matches!(
            HttpProbe::new("http://127.0.0.1:1/", "GET", timeout, vec![200, 700]),
            Err(ProbeError::InvalidStatus { status: 700 })
        ));
    }

    #[test]
    fn io_kinds_are_short() {
        assert_eq!(
            classify_io(io::ErrorKind::ConnectionRefused, true),
            "refused"
        );
        assert_eq!(classify_io(io::ErrorKind::ConnectionReset, false), "reset");
        assert_eq!(
            classify_io(io::ErrorKind::AddrNotAvailable, true),
            "connect: address not available"
        );
    }
}
