//! The load generator of the comparison benchmark (`benches/compare/`): closed-loop unary gRPC
//! calls over raw HTTP/2 (the `h2` crate; no tonic, no hyper), h2c or TLS, that checks **every**
//! answer: HTTP 200, `content-type: application/grpc…`, a body that is exactly one expected gRPC
//! frame, and a `grpc-status: 0` trailer. A call that fails any of these counts as an error and the
//! run exits 1 (h2load counts such calls as successes).
//!
//! Shape: `--connections` HTTP/2 connections, `--streams` calls in flight on each (one task per
//! stream slot, each starting its next call when the previous one ends). Calls that start during
//! `--warmup` are checked but not measured; calls that start in the following `--duration` are
//! measured; none start after it. With TLS it also reports the version negotiated. Throughput is the measured calls over the time from the end of
//! the warmup to the last measured answer; latencies are kept whole (one `u64` each) and sorted.
//! Prints one line of JSON.
//!
//! Checks (`--check`):
//! - `frame`: the body equals `--expect-hex` framed (byte for byte); for the minimal upstream
//!   (`examples/grpc_upstream.rs`), whose answer never changes.
//! - `sub-server-status`: the body is one frame holding a `litrpc.SubServerStatusResp` whose
//!   sub-servers are all running with no error, equal to the first such answer of the run. The
//!   fake litd encodes that map in a different order on every answer, so the bytes are compared
//!   as the decoded message.
//!
//! ```sh
//! cargo run --release --example grpc_load -- --target 127.0.0.1:8445 --tls-cert tls.cert \
//!     --path /litrpc.Status/SubServerStatus --check sub-server-status \
//!     --connections 4 --streams 10 --duration 3s
//! ```

use std::{
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use clap::{Parser, ValueEnum};
use http::{
    header::{CONTENT_TYPE, TE},
    HeaderMap, HeaderValue, Method, Request, StatusCode, Uri,
};
use litgate::proto::litrpc::SubServerStatusResp;
use prost::Message;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum CheckKind {
    /// The body is exactly `--expect-hex`, framed.
    Frame,
    /// The body decodes to the same all-running `SubServerStatusResp` on every call.
    SubServerStatus,
}

/// Closed-loop unary gRPC load over HTTP/2 that checks every answer.
#[derive(Parser, Debug)]
struct Args {
    /// host:port to connect to.
    #[arg(long)]
    target: SocketAddr,
    /// Use TLS and accept exactly this PEM certificate (a self-signed one, as its own root);
    /// h2c (prior knowledge) without it.
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// TLS server name and `:authority`.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// The gRPC path, e.g. `/litrpc.Status/SubServerStatus`.
    #[arg(long)]
    path: String,
    /// The request message, hex (sent as one uncompressed gRPC frame).
    #[arg(long, default_value = "")]
    request_hex: String,
    /// How every answer is checked.
    #[arg(long, value_enum)]
    check: CheckKind,
    /// The expected answer message, hex (`--check frame`).
    #[arg(long, default_value = "")]
    expect_hex: String,
    /// A file with a hex macaroon, sent as `macaroon` metadata.
    #[arg(long)]
    macaroon_file: Option<PathBuf>,
    /// HTTP/2 connections.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Calls in flight on each connection.
    #[arg(long, default_value_t = 1)]
    streams: usize,
    /// Checked but unmeasured time before the measurement (e.g. "500ms").
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Measured time (e.g. "3s").
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Runtime worker threads (1: a current-thread runtime, as h2load's default `-t 1`).
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

/// Why a call is counted as failed.
#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("HTTP/2: {0}")]
    H2(#[from] h2::Error),
    #[error("HTTP status {0}")]
    Status(StatusCode),
    #[error("content-type {0:?} is not gRPC")]
    ContentType(Option<HeaderValue>),
    #[error("trailers-only answer, grpc-status {0:?}")]
    TrailersOnly(HeaderValue),
    #[error("no trailers")]
    NoTrailers,
    #[error("grpc-status {status:?} ({message:?}), expected 0")]
    GrpcStatus {
        status: Option<HeaderValue>,
        message: Option<HeaderValue>,
    },
    #[error("body differs from the expected answer: {0}")]
    Body(String),
}

/// How answers are checked; shared by every task of a run.
enum Check {
    Frame(Bytes),
    /// The first valid answer; every later one must decode equal to it.
    SubServerStatus(OnceLock<SubServerStatusResp>),
}

impl Check {
    fn verify(&self, body: &[u8]) -> Result<(), CallError> {
        match self {
            Check::Frame(expected) if body == expected.as_ref() => Ok(()),
            Check::Frame(expected) => Err(CallError::Body(format!(
                "{} bytes {}, expected {} bytes {}",
                body.len(),
                hex::encode(&body[..body.len().min(64)]),
                expected.len(),
                hex::encode(&expected[..expected.len().min(64)])
            ))),
            Check::SubServerStatus(reference) => {
                let message = unframe(body).map_err(CallError::Body)?;
                let resp = SubServerStatusResp::decode(message)
                    .map_err(|e| CallError::Body(format!("not a SubServerStatusResp: {e}")))?;
                if resp.sub_servers.is_empty() {
                    return Err(CallError::Body("no sub-servers".into()));
                }
                if let Some((name, s)) = resp
                    .sub_servers
                    .iter()
                    .find(|(_, s)| !s.running || s.disabled || !s.error.is_empty())
                {
                    return Err(CallError::Body(format!(
                        "sub-server {name} is not ok: {s:?}"
                    )));
                }
                let reference = reference.get_or_init(|| resp.clone());
                if &resp != reference {
                    return Err(CallError::Body(format!(
                        "{resp:?} differs from the first answer {reference:?}"
                    )));
                }
                Ok(())
            }
        }
    }
}

/// The message inside exactly one uncompressed gRPC frame.
fn unframe(body: &[u8]) -> Result<&[u8], String> {
    let mut head = body.get(..5).ok_or("shorter than a gRPC frame header")?;
    let (flag, len) = (head.get_u8(), head.get_u32() as usize);
    if flag != 0 {
        return Err(format!("frame flag {flag}, expected 0 (uncompressed)"));
    }
    if body.len() != 5 + len {
        return Err(format!("frame of {len} bytes in a body of {}", body.len()));
    }
    Ok(&body[5..])
}

fn frame(message: &[u8]) -> Bytes {
    let mut f = BytesMut::with_capacity(5 + message.len());
    f.put_u8(0);
    f.put_u32(message.len() as u32);
    f.put_slice(message);
    f.freeze()
}

/// Everything a call needs, built once.
struct Plan {
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    check: Check,
    measure_from: Instant,
    stop_at: Instant,
}

async fn call(sender: &mut h2::client::SendRequest<Bytes>, plan: &Plan) -> Result<(), CallError> {
    let mut req = Request::new(());
    *req.method_mut() = Method::POST;
    *req.uri_mut() = plan.uri.clone();
    *req.headers_mut() = plan.headers.clone();
    let ready = sender.clone().ready().await?;
    *sender = ready;
    let (resp, mut send) = sender.send_request(req, false)?;
    send.send_data(plan.body.clone(), true)?;
    let resp = resp.await?;
    if resp.status() != StatusCode::OK {
        return Err(CallError::Status(resp.status()));
    }
    if let Some(s) = resp.headers().get("grpc-status") {
        return Err(CallError::TrailersOnly(s.clone()));
    }
    match resp.headers().get(CONTENT_TYPE) {
        Some(ct) if ct.as_bytes().starts_with(b"application/grpc") => {}
        other => return Err(CallError::ContentType(other.cloned())),
    }
    let mut body = resp.into_body();
    let mut first: Option<Bytes> = None;
    let mut rest = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        body.flow_control().release_capacity(chunk.len())?;
        match &first {
            None => first = Some(chunk),
            Some(f) => {
                if rest.is_empty() {
                    rest.extend_from_slice(f);
                }
                rest.extend_from_slice(&chunk);
            }
        }
    }
    let trailers = body.trailers().await?.ok_or(CallError::NoTrailers)?;
    if trailers.get("grpc-status").map(HeaderValue::as_bytes) != Some(b"0") {
        return Err(CallError::GrpcStatus {
            status: trailers.get("grpc-status").cloned(),
            message: trailers.get("grpc-message").cloned(),
        });
    }
    let whole: &[u8] = if rest.is_empty() {
        first.as_deref().unwrap_or_default()
    } else {
        &rest
    };
    plan.check.verify(whole)
}

/// One stream slot's results.
#[derive(Default)]
struct Slot {
    latencies_ns: Vec<u64>,
    warmup: u64,
    errors: u64,
    first_error: Option<String>,
    last_answer: Option<Instant>,
}

/// Runs calls one after the other until `stop_at`; stops at the first failure (the connection
/// may be gone, and a failing run is reported as such anyway).
async fn slot(mut sender: h2::client::SendRequest<Bytes>, plan: Arc<Plan>) -> Slot {
    let mut out = Slot::default();
    loop {
        let start = Instant::now();
        if start >= plan.stop_at {
            break;
        }
        let result = call(&mut sender, &plan).await;
        let end = Instant::now();
        if let Err(e) = result {
            out.errors += 1;
            out.first_error = Some(e.to_string());
            break;
        }
        if start >= plan.measure_from {
            out.latencies_ns.push((end - start).as_nanos() as u64);
            out.last_answer = Some(end);
        } else {
            out.warmup += 1;
        }
    }
    out
}

/// Opens one HTTP/2 connection; returns its sender and the TLS version negotiated (if TLS).
async fn connect(
    args: &Args,
    tls: Option<&TlsConnector>,
) -> Result<(h2::client::SendRequest<Bytes>, Option<String>), Box<dyn std::error::Error>> {
    let tcp = TcpStream::connect(args.target).await?;
    tcp.set_nodelay(true)?;
    let builder = h2::client::Builder::new();
    Ok(match tls {
        Some(tls) => {
            let name = ServerName::try_from(args.server_name.clone())?;
            let io = tls.connect(name, tcp).await?;
            if io.get_ref().1.alpn_protocol() != Some(b"h2") {
                return Err("the server did not negotiate ALPN h2".into());
            }
            let version = io.get_ref().1.protocol_version().map(|v| format!("{v:?}"));
            let (sender, conn) = builder.handshake(io).await?;
            tokio::spawn(drive(conn));
            (sender, version)
        }
        None => {
            let (sender, conn) = builder.handshake(tcp).await?;
            tokio::spawn(drive(conn));
            (sender, None)
        }
    })
}

async fn drive<T>(conn: h2::client::Connection<T, Bytes>)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if let Err(e) = conn.await {
        eprintln!("connection ended with an error: {e}");
    }
}

fn tls_connector(cert: &Path) -> Result<TlsConnector, Box<dyn std::error::Error>> {
    // Pinned as litd's own clients pin `tls.cert`: the fake litd's certificate is shaped as
    // lnd makes them (a CA certificate used as its own end entity), which a root store refuses.
    let mut cfg = litgate::tls::pinned::pem_client_config(&std::fs::read(cert)?)?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsConnector::from(Arc::new(cfg)))
}

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[u64], p: f64) -> u64 {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn run(args: Args) -> Result<bool, Box<dyn std::error::Error>> {
    let tls = args.tls_cert.as_deref().map(tls_connector).transpose()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let uri: Uri = format!("{scheme}://{}{}", args.server_name, args.path).parse()?;
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(TE, HeaderValue::from_static("trailers"));
    if let Some(p) = &args.macaroon_file {
        headers.insert(
            "macaroon",
            HeaderValue::from_str(fs::read_to_string(p)?.trim())?,
        );
    }
    let check = match args.check {
        CheckKind::Frame => Check::Frame(frame(&hex::decode(args.expect_hex.trim())?)),
        CheckKind::SubServerStatus => Check::SubServerStatus(OnceLock::new()),
    };

    let mut senders = Vec::with_capacity(args.connections);
    let mut tls_version = None;
    for _ in 0..args.connections.max(1) {
        let (sender, version) = connect(&args, tls.as_ref()).await?;
        senders.push(sender);
        tls_version = tls_version.or(version);
    }
    let measure_from = Instant::now() + args.warmup;
    let plan = Arc::new(Plan {
        uri,
        headers,
        body: frame(&hex::decode(args.request_hex.trim())?),
        check,
        measure_from,
        stop_at: measure_from + args.duration,
    });
    let mut tasks = Vec::new();
    for sender in &senders {
        for _ in 0..args.streams.max(1) {
            tasks.push(tokio::spawn(slot(sender.clone(), plan.clone())));
        }
    }
    let mut all = Slot::default();
    for t in tasks {
        let s = t.await?;
        all.latencies_ns.extend(s.latencies_ns);
        all.warmup += s.warmup;
        all.errors += s.errors;
        if all.first_error.is_none() {
            all.first_error = s.first_error;
        }
        all.last_answer = all.last_answer.max(s.last_answer);
    }
    drop(senders);

    let mut lat = all.latencies_ns;
    lat.sort_unstable();
    let calls = lat.len();
    let span = all
        .last_answer
        .map(|t| t.saturating_duration_since(measure_from))
        .unwrap_or_default()
        .as_secs_f64();
    let us = |ns: u64| ns as f64 / 1e3;
    let out = if calls == 0 {
        serde_json::json!({ "calls": 0, "warmup_calls": all.warmup, "errors": all.errors,
                            "first_error": all.first_error, "tls": tls_version })
    } else {
        serde_json::json!({
            "calls": calls,
            "warmup_calls": all.warmup,
            "errors": all.errors,
            "first_error": all.first_error,
            "rps": calls as f64 / span,
            "p50_us": us(pct(&lat, 0.50)),
            "p90_us": us(pct(&lat, 0.90)),
            "p99_us": us(pct(&lat, 0.99)),
            "max_us": us(lat[calls - 1]),
            "mean_us": lat.iter().sum::<u64>() as f64 / calls as f64 / 1e3,
            "measured_s": span,
            "tls": tls_version,
        })
    };
    println!("{out}");
    Ok(calls > 0 && all.errors == 0)
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let rt = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    };
    let result = rt.map_err(Into::into).and_then(|rt| rt.block_on(run(args)));
    match result {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("grpc_load: {e}");
            std::process::ExitCode::from(2)
        }
    }
}
