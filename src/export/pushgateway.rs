//! `--pushgateway URL`: each scenario's runs go to a Prometheus Pushgateway as one group,
//! `PUT {URL}/metrics/job/relapse/scenario/<name>`, in the text format of [`super::prometheus`].
//!
//! One group per scenario, not per run: a PUT replaces its group whole, so each `relapse run`
//! replaces everything the last one pushed for the scenario. A group per run would leave runs 2
//! and 3 of an earlier `--repeat 3` on the Pushgateway, which never forgets a group, looking as
//! current as the one run pushed since. The runs of one push are told apart by their `run` label.
//!
//! The URL is held to the rule every target of relapse is: loopback unless `--allow-target` names
//! its host. Each PUT is bounded by [`PUSH_TIMEOUT`], so a Pushgateway that does not answer
//! delays the exit by seconds, not for ever.

use std::error::Error as StdError;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, CONTENT_TYPE, USER_AGENT};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use relapse_core::report::RunReport;
use relapse_core::scenario::target;

use super::prometheus;

/// How long one PUT may take, connecting and reading the answer included.
pub const PUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// How much of an error response's body a failure quotes.
const BODY_EXCERPT: usize = 300;

const PUSH_USER_AGENT: &str = concat!("relapse/", env!("CARGO_PKG_VERSION"));

/// A Pushgateway relapse may push to: an `http://` URL whose host is loopback or allowed.
pub struct Pushgateway {
    /// The URL as given, without a trailing `/`: group paths are appended to it.
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// One scenario's group that did not get pushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushFailure {
    pub scenario: String,
    pub url: String,
    /// What went wrong: the transport error, or the status and the start of the body.
    pub problem: String,
}

impl std::fmt::Display for PushFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "--pushgateway: the metrics of scenario \"{}\" were not pushed: PUT {}: {}",
            self.scenario.escape_debug(),
            self.url,
            self.problem
        )
    }
}

impl Pushgateway {
    /// Checks `url` (`http://host[:port][/prefix]`) against the allowlist; the error says why
    /// it is refused and, for a host that is not loopback, how to allow it.
    pub fn new(url: &str, allowed: &[String]) -> Result<Pushgateway, String> {
        let base = url.trim().trim_end_matches('/');
        let refuse = |why: &str| format!("--pushgateway {url}: {why}");
        let uri: Uri = base.parse().map_err(|_| refuse("not a URL"))?;
        if uri.scheme_str() != Some("http") {
            return Err(refuse(
                "only http:// URLs are supported (relapse has no TLS client)",
            ));
        }
        if uri.query().is_some() {
            return Err(refuse(
                "a query has no place in it: the group's path is appended to the URL",
            ));
        }
        let host = target::http_host(base).ok_or_else(|| refuse("no host in it"))?;
        if crate::reach::reachable_url(base, allowed).is_err() {
            return Err(refuse(&format!(
                "\"{host}\" is not loopback: relapse reaches only 127.0.0.0/8, ::1 and localhost unless told otherwise; name it with --allow-target {host}"
            )));
        }
        let mut connector = HttpConnector::new();
        connector.enforce_http(true);
        Ok(Pushgateway {
            base: base.to_string(),
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// Where a scenario's group lives: `{URL}/metrics/job/relapse/scenario/<name>`, the name
    /// base64url-encoded (`scenario@base64/…`) unless it is plain enough for a path segment.
    pub fn group_url(&self, scenario: &str) -> String {
        let plain = !scenario.is_empty()
            && scenario != "."
            && scenario != ".."
            && scenario
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'));
        if plain {
            format!("{}/metrics/job/relapse/scenario/{scenario}", self.base)
        } else if scenario.is_empty() {
            // The Pushgateway's spelling of an empty value: an empty segment would be dropped.
            format!("{}/metrics/job/relapse/scenario@base64/=", self.base)
        } else {
            let encoded = base64::engine::general_purpose::URL_SAFE.encode(scenario);
            format!(
                "{}/metrics/job/relapse/scenario@base64/{encoded}",
                self.base
            )
        }
    }

    /// Pushes every scenario's runs, one PUT per scenario, each tried whatever became of the
    /// others; the groups that were not pushed, and why.
    pub async fn push(&self, reports: &[RunReport]) -> Vec<PushFailure> {
        let mut failures = Vec::new();
        for (scenario, runs) in super::by_scenario(reports) {
            let url = self.group_url(scenario);
            if let Err(problem) = self.put(&url, prometheus::exposition(&runs)).await {
                failures.push(PushFailure {
                    scenario: scenario.to_string(),
                    url,
                    problem,
                });
            }
        }
        failures
    }

    async fn put(&self, url: &str, body: String) -> Result<(), String> {
        let mut request = Request::new(Full::new(Bytes::from(body)));
        *request.method_mut() = Method::PUT;
        *request.uri_mut() = url.parse().map_err(|_| "not a URL".to_string())?;
        let headers = request.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static(prometheus::CONTENT_TYPE),
        );
        headers.insert(USER_AGENT, HeaderValue::from_static(PUSH_USER_AGENT));
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| error_chain(&e))?;
            let status = response.status();
            if status.is_success() {
                return Ok(());
            }
            let excerpt = body_excerpt(response.into_body()).await;
            Err(if excerpt.is_empty() {
                format!("status {status}")
            } else {
                format!("status {status}: {excerpt}")
            })
        };
        tokio::time::timeout(PUSH_TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {}s", PUSH_TIMEOUT.as_secs_f64())))
    }
}

/// The start of a response body on one line, for an error message.
async fn body_excerpt(mut body: hyper::body::Incoming) -> String {
    let mut data = Vec::new();
    while data.len() <= BODY_EXCERPT {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(chunk) = frame.data_ref() {
                    data.extend_from_slice(chunk);
                }
            }
            Some(Err(_)) | None => break,
        }
    }
    let text = String::from_utf8_lossy(&data);
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match text.char_indices().nth(BODY_EXCERPT) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// An error and its sources, outermost first: hyper's own message ("client error (Connect)")
/// says little without the I/O error under it ("Connection refused").
fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway(url: &str) -> Pushgateway {
        Pushgateway::new(url, &[]).unwrap()
    }

    #[test]
    fn a_plain_name_goes_in_the_path_as_it_is_and_any_other_in_base64url() {
        let g = gateway("http://127.0.0.1:9091/");
        assert_eq!(
            g.group_url("flg-healthcheck-hang"),
            "http://127.0.0.1:9091/metrics/job/relapse/scenario/flg-healthcheck-hang"
        );
        // base64url, not base64: the latter's `/` (here `YS9iID4+Pj8/Pw==`) would split the path.
        assert_eq!(
            g.group_url("a/b >>>???"),
            "http://127.0.0.1:9091/metrics/job/relapse/scenario@base64/YS9iID4-Pj8_Pw=="
        );
        assert_eq!(
            g.group_url(".."),
            "http://127.0.0.1:9091/metrics/job/relapse/scenario@base64/Li4="
        );
        assert_eq!(
            g.group_url(""),
            "http://127.0.0.1:9091/metrics/job/relapse/scenario@base64/="
        );
        let prefixed = gateway("http://localhost/pushgateway");
        assert_eq!(
            prefixed.group_url("x"),
            "http://localhost/pushgateway/metrics/job/relapse/scenario/x"
        );
    }

    #[test]
    fn a_host_off_loopback_needs_allowing_and_only_http_is_spoken() {
        // 192.0.2.0/24 is TEST-NET-1: documentation only; nothing is sent anywhere here.
        let refused = Pushgateway::new("http://192.0.2.9:9091", &[])
            .err()
            .unwrap();
        assert_eq!(
            refused,
            "--pushgateway http://192.0.2.9:9091: \"192.0.2.9\" is not loopback: relapse reaches only 127.0.0.0/8, ::1 and localhost unless told otherwise; name it with --allow-target 192.0.2.9"
        );
        assert!(Pushgateway::new("http://192.0.2.9:9091", &["192.0.2.9".into()]).is_ok());
        assert!(Pushgateway::new("http://[::1]:9091", &[]).is_ok());
        let https = Pushgateway::new("https://127.0.0.1:9091", &[])
            .err()
            .unwrap();
        assert!(https.contains("only http://"), "{https}");
        let query = Pushgateway::new("http://127.0.0.1:9091/?x=1", &[])
            .err()
            .unwrap();
        assert!(query.contains("query"), "{query}");
        assert!(Pushgateway::new("not a url", &[]).is_err());
    }
}
