//! A health endpoint as a detection source: the system's own view of whether it is well.

use std::time::Duration;

use relapse_core::fault::BoxFuture;
use relapse_core::sense::{Detector, DetectorError, SignalSender};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::http::{check_statuses, Exchange, HttpTarget};
use crate::ProbeError;

/// Polls an HTTP health endpoint and signals changes of state: fires when it turns unhealthy (a
/// status outside `healthy`, an error or a timeout), clears when it is healthy again.
pub struct HttpHealthDetector {
    target: HttpTarget,
    every: Duration,
    healthy: Vec<u16>,
}

impl HttpHealthDetector {
    /// Builds a detector GETting `url` every `every`, each check bounded by `timeout`.
    pub fn new(
        url: &str,
        every: Duration,
        timeout: Duration,
        healthy: Vec<u16>,
    ) -> Result<Self, ProbeError> {
        check_statuses(&healthy)?;
        Ok(HttpHealthDetector {
            target: HttpTarget::new(url, "GET", timeout)?,
            every,
            healthy,
        })
    }
}

impl Detector for HttpHealthDetector {
    fn watch(
        self: Box<Self>,
        signals: SignalSender,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, Result<(), DetectorError>> {
        Box::pin(async move {
            let mut ticks = tokio::time::interval(crate::poll_period(self.every));
            // Delay: after a slow check, wait a full period instead of bursting to catch up, so
            // checks never overlap and the endpoint sees a steady rate.
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            let mut edge = crate::HealthEdge::new();
            loop {
                let Some(exchange) = cancel
                    .run_until_cancelled(async {
                        ticks.tick().await;
                        self.target.exchange().await
                    })
                    .await
                else {
                    return Ok(());
                };
                let (now_healthy, detail) = match exchange {
                    Exchange::Complete { status } => {
                        (self.healthy.contains(&status), format!("status {status}"))
                    }
                    Exchange::Failed { error, .. } => (false, error),
                };
                tracing::trace!(healthy = now_healthy, %detail, "health check");
                edge.observe(now_healthy, detail, &signals);
            }
        })
    }
}
