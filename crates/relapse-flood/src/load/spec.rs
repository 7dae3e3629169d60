//! What a load run is asked to do: its model (open or closed), its target and requests, its
//! bounds, and the checks that refuse a spec before anything is sent.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::template::RequestTemplate;
use crate::{check_connections, check_positive, check_target, FloodError, Sources, SourcesExt};

/// How requests are paced.
#[derive(Debug, Clone, PartialEq)]
pub enum Model {
    /// A constant arrival rate (requests per second), rising linearly from 0 over the ramp-up.
    /// Request `i` is due at its intended time, whether or not earlier ones were answered, and
    /// its latency is measured from that time (coordinated-omission correction, as in wrk2).
    ///
    /// `max_in_flight` bounds the requests in flight, and so the connections. When all are
    /// busy, due requests wait for a free slot and the wait counts in their latency, which keeps
    /// growing: a slow target shows as queueing. Requests still waiting when the run stops are
    /// reported as errors of kind `backlogged`, so `intended` = attempted + backlogged.
    Open { rate: f64, max_in_flight: usize },
    /// `connections` workers, each sending its next request as soon as the previous one is
    /// answered. Latency is measured from the actual send.
    Closed { connections: usize },
}

/// A load to run: what to send, to where, how fast, and for how long at most.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub target: SocketAddr,
    pub request: RequestTemplate,
    pub model: Model,
    /// Reuse each worker's connection; otherwise one connection per request (with
    /// `Connection: close`, so the server closes first).
    pub keep_alive: bool,
    pub sources: Sources,
    pub ramp_up: Duration,
    pub max_requests: u64,
    pub max_duration: Duration,
    /// Per request (connect, and send-to-last-body-byte, each).
    pub timeout: Duration,
    /// Also count per source address.
    pub per_source: bool,
    /// Non-loopback targets that may be flooded (addresses in network namespaces the caller
    /// created).
    pub allow_targets: Vec<IpAddr>,
}

impl LoadSpec {
    /// `GET /` at `target`: closed model, 1 connection, keep-alive, 1000 requests, 10 s,
    /// 5 s timeout. Adjust with the setters below.
    pub fn new(target: SocketAddr) -> LoadSpec {
        LoadSpec {
            target,
            request: RequestTemplate::get("/").expect("a constant path parses"),
            model: Model::Closed { connections: 1 },
            keep_alive: true,
            sources: Sources::Default,
            ramp_up: Duration::ZERO,
            max_requests: 1000,
            max_duration: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
            per_source: false,
            allow_targets: Vec::new(),
        }
    }

    pub fn request(mut self, request: RequestTemplate) -> LoadSpec {
        self.request = request;
        self
    }
    /// Closed model with `connections` workers.
    pub fn closed(mut self, connections: usize) -> LoadSpec {
        self.model = Model::Closed { connections };
        self
    }
    /// Open model at `rate` requests per second, at most `max_in_flight` in flight.
    pub fn open(mut self, rate: f64, max_in_flight: usize) -> LoadSpec {
        self.model = Model::Open {
            rate,
            max_in_flight,
        };
        self
    }
    pub fn keep_alive(mut self, keep_alive: bool) -> LoadSpec {
        self.keep_alive = keep_alive;
        self
    }
    pub fn sources(mut self, sources: Sources) -> LoadSpec {
        self.sources = sources;
        self
    }
    pub fn ramp_up(mut self, ramp_up: Duration) -> LoadSpec {
        self.ramp_up = ramp_up;
        self
    }
    pub fn max_requests(mut self, n: u64) -> LoadSpec {
        self.max_requests = n;
        self
    }
    pub fn max_duration(mut self, d: Duration) -> LoadSpec {
        self.max_duration = d;
        self
    }
    pub fn timeout(mut self, d: Duration) -> LoadSpec {
        self.timeout = d;
        self
    }
    pub fn per_source(mut self, yes: bool) -> LoadSpec {
        self.per_source = yes;
        self
    }
    pub fn allow_target(mut self, ip: IpAddr) -> LoadSpec {
        self.allow_targets.push(ip);
        self
    }

    /// Parses `http://HOST:PORT/PATH` where HOST is an IP address or `localhost`; returns the
    /// target and the path (with query).
    pub fn parse_url(url: &str) -> Result<(SocketAddr, String), FloodError> {
        let bad = |why: &str| FloodError::Url(format!("{url}: {why}"));
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| bad("only http:// is supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let authority = authority.replace("localhost", "127.0.0.1");
        let target = authority
            .parse::<SocketAddr>()
            .or_else(|_| format!("{authority}:80").parse::<SocketAddr>())
            .or_else(|_| format!("[{authority}]:80").parse::<SocketAddr>())
            .map_err(|_| bad("the host must be an IP address or localhost"))?;
        Ok((target, path.to_string()))
    }

    /// Checks the spec; [`run_load`] calls it first.
    pub fn validate(&self) -> Result<(), FloodError> {
        check_target(self.target.ip(), &self.allow_targets)?;
        match self.model {
            Model::Open {
                rate,
                max_in_flight,
            } => {
                if !(rate.is_finite() && rate > 0.0) {
                    return Err(FloodError::InvalidRate(rate));
                }
                check_connections(max_in_flight)?;
            }
            Model::Closed { connections } => check_connections(connections)?,
        }
        if self.max_requests == 0 {
            return Err(FloodError::ZeroRequests);
        }
        check_positive("max_duration", self.max_duration)?;
        check_positive("timeout", self.timeout)?;
        self.sources.expand(self.target.ip())?;
        Ok(())
    }
}
