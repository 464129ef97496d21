//! The minimal upstream of the comparison benchmark (`benches/compare/`): an HTTP/2 server, h2c
//! or TLS, that answers every request on any path with one fixed gRPC frame and `grpc-status: 0`
//! trailers. It reads the request body to its end (a proxy may not expect an answer before it has
//! sent the whole request) and does nothing else, so that what the proxies in front of it cost
//! is not hidden behind the upstream's own work.
//!
//! Built on the `h2` crate directly (no hyper, no tonic, no routing): one task per connection,
//! one per stream, a single-threaded runtime unless `--threads` says otherwise. With `--tls-dir`
//! it serves TLS 1.3 with ALPN `h2` only, on a self-signed pair it writes there (`tls.cert`,
//! `tls.key`, SANs `localhost` and `127.0.0.1`, as litgate generates its own). It prints
//! `listening ADDR` once bound and runs until killed. A benchmark fake: never in front of real
//! traffic.
//!
//! ```sh
//! cargo run --release --example grpc_upstream -- --addr 127.0.0.1:0 --tls-dir /tmp/up \
//!     --message-hex 0a026f6b
//! ```

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use bytes::{BufMut, Bytes, BytesMut};
use clap::Parser;
use http::{header::CONTENT_TYPE, HeaderMap, HeaderValue, Response};
use litgate::tls::{server_tls, CertSource};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
};
use tokio_rustls::TlsAcceptor;

/// Minimal gRPC upstream: one fixed answer for every request.
#[derive(Parser, Debug)]
struct Args {
    /// Listen address; port 0: the OS chooses (printed as `listening ADDR`).
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
    /// Serve TLS (ALPN h2) with a self-signed pair generated into this directory; h2c otherwise.
    #[arg(long)]
    tls_dir: Option<PathBuf>,
    /// The protobuf message of every answer, hex (framed here as one uncompressed gRPC frame).
    #[arg(long, default_value = "")]
    message_hex: String,
    /// Runtime worker threads (1: a current-thread runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

/// Prefixes a message with the gRPC frame header (uncompressed, big-endian length).
fn grpc_frame(message: &[u8]) -> Result<Bytes, String> {
    let len = u32::try_from(message.len()).map_err(|_| "message longer than 4 GiB")?;
    let mut frame = BytesMut::with_capacity(5 + message.len());
    frame.put_u8(0);
    frame.put_u32(len);
    frame.put_slice(message);
    Ok(frame.freeze())
}

/// What every stream gets: the same frame and the same trailers.
struct Answer {
    frame: Bytes,
    trailers: HeaderMap,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let message = hex::decode(args.message_hex.trim())?;
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let answer = Arc::new(Answer {
        frame: grpc_frame(&message)?,
        trailers,
    });
    let acceptor = match &args.tls_dir {
        Some(dir) => {
            let tls = server_tls(&CertSource::Generated {
                dir: dir.clone(),
                extra_names: Vec::new(),
            })?;
            let mut cfg = (*tls.config).clone();
            cfg.alpn_protocols = vec![b"h2".to_vec()];
            Some(TlsAcceptor::from(Arc::new(cfg)))
        }
        None => None,
    };
    let rt = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    };
    rt.block_on(async move {
        let listener = TcpListener::bind(args.addr).await?;
        println!("listening {}", listener.local_addr()?);
        loop {
            let (tcp, _) = listener.accept().await?;
            let (acceptor, answer) = (acceptor.clone(), answer.clone());
            tokio::spawn(async move {
                if let Err(e) = connection(tcp, acceptor, answer).await {
                    eprintln!("connection ended with an error: {e}");
                }
            });
        }
    })
}

async fn connection(
    tcp: TcpStream,
    acceptor: Option<TlsAcceptor>,
    answer: Arc<Answer>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    tcp.set_nodelay(true)?;
    match acceptor {
        Some(a) => serve_h2(a.accept(tcp).await?, answer).await,
        None => serve_h2(tcp, answer).await,
    }
}

async fn serve_h2<T>(
    io: T,
    answer: Arc<Answer>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut conn = h2::server::Builder::new()
        .max_concurrent_streams(1000)
        .handshake::<_, Bytes>(io)
        .await?;
    while let Some(accepted) = conn.accept().await {
        let (req, respond) = accepted?;
        let answer = answer.clone();
        tokio::spawn(async move {
            if let Err(e) = stream(req, respond, &answer).await {
                eprintln!("stream ended with an error: {e}");
            }
        });
    }
    Ok(())
}

async fn stream(
    req: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    answer: &Answer,
) -> Result<(), h2::Error> {
    let mut body = req.into_body();
    while let Some(chunk) = body.data().await {
        let n = chunk?.len();
        body.flow_control().release_capacity(n)?;
    }
    let mut head = Response::new(());
    head.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    let mut send = respond.send_response(head, false)?;
    send.send_data(answer.frame.clone(), false)?;
    send.send_trailers(answer.trailers.clone())
}
