//! The coordinator's end: one HTTP/2 connection over TLS to an agent, its calls, the lease's
//! renewals and the clock offset.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

use crate::clock::{self, now_ns, ClockError, Exchange, Offset};
use crate::wire::{
    path, Applied, ApplyRequest, CheckRequest, Checked, CleanupAnswer, CleanupRequest, ClockAnswer,
    GoRequest, Holdings, LeaseAnswer, LeaseRequest, ProbeOpened, ProbeRequest, Problem,
    RevertAnswer, RevertRequest, RunId,
};

/// The longest one call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a call to an agent failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}: expected https://HOST:PORT")]
    Url(String),
    #[error("cannot connect to {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("{url}{path}: {reason}")]
    Call {
        url: String,
        path: &'static str,
        reason: String,
    },
    /// The agent answered, and refused (its message is the reason).
    #[error("{url} refused {path} ({status}): {error}")]
    Refused {
        url: String,
        path: &'static str,
        status: StatusCode,
        error: String,
    },
    #[error("{0}")]
    Clock(#[from] ClockError),
}

/// A connection to one agent.
#[derive(Clone)]
pub struct AgentClient {
    url: String,
    token: String,
    sender: SendRequest<Full<Bytes>>,
}

impl std::fmt::Debug for AgentClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentClient")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl AgentClient {
    /// Connects to `url` (`https://HOST:PORT`), trusting only `tls`'s CA; `token` goes with
    /// every call.
    pub async fn connect(
        url: &str,
        tls: Arc<rustls::ClientConfig>,
        token: &str,
    ) -> Result<AgentClient, AgentError> {
        let authority = url
            .strip_prefix("https://")
            .map(|rest| rest.trim_end_matches('/'))
            .filter(|a| !a.is_empty() && !a.contains('/'))
            .ok_or_else(|| AgentError::Url(url.to_string()))?;
        let (host, _port) = authority
            .rsplit_once(':')
            .ok_or_else(|| AgentError::Url(url.to_string()))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name =
            ServerName::try_from(host.to_string()).map_err(|_| AgentError::Url(url.to_string()))?;
        let connect_error = |reason: String| AgentError::Connect {
            url: url.to_string(),
            reason,
        };
        let tcp = tokio::time::timeout(CALL_TIMEOUT, TcpStream::connect(authority))
            .await
            .map_err(|_| connect_error("no connection within 10s".into()))?
            .map_err(|e| connect_error(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let tls = tokio::time::timeout(CALL_TIMEOUT, TlsConnector::from(tls).connect(name, tcp))
            .await
            .map_err(|_| connect_error("no TLS handshake within 10s".into()))?
            .map_err(|e| connect_error(format!("TLS: {e}")))?;
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .map_err(|e| connect_error(format!("HTTP/2: {e}")))?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "agent connection ended");
            }
        });
        Ok(AgentClient {
            url: url.to_string(),
            token: token.to_string(),
            sender,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    async fn call<Q: Serialize, A: DeserializeOwned>(
        &self,
        path: &'static str,
        body: &Q,
    ) -> Result<A, AgentError> {
        self.call_within(path, body, CALL_TIMEOUT).await
    }

    async fn call_within<Q: Serialize, A: DeserializeOwned>(
        &self,
        path: &'static str,
        body: &Q,
        within: Duration,
    ) -> Result<A, AgentError> {
        let failed = |reason: String| AgentError::Call {
            url: self.url.clone(),
            path,
            reason,
        };
        let body = serde_json::to_vec(body).map_err(|e| failed(e.to_string()))?;
        let request = Request::post(path)
            .header(
                hyper::header::AUTHORIZATION,
                format!("Bearer {}", self.token),
            )
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| failed(e.to_string()))?;
        let mut sender = self.sender.clone();
        let exchange = async {
            sender.ready().await?;
            let response = sender.send_request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, body))
        };
        let (status, body) = tokio::time::timeout(within, exchange)
            .await
            .map_err(|_| failed(format!("no answer within {within:?}")))?
            .map_err(|e| failed(e.to_string()))?;
        if !status.is_success() {
            let error = serde_json::from_slice::<Problem>(&body)
                .map(|p| p.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
            return Err(AgentError::Refused {
                url: self.url.clone(),
                path,
                status,
                error,
            });
        }
        serde_json::from_slice(&body).map_err(|e| failed(format!("answer: {e}")))
    }

    /// One clock exchange.
    pub async fn exchange(&self) -> Result<Exchange, AgentError> {
        let sent = now_ns();
        let answer: ClockAnswer = self.call(path::CLOCK, &serde_json::json!({})).await?;
        let back = now_ns();
        Ok(Exchange {
            sent,
            received: answer.received_ns,
            answered: answer.answered_ns,
            back,
        })
    }

    /// The agent's clock offset from `rounds` exchanges, the quickest one's.
    pub async fn offset(&self, rounds: usize) -> Result<Offset, AgentError> {
        let mut exchanges = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            exchanges.push(self.exchange().await?);
        }
        Ok(clock::estimate(&exchanges)?)
    }

    /// Takes (or renews) the lease; returns its end on the agent's clock.
    pub async fn lease(
        &self,
        id: &RunId,
        lease: Duration,
        renew_every: Duration,
    ) -> Result<i128, AgentError> {
        let answer: LeaseAnswer = self
            .call(
                path::LEASE,
                &LeaseRequest {
                    id: id.clone(),
                    lease_ms: lease.as_millis() as u64,
                    renew_every_ms: renew_every.as_millis() as u64,
                },
            )
            .await?;
        Ok(answer.expires_ns)
    }

    /// Renews the lease every `every` until `stop`, from a lease taken at `taken` (the instant
    /// its call was sent). A renewal that fails is logged (the first of a streak as a warning)
    /// and tried again at the next tick. The lease is lost when the agent says the run has
    /// ended, or when no renewal was accepted for a whole lease (the agent has let it lapse
    /// by then, or is about to, and reverts the run's faults on its own: that is the point of
    /// it): the task then sends why on `lost` and ends, since a run is not resumed. It ends with
    /// the instant the last accepted renewal was sent.
    pub fn keep_lease(
        &self,
        id: RunId,
        lease: Duration,
        every: Duration,
        taken: Instant,
        stop: CancellationToken,
        lost: mpsc::UnboundedSender<String>,
    ) -> tokio::task::JoinHandle<Option<Instant>> {
        let client = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last = None;
            let mut failing = false;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return last,
                    _ = ticks.tick() => {
                        let sent = Instant::now();
                        let lapses = last.unwrap_or(taken) + lease;
                        let renewal = tokio::select! {
                            _ = stop.cancelled() => return last,
                            answer = tokio::time::timeout_at(lapses, client.lease(&id, lease, every)) => answer,
                        };
                        let why = match renewal {
                            Ok(Ok(_)) => {
                                last = Some(sent);
                                failing = false;
                                continue;
                            }
                            Ok(Err(AgentError::Refused { status, error, .. }))
                                if status == StatusCode::CONFLICT =>
                            {
                                format!("agent {} ended the run: {error}", client.url)
                            }
                            Ok(Err(error)) if Instant::now() < lapses => {
                                if failing {
                                    tracing::debug!(agent = %client.url, %error, "lease renewal failed again");
                                } else {
                                    tracing::warn!(agent = %client.url, %error, "lease renewal failed; trying again");
                                }
                                failing = true;
                                continue;
                            }
                            Ok(Err(_)) | Err(_) => format!(
                                "no lease renewal reached agent {} for {lease:?}: the lease lapsed there, and the agent reverts the run's faults itself",
                                client.url
                            ),
                        };
                        tracing::error!(agent = %client.url, "lease lost: {why}");
                        let _ = lost.send(why);
                        return last;
                    }
                }
            }
        })
    }

    pub async fn apply(&self, request: &ApplyRequest) -> Result<Applied, AgentError> {
        self.call(path::APPLY, request).await
    }

    /// Injects a fault applied with `prepare`, at `at_ns` on the agent's clock.
    pub async fn go(&self, id: &RunId, fault: u64, at_ns: i128) -> Result<Applied, AgentError> {
        self.call(
            path::GO,
            &GoRequest {
                id: id.clone(),
                fault,
                at_ns,
            },
        )
        .await
    }

    pub async fn revert(&self, id: &RunId, fault: u64) -> Result<RevertAnswer, AgentError> {
        self.call(
            path::REVERT,
            &RevertRequest {
                id: id.clone(),
                fault,
            },
        )
        .await
    }

    /// Ends the run on the agent: what it still holds is reverted, and the lease freed.
    pub async fn release(&self, id: &RunId) -> Result<(), AgentError> {
        let _: serde_json::Value = self.call(path::RELEASE, id).await?;
        Ok(())
    }

    /// Reverts what the agent still holds for runs that ended; with `force`, the current run's
    /// faults too (and its lease ends).
    pub async fn cleanup(&self, force: bool) -> Result<CleanupAnswer, AgentError> {
        self.call(path::CLEANUP, &CleanupRequest { force }).await
    }

    /// Opens a probe on the agent; returns its handle.
    pub async fn open_probe(&self, request: &ProbeRequest) -> Result<u64, AgentError> {
        let opened: ProbeOpened = self.call(path::PROBE, request).await?;
        Ok(opened.probe)
    }

    /// One check of an opened probe; `within` bounds the whole call (the probe's own timeout
    /// and the way there and back).
    pub async fn check_probe(
        &self,
        id: &RunId,
        probe: u64,
        within: Duration,
    ) -> Result<Checked, AgentError> {
        self.call_within(
            path::CHECK,
            &CheckRequest {
                id: id.clone(),
                probe,
            },
            within,
        )
        .await
    }

    pub async fn held(&self) -> Result<Holdings, AgentError> {
        self.call(path::HELD, &serde_json::json!({})).await
    }
}
