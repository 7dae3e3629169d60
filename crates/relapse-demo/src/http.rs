//! Small HTTP plumbing shared by the backend and the frontend servers.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Every response body the demo servers produce is fully buffered.
pub(crate) type Body = Full<Bytes>;

pub(crate) const TEXT_PLAIN: &str = "text/plain; charset=utf-8";
pub(crate) const TEXT_HTML: &str = "text/html; charset=utf-8";
pub(crate) const APPLICATION_JSON: &str = "application/json";
pub(crate) const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Builds a response with an explicit `content-length`, so that clients (and
/// the harness's probes) never have to rely on connection close or chunking
/// to find the end of a body.
pub(crate) fn response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let body = body.into();
    let mut response = Response::new(Full::new(body.clone()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    response
}

/// The address of the client a request came from; [`serve`] puts it in every request's
/// extensions, so handlers that care (the login limiter) can read it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub(crate) SocketAddr);

pub(crate) fn not_found() -> Response<Body> {
    response(StatusCode::NOT_FOUND, TEXT_PLAIN, "not found\n")
}

/// Accepts connections until `shutdown` resolves, serving each one as
/// HTTP/1.1 on its own task so that one slow client cannot hold up others.
pub(crate) async fn serve<H, Fut>(listener: TcpListener, handler: H, shutdown: impl Future)
where
    H: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Typically EMFILE: back off briefly instead of spinning
                    // on an error that accept() will keep returning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Latency is what the harness measures; don't let Nagle add to it.
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        tokio::spawn(async move {
            let service = service_fn(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(Peer(peer));
                let handler = handler.clone();
                async move { Ok::<_, Infallible>(handler(request).await) }
            });
            if let Err(error) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
}
