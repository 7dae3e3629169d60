//! A minimal HTTP/1.1 server for benchmarks: every request gets `200 ok` with a 12-byte body.
//! Prints `listening on ADDR`; exits on stdin EOF or SIGTERM.

#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

const BODY: &[u8] = b"ok, ok, ok!\n";

#[derive(clap::Parser)]
#[command(about = "A minimal HTTP/1.1 server answering 200 with 12 bytes")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Runtime worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
}

async fn serve(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let svc = service_fn(|_req: Request<hyper::body::Incoming>| async {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(BODY))))
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn main() -> std::io::Result<()> {
    let args = <Args as clap::Parser>::parse();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.threads {
        rt.worker_threads(n);
    }
    rt.enable_all().build()?.block_on(async {
        let listener = TcpListener::bind(args.listen).await?;
        println!("listening on {}", listener.local_addr()?);
        let mut term = signal(SignalKind::terminate())?;
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 64];
        let stdin_eof = async { while !matches!(stdin.read(&mut buf).await, Ok(0) | Err(_)) {} };
        tokio::select! {
            _ = serve(listener) => {}
            _ = term.recv() => {}
            _ = stdin_eof => {}
        }
        Ok(())
    })
}
