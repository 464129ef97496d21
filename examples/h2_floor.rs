//! The floor of the comparison benchmark (`benches/compare/`): the leanest HTTP/2 proxy that can
//! be built on the crates litgate is built on, to tell the cost of the HTTP/2 stack apart from
//! the cost of litgate's own work. h2c on both sides, one upstream connection held for the
//! process's life, a single-threaded runtime, the `h2` crate directly on both sides (no hyper,
//! no tower, no layers, no TLS, no limits, no timeouts): it accepts a stream, sends its head and
//! body to the upstream as they come, and sends the answer's head, body and trailers back.
//!
//! `--inline` drives every stream of a connection inside the connection's own task instead of
//! one task per stream (hyper's model, and this tool's default). `--hyper` serves the public
//! side with hyper's HTTP/2 server (as litgate does) instead of `h2` directly, to tell hyper's
//! share apart.
//!
//! A benchmark tool: it prints `listening ADDR` once bound and runs until killed. Never put it
//! in front of real traffic: it checks nothing and bounds nothing.
//!
//! ```sh
//! cargo run --release --example h2_floor -- --upstream 127.0.0.1:10009
//! ```

use std::net::SocketAddr;

use bytes::Bytes;
use clap::Parser;
use futures_util::{stream::FuturesUnordered, StreamExt};
use h2::{client::SendRequest, server::SendResponse, RecvStream, SendStream};
use http::{Request, Response};
use http_body::Body as _;
use tokio::net::{TcpListener, TcpStream};

/// The floor: an h2c-to-h2c proxy with nothing but forwarding.
#[derive(Parser, Debug)]
struct Args {
    /// Listen address; port 0: the OS chooses (printed as `listening ADDR`).
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
    /// The upstream (h2c).
    #[arg(long)]
    upstream: SocketAddr,
    /// Drive a connection's streams in its own task rather than one task per stream.
    #[arg(long)]
    inline: bool,
    /// Serve the public side with hyper's HTTP/2 server.
    #[arg(long, conflicts_with = "inline")]
    hyper: bool,
}

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), Error> {
    let args = Args::parse();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> Result<(), Error> {
    let upstream = TcpStream::connect(args.upstream).await?;
    upstream.set_nodelay(true)?;
    let (client, conn) = h2::client::handshake(upstream).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            eprintln!("upstream connection: {e}");
        }
    });
    let listener = TcpListener::bind(args.addr).await?;
    println!("listening {}", listener.local_addr()?);
    loop {
        let (tcp, _) = listener.accept().await?;
        tcp.set_nodelay(true)?;
        let client = client.clone();
        if args.hyper {
            tokio::spawn(serve_hyper(tcp, client));
            continue;
        }
        tokio::spawn(async move {
            if let Err(e) = serve(tcp, client, args.inline).await {
                eprintln!("connection: {e}");
            }
        });
    }
}

async fn serve(tcp: TcpStream, client: SendRequest<Bytes>, inline: bool) -> Result<(), Error> {
    let mut conn = h2::server::handshake(tcp).await?;
    if !inline {
        while let Some(stream) = conn.accept().await {
            let (req, respond) = stream?;
            tokio::spawn(forward(req, respond, client.clone()));
        }
        return Ok(());
    }
    let mut streams = FuturesUnordered::new();
    loop {
        tokio::select! {
            stream = conn.accept() => match stream {
                Some(stream) => {
                    let (req, respond) = stream?;
                    streams.push(forward(req, respond, client.clone()));
                }
                None => break,
            },
            Some(()) = streams.next(), if !streams.is_empty() => {}
        }
    }
    while streams.next().await.is_some() {}
    Ok(())
}

/// One stream, both ways. Errors reset the streams (by dropping them).
async fn forward(
    req: Request<RecvStream>,
    respond: SendResponse<Bytes>,
    client: SendRequest<Bytes>,
) {
    if let Err(e) = forward_inner(req, respond, client).await {
        eprintln!("stream: {e}");
    }
}

async fn forward_inner(
    req: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    client: SendRequest<Bytes>,
) -> Result<(), Error> {
    let (parts, body) = req.into_parts();
    let end = body.is_end_stream();
    let mut client = client.ready().await?;
    let (answer, send) = client.send_request(Request::from_parts(parts, ()), end)?;
    if !end {
        pipe(body, send).await?;
    }
    let (parts, body) = answer.await?.into_parts();
    let end = body.is_end_stream();
    let send = respond.send_response(Response::from_parts(parts, ()), end)?;
    if !end {
        pipe(body, send).await?;
    }
    Ok(())
}

/// Copies a body's DATA and trailers, giving the flow-control credit back as it goes.
async fn pipe(mut body: RecvStream, mut send: SendStream<Bytes>) -> Result<(), Error> {
    let mut ended = false;
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        ended = body.is_end_stream();
        send.send_data(chunk, ended)?;
    }
    match body.trailers().await? {
        Some(trailers) => send.send_trailers(trailers)?,
        None if !ended => send.send_data(Bytes::new(), true)?,
        None => {}
    }
    Ok(())
}

/// The public side on hyper's HTTP/2 server: one task per stream (hyper's), the request body
/// piped to the upstream from a task of its own, the answer handed to hyper as a body.
async fn serve_hyper(tcp: TcpStream, client: SendRequest<Bytes>) {
    let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let client = client.clone();
        async move {
            let (parts, mut body) = req.into_parts();
            let end = body.is_end_stream();
            let mut client = client.ready().await?;
            let (answer, mut send) = client.send_request(Request::from_parts(parts, ()), end)?;
            if !end {
                tokio::spawn(async move {
                    use http_body_util::BodyExt;
                    let mut ended = false;
                    while let Some(Ok(frame)) = body.frame().await {
                        ended = body.is_end_stream();
                        let sent = match frame.into_data() {
                            Ok(data) => send.send_data(data, ended),
                            Err(frame) => match frame.into_trailers() {
                                Ok(trailers) => {
                                    ended = true;
                                    send.send_trailers(trailers)
                                }
                                Err(_) => Ok(()),
                            },
                        };
                        if sent.is_err() {
                            return;
                        }
                    }
                    if !ended {
                        let _ = send.send_data(Bytes::new(), true);
                    }
                });
            }
            let (parts, body) = answer.await?.into_parts();
            Ok::<_, h2::Error>(Response::from_parts(
                parts,
                Answer {
                    recv: body,
                    data_done: false,
                },
            ))
        }
    });
    let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
        .await;
}

/// The upstream's answer as a hyper body.
struct Answer {
    recv: RecvStream,
    data_done: bool,
}

impl http_body::Body for Answer {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, h2::Error>>> {
        use std::task::{ready, Poll};
        let this = &mut *self;
        if !this.data_done {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(http_body::Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => this.data_done = true,
            }
        }
        Poll::Ready(
            ready!(this.recv.poll_trailers(cx))
                .transpose()
                .map(|t| t.map(http_body::Frame::trailers)),
        )
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }
}
