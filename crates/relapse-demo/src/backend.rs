//! The backend: the "database" of the hosted-mail stack. It is the process the
//! FLG scenario freezes, so it stays deliberately trivial.
//!
//! With a mail store ([`Maildir`]) it is also the mail server of the OpenSRS Cluster B scenario:
//! `/mailbox` lists the maildir, `POST /deliver` delivers into it, `/health/deep` writes to it,
//! and `/metrics` counts all that. `/health` stays shallow: it never touches the mail store, so
//! it stays green while the file system under the mail is locked up.
//!
//! For the FLG incident it also does background work: `POST /job?ms=N` works for `N` ms (a
//! sleep: the work's cost is time, not CPU) and answers 200, so the frontend's queue of jobs
//! backs up while the backend is frozen and takes time to drain afterwards.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};

use crate::http::{self, Body};
use crate::maildir::Maildir;

/// A mailbox listing as served by the backend's `/mailbox`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Mailbox {
    pub(crate) messages: Vec<Message>,
}

/// One message header in a [`Mailbox`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Message {
    /// The message's uid: with a mail store, the one the seen index gave it.
    pub(crate) id: u64,
    pub(crate) from: String,
    pub(crate) subject: String,
    /// With a mail store, where the message is in the maildir (`new/NAME` or `cur/NAME`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) file: Option<String>,
}

/// The largest message `POST /deliver` accepts.
const MAX_MESSAGE: usize = 64 * 1024;

/// The longest `POST /job` works: a typo must not park a request for hours.
pub(crate) const MAX_JOB_WORK: Duration = Duration::from_secs(10);

fn mailbox() -> Mailbox {
    let message = |id, from: &str, subject: &str| Message {
        id,
        from: from.to_owned(),
        subject: subject.to_owned(),
        file: None,
    };
    Mailbox {
        messages: vec![
            message(1, "alice@example.com", "Lunch on Thursday?"),
            message(2, "ops@example.com", "Scheduled maintenance tonight"),
            message(3, "bob@example.com", "Re: quarterly report"),
        ],
    }
}

/// The backend's state: its mail store, if it has one.
#[derive(Debug)]
pub(crate) struct Backend {
    pub(crate) maildir: Option<Arc<Maildir>>,
}

impl Backend {
    pub(crate) async fn handle(self: Arc<Self>, request: Request<Incoming>) -> Response<Body> {
        let maildir = self.maildir.as_ref();
        match (request.method(), request.uri().path(), maildir) {
            (&Method::GET, "/mailbox", None) => json(&mailbox()),
            (&Method::GET, "/mailbox", Some(maildir)) => match maildir.list().await {
                Ok(mailbox) => json(&mailbox),
                Err(error) => http::response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    http::TEXT_PLAIN,
                    format!("failed to list the mail store: {error}\n"),
                ),
            },
            (&Method::GET, "/health", _) => http::response(StatusCode::OK, http::TEXT_PLAIN, "ok"),
            (&Method::GET, "/health/deep", Some(maildir)) => match maildir.deep_check().await {
                Ok(()) => http::response(StatusCode::OK, http::TEXT_PLAIN, "ok"),
                Err(failure) => http::response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    http::TEXT_PLAIN,
                    format!("{failure}\n"),
                ),
            },
            (&Method::POST, "/deliver", Some(maildir)) => deliver(maildir, request).await,
            (&Method::POST, "/job", _) => job(request.uri().query()).await,
            (&Method::GET, "/metrics", Some(maildir)) => {
                http::response(StatusCode::OK, http::PROMETHEUS_TEXT, metrics(maildir))
            }
            _ => http::not_found(),
        }
    }
}

fn json(mailbox: &Mailbox) -> Response<Body> {
    match serde_json::to_vec(mailbox) {
        Ok(json) => http::response(StatusCode::OK, http::APPLICATION_JSON, json),
        Err(error) => http::response(
            StatusCode::INTERNAL_SERVER_ERROR,
            http::TEXT_PLAIN,
            format!("failed to encode the mailbox: {error}\n"),
        ),
    }
}

/// `POST /deliver`: the body, as is, becomes a message in `new/`; 201 with its `new/NAME` once
/// it is on disk (fsynced, renamed, directory fsynced).
async fn deliver(maildir: &Arc<Maildir>, request: Request<Incoming>) -> Response<Body> {
    let message = match Limited::new(request.into_body(), MAX_MESSAGE)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(error) => {
            return http::response(
                StatusCode::BAD_REQUEST,
                http::TEXT_PLAIN,
                format!("unreadable message: {error}\n"),
            )
        }
    };
    if message.is_empty() {
        return http::response(
            StatusCode::BAD_REQUEST,
            http::TEXT_PLAIN,
            "the message is empty\n",
        );
    }
    match maildir.deliver(message).await {
        Ok(name) => http::response(StatusCode::CREATED, http::TEXT_PLAIN, format!("{name}\n")),
        Err(error) => http::response(
            StatusCode::INTERNAL_SERVER_ERROR,
            http::TEXT_PLAIN,
            format!("failed to deliver: {error}\n"),
        ),
    }
}

/// `POST /job?ms=N`: works on one background job for `N` ms, then answers 200.
async fn job(query: Option<&str>) -> Response<Body> {
    match job_work(query) {
        Ok(work) => {
            tokio::time::sleep(work).await;
            http::response(StatusCode::OK, http::TEXT_PLAIN, "done\n")
        }
        Err(reason) => http::response(
            StatusCode::BAD_REQUEST,
            http::TEXT_PLAIN,
            format!("{reason}\n"),
        ),
    }
}

/// How long a job works, from its `ms=N` query parameter: 1 ms to [`MAX_JOB_WORK`].
fn job_work(query: Option<&str>) -> Result<Duration, String> {
    let value = query
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("ms="))
        .ok_or("a job needs ?ms=MILLIS")?;
    value
        .parse::<u64>()
        .ok()
        .map(Duration::from_millis)
        .filter(|work| !work.is_zero() && *work <= MAX_JOB_WORK)
        .ok_or_else(|| {
            format!(
                "bad ms {value:?}: expected whole milliseconds, 1 to {}",
                MAX_JOB_WORK.as_millis()
            )
        })
}

fn metrics(maildir: &Maildir) -> String {
    let counters = &maildir.counters;
    let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
    format!(
        "# HELP relapse_demo_mail_delivered_total Messages delivered into the mail store.\n\
         # TYPE relapse_demo_mail_delivered_total counter\n\
         relapse_demo_mail_delivered_total {}\n\
         # HELP relapse_demo_mailbox_listings_total Mailbox listings that completed (seen index up to date).\n\
         # TYPE relapse_demo_mailbox_listings_total counter\n\
         relapse_demo_mailbox_listings_total {}\n\
         # HELP relapse_demo_mailbox_listings_waiting Mailbox listings waiting for the seen index (behind a stuck one).\n\
         # TYPE relapse_demo_mailbox_listings_waiting gauge\n\
         relapse_demo_mailbox_listings_waiting {}\n\
         # HELP relapse_demo_deep_health_checks_total Deep health checks (a write to the mail store) by outcome.\n\
         # TYPE relapse_demo_deep_health_checks_total counter\n\
         relapse_demo_deep_health_checks_total{{result=\"ok\"}} {}\n\
         relapse_demo_deep_health_checks_total{{result=\"failed\"}} {}\n\
         # HELP relapse_demo_deep_health_check_blocked 1 while a deep health check's write to the mail store has not returned.\n\
         # TYPE relapse_demo_deep_health_check_blocked gauge\n\
         relapse_demo_deep_health_check_blocked {}\n",
        load(&counters.delivered),
        load(&counters.listings),
        load(&counters.listings_waiting),
        load(&counters.deep_ok),
        load(&counters.deep_failed),
        u8::from(maildir.deep_check_blocked()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_takes_its_work_from_the_query_and_refuses_a_bad_one() {
        assert_eq!(job_work(Some("ms=20")), Ok(Duration::from_millis(20)));
        assert_eq!(job_work(Some("x=1&ms=10000")), Ok(MAX_JOB_WORK));
        for bad in [
            None,
            Some(""),
            Some("ms="),
            Some("ms=0"),
            Some("ms=10001"),
            Some("ms=-1"),
        ] {
            assert!(job_work(bad).is_err(), "{bad:?}");
        }
    }
}
