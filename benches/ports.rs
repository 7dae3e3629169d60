//! Port exhaustion inside a network namespace this bench creates (and removes):
//! - `reserve/whole range`: bind the whole default ephemeral range (32768–60999, 28,232 ports),
//!   confirmed by connect() failing with EADDRNOTAVAIL, then `release/whole range`;
//! - the peer, in the same run: a connect() leak, which is how a buggy service fills the range.
//!   One process may hold at most RLIMIT_NOFILE descriptors (20,000 here, and the hard limit
//!   cannot be raised without CAP_SYS_RESOURCE), so the leak and a reservation of the same size
//!   are compared on 14,000 ports. The leak connects, non-blocking, to an address routed out of
//!   the namespace and silently dropped, so each connection sits in SYN_SENT holding its port.
//!
//! Needs root (namespaces). Run with `cargo bench --bench ports`.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use relapse_core::fault::Fault;
use relapse_ports::netns::{self, Host};
use relapse_ports::ports::{Amount, HolderLauncher, Mode, PortExhaustion};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

const SAME_SIZE: usize = 14_000;

fn holder() -> HolderLauncher {
    HolderLauncher {
        program: env!("CARGO_BIN_EXE_relapse").into(),
        args: vec!["__helper".into(), "port_exhaustion".into()],
    }
}

/// Opens `count` non-blocking connections to a black hole from inside the namespace; each holds
/// an ephemeral port. Returns them (closing them is the release).
fn leak(path: &std::path::Path, count: usize) -> Vec<Socket> {
    netns::within(path, move || {
        let target = SockAddr::from(SocketAddrV4::new(Ipv4Addr::new(198, 19, 255, 1), 80));
        let mut sockets = Vec::with_capacity(count);
        for _ in 0..count {
            let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
            socket.set_nonblocking(true).unwrap();
            match socket.connect(&target) {
                Err(e) if e.raw_os_error() == Some(nix::libc::EINPROGRESS) => sockets.push(socket),
                other => panic!("leak connect: {other:?}"),
            }
        }
        sockets
    })
    .unwrap()
}

fn bench_ports(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let host = Host::create(
        &format!("relapse-bench-{}", std::process::id()),
        std::process::id(),
    )
    .unwrap();
    // The black hole: routed to our end of the veth pair, where nothing forwards it.
    netns::ip(&[
        "-n",
        host.name(),
        "route",
        "add",
        "198.19.255.0/24",
        "via",
        &host.outside.to_string(),
    ])
    .unwrap();
    let path = host.path();

    let mut group = c.benchmark_group("port_exhaustion");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(20));
    // Until the last socket is closed, not only until connect() works again.
    group.bench_function("release until closed/whole range", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                let mut fault =
                    PortExhaustion::new(path.clone(), Mode::Reserve(Amount::All), false, holder())
                        .unwrap();
                runtime.block_on(fault.inject()).unwrap();
                let start = Instant::now();
                runtime.block_on(fault.revert()).unwrap();
                fault.wait_until_closed();
                total += start.elapsed();
            }
            total
        })
    });
    for (label, amount) in [
        ("whole range", Amount::All),
        ("14000 ports", Amount::Fraction(SAME_SIZE as f64 / 28_232.0)),
    ] {
        group.bench_function(format!("reserve/{label}"), |b| {
            b.iter_custom(|iterations| {
                let mut total = Duration::ZERO;
                for _ in 0..iterations {
                    let mut fault =
                        PortExhaustion::new(path.clone(), Mode::Reserve(amount), false, holder())
                            .unwrap();
                    let start = Instant::now();
                    runtime.block_on(fault.inject()).unwrap();
                    total += start.elapsed();
                    runtime.block_on(fault.revert()).unwrap();
                    fault.wait_until_closed();
                }
                total
            })
        });
        group.bench_function(format!("release/{label}"), |b| {
            b.iter_custom(|iterations| {
                let mut total = Duration::ZERO;
                for _ in 0..iterations {
                    let mut fault =
                        PortExhaustion::new(path.clone(), Mode::Reserve(amount), false, holder())
                            .unwrap();
                    runtime.block_on(fault.inject()).unwrap();
                    let start = Instant::now();
                    runtime.block_on(fault.revert()).unwrap();
                    total += start.elapsed();
                    fault.wait_until_closed();
                }
                total
            })
        });
    }
    group.bench_function("connect leak/14000 ports", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                let start = Instant::now();
                let sockets = leak(&path, SAME_SIZE);
                total += start.elapsed();
                drop(sockets);
            }
            total
        })
    });
    group.bench_function("connect leak release/14000 ports", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                let sockets = leak(&path, SAME_SIZE);
                let start = Instant::now();
                drop(sockets);
                total += start.elapsed();
            }
            total
        })
    });
    group.finish();
    drop(host);
}

criterion_group!(benches, bench_ports);
criterion_main!(benches);
