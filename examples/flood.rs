//! Connection and stream floods against a running `litgate run`, measured from the outside: the
//! floods of issue 12 (idle TLS connections, half HTTP/2 prefaces, streams whose reader stopped
//! reading), with litgate's open file descriptors (`/proc/<pid>/fd`) and resident memory
//! (`VmRSS` in `/proc/<pid>/status`) sampled while they last, and how many of the flood's
//! connections or streams litgate still holds. The stalled-stream flood also probes litgate with
//! a fresh unary call each sample, to show whether other callers still get through.
//!
//! The stalled streams call the demo litd's open `litgatetest.Echo/ServerStream`
//! (`examples/fake_litd.rs`), so no credential is needed.
//!
//! ```sh
//! cargo run --example flood -- --target 127.0.0.1:8445 --tls-cert gate-tls.cert \
//!     --pid "$(pidof litgate)" --mode idle-tls --count 1000 --hold 60s
//! ```
//!
//! Prints one line per sample: seconds since the flood was in place, the flood's connections
//! (or streams) still open, litgate's fd count and RSS, and for `stalled` the probe's outcome.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::{BufMut, Bytes, BytesMut};
use clap::{Parser, ValueEnum};
use litgate::proto::litgatetest::EchoRequest;
use prost::Message;
use rustls::pki_types::ServerName;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::{client::TlsStream, TlsConnector};

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// TLS handshake done, then silence.
    IdleTls,
    /// TLS handshake (ALPN h2), then 16 of the 24 bytes of the HTTP/2 preface, then silence.
    HalfPreface,
    /// HTTP/2 streams whose large answers are never read (their windows stay at zero).
    Stalled,
}

/// Floods litgate and samples its fd count and memory.
#[derive(Parser, Debug)]
struct Args {
    /// litgate's public address.
    #[arg(long)]
    target: SocketAddr,
    /// litgate's certificate (pinned).
    #[arg(long)]
    tls_cert: PathBuf,
    /// The `litgate run` process to sample.
    #[arg(long)]
    pid: u32,
    /// What to flood with.
    #[arg(long, value_enum)]
    mode: Mode,
    /// Connections (idle-tls, half-preface) or streams (stalled).
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// Stalled: streams per HTTP/2 connection.
    #[arg(long, default_value_t = 10)]
    streams_per_connection: usize,
    /// Stalled: bytes per answer message and messages per answer.
    #[arg(long, default_value_t = 65536)]
    message_bytes: usize,
    /// Stalled: messages per answer.
    #[arg(long, default_value_t = 256)]
    messages: u32,
    /// How long to keep the flood up after it is in place.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    hold: Duration,
    /// How often to sample.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    every: Duration,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let pem = std::fs::read(&args.tls_cert)?;
    let tls = Arc::new(litgate::tls::pinned::pem_client_config(&pem)?);
    println!("before: {}", sample(args.pid));
    let open = Arc::new(AtomicUsize::new(0));
    let mut held = Vec::new();
    match args.mode {
        Mode::IdleTls | Mode::HalfPreface => {
            for i in 0..args.count {
                let mut conn = match connect(&args, &tls, &[b"h2", b"http/1.1"]).await {
                    Ok(c) => c,
                    Err(e) => {
                        println!("connection {i}: {e}");
                        continue;
                    }
                };
                if args.mode == Mode::HalfPreface {
                    conn.write_all(&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..16])
                        .await?;
                    conn.flush().await?;
                }
                open.fetch_add(1, Ordering::SeqCst);
                let open = open.clone();
                // Reads until litgate closes the connection (it never sends anything else).
                held.push(tokio::spawn(async move {
                    let mut b = [0u8; 64];
                    while matches!(conn.read(&mut b).await, Ok(n) if n > 0) {}
                    open.fetch_sub(1, Ordering::SeqCst);
                }));
            }
        }
        Mode::Stalled => {
            let req = grpc_frame(&EchoRequest {
                message: "x".repeat(args.message_bytes),
                count: args.messages,
                ..Default::default()
            });
            let conns = args.count.div_ceil(args.streams_per_connection);
            for _ in 0..conns {
                let conn = connect(&args, &tls, &[b"h2"]).await?;
                let (mut client, h2conn) = h2::client::Builder::new()
                    .initial_window_size(65_535)
                    .initial_connection_window_size(1 << 30)
                    .handshake::<_, Bytes>(conn)
                    .await?;
                held.push(tokio::spawn(async move {
                    let _ = h2conn.await;
                }));
                for _ in 0..args.streams_per_connection {
                    client = client.ready().await?;
                    let (resp, mut send) = client.send_request(echo_request(&args), false)?;
                    send.send_data(req.clone(), true)?;
                    let body = resp.await?.into_body();
                    open.fetch_add(1, Ordering::SeqCst);
                    let open = open.clone();
                    // Takes what h2 has buffered but never releases window: litgate sees a
                    // reader that stopped reading. Ends when the stream ends or is reset.
                    held.push(tokio::spawn(async move {
                        let mut body = body;
                        while let Some(Ok(_)) = body.data().await {}
                        open.fetch_sub(1, Ordering::SeqCst);
                    }));
                }
            }
        }
    }
    let start = Instant::now();
    loop {
        let probe = match args.mode {
            Mode::Stalled => format!(" probe={}", probe(&args, &tls).await),
            _ => String::new(),
        };
        println!(
            "t={:>3}s open={}/{} {}{probe}",
            start.elapsed().as_secs(),
            open.load(Ordering::SeqCst),
            args.count,
            sample(args.pid)
        );
        if start.elapsed() >= args.hold {
            break;
        }
        tokio::time::sleep(args.every).await;
    }
    for h in held {
        h.abort();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!("after closing: {}", sample(args.pid));
    Ok(())
}

/// litgate's open fds and resident memory.
fn sample(pid: u32) -> String {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count);
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default();
    format!("fds={fds} rss={rss}")
}

async fn connect(
    args: &Args,
    tls: &Arc<rustls::ClientConfig>,
    alpn: &[&[u8]],
) -> Result<TlsStream<TcpStream>, Box<dyn std::error::Error>> {
    let mut config = (**tls).clone();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(args.target).await?;
    let name = ServerName::try_from("localhost")?;
    Ok(TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?)
}

fn echo_request(args: &Args) -> http::Request<()> {
    http::Request::post(format!(
        "https://{}/litgatetest.Echo/ServerStream",
        args.target
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(())
    .expect("a valid request head")
}

fn grpc_frame(msg: &impl Message) -> Bytes {
    let payload = msg.encode_to_vec();
    let mut b = BytesMut::with_capacity(5 + payload.len());
    b.put_u8(0);
    b.put_u32(u32::try_from(payload.len()).expect("a small message"));
    b.put_slice(&payload);
    b.freeze()
}

/// One small streamed call on a fresh connection: does litgate still serve other callers?
async fn probe(args: &Args, tls: &Arc<rustls::ClientConfig>) -> String {
    let started = Instant::now();
    let call = async {
        let conn = connect(args, tls, &[b"h2"]).await?;
        let (client, h2conn) = h2::client::handshake(conn).await?;
        tokio::spawn(async move {
            let _ = h2conn.await;
        });
        let mut client = client.ready().await?;
        let (resp, mut send) = client.send_request(echo_request(args), false)?;
        let req = grpc_frame(&EchoRequest {
            message: "probe".into(),
            count: 1,
            ..Default::default()
        });
        send.send_data(req, true)?;
        let mut body = resp.await?.into_body();
        while let Some(chunk) = body.data().await {
            let chunk = chunk?;
            let _ = body.flow_control().release_capacity(chunk.len());
        }
        let trailers = body.trailers().await?;
        let status = trailers
            .as_ref()
            .and_then(|t| t.get("grpc-status"))
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_string();
        Ok::<_, Box<dyn std::error::Error>>(status)
    };
    match tokio::time::timeout(Duration::from_secs(5), call).await {
        Ok(Ok(s)) if s == "0" => format!("ok({}ms)", started.elapsed().as_millis()),
        Ok(Ok(s)) => format!("grpc-status={s}"),
        Ok(Err(e)) => format!("error({e})"),
        Err(_) => "timeout(5s)".into(),
    }
}
