//! The backend: the "database" of the hosted-mail stack. It is the process the
//! FLG scenario freezes, so it stays deliberately trivial.

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};

use crate::http::{self, Body};

/// A mailbox listing as served by the backend's `/mailbox`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Mailbox {
    pub(crate) messages: Vec<Message>,
}

/// One message header in a [`Mailbox`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Message {
    pub(crate) id: u64,
    pub(crate) from: String,
    pub(crate) subject: String,
}

fn mailbox() -> Mailbox {
    let message = |id, from: &str, subject: &str| Message {
        id,
        from: from.to_owned(),
        subject: subject.to_owned(),
    };
    Mailbox {
        messages: vec![
            message(1, "alice@example.com", "Lunch on Thursday?"),
            message(2, "ops@example.com", "Scheduled maintenance tonight"),
            message(3, "bob@example.com", "Re: quarterly report"),
        ],
    }
}

pub(crate) async fn handle(request: Request<Incoming>) -> Response<Body> {
    if request.method() != Method::GET {
        return http::not_found();
    }
    match request.uri().path() {
        "/mailbox" => match serde_json::to_vec(&mailbox()) {
            Ok(json) => http::response(StatusCode::OK, http::APPLICATION_JSON, json),
            Err(error) => http::response(
                StatusCode::INTERNAL_SERVER_ERROR,
                http::TEXT_PLAIN,
                format!("failed to encode the mailbox: {error}\n"),
            ),
        },
        "/health" => http::response(StatusCode::OK, http::TEXT_PLAIN, "ok"),
        _ => http::not_found(),
    }
}
