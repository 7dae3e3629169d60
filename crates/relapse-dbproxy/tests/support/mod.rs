//! Helpers for the proxy tests: proxies, clients of the real servers on this machine, unique
//! names, and a recording TCP relay.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use relapse_dbproxy::{DbProxy, Protocol, ProxyConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub const PG_SERVER: &str = "127.0.0.1:5432";
pub const MYSQL_SERVER: &str = "127.0.0.1:3306";

/// How long any single step may take before the test fails instead of hanging.
pub const STEP: Duration = Duration::from_secs(20);
/// How long a statement must stay pending to count as waiting.
pub const STILL_WAITING: Duration = Duration::from_millis(300);

pub fn pg_server() -> SocketAddr {
    PG_SERVER.parse().unwrap()
}

pub fn mysql_server() -> SocketAddr {
    MYSQL_SERVER.parse().unwrap()
}

/// A name no other test, run or process uses: pid, counter and a random part.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}_{}_{}_{:08x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        rand::random::<u32>()
    )
}

/// Awaits `fut`, failing the test if it takes longer than [`STEP`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: no result within {STEP:?}"),
    }
}

/// Asserts that `fut` is still pending after [`STILL_WAITING`].
pub async fn assert_waits<F: Future + Unpin>(what: &str, fut: &mut F) {
    assert!(
        tokio::time::timeout(STILL_WAITING, fut).await.is_err(),
        "{what}: completed although it should wait"
    );
}

pub async fn proxy(protocol: Protocol, upstream: SocketAddr) -> DbProxy {
    DbProxy::start(ProxyConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        upstream,
        protocol,
    })
    .await
    .unwrap()
}

pub async fn pg_connect(addr: SocketAddr) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let dsn = format!(
        "host={} port={} user=postgres dbname=test connect_timeout=10",
        addr.ip(),
        addr.port()
    );
    let (client, connection) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

pub async fn pg(addr: SocketAddr) -> tokio_postgres::Client {
    within("postgres connect", pg_connect(addr))
        .await
        .unwrap_or_else(|e| panic!("cannot connect to postgres through {addr}: {e}"))
}

pub async fn mysql_connect(addr: SocketAddr) -> Result<mysql_async::Conn, mysql_async::Error> {
    // prefer_socket=false: otherwise mysql_async, seeing a loopback address and the server's
    // @@socket, reconnects through the Unix socket and bypasses the proxy.
    let url = format!(
        "mysql://root@{}:{}/test?prefer_socket=false",
        addr.ip(),
        addr.port()
    );
    mysql_async::Conn::new(mysql_async::Opts::from_url(&url).unwrap()).await
}

pub async fn mysql(addr: SocketAddr) -> mysql_async::Conn {
    within("mysql connect", mysql_connect(addr))
        .await
        .unwrap_or_else(|e| panic!("cannot connect to mysql through {addr}: {e}"))
}

/// What a relay saw on one connection: client → server bytes and server → client bytes.
pub type Recording = (Vec<u8>, Vec<u8>);

/// A plain TCP forwarder that records every byte, per connection and direction.
pub struct Relay {
    pub addr: SocketAddr,
    recordings: Arc<Mutex<Vec<Arc<Mutex<Recording>>>>>,
    finished: watch::Sender<usize>,
}

impl Relay {
    pub async fn start(upstream: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let recordings: Arc<Mutex<Vec<Arc<Mutex<Recording>>>>> = Arc::default();
        let finished = watch::Sender::new(0usize);
        let (recs, done) = (recordings.clone(), finished.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let record = Arc::new(Mutex::new(Recording::default()));
                recs.lock().unwrap().push(record.clone());
                let done = done.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        let (cr, cw) = client.into_split();
                        let (sr, sw) = server.into_split();
                        tokio::join!(
                            copy_recording(cr, sw, &record, true),
                            copy_recording(sr, cw, &record, false),
                        );
                    }
                    done.send_modify(|n| *n += 1);
                });
            }
        });
        Relay {
            addr,
            recordings,
            finished,
        }
    }

    /// Waits until `n` connections have finished in both directions, and returns every
    /// connection's recording in accept order.
    pub async fn recordings(&self, n: usize) -> Vec<Recording> {
        let mut finished = self.finished.subscribe();
        within(
            "relay connections to finish",
            finished.wait_for(|f| *f >= n),
        )
        .await
        .unwrap();
        self.recordings
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.lock().unwrap().clone())
            .collect()
    }
}

async fn copy_recording(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    record: &Mutex<Recording>,
    client_to_server: bool,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        {
            let mut r = record.lock().unwrap();
            let side = if client_to_server { &mut r.0 } else { &mut r.1 };
            side.extend_from_slice(&buf[..n]);
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
