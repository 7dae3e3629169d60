//! The frontend: the customer-facing webmail server. It has no state of its
//! own and asks the backend on every request, which is exactly why a frozen
//! backend turns into user-visible failures.
//!
//! With a standby it health-checks both backends and sends each request to the one that is
//! active when the request is sent ([`crate::failover`]); with background jobs, every inbox
//! request also queues work for the backend ([`crate::jobs`]).

use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::auth::{self, Auth, Verdict};
use crate::backend::Mailbox;
use crate::database::{Database, DbFailure};
use crate::failover::Upstream;
use crate::http::{self, Body, Peer};
use crate::jobs::Jobs;

/// Everything a request handler needs; shared by all connections.
pub(crate) struct Frontend {
    client: Client<HttpConnector, Empty<Bytes>>,
    /// Open a new upstream connection per request and let go of it only `LINGER` later.
    fresh_upstream: bool,
    /// The backends, and which one requests go to.
    upstream: Arc<Upstream>,
    upstream_timeout: Duration,
    /// The PostgreSQL side (`/mail`, `/send`, `/metrics`), if configured.
    database: Option<Arc<Database>>,
    /// The login service (`/login`, and the per-source limiter on every route), if configured.
    auth: Option<Arc<Auth>>,
    /// Offer `/health/deep`: the backend's deep check (a write to its mail store).
    deep_health: bool,
    /// The background jobs each inbox request queues, if configured.
    jobs: Option<Arc<Jobs>>,
}

/// The largest message `POST /send` accepts.
const MAX_MESSAGE: usize = 64 * 1024;

/// The largest login form `POST /login` accepts.
const MAX_LOGIN_FORM: usize = 4 * 1024;

/// How long a fresh upstream connection is kept after its request is done. The service in the
/// iPaper incident did not complete its internal requests promptly; holding each connection a
/// while makes this frontend need many ephemeral ports at once, so that when few are left, some
/// requests get one and some do not.
const LINGER: Duration = Duration::from_millis(500);

/// Why a call to the backend did not produce a usable body.
enum UpstreamFailure {
    Timeout(Duration),
    Status(StatusCode),
    Transport(String),
}

impl fmt::Display for UpstreamFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout(after) => write!(
                f,
                "backend did not answer within {}",
                humantime::format_duration(*after)
            ),
            Self::Status(status) => write!(f, "backend answered {status}"),
            Self::Transport(reason) => write!(f, "backend unreachable: {reason}"),
        }
    }
}

impl Frontend {
    pub(crate) fn new(
        upstream: Arc<Upstream>,
        upstream_timeout: Duration,
        fresh_upstream: bool,
        database: Option<Arc<Database>>,
        auth: Option<Arc<Auth>>,
        deep_health: bool,
        jobs: Option<Arc<Jobs>>,
    ) -> Arc<Self> {
        // A pooled keep-alive client mirrors a real app server's upstream
        // connections, including requests parked on a frozen peer. With
        // `fresh_upstream` every request opens (and then closes) its own
        // connection, taking an ephemeral port each time, as the service in
        // the iPaper incident did.
        let client = Client::builder(TokioExecutor::new()).build_http();
        Arc::new(Self {
            client,
            fresh_upstream,
            upstream,
            upstream_timeout,
            database,
            auth,
            deep_health,
            jobs,
        })
    }

    /// Sends the job at the head of the queue to the active backend; its body is of no
    /// interest, only that it was done in time.
    pub(crate) async fn run_job(&self, path: &str) -> Result<(), String> {
        self.call(Method::POST, path)
            .await
            .map(drop)
            .map_err(|failure| failure.to_string())
    }

    pub(crate) async fn handle(self: Arc<Self>, request: Request<Incoming>) -> Response<Body> {
        let peer = request.extensions().get::<Peer>().map(|peer| peer.0.ip());
        if let (Some(auth), Some(peer)) = (&self.auth, peer) {
            // A banned source gets nothing but this, on every route, and costs no hash: the
            // point of the ban is that the flood stops reaching the expensive part.
            if let Some(left) = auth.banned(peer) {
                auth.counters
                    .blocked_requests
                    .fetch_add(1, Ordering::Relaxed);
                if request.uri().path() == "/login" {
                    auth.counters.blocked.fetch_add(1, Ordering::Relaxed);
                }
                return blocked(left);
            }
        }
        let database = self.database.as_deref();
        let auth = self.auth.as_ref();
        match (request.method(), request.uri().path(), database, auth) {
            (&Method::GET, "/", _, _) => {
                // Queued on arrival, whatever the inbox's own outcome: the user's action was
                // accepted, and its background work waits in the queue even while the backend
                // cannot serve the page (that is how FLG's workflows backed up).
                if let Some(jobs) = &self.jobs {
                    jobs.enqueue();
                }
                self.inbox().await
            }
            (&Method::GET, "/health", _, _) => self.health("/health").await,
            (&Method::GET, "/health/deep", _, _) if self.deep_health => {
                self.health("/health/deep").await
            }
            (&Method::GET, "/mail", Some(database), _) => mail(database).await,
            (&Method::POST, "/send", Some(database), _) => send(database, request).await,
            (&Method::POST, "/login", _, Some(auth)) => match peer {
                Some(peer) => login(auth, peer, request).await,
                None => http::response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    http::TEXT_PLAIN,
                    "no peer address for the request\n",
                ),
            },
            (&Method::GET, "/metrics", _, _) => self.metrics().await,
            _ => http::not_found(),
        }
    }

    /// `GET /metrics` in the Prometheus text format: the login counters when there is a login,
    /// the queue gauges when there is a database, the backends' state when there is a standby,
    /// the background jobs' queue when there are jobs.
    async fn metrics(&self) -> Response<Body> {
        let mut body = String::new();
        if let Some(auth) = &self.auth {
            body.push_str(&login_metrics(auth));
        }
        if let Some(database) = &self.database {
            body.push_str(&queue_metrics(database).await);
        }
        body.push_str(&self.upstream.metrics());
        if let Some(jobs) = &self.jobs {
            body.push_str(&jobs.metrics());
        }
        http::response(StatusCode::OK, http::PROMETHEUS_TEXT, body)
    }

    async fn inbox(&self) -> Response<Body> {
        let body = match self.call(Method::GET, "/mailbox").await {
            Ok(body) => body,
            Err(failure) => {
                let status = match failure {
                    UpstreamFailure::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
                    _ => StatusCode::BAD_GATEWAY,
                };
                return http::response(status, http::TEXT_PLAIN, format!("{failure}\n"));
            }
        };
        match serde_json::from_slice::<Mailbox>(&body) {
            Ok(mailbox) => http::response(StatusCode::OK, http::TEXT_HTML, render(&mailbox)),
            Err(error) => http::response(
                StatusCode::BAD_GATEWAY,
                http::TEXT_PLAIN,
                format!("backend sent an unreadable mailbox: {error}\n"),
            ),
        }
    }

    /// `/health` (the backend's shallow `/health`) or `/health/deep` (the backend's deep check,
    /// which writes to its mail store), each then with the database's ping.
    async fn health(&self, backend_path: &str) -> Response<Body> {
        // The frontend is only as healthy as its backend: this is the check
        // the external monitor relies on to notice the frozen database.
        if let Err(failure) = self.call(Method::GET, backend_path).await {
            return http::response(
                StatusCode::SERVICE_UNAVAILABLE,
                http::TEXT_PLAIN,
                format!("{failure}\n"),
            );
        }
        // And so is it only as healthy as its database, when it has one. The
        // health check is for operators: always honest.
        if let Some(database) = &self.database {
            if let Err(failure) = database.ping().await {
                return http::response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    http::TEXT_PLAIN,
                    format!("{failure}\n"),
                );
            }
        }
        http::response(StatusCode::OK, http::TEXT_PLAIN, "ok")
    }

    /// Sends `method path` (no body) to the backend active now and returns the body of its 200;
    /// the timeout covers connecting, the response head and the whole body, since a frozen
    /// peer can stall any of them.
    async fn call(&self, method: Method, path: &str) -> Result<Bytes, UpstreamFailure> {
        let uri: Uri = format!("{}{path}", self.upstream.active_url())
            .parse()
            .map_err(|error| UpstreamFailure::Transport(format!("bad backend url: {error}")))?;
        let call = async {
            let response = if self.fresh_upstream {
                fresh_request(method, &uri).await?
            } else {
                let request = Request::builder()
                    .method(method)
                    .uri(uri)
                    .body(Empty::<Bytes>::new())
                    .map_err(|error| UpstreamFailure::Transport(error.to_string()))?;
                self.client
                    .request(request)
                    .await
                    .map_err(|error| UpstreamFailure::Transport(error.to_string()))?
            };
            if response.status() != StatusCode::OK {
                return Err(UpstreamFailure::Status(response.status()));
            }
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|error| UpstreamFailure::Transport(error.to_string()))?;
            Ok(body.to_bytes())
        };
        tokio::time::timeout(self.upstream_timeout, call)
            .await
            .unwrap_or(Err(UpstreamFailure::Timeout(self.upstream_timeout)))
    }
}

/// `GET /mail`: the latest delivered messages, one `ID<TAB>BODY` line each, newest first.
async fn mail(database: &Database) -> Response<Body> {
    match database.list_mail().await {
        Ok(messages) => {
            let mut body = String::new();
            for (id, text) in messages {
                // One line per message, whatever the message contains.
                let text = text.replace(['\n', '\r'], " ");
                body.push_str(&format!("{id}\t{text}\n"));
            }
            http::response(StatusCode::OK, http::TEXT_PLAIN, body)
        }
        Err(failure) => outage(database, &failure),
    }
}

/// The whole body of `request`, at most `limit` bytes; otherwise the 400 that says why.
async fn read_body(
    request: Request<Incoming>,
    limit: usize,
    what: &str,
) -> Result<bytes::Bytes, Response<Body>> {
    match Limited::new(request.into_body(), limit).collect().await {
        Ok(body) => Ok(body.to_bytes()),
        Err(error) => Err(http::response(
            StatusCode::BAD_REQUEST,
            http::TEXT_PLAIN,
            format!("unreadable {what}: {error}\n"),
        )),
    }
}

/// `POST /send`: queues the body as a message; 202, delivered later.
async fn send(database: &Database, request: Request<Incoming>) -> Response<Body> {
    let body = match read_body(request, MAX_MESSAGE, "message").await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return http::response(
            StatusCode::BAD_REQUEST,
            http::TEXT_PLAIN,
            "the message is not UTF-8\n",
        );
    };
    match database.enqueue(text).await {
        Ok(()) => http::response(StatusCode::ACCEPTED, http::TEXT_PLAIN, "queued\n"),
        Err(failure) => outage(database, &failure),
    }
}

/// `POST /login`: checks a `user=NAME&password=PW` form.
async fn login(auth: &Arc<Auth>, peer: IpAddr, request: Request<Incoming>) -> Response<Body> {
    let content_type = request
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .map(|value| value.to_str().unwrap_or("").to_owned());
    if let Some(content_type) = content_type {
        let essence = content_type.split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            return http::response(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                http::TEXT_PLAIN,
                "the login form must be application/x-www-form-urlencoded\n",
            );
        }
    }
    let body = match read_body(request, MAX_LOGIN_FORM, "login form").await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let credentials = match auth::parse_form(&body) {
        Ok(credentials) => credentials,
        Err(reason) => {
            return http::response(
                StatusCode::BAD_REQUEST,
                http::TEXT_PLAIN,
                format!("bad login form: {reason}\n"),
            )
        }
    };
    match auth
        .login(peer, &credentials.user, &credentials.password)
        .await
    {
        Verdict::Welcome => http::response(StatusCode::OK, http::TEXT_PLAIN, "welcome\n"),
        Verdict::Invalid => http::response(
            StatusCode::UNAUTHORIZED,
            http::TEXT_PLAIN,
            "invalid credentials\n",
        ),
        Verdict::Overloaded => {
            // What OpenSRS's webmail users got: the authentication service cannot keep up.
            let mut response = http::response(
                StatusCode::SERVICE_UNAVAILABLE,
                http::TEXT_PLAIN,
                "the authentication service is overloaded\n",
            );
            response.headers_mut().insert(
                hyper::header::RETRY_AFTER,
                hyper::header::HeaderValue::from_static("1"),
            );
            response
        }
    }
}

/// The answer to a banned source: 429 with the rest of the ban, in whole seconds rounded up, as
/// Retry-After.
fn blocked(left: Duration) -> Response<Body> {
    let mut response = http::response(StatusCode::TOO_MANY_REQUESTS, http::TEXT_PLAIN, "blocked\n");
    let seconds = left.as_secs() + u64::from(left.subsec_nanos() > 0);
    response.headers_mut().insert(
        hyper::header::RETRY_AFTER,
        hyper::header::HeaderValue::from(seconds),
    );
    response
}

fn login_metrics(auth: &Auth) -> String {
    let counters = &auth.counters;
    let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
    format!(
        "# HELP relapse_demo_logins_total Login attempts by outcome.\n\
         # TYPE relapse_demo_logins_total counter\n\
         relapse_demo_logins_total{{result=\"ok\"}} {}\n\
         relapse_demo_logins_total{{result=\"invalid\"}} {}\n\
         relapse_demo_logins_total{{result=\"blocked\"}} {}\n\
         relapse_demo_logins_total{{result=\"overloaded\"}} {}\n\
         # HELP relapse_demo_blocked_requests_total Requests on any route refused because their source is banned.\n\
         # TYPE relapse_demo_blocked_requests_total counter\n\
         relapse_demo_blocked_requests_total {}\n\
         # HELP relapse_demo_login_hashes_total Password hashes computed.\n\
         # TYPE relapse_demo_login_hashes_total counter\n\
         relapse_demo_login_hashes_total {}\n\
         # HELP relapse_demo_blocked_sources Source addresses banned right now.\n\
         # TYPE relapse_demo_blocked_sources gauge\n\
         relapse_demo_blocked_sources {}\n",
        load(&counters.ok),
        load(&counters.invalid),
        load(&counters.blocked),
        load(&counters.overloaded),
        load(&counters.blocked_requests),
        load(&counters.hashes),
        auth.blocked_sources(),
    )
}

/// The queue depth in the Prometheus text format.
async fn queue_metrics(database: &Database) -> String {
    let (depth, stale) = database.queue_depth().await;
    format!(
        "# HELP relapse_demo_queue_depth Messages queued and not yet delivered.\n\
         # TYPE relapse_demo_queue_depth gauge\n\
         relapse_demo_queue_depth {depth}\n\
         # HELP relapse_demo_queue_depth_stale 1 if the database did not answer and the depth is the last known one.\n\
         # TYPE relapse_demo_queue_depth_stale gauge\n\
         relapse_demo_queue_depth_stale {}\n",
        u8::from(stale)
    )
}

/// The answer to a request whose database statement failed or timed out, by error profile.
fn outage(database: &Database, failure: &DbFailure) -> Response<Body> {
    tracing::debug!(%failure, "database outage");
    if database.misleading_errors {
        // What Kolab's users saw: a login error and a maintenance story.
        http::response(
            StatusCode::UNAUTHORIZED,
            http::TEXT_PLAIN,
            "Unauthorized: the service is down for planned maintenance\n",
        )
    } else {
        let mut response = http::response(
            StatusCode::SERVICE_UNAVAILABLE,
            http::TEXT_PLAIN,
            format!("the database is unavailable: {failure}\n"),
        );
        response.headers_mut().insert(
            hyper::header::RETRY_AFTER,
            hyper::header::HeaderValue::from_static("5"),
        );
        response
    }
}

/// One request on a connection of its own, kept open (idle) for `LINGER` after the answer and
/// then reset, so that it holds its ephemeral port that long but leaves no TIME_WAIT behind.
async fn fresh_request(method: Method, uri: &Uri) -> Result<Response<Incoming>, UpstreamFailure> {
    let transport = |error: &dyn fmt::Display| UpstreamFailure::Transport(error.to_string());
    let authority = uri
        .authority()
        .ok_or_else(|| transport(&"backend url without host"))?
        .clone();
    let stream = tokio::net::TcpStream::connect(authority.as_str())
        .await
        .map_err(|e| transport(&e))?;
    // Closing with a zero linger resets the connection: the port is free at once afterwards.
    stream.set_zero_linger().map_err(|e| transport(&e))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| transport(&e))?;
    let connection = tokio::spawn(connection);
    let target = uri.path_and_query().map_or("/", |target| target.as_str());
    let request = Request::builder()
        .method(method)
        .uri(target)
        .header(hyper::header::HOST, authority.as_str())
        .body(Empty::<Bytes>::new())
        .map_err(|e| transport(&e))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| transport(&e))?;
    // After the linger the connection task is aborted, not shut down: a graceful shutdown would
    // exchange FINs and leave the port in TIME_WAIT; dropping the socket with a zero linger
    // resets it instead.
    tokio::spawn(async move {
        tokio::time::sleep(LINGER).await;
        connection.abort();
        drop(sender);
    });
    Ok(response)
}

/// Renders the inbox page.
fn render(mailbox: &Mailbox) -> String {
    let mut page = String::from(
        "<!doctype html>\n<html><head><title>Inbox</title></head><body>\n<h1>Inbox</h1>\n<ul>\n",
    );
    for message in &mailbox.messages {
        page.push_str(&format!(
            "<li><b>{}</b> &mdash; {}</li>\n",
            escape(&message.from),
            escape(&message.subject)
        ));
    }
    page.push_str("</ul>\n</body></html>\n");
    page
}

/// Minimal HTML escaping: the mailbox content comes from another process and
/// must not be able to inject markup.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Message;

    #[test]
    fn render_escapes_message_fields() {
        let mailbox = Mailbox {
            messages: vec![Message {
                id: 1,
                from: "a&b@example.com".into(),
                subject: "<script>".into(),
                file: None,
            }],
        };
        let page = render(&mailbox);
        assert!(page.contains("a&amp;b@example.com"));
        assert!(page.contains("&lt;script&gt;"));
        assert!(!page.contains("<script>"));
    }
}
