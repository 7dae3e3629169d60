//! The agent's server: TLS, then HTTP/2, then a token, then the lease, then the fault host.
//!
//! Every refusal is logged with the peer's address: a plain-text client or an unknown CA fails
//! the TLS handshake, a wrong token gets 401, a run that does not hold the lease gets 409. The
//! lease's watcher reverts a run's faults when its lease lapses, and says so in the log.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{Mutex, Notify};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::clock::now_ns;
use crate::lease::{Lapse, Lease};
use crate::wire::{
    path, ApplyRequest, CheckRequest, CleanupAnswer, CleanupRequest, ClockAnswer, GoRequest,
    Holdings, LeaseAnswer, LeaseRequest, ProbeOpened, ProbeRequest, Problem, RevertAnswer,
    RevertRequest, RunId,
};
use crate::{FaultHost, Token};

/// A request body larger than this is refused: a fault's settings are a few hundred bytes.
const MAX_BODY: usize = 1 << 20;
/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_WITHIN: Duration = Duration::from_secs(5);
/// The furthest ahead a `go` may name its instant: a shard waits for it holding the agent's
/// turn.
const GO_WITHIN: Duration = Duration::from_secs(10);

/// The agent: its lease, its fault host, and the token a coordinator must present.
pub struct Agent {
    token: Token,
    lease: std::sync::Mutex<Lease>,
    /// Held across an apply and across a lapse's reverts, so that a fault applied while the
    /// lease lapses is reverted by the lapse, never left behind.
    ops: Mutex<()>,
    changed: Notify,
    host: Arc<dyn FaultHost>,
}

impl Agent {
    pub fn new(token: Token, host: Arc<dyn FaultHost>) -> Arc<Agent> {
        Arc::new(Agent {
            token,
            lease: std::sync::Mutex::new(Lease::default()),
            ops: Mutex::new(()),
            changed: Notify::new(),
            host,
        })
    }

    /// Serves until `stop`, then reverts what the current run still holds.
    pub async fn serve(
        self: Arc<Agent>,
        listener: TcpListener,
        tls: Arc<rustls::ServerConfig>,
        stop: CancellationToken,
    ) {
        let watcher = tokio::spawn(self.clone().watch_lease(stop.clone()));
        let acceptor = TlsAcceptor::from(tls);
        loop {
            let (tcp, peer) = tokio::select! {
                _ = stop.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        continue;
                    }
                },
            };
            let agent = self.clone();
            let acceptor = acceptor.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(HANDSHAKE_WITHIN, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(error)) => {
                        tracing::warn!(%peer, %error, "refused: TLS handshake failed (a plain-text client, or one that does not trust this agent's certificate)");
                        return;
                    }
                    Err(_) => {
                        tracing::warn!(%peer, "refused: no TLS handshake within {HANDSHAKE_WITHIN:?}");
                        return;
                    }
                };
                let service = hyper::service::service_fn(move |request| {
                    let agent = agent.clone();
                    async move { Ok::<_, std::convert::Infallible>(agent.handle(peer, request).await) }
                });
                let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service);
                tokio::select! {
                    result = connection => if let Err(error) = result {
                        tracing::debug!(%peer, %error, "connection ended");
                    },
                    _ = stop.cancelled() => {}
                }
            });
        }
        let _ = watcher.await;
        self.end_current_run("the agent is stopping").await;
    }

    /// Waits for the lease to lapse, and reverts the lapsed run's faults.
    async fn watch_lease(self: Arc<Agent>, stop: CancellationToken) {
        loop {
            let changed = self.changed.notified();
            let state = self.lease.lock().expect("lease lock").check(Instant::now());
            match state {
                Lapse::Lapsed { run, overdue } => {
                    tracing::warn!(%run, ?overdue, "lease lapsed: the coordinator stopped renewing it; reverting everything applied for the run");
                    self.revert_run(&run).await;
                    continue;
                }
                Lapse::Until(expires) => {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = changed => {}
                        _ = tokio::time::sleep_until(expires) => {}
                    }
                }
                Lapse::Free => {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = changed => {}
                    }
                }
            }
        }
    }

    async fn end_current_run(&self, why: &str) {
        let run = self
            .lease
            .lock()
            .expect("lease lock")
            .run()
            .map(str::to_string);
        if let Some(run) = run {
            tracing::warn!(%run, "{why}: reverting everything applied for the run");
            self.revert_run(&run).await;
        }
    }

    async fn revert_run(&self, run: &str) {
        self.host.end_probes(run);
        let _ops = self.ops.lock().await;
        for outcome in self.host.revert_run(run).await {
            match outcome {
                Ok(detail) => tracing::info!(%run, "reverted: {detail}"),
                Err(error) => tracing::error!(%run, "revert failed: {error}"),
            }
        }
    }

    async fn handle(&self, peer: SocketAddr, request: Request<Incoming>) -> Response<Full<Bytes>> {
        if !self.token.admits(request.headers()) {
            tracing::warn!(%peer, path = request.uri().path(), "refused: missing or wrong token");
            return problem(StatusCode::UNAUTHORIZED, "missing or wrong token");
        }
        if request.method() != Method::POST {
            return problem(StatusCode::METHOD_NOT_ALLOWED, "expected POST");
        }
        let path = request.uri().path().to_string();
        let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
            Ok(body) => body.to_bytes(),
            Err(error) => return problem(StatusCode::BAD_REQUEST, &format!("body: {error}")),
        };
        let result = match path.as_str() {
            path::CLOCK => {
                let received_ns = now_ns();
                Ok(json(&ClockAnswer {
                    received_ns,
                    answered_ns: now_ns(),
                }))
            }
            path::LEASE => self.take_lease(&body),
            path::RELEASE => self.release(&body).await,
            path::APPLY => self.apply(&body).await,
            path::GO => self.go(&body).await,
            path::REVERT => self.revert(&body).await,
            path::HELD => Ok(json(&Holdings {
                run: self
                    .lease
                    .lock()
                    .expect("lease lock")
                    .run()
                    .map(str::to_string),
                faults: self.host.held(),
            })),
            path::CLEANUP => self.cleanup(&body).await,
            path::PROBE => self.open_probe(&body).await,
            path::CHECK => self.check(&body).await,
            _ => Err((StatusCode::NOT_FOUND, format!("no call {path}"))),
        };
        result.unwrap_or_else(|(status, error)| {
            tracing::warn!(%peer, %path, "refused: {error}");
            problem(status, &error)
        })
    }

    fn take_lease(&self, body: &[u8]) -> Reply {
        let request: LeaseRequest = parse(body)?;
        let expires = self
            .lease
            .lock()
            .expect("lease lock")
            .take(
                &request.id.run,
                &request.id.holder,
                Duration::from_millis(request.lease_ms),
                Duration::from_millis(request.renew_every_ms),
                Instant::now(),
            )
            .map_err(conflict)?;
        self.changed.notify_one();
        Ok(json(&LeaseAnswer {
            expires_ns: crate::clock::instant_ns(expires),
        }))
    }

    fn authorize(&self, id: &RunId) -> Result<(), (StatusCode, String)> {
        self.lease
            .lock()
            .expect("lease lock")
            .authorize(&id.run, &id.holder, Instant::now())
            .map_err(conflict)
    }

    /// Reverts what runs that no longer hold the lease left applied (a revert that failed at
    /// their lapse); with `force`, the current run's faults too, and its lease ends.
    async fn cleanup(&self, body: &[u8]) -> Reply {
        let request: CleanupRequest = parse(body)?;
        let _ops = self.ops.lock().await;
        let current = {
            let mut lease = self.lease.lock().expect("lease lock");
            // A lapse not yet seen by the watcher counts as a lapse here.
            let _ = lease.check(Instant::now());
            let current = lease.run().map(str::to_string);
            if request.force {
                lease.end_now();
            }
            current
        };
        self.changed.notify_one();
        let mut runs: Vec<String> = self.host.held().into_iter().map(|h| h.run).collect();
        runs.dedup();
        let mut answer = CleanupAnswer::default();
        for run in runs {
            if !request.force && current.as_deref() == Some(run.as_str()) {
                answer.kept = Some(run);
                continue;
            }
            for outcome in self.host.revert_run(&run).await {
                match outcome {
                    Ok(done) => {
                        tracing::info!(%run, "cleanup reverted: {done}");
                        answer.reverted.push(format!("run {run}: {done}"));
                    }
                    Err(error) => {
                        tracing::error!(%run, "cleanup revert failed: {error}");
                        answer.failed.push(format!("run {run}: {error}"));
                    }
                }
            }
        }
        Ok(json(&answer))
    }

    async fn release(&self, body: &[u8]) -> Reply {
        let id: RunId = parse(body)?;
        let _ops = self.ops.lock().await;
        self.authorize(&id)?;
        self.host.end_probes(&id.run);
        // What the coordinator did not revert itself is reverted before the lease is freed.
        for outcome in self.host.revert_run(&id.run).await {
            if let Err(error) = outcome {
                tracing::error!(run = %id.run, "revert at release failed: {error}");
            }
        }
        self.lease
            .lock()
            .expect("lease lock")
            .release(&id.run, &id.holder, Instant::now())
            .map_err(conflict)?;
        self.changed.notify_one();
        Ok(json(&serde_json::json!({})))
    }

    async fn apply(&self, body: &[u8]) -> Reply {
        let request: ApplyRequest = parse(body)?;
        let _ops = self.ops.lock().await;
        self.authorize(&request.id)?;
        let applied = self
            .host
            .apply(&request.id.run, &request)
            .await
            .map_err(|e| (StatusCode::UNPROCESSABLE_ENTITY, e))?;
        tracing::info!(run = %request.id.run, fault = %request.name, kind = %request.kind, "applied: {}", applied.detail);
        Ok(json(&applied))
    }

    /// Injects a prepared fault at the instant asked, holding the agent's turn while it waits,
    /// so that a lapse of the lease in the meantime reverts it after, never before.
    async fn go(&self, body: &[u8]) -> Reply {
        let request: GoRequest = parse(body)?;
        let at = crate::clock::ns_instant(request.at_ns);
        if at > Instant::now() + GO_WITHIN {
            return Err((
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("go names an instant more than {GO_WITHIN:?} ahead"),
            ));
        }
        let _ops = self.ops.lock().await;
        self.authorize(&request.id)?;
        let applied = self
            .host
            .go(&request.id.run, request.fault, at)
            .await
            .map_err(|e| (StatusCode::UNPROCESSABLE_ENTITY, e))?;
        tracing::info!(run = %request.id.run, fault = request.fault, "applied at go: {}", applied.detail);
        Ok(json(&applied))
    }

    async fn revert(&self, body: &[u8]) -> Reply {
        let request: RevertRequest = parse(body)?;
        let _ops = self.ops.lock().await;
        self.authorize(&request.id)?;
        let reverted = self
            .host
            .revert(&request.id.run, request.fault)
            .await
            .map_err(|e| (StatusCode::UNPROCESSABLE_ENTITY, e))?;
        tracing::info!(run = %request.id.run, fault = request.fault, "reverted: {}", reverted.detail);
        Ok(json(&RevertAnswer {
            reverted_ns: now_ns(),
            detail: reverted.detail,
            figures: reverted.figures,
        }))
    }
}

impl Agent {
    async fn open_probe(&self, body: &[u8]) -> Reply {
        let request: ProbeRequest = parse(body)?;
        self.authorize(&request.id)?;
        let probe = self
            .host
            .open_probe(&request.id.run, &request)
            .await
            .map_err(|e| (StatusCode::UNPROCESSABLE_ENTITY, e))?;
        // A lease that lapsed while the probe was being built has forgotten the run's probes
        // already: this one goes too.
        if let Err(refused) = self.authorize(&request.id) {
            self.host.end_probes(&request.id.run);
            return Err(refused);
        }
        tracing::info!(run = %request.id.run, probe = %request.name, "probe opened: {}", request.table);
        Ok(json(&ProbeOpened { probe }))
    }

    /// One check, outside the faults' turn: a probe is checked while faults are applied.
    async fn check(&self, body: &[u8]) -> Reply {
        let request: CheckRequest = parse(body)?;
        self.authorize(&request.id)?;
        let checked = self
            .host
            .check_probe(&request.id.run, request.probe)
            .await
            .map_err(|e| (StatusCode::UNPROCESSABLE_ENTITY, e))?;
        Ok(json(&checked))
    }
}

type Reply = Result<Response<Full<Bytes>>, (StatusCode, String)>;

fn conflict(error: crate::lease::LeaseError) -> (StatusCode, String) {
    (StatusCode::CONFLICT, error.to_string())
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, (StatusCode, String)> {
    serde_json::from_slice(body).map_err(|e| (StatusCode::BAD_REQUEST, format!("body: {e}")))
}

fn json<T: Serialize>(value: &T) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(value).expect("wire types serialize");
    Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}

fn problem(status: StatusCode, error: &str) -> Response<Full<Bytes>> {
    let mut response = json(&Problem {
        error: error.to_string(),
    });
    *response.status_mut() = status;
    response
}
