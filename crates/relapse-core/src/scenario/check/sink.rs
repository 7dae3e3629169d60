//! `[sink]`: where the harness listens for alerts.

use std::net::SocketAddr;

use crate::scenario::file::SinkSection;
use crate::scenario::load::Problem;

pub fn check(sink: &SinkSection) -> Result<SocketAddr, Problem> {
    match &sink.listen {
        None => Ok(SocketAddr::from(([127, 0, 0, 1], 0))),
        Some(s) => s.get_ref().parse().map_err(|_| Problem {
            span: s.span(),
            message: format!(
                "invalid sink address \"{}\": expected IP:PORT, e.g. \"127.0.0.1:9095\"",
                s.get_ref()
            ),
        }),
    }
}
