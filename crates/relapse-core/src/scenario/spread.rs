//! A flood spread over agents (issue: `on = ["a1", "a2", …]` on `http_flood`, `slowloris` and
//! `connection_flood`): each shard's table is the flood's own with its share of the bounds and
//! its own run of the sources, so that the rate, the connections and the requests of the shards
//! add up to the flood's, and no two shards share a source address.

use std::net::IpAddr;

use super::{FaultKind, FloodLoad, FloodSources};

/// `total` split into `shards` parts that differ by at most one and add up to `total`; the
/// first `total % shards` parts get the one more.
pub fn shares(total: u64, shards: usize) -> Vec<u64> {
    if shards == 0 {
        return Vec::new();
    }
    let n = shards as u64;
    (0..n)
        .map(|i| total / n + u64::from(i < total % n))
        .collect()
}

/// `items` split into `shards` contiguous runs, disjoint and in order, sized by [`shares`].
pub fn segments<T: Clone>(items: &[T], shards: usize) -> Vec<Vec<T>> {
    let mut start = 0;
    shares(items.len() as u64, shards)
        .into_iter()
        .map(|size| {
            let run = items[start..start + size as usize].to_vec();
            start += size as usize;
            run
        })
        .collect()
}

/// The flood's source addresses, one by one (a CIDR expanded); none when the kernel picks.
fn addresses(sources: &FloodSources) -> Vec<IpAddr> {
    match sources {
        FloodSources::Default => Vec::new(),
        FloodSources::List(list) => list.clone(),
        FloodSources::Cidr { network, prefix } => match network {
            IpAddr::V4(v4) => {
                let first = u32::from(*v4);
                let count = 1u64 << (32 - u32::from(*prefix));
                (0..count)
                    .map(|i| IpAddr::V4((first + i as u32).into()))
                    .collect()
            }
            // Loopback in IPv6 is one address.
            IpAddr::V6(_) => vec![*network],
        },
    }
}

/// The tables of `kind` (checked, its defaults filled in) spread over `shards` agents, from
/// `table`, the kind's value as the scenario wrote it. Each keeps every setting of the flood
/// but these, which become its share:
/// - `rate` (open model) and `connections` (the closed model's senders, the open model's most
///   in flight, or the connections held), and `max_requests`;
/// - `sources`: its own contiguous run of the flood's addresses (`source_cidr` expanded), none
///   shared; with no sources, each shard's kernel picks its own.
///
/// An error when a shard would get nothing to do: fewer connections, requests or source
/// addresses than agents.
pub fn shard_tables(
    kind: &FaultKind,
    table: &toml::Value,
    shards: usize,
) -> Result<Vec<toml::Value>, String> {
    let (rate, connections, max_requests, sources) = match kind {
        FaultKind::HttpFlood(flood) => match flood.load {
            FloodLoad::Open {
                rate,
                max_in_flight,
            } => (
                Some(rate),
                max_in_flight as u64,
                Some(flood.max_requests),
                &flood.sources,
            ),
            FloodLoad::Closed { connections } => (
                None,
                connections as u64,
                Some(flood.max_requests),
                &flood.sources,
            ),
        },
        FaultKind::Slowloris(flood) => (None, flood.connections as u64, None, &flood.sources),
        FaultKind::ConnectionFlood(flood) => {
            (None, flood.connections as u64, None, &flood.sources)
        }
        other => {
            return Err(format!(
                "a {} fault cannot be spread over agents: only http_flood, slowloris and connection_flood can",
                other.name()
            ))
        }
    };
    if connections < shards as u64 {
        return Err(format!(
            "{connections} connections cannot be spread over {shards} agents: each needs one at least"
        ));
    }
    if let Some(total) = max_requests.filter(|total| *total < shards as u64) {
        return Err(format!(
            "max_requests {total} cannot be spread over {shards} agents: each needs one at least"
        ));
    }
    let addresses = addresses(sources);
    if !addresses.is_empty() && addresses.len() < shards {
        return Err(format!(
            "{} source addresses cannot be spread over {shards} agents: no two may share one",
            addresses.len()
        ));
    }
    let connections = shares(connections, shards);
    let requests = max_requests.map(|total| shares(total, shards));
    let runs = segments(&addresses, shards);
    let mut tables = Vec::with_capacity(shards);
    for shard in 0..shards {
        let mut shard_table = table
            .as_table()
            .cloned()
            .ok_or("the flood's settings are not a table")?;
        if let Some(rate) = rate {
            shard_table.insert("rate".into(), toml::Value::Float(rate / shards as f64));
        }
        shard_table.insert(
            "connections".into(),
            toml::Value::Integer(connections[shard] as i64),
        );
        if let Some(requests) = &requests {
            shard_table.insert(
                "max_requests".into(),
                toml::Value::Integer(requests[shard] as i64),
            );
        }
        shard_table.remove("source_cidr");
        shard_table.remove("sources");
        if !addresses.is_empty() {
            let run = runs[shard]
                .iter()
                .map(|a| toml::Value::String(a.to_string()))
                .collect();
            shard_table.insert("sources".into(), toml::Value::Array(run));
        }
        tables.push(toml::Value::Table(shard_table));
    }
    Ok(tables)
}

#[cfg(test)]
mod tests;
